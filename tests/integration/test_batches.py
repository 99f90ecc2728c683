"""Batched reads and writes under throttling, against DynamoDB Local: slower, never a row lost.

A fake DynamoDB client wraps the real one. It forwards only part of each batch and hands the rest
back as UnprocessedItems / UnprocessedKeys (as DynamoDB does when a partition is hot), and refuses
some calls whole with a real ProvisionedThroughputExceededException.
"""

from __future__ import annotations

import dataclasses

import boto3
import pytest
from botocore.exceptions import ClientError

from smsinvite import aws_clients
from smsinvite.batches import BatchIncomplete, DynamoBatches
from smsinvite.importing import ImportRunner, RecipientSink, Row, S3Upload
from smsinvite.status import Status
from smsinvite.store import recipient_id_for, utcnow


def throughput_exceeded(operation: str) -> ClientError:
    return ClientError(
        {
            "Error": {
                "Code": "ProvisionedThroughputExceededException",
                "Message": "The level of configured provisioned throughput for the table was exceeded.",
            },
            "ResponseMetadata": {"HTTPStatusCode": 400},
        },
        operation,
    )


class ThrottlingDynamoDB:
    """The real client, except that it does only part of each batch and refuses every `refuse_every`th call.

    A write does `take` items of its (up to 25); a read gets `take_keys` of its (up to 100) keys.
    """

    def __init__(self, real, *, take: int = 7, take_keys: int = 40, refuse_every: int = 3, forever: bool = False, stall_after: int = 0) -> None:
        self.real = real
        self.take = take
        self.take_keys = take_keys
        self.refuse_every = refuse_every
        self.forever = forever  # never do anything: a table that stays throttled
        self.stall_after = stall_after  # ... from this many calls on
        self.calls = 0
        self.refused = 0
        self.handed_back = 0

    def _refuse(self, operation: str) -> None:
        self.calls += 1
        if self.stall_after and self.calls > self.stall_after:
            self.forever = True
        if self.refuse_every and self.calls % self.refuse_every == 0:
            self.refused += 1
            raise throughput_exceeded(operation)

    def batch_write_item(self, RequestItems):
        self._refuse("BatchWriteItem")
        done, left = {}, {}
        for table, requests in RequestItems.items():
            take = 0 if self.forever else self.take
            if requests[:take]:
                done[table] = requests[:take]
            if requests[take:]:
                left[table] = requests[take:]
        if done:
            response = self.real.batch_write_item(RequestItems=done)
            assert not response.get("UnprocessedItems")
        self.handed_back += sum(len(r) for r in left.values())
        return {"UnprocessedItems": left}

    def batch_get_item(self, RequestItems):
        self._refuse("BatchGetItem")
        done, left = {}, {}
        for table, request in RequestItems.items():
            take = 0 if self.forever else self.take_keys
            keys = request["Keys"]
            if keys[:take]:
                done[table] = {**request, "Keys": keys[:take]}
            if keys[take:]:
                left[table] = {**request, "Keys": keys[take:]}
        responses = self.real.batch_get_item(RequestItems=done)["Responses"] if done else {}
        self.handed_back += sum(len(r["Keys"]) for r in left.values())
        return {"Responses": responses, "UnprocessedKeys": left}


@pytest.fixture
def delays():
    return []


@pytest.fixture
def throttled(local_aws):
    return ThrottlingDynamoDB(aws_clients.client("dynamodb"))


@pytest.fixture
def campaign(store, campaign_id):
    return store.campaign(campaign_id)


def suppressions(store, count: int, tag: str):
    return [
        store.t.suppressions(f"+1415{tag}{i:04d}", phone=f"+1415{tag}{i:04d}", reason="blocklist", source="test", created_at=utcnow())
        for i in range(count)
    ]


def stored_phones(store, phones) -> set[str]:
    found = set()
    for phone in phones:
        try:
            found.add(store.t.suppressions.get(phone, consistent_read=True).phone)
        except store.t.suppressions.DoesNotExist:
            pass
    return found


# --------------------------------------------------------------------------------- writes and reads
def test_a_throttled_batch_write_writes_every_item_with_backoff(store, throttled, delays):
    # Given 60 items and a table that takes 7 of each batch and refuses every third call
    items = suppressions(store, 60, "31")
    batches = DynamoBatches(client=throttled, sleep=delays.append, base_delay=0.01, max_delay=60)

    # When they are written
    refused = batches.put(type(items[0]), [i.serialize() for i in items])

    # Then every item is in the table, after retries of what was handed back or refused
    assert refused == set()
    assert stored_phones(store, [i.phone for i in items]) == {i.phone for i in items}
    assert throttled.handed_back > 0 and throttled.refused > 0
    assert len(delays) == batches.requests - 3  # every call but each batch's first waited first
    # And the waits grew: within a batch each backoff is at least the previous one
    assert delays[1] >= delays[0] and max(delays) > min(delays) * 2


def test_a_throttled_batch_get_finds_every_existing_item(store, throttled, delays):
    # Given 150 stored items and 30 keys that do not exist
    items = suppressions(store, 150, "32")
    DynamoBatches().put(type(items[0]), [i.serialize() for i in items])
    keys = [(i.phone,) for i in items] + [(f"+1415339{i:04d}",) for i in range(30)]

    # When they are read through a table that hands back most keys and refuses some calls
    found = DynamoBatches(client=throttled, sleep=delays.append, base_delay=0.01, max_delay=60).get(
        store.t.suppressions, keys
    )

    # Then every existing item is returned once, and none of the missing ones
    assert sorted(f.phone for f in found) == sorted(i.phone for i in items)
    assert throttled.handed_back > 0 and throttled.refused > 0 and delays


def test_a_table_that_stays_throttled_raises_batch_incomplete_after_max_attempts(store, delays):
    # Given a table that never takes anything
    stuck = ThrottlingDynamoDB(aws_clients.client("dynamodb"), forever=True, refuse_every=2)
    batches = DynamoBatches(client=stuck, sleep=delays.append, max_attempts=6, base_delay=0.05, max_delay=60)
    items = suppressions(store, 5, "33")

    # When a write is attempted, then it raises rather than report the rows written
    with pytest.raises(BatchIncomplete):
        batches.put(type(items[0]), [i.serialize() for i in items])

    # And it tried exactly max_attempts times, waiting longer each time (0.05 * 2**n, jittered)
    assert stuck.calls == 6
    assert len(delays) == 5
    for attempt, delay in enumerate(delays):
        assert 0.05 * 2**attempt * 0.5 <= delay <= 0.05 * 2**attempt
    assert delays == sorted(delays)
    assert stored_phones(store, [i.phone for i in items]) == set()

    # And a read of a table that stays throttled raises too, rather than answer "not found"
    with pytest.raises(BatchIncomplete):
        batches.get(store.t.suppressions, [(i.phone,) for i in items])


def test_an_error_that_is_not_throttling_is_raised_at_once(store, delays):
    class Broken:
        def batch_write_item(self, RequestItems):
            raise ClientError({"Error": {"Code": "ValidationException", "Message": "bad"}}, "BatchWriteItem")

    with pytest.raises(ClientError):
        DynamoBatches(client=Broken(), sleep=delays.append).put(store.t.suppressions, [i.serialize() for i in suppressions(store, 2, "34")])
    assert delays == []


# --------------------------------------------------------------------------------- the import under throttling
def rows_of(numbers: list[str]) -> list[Row]:
    return [Row(n, value, None, {"n": str(n)}, str(n)) for n, value in enumerate(numbers, start=1)]


def test_a_recipient_chunk_through_a_throttled_table_loses_no_row(store, campaign, throttled, delays):
    # Given a chunk of 100 rows: 90 distinct valid numbers, 5 repeats and 5 invalid values
    numbers = [f"+1212555{i:04d}" for i in range(1000, 1090)] + ["+12125551000"] * 5 + ["n/a"] * 5
    already = store.t.recipients(campaign.campaign_id, recipient_id_for(campaign.campaign_id, "+12125551089"),
                                 phone="+12125551089", import_id="imp_other", row_number=1)
    already.save()
    batches = DynamoBatches(client=throttled, sleep=delays.append, base_delay=0.001)

    # When the recipient sink processes it through the throttled client
    result = RecipientSink(store, batches, campaign, "imp_chunk").process(rows_of(numbers))

    # Then the counts are exact and every new recipient is in the table
    assert dict(result.outcomes) == {"imported": 89, "duplicate": 6, "invalid:not_a_number": 5}
    stored = list(store.t.recipients.query(campaign.campaign_id, consistent_read=True))
    assert len(stored) == 90
    assert sum(1 for r in stored if r.import_id == "imp_chunk") == 89
    assert throttled.handed_back > 0 and throttled.refused > 0


def test_an_import_through_a_throttled_table_completes_with_exact_counts(local_aws, store, campaign, throttled, delays):
    # Given a 1,000-row file in the bucket (every 10th row repeats an earlier number, every 25th is invalid)
    settings = dataclasses.replace(local_aws, import_checkpoint_rows=150)
    lines, unique, duplicates, invalid = ["phone,name"], set(), 0, 0
    for i in range(1000):
        if i % 25 == 24:
            lines.append(f"12345,bad {i}")
            invalid += 1
        elif i % 10 == 9:
            lines.append(f"+1 212 555 {1000 + i - 9},again {i}")
            duplicates += 1
        else:
            lines.append(f"+1 (212) 555-{1000 + i},n{i}")
            unique.add(i)
    body = ("\n".join(lines) + "\n").encode()
    key = f"imports/{campaign.campaign_id}/throttled.csv"
    put = boto3.client("s3").put_object(Bucket=settings.imports_bucket, Key=key, Body=body)
    upload = S3Upload(settings.imports_bucket, key, put.get("VersionId"), put["ETag"].strip('"'), len(body))

    # And a first run cut short: the table takes the first chunk and a batch of the second, then stays throttled
    stuck = ThrottlingDynamoDB(aws_clients.client("dynamodb"), take=100, take_keys=100, refuse_every=0, stall_after=9)
    handed_over: list = []
    runner = ImportRunner(store, settings, batches=DynamoBatches(client=stuck, sleep=delays.append, max_attempts=3),
                          continue_later=lambda *args: handed_over.append(args))
    record, _ = runner.register_upload(upload)
    with pytest.raises(BatchIncomplete):  # the import queue's first delivery of this step
        runner.run(record.import_id, time_left=lambda: 300.0, margin=20.0, attempt=1)
    # Then rows were written but none counted: the failed invocation is retried (SQS), not reported as done
    assert int(store.t.imports.get(record.import_id, consistent_read=True).rows_processed) == 0
    assert len(list(store.t.recipients.query(campaign.campaign_id, consistent_read=True))) == 88 + 25

    # When the retry runs while the table is throttled (parts handed back, some calls refused)
    runner.batches = DynamoBatches(client=throttled, sleep=delays.append, base_delay=0.001)
    summary = runner.run(record.import_id, time_left=lambda: 300.0, margin=20.0, attempt=2)

    # Then the import completed with exact counts, and the table and counters agree
    assert summary.state == "completed"
    assert summary.rows == 1000
    assert summary.outcomes == {"imported": len(unique), "duplicate": duplicates, "invalid:too_short": invalid}
    stored = list(store.t.recipients.query(campaign.campaign_id, consistent_read=True))
    assert len(stored) == len(unique)
    assert sorted(int(r.row_number) for r in stored) == sorted(i + 1 for i in unique)
    status = store.campaign(campaign.campaign_id)
    assert store.counts(campaign.campaign_id)[Status.IMPORTED] == len(unique)
    assert (int(status.rows_duplicate), int(status.rows_invalid)) == (duplicates, invalid)
    assert throttled.handed_back > 0 and throttled.refused > 0
    assert handed_over == []
    assert {r.status for r in stored} == {Status.IMPORTED.value}
