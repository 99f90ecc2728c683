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

from smsinvite.importing import ImportRunner, S3Upload
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
