"""An import's files in S3 (moto, with DynamoDB Local): uploads read from a checkpoint's offset, and
the rejected-rows report, which lists every rejected row once, in row order.

Report parts are written per checkpoint. Two runs of one import can race (a redelivered message and
its continuation) and write parts for different spans from the same checkpoint; the report must
still list each rejected row exactly once.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import uuid

import boto3
import pytest

from smsinvite.batches import DynamoBatches
from smsinvite.importing import IMPORT_ATTEMPTS, ImportRunner, PanelSink, RecipientSink, Row, S3Upload
from smsinvite.object_store import ObjectMissing, object_chunks
from smsinvite.reports import Rejected, RejectedRowsReport


# ------------------------------------------------------------------------------------------ reading uploads
@pytest.fixture
def uploaded(local_aws):
    key = f"imports/t/{uuid.uuid4().hex}.csv"
    body = b"phone\n+14155552671\n+14155552672\n"
    boto3.client("s3").put_object(Bucket=local_aws.imports_bucket, Key=key, Body=body)
    return local_aws.imports_bucket, key, body


def test_a_resumed_read_returns_the_bytes_from_the_offset(uploaded):
    bucket, key, body = uploaded
    assert b"".join(object_chunks(bucket, key, start=6)) == body[6:]


def test_a_resumed_read_from_the_end_of_the_file_reads_nothing_rather_than_fail(uploaded):
    # S3 answers "bytes=<size>-" with 416 InvalidRange; an import whose last checkpoint was the
    # last row resumes there (a handover or a cut-off before it was marked complete)
    bucket, key, body = uploaded
    assert list(object_chunks(bucket, key, start=len(body))) == []


def test_a_vanished_upload_is_reported_as_missing(local_aws):
    with pytest.raises(ObjectMissing):
        list(object_chunks(local_aws.imports_bucket, "imports/t/never-uploaded.csv"))


# ------------------------------------------------------------------------------------------ the report
def report_rows(bucket: str, key: str) -> list[list[str]]:
    body = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8")
    return list(csv.reader(io.StringIO(body, newline="")))


def rejected(*numbers: int) -> list[Rejected]:
    # Deliberately not in row order, as a chunk lists them (invalid first, then duplicates of stored rows)
    return [Rejected(n, f"=bad {n}" if n % 2 else f"+1 555 {n}\nsecond line", f"reason {n}") for n in sorted(numbers, key=lambda n: n % 3)]


def test_overlapping_parts_from_racing_runs_join_into_each_row_once_in_order(local_aws):
    # Given parts from the winning checkpoints (0-300, 300-800) and a losing run's longer part (0-500)
    bucket, import_id = local_aws.imports_bucket, f"imp_{uuid.uuid4().hex[:12]}"
    report = RejectedRowsReport(bucket, import_id, f"reports/imports/t/list-{import_id}-rejected.csv")
    report.write_part(0, 300, rejected(3, 150, 299))
    report.write_part(0, 500, rejected(3, 150, 299, 301, 420, 499))
    report.write_part(300, 800, rejected(420, 499, 799, 301))
    report.write_part(800, 900, rejected(900))

    # When they are joined
    key = report.assemble()

    # Then each rejected row is listed once, in row order, with its cells still formula-safe
    rows = report_rows(bucket, key)
    assert rows[0] == ["row", "value", "reason"]
    assert [int(r[0]) for r in rows[1:]] == [3, 150, 299, 301, 420, 499, 799, 900]
    assert rows[1] == ["3", "'=bad 3", "reason 3"]
    assert rows[2] == ["150", "'+1 555 150\nsecond line", "reason 150"]
    # And the parts are gone
    listed = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=f"reports/imports/.parts/{import_id}/")
    assert listed.get("KeyCount", 0) == 0


def test_two_runs_of_one_import_racing_from_the_same_checkpoint_report_each_rejected_row_once(local_aws, store):
    # Given a campaign and a 1,000-row file in which every 4th row is invalid
    settings = dataclasses.replace(local_aws, import_checkpoint_rows=500)
    campaign_id = f"r-{uuid.uuid4().hex[:10]}"
    store.create_campaign(
        store.new_campaign(campaign_id=campaign_id, name="t", survey_url="https://s.example", message_template="Hi {link}")
    )
    lines = ["phone"] + [("oops" if i % 4 == 3 else f"+1 212 555 {1000 + i}") for i in range(1000)]
    body = ("\n".join(lines) + "\n").encode()
    key = f"imports/{campaign_id}/race.csv"
    put = boto3.client("s3").put_object(Bucket=settings.imports_bucket, Key=key, Body=body)
    upload = S3Upload(settings.imports_bucket, key, put.get("VersionId"), put["ETag"].strip('"'), len(body))
    handed_over: list[str] = []
    winner = ImportRunner(store, settings, continue_later=lambda import_id, delay: handed_over.append(import_id))
    loser = ImportRunner(store, settings, continue_later=lambda import_id, delay: handed_over.append(import_id))
    record, _ = winner.register_upload(upload)

    # When one run (the loser) has read the record and is part-way through its first 500 rows,
    # another run of the same import saves a checkpoint after 300 rows (its time ran low) and hands over
    winner_clock = iter([100.0, 100.0, 0.0, 0.0])
    loser_calls = []

    def loser_time_left() -> float:
        if not loser_calls:
            winner.run(record.import_id, time_left=lambda: next(winner_clock), margin=10.0)
        loser_calls.append(1)
        return 100.0

    summary = loser.run(record.import_id, time_left=loser_time_left, margin=10.0)
    # Then the loser's checkpoint (after 500 rows) lost the race, and it stopped
    assert summary.rows == 0
    assert int(store.t.imports.get(record.import_id, consistent_read=True).rows_processed) == 300
    assert handed_over == [record.import_id]

    # When the winner's continuation finishes the import
    final = winner.run(record.import_id, time_left=lambda: 100.0, margin=10.0)

    # Then the counts are exact and the report lists each of the 250 invalid rows once, in order
    assert (final.state, final.rows, final.outcomes) == ("completed", 1000, {"imported": 750, "invalid:not_a_number": 250})
    rows = report_rows(settings.imports_bucket, final.report_key)[1:]
    assert [int(r[0]) for r in rows] == [n for n in range(1, 1001) if n % 4 == 0]


# ------------------------------------------------------------------------------------------ what a file may hold
def put_upload(settings, campaign_id: str, body: bytes, name: str = "list.csv") -> S3Upload:
    key = f"imports/{campaign_id}/{name}"
    put = boto3.client("s3").put_object(Bucket=settings.imports_bucket, Key=key, Body=body)
    return S3Upload(settings.imports_bucket, key, put.get("VersionId"), put["ETag"].strip('"'), len(body))


def raw_import(store, import_id: str):
    return store.t.imports.get(import_id, consistent_read=True)


def raw_lease(store, campaign_id: str):
    return store.t.campaigns.get(campaign_id, consistent_read=True).import_lease


def stored_phones(store, campaign_id: str) -> list[str]:
    return sorted(r.phone for r in store.t.recipients.query(campaign_id, consistent_read=True))


@pytest.mark.parametrize("kind", ["recipients", "panel"])
def test_an_item_dynamodb_refuses_as_too_large_fails_only_its_row(local_aws, store, campaign_id, kind):
    # Given a chunk of rows whose second row holds 450 KB of attributes: more than a DynamoDB item may hold
    # (handed to the sink directly, past the importer's own size check, as if that check had missed it)
    big = {f"notes{i}": "z" * 90_000 for i in range(5)}
    rows = [
        Row(1, "+1 212 555 0101", None, {"name": "a"}, "1"),
        Row(2, "+1 212 555 0102", None, big, "2"),
        Row(3, "+1 212 555 0103", None, {"name": "c"}, "3"),
    ]
    batches = DynamoBatches()
    if kind == "recipients":
        sink = RecipientSink(store, batches, store.campaign(campaign_id), "imp_refused")
    else:
        sink = PanelSink(store, batches, f"panel-{campaign_id}", "imp_refused", "US")

    # When the sink writes them
    result = sink.process(rows)

    # Then DynamoDB's refusal failed that row alone, as too large; the others are stored
    assert dict(result.outcomes) == {"imported": 2, "row_too_large": 1}
    assert [(r.row_number, r.reason) for r in result.rejected] == [(2, "row_too_large")]
    if kind == "recipients":
        assert stored_phones(store, campaign_id) == ["+12125550101", "+12125550103"]
        assert sum(result.status_deltas.values()) == 2
    else:
        members = store.t.panels.query(f"panel-{campaign_id}", consistent_read=True)
        assert sorted(m.phone for m in members) == ["+12125550101", "+12125550103"]


def test_a_flood_of_blank_lines_reaches_checkpoints_and_hands_over(local_aws, store, campaign_id):
    # Given a row, 6 MB of blank lines and another row, and checkpoints every 1 MiB of the file
    settings = dataclasses.replace(local_aws, import_checkpoint_bytes=1024 * 1024)
    body = b"phone\n+1 212 555 0101\n" + b"\n" * (6 * 1024 * 1024) + b"+1 212 555 0102\n"
    upload = put_upload(settings, campaign_id, body, "blank.csv")
    handed_over: list[str] = []
    runner = ImportRunner(store, settings, continue_later=lambda import_id, delay: handed_over.append(import_id))
    record, _ = runner.register_upload(upload)

    # When a run reads on while its time lasts, noting the saved position (raw table) each time it looks at the clock
    saved: list[int] = []

    def time_left() -> float:
        saved.append(int(raw_import(store, record.import_id).position or 0))
        return 100.0 if len(saved) < 12 else 1.0  # about 3 MiB into the file

    summary = runner.run(record.import_id, time_left=time_left, margin=10.0)

    # Then checkpoints were saved inside the blank stretch, and the run handed over before its time ran out
    assert summary.state == "running" and handed_over == [record.import_id]
    inside = [p for p in saved if 1024 * 1024 <= p < len(body) - 20]
    assert inside, saved
    stopped_at = raw_import(store, record.import_id)
    assert int(stopped_at.rows_processed) == 1 and int(stopped_at.position) > 1024 * 1024
    # And the next run finishes it with both rows
    final = runner.run(record.import_id, time_left=lambda: 100.0, margin=10.0)
    assert (final.state, final.rows, final.outcomes) == ("completed", 2, {"imported": 2})


class Refusing:
    """Makes every sink call fail, as a dependency that keeps refusing does."""

    def __init__(self, monkeypatch) -> None:
        self.on = True
        original = RecipientSink.process

        def process(sink, rows):
            if self.on:
                raise RuntimeError("a dependency refused")
            return original(sink, rows)

        monkeypatch.setattr(RecipientSink, "process", process)


def test_the_last_attempt_of_an_import_that_keeps_failing_ends_it_failed_and_frees_the_campaign(
    local_aws, store, campaign_id, monkeypatch
):
    # Given an uploaded file, and a fault that makes every step fail
    upload = put_upload(local_aws, campaign_id, b"phone\n+1 212 555 0101\n")
    refusing = Refusing(monkeypatch)
    runner = ImportRunner(store, local_aws, continue_later=lambda import_id, delay: None)
    record, _ = runner.register_upload(upload)
    attempts = IMPORT_ATTEMPTS

    # When the queue delivers the step, and every delivery but the last fails
    for attempt in range(1, attempts):
        with pytest.raises(RuntimeError):
            runner.run(record.import_id, time_left=lambda: 100.0, margin=10.0, attempt=attempt)
        assert raw_import(store, record.import_id).state == "running"
    last = runner.run(record.import_id, time_left=lambda: 100.0, margin=10.0, attempt=attempts)

    # Then the last one ends the import failed with a plain reason, and releases the campaign (raw tables)
    stored = raw_import(store, record.import_id)
    assert (last.state, stored.state) == ("failed", "failed")
    assert stored.reason == (
        f"internal_error: the import stopped on an unexpected error (RuntimeError) {attempts} times in a row; "
        "0 rows were read"
    )
    assert raw_lease(store, campaign_id) is None
    # And the campaign's next import runs
    refusing.on = False
    second, _ = runner.register_upload(put_upload(local_aws, campaign_id, b"phone\n+1 212 555 0102\n", "next.csv"))
    assert runner.run(second.import_id, time_left=lambda: 100.0, margin=10.0, attempt=1).state == "completed"


def test_a_delivery_after_the_last_attempt_ends_an_import_whose_runs_never_finished(local_aws, store, campaign_id):
    # Given an import that took the campaign's lease and was then cut off (its invocations timed out or ran
    # out of memory, so no code of it could say so)
    upload = put_upload(local_aws, campaign_id, b"phone\n+1 212 555 0101\n+1 212 555 0102\n")
    runner = ImportRunner(store, local_aws, continue_later=lambda import_id, delay: None)
    record, _ = runner.register_upload(upload)
    assert runner._take_lease(record) and raw_lease(store, campaign_id) == record.import_id

    # When the queue delivers it once more than the attempts it allows
    summary = runner.run(record.import_id, time_left=lambda: 100.0, margin=10.0, attempt=IMPORT_ATTEMPTS + 1)

    # Then that delivery ends it failed, saying so, without running it again, and frees the campaign
    stored = raw_import(store, record.import_id)
    assert (summary.state, stored.state, int(stored.rows_processed)) == ("failed", "failed", 0)
    assert stored.reason == (
        f"internal_error: the import stopped {IMPORT_ATTEMPTS} times in a row without finishing "
        "(timed out, or out of memory); 0 rows were read"
    )
    assert raw_lease(store, campaign_id) is None
    assert stored_phones(store, campaign_id) == []


def test_a_run_outside_the_queue_that_fails_hands_the_import_to_the_queue(local_aws, store, campaign_id, monkeypatch):
    # Given a list added by a command, and a fault that makes its first step fail
    Refusing(monkeypatch)
    handed_over: list[tuple[str, int]] = []
    runner = ImportRunner(store, local_aws, continue_later=lambda import_id, delay: handed_over.append((import_id, delay)))
    record, _ = runner.register_list(campaign_id, [{"phone": "+1 212 555 0101"}], "by-hand")

    # When the command runs it (no queue delivery behind it) and the step fails
    with pytest.raises(RuntimeError):
        runner.run(record.import_id, time_left=lambda: 100.0, margin=10.0)

    # Then the import is handed to the import queue, whose attempts will finish it one way or the other
    assert handed_over == [(record.import_id, 0)]
    assert raw_import(store, record.import_id).state == "running"
