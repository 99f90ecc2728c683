"""Recipient imports on the local stack: CSV drops, hand-made lists, panels, tokens and suppressions.

Every file is put into the bucket as an operator would; the router delivers the S3 event to the
import function, which registers the upload and runs it from the import queue. Each test waits for
the import record to reach a final state, then checks the record, the tables and the reports.
"""

from __future__ import annotations

import csv
import io
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import boto3
import pytest
from pynamodb.exceptions import DoesNotExist

from local.demo import wait_for
from local.router import encode_s3_event_key
from smsinvite.batches import DynamoBatches
from smsinvite.importing import ImportRunner, RecipientSink, S3Upload
from smsinvite.queues import Queue
from smsinvite.store import utcnow

FINAL = ("completed", "completed_with_warnings", "failed")


# ------------------------------------------------------------------------------------------ helpers
def new_campaign(stack, campaign_id: str, **options) -> str:
    created = stack.command(
        {
            "command": "create_campaign",
            "campaign_id": campaign_id,
            "name": "Imports",
            "survey_url": "https://survey.example.com/s/imports",
            "message_template": "Hi {first_name|there}: {link}",
            **options,
        }
    )
    assert created["ok"], created
    return campaign_id


def finished(store, import_id: str):
    """The import record once it is final and its campaign lease is released; None before."""
    try:
        record = store.t.imports.get(import_id, consistent_read=True)
    except DoesNotExist:
        return None
    if record.state not in FINAL:
        return None
    if record.campaign_id and record.kind == "recipients":
        try:
            if store.campaign(record.campaign_id).import_lease:
                return None
        except Exception:  # noqa: BLE001 - an unknown campaign has no lease to wait for
            pass
    return record


def wait_import(store, import_id: str, timeout: float = 30):
    return wait_for(lambda: finished(store, import_id), timeout=timeout, what=f"import {import_id} to finish")


def upload(stack, key: str, body: bytes | str, *, metadata: dict | None = None) -> str:
    """Put a file into the bucket as an operator would; returns the id of the import its S3 event starts."""
    data = body.encode("utf-8") if isinstance(body, str) else body
    extra = {"Metadata": metadata} if metadata else {}
    put = boto3.client("s3").put_object(Bucket=stack.bucket, Key=key, Body=data, **extra)
    return S3Upload(stack.bucket, key, put.get("VersionId"), put["ETag"].strip('"'), len(data)).import_id


def import_file(stack, store, key: str, body: bytes | str, *, metadata: dict | None = None, timeout: float = 30):
    return wait_import(store, upload(stack, key, body, metadata=metadata), timeout=timeout)


def outcomes(record) -> dict:
    return {reason: int(n) for reason, n in record.outcomes.as_dict().items()}


def recipients_of(store, campaign_id: str) -> dict:
    return {r.phone: r for r in store.t.recipients.query(campaign_id, consistent_read=True)}


def campaign_status(stack, campaign_id: str) -> dict:
    answer = stack.command({"command": "status", "campaign_id": campaign_id})
    assert answer["ok"], answer
    return answer["result"]


def counts(stack, campaign_id: str) -> dict:
    return {status: n for status, n in campaign_status(stack, campaign_id)["counts"].items() if n}


def report_rows(stack, key: str) -> list[list[str]]:
    body = boto3.client("s3").get_object(Bucket=stack.bucket, Key=key)["Body"].read().decode("utf-8")
    return list(csv.reader(io.StringIO(body)))


def imports_with_key(store, key: str) -> list:
    return list(store.t.imports.scan(store.t.imports.key == key, consistent_read=True))


def plain(reason: str) -> bool:
    return bool(reason) and "Traceback" not in reason and 'File "' not in reason and "Error(" not in reason


def s3_event(event, stack, key: str, *, size: int = 120) -> dict:
    """The console sample S3 event, pointed at this stack's bucket and a key (URL-encoded as S3 does)."""
    record = event("s3-put-recipients.json")["Records"][0]
    record["s3"]["bucket"]["name"] = stack.bucket
    record["s3"]["object"].update(
        key=encode_s3_event_key(key), size=size, eTag=uuid.uuid4().hex, versionId=uuid.uuid4().hex
    )
    return {"Records": [record]}


# ------------------------------------------------------------------------------------------ where files go
def test_a_key_with_spaces_parentheses_plus_and_umlaut_is_imported(stack, store, campaign_id):
    # Given a campaign and a file name as people really type it
    new_campaign(stack, campaign_id)
    key = f"imports/{campaign_id}/my list (1)+\u00e4.csv"

    # When it is dropped into the bucket (its S3 event carries the key URL-encoded)
    record = import_file(stack, store, key, "phone,name\n+1 415 555 2671,Ana\n")

    # Then the key is decoded exactly and the row imported
    assert record.key == key
    assert (record.state, outcomes(record)) == ("completed", {"imported": 1})
    assert list(recipients_of(store, campaign_id)) == ["+14155552671"]


def test_an_upload_under_reports_triggers_no_import(stack, store, campaign_id):
    # Given a quiet stack
    new_campaign(stack, campaign_id)
    stack.router.drain()
    before = len(stack.router.invocations_of("ImportFunction", "S3"))

    # When a report (which looks like a recipients file) is written under reports/
    key = f"reports/imports/{campaign_id}/looks-like-recipients.csv"
    boto3.client("s3").put_object(Bucket=stack.bucket, Key=key, Body=b"phone\n+14155552671\n")
    stack.router.drain()

    # Then the import function was not invoked and no import record or recipient appeared
    assert len(stack.router.invocations_of("ImportFunction", "S3")) == before
    assert imports_with_key(store, key) == []
    assert recipients_of(store, campaign_id) == {}


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("uploads/{cid}/list.csv", "unknown_prefix"),
        ("imports/no-such-campaign-{tag}/list.csv", "unknown_campaign"),
        ("imports/{cid}/march/list.csv", "bad_key"),
        ("imports/{cid}/list.xlsx", "not_a_csv"),
        ("imports/{cid}/huge.csv", "file_too_large"),
    ],
    ids=["unknown prefix", "unknown campaign", "sub-folder", "not a csv", "over the maximum size"],
)
def test_an_s3_event_that_cannot_be_imported_ends_as_a_failed_record_with_a_plain_reason(
    stack, store, campaign_id, event, monkeypatch, key, reason
):
    # Given a campaign, a small maximum file size, and an S3 event for a key that cannot be imported
    new_campaign(stack, campaign_id)
    monkeypatch.setenv("MAX_IMPORT_BYTES", "4096")
    key = key.format(cid=campaign_id, tag=uuid.uuid4().hex[:8])
    target = key.split("/")[1]

    # When the event is delivered to the import function
    answer = stack.router.invoke("ImportFunction", s3_event(event, stack, key, size=5000 if "huge" in key else 120))

    # Then it ends as a failed import record that says why, plainly, and no row was written
    record = wait_import(store, answer["imports"][0]["import_id"])
    assert record.state == "failed"
    assert record.key == key
    assert record.reason.startswith(f"{reason}: ") and plain(record.reason)
    assert (int(record.rows_processed), outcomes(record)) == (0, {})
    assert recipients_of(store, campaign_id) == {} and recipients_of(store, target) == {}


def test_a_real_upload_over_the_maximum_size_is_refused_before_a_row_is_read(stack, store, campaign_id, monkeypatch):
    # Given a maximum of 1 KiB
    new_campaign(stack, campaign_id)
    monkeypatch.setenv("MAX_IMPORT_BYTES", "1024")
    body = "phone\n" + "".join(f"+1 212 555 {1000 + i}\n" for i in range(100))

    # When a 1.6 KiB file of valid numbers is dropped
    record = import_file(stack, store, f"imports/{campaign_id}/big.csv", body)

    # Then the import failed whole, naming the size and the limit
    assert record.state == "failed"
    assert record.reason == f"file_too_large: the file is {len(body)} bytes; the limit is 1024"
    assert recipients_of(store, campaign_id) == {}


def test_a_file_in_a_sub_folder_of_a_campaign_is_refused_without_a_row_written(stack, store, campaign_id):
    new_campaign(stack, campaign_id)
    record = import_file(stack, store, f"imports/{campaign_id}/old/list.csv", "phone\n+14155552671\n")
    assert record.state == "failed" and record.reason.startswith("bad_key: ")
    assert recipients_of(store, campaign_id) == {}


# ------------------------------------------------------------------------------------------ dedupe
def test_a_new_version_of_the_same_file_is_a_new_import_deduped_against_the_first(stack, store, campaign_id):
    # Given a file already imported
    new_campaign(stack, campaign_id)
    key = f"imports/{campaign_id}/customers.csv"
    body = "phone,name\n+1 415 555 2671,Ana\n+1 415 555 2672,Ben\n+1 415 555 2673,Cy\n"
    first = import_file(stack, store, key, body)
    assert outcomes(first) == {"imported": 3}

    # When the same file is uploaded again (a new version of the object)
    second = import_file(stack, store, key, body)

    # Then it is a second import, whose rows are all duplicates of what the campaign has
    assert second.import_id != first.import_id and second.version != first.version
    assert outcomes(second) == {"duplicate": 3}
    assert second.state == "completed_with_warnings"
    assert counts(stack, campaign_id) == {"imported": 3}
    assert campaign_status(stack, campaign_id)["rows_excluded"]["duplicate"] == 3


def test_dedupe_spans_files_and_lists_and_the_first_occurrence_wins(stack, store, campaign_id):
    # Given a first file in which one number appears twice
    new_campaign(stack, campaign_id)
    first = import_file(
        stack, store, f"imports/{campaign_id}/a.csv",
        "phone,name\n+1 415 555 2671,Ana\n+1 415 555 2672,Ben\n(415) 555-2671,Ana twice\n",
    )
    assert outcomes(first) == {"imported": 2, "duplicate": 1}

    # When a second file and a hand-made list repeat those numbers in other formats
    second = import_file(
        stack, store, f"imports/{campaign_id}/b.csv", "Mobile,Name\n415-555-2672,Ben again\n+1 415 555 2674,Dee\n"
    )
    listed = stack.command(
        {"command": "add_recipients", "campaign_id": campaign_id,
         "recipients": [{"phone": "+14155552671", "name": "Ana listed"}, {"phone": "+1 415 555 2675", "name": "Eve"}]}
    )

    # Then each later occurrence is a duplicate, and the recipient is the first occurrence, untouched
    assert outcomes(second) == {"imported": 1, "duplicate": 1}
    assert listed["ok"] and listed["result"]["outcomes"] == {"imported": 1, "duplicate": 1}
    recipients = recipients_of(store, campaign_id)
    assert sorted(recipients) == ["+14155552671", "+14155552672", "+14155552674", "+14155552675"]
    ana = recipients["+14155552671"]
    assert (ana.import_id, int(ana.row_number), ana.fields.as_dict()) == (first.import_id, 1, {"name": "Ana"})
    assert recipients["+14155552672"].fields.as_dict() == {"name": "Ben"}
    assert report_rows(stack, second.report_key)[1:] == [["1", "415-555-2672", "duplicate"]]
    assert counts(stack, campaign_id) == {"imported": 4}
    assert campaign_status(stack, campaign_id)["rows_excluded"]["duplicate"] == 3


# ------------------------------------------------------------------------------------------ each row
def test_a_country_column_overrides_the_campaign_region_and_other_columns_become_attributes(stack, store, campaign_id):
    # Given a US campaign and a file with national numbers of several countries
    new_campaign(stack, campaign_id, default_region="US")
    body = (
        "Mobile;Land;First Name;Kunden-Nr.;E-Mail Address\n"
        "0151 23456789;DE;J\u00fcrgen; K-1 ;j@example.com\n"
        "(212) 555-2671;;Al;K-2;\n"
        "06 12 34 56 78;fr;Chlo\u00e9;K-3;c@example.com\n"
        "0151 23456788;;No country;K-4;\n"
    )

    # When it is imported
    record = import_file(stack, store, f"imports/{campaign_id}/mixed.csv", body)

    # Then each row's country decided how its number was read; without one the campaign's region did
    assert outcomes(record) == {"imported": 3, "invalid:too_long": 1}
    recipients = recipients_of(store, campaign_id)
    assert {phone: r.region for phone, r in recipients.items()} == {
        "+4915123456789": "DE", "+12125552671": "US", "+33612345678": "FR",
    }
    # And every other column is an attribute with a merge-field name, its value trimmed
    assert recipients["+4915123456789"].fields.as_dict() == {
        "first_name": "J\u00fcrgen", "kunden_nr": "K-1", "e_mail_address": "j@example.com",
    }
    assert recipients["+12125552671"].fields.as_dict() == {"first_name": "Al", "kunden_nr": "K-2", "e_mail_address": ""}


def test_landlines_are_excluded_unless_the_campaign_allows_them(stack, store, campaign_id):
    # Given the same file for a campaign that excludes landlines and one that allows them
    strict = new_campaign(stack, campaign_id)
    lenient = new_campaign(stack, f"{campaign_id}-ll", allow_landlines=True)
    body = "phone,name\n+49 30 2000011,Office\n+49 151 23456789,Mobile\n+1 212 555 2671,Either\n"

    # When each imports it
    excluded = import_file(stack, store, f"imports/{strict}/people.csv", body)
    allowed = import_file(stack, store, f"imports/{lenient}/people.csv", body)

    # Then the landline is excluded as such from the first, and imported into the second
    assert outcomes(excluded) == {"imported": 2, "landline": 1}
    assert sorted(recipients_of(store, strict)) == ["+12125552671", "+4915123456789"]
    assert campaign_status(stack, strict)["rows_excluded"] == {"duplicate": 0, "invalid": 0, "landline": 1}
    assert report_rows(stack, excluded.report_key)[1:] == [["1", "'+49 30 2000011", "landline"]]
    assert outcomes(allowed) == {"imported": 3}
    assert recipients_of(store, lenient)["+49302000011"].line_type == "landline"


def test_a_suppression_file_blocklists_its_numbers_and_they_are_marked_at_import(stack, store, campaign_id):
    # Given a suppression file (numbers without a country code are read in the default region, US)
    tag = uuid.uuid4().hex[:8]
    blocked = import_file(
        stack, store, f"suppressions/blocklist-{tag}.csv",
        "phone,why\n+1 646 555 0101,complained\n(646) 555-0102,lawyer\nnot a number,?\n",
    )
    assert (blocked.state, outcomes(blocked)) == ("completed", {"imported": 2, "invalid:not_a_number": 1})
    for phone in ("+16465550101", "+16465550102"):
        suppression = store.suppression(phone)
        assert (suppression.reason, suppression.source, suppression.import_id) == ("blocklist", "import", blocked.import_id)

    # When a campaign imports those numbers among others
    new_campaign(stack, campaign_id)
    record = import_file(
        stack, store, f"imports/{campaign_id}/list.csv", "phone\n+1 646 555 0101\n+1 646 555 0103\n646-555-0102\n"
    )

    # Then they are recipients marked skipped (opted out) at import, counted apart from the imported one
    assert outcomes(record) == {"imported": 1, "suppressed": 2}
    recipients = recipients_of(store, campaign_id)
    assert {p: (r.status, r.failure_reason) for p, r in recipients.items()} == {
        "+16465550101": ("skipped_opted_out", "suppressed_at_import"),
        "+16465550102": ("skipped_opted_out", "suppressed_at_import"),
        "+16465550103": ("imported", None),
    }
    assert counts(stack, campaign_id) == {"imported": 1, "skipped_opted_out": 2}

    # And a second suppression file keeps the first reason for a number already suppressed
    again = import_file(stack, store, f"suppressions/more-{tag}.csv", "phone\n+16465550101\n")
    assert outcomes(again) == {"already_suppressed": 1}
    assert store.suppression("+16465550101").import_id == blocked.import_id


def test_a_tokens_file_adds_codes_to_the_pool_and_refuses_codes_that_exist_anywhere(stack, store, campaign_id):
    # Given two campaigns and a tokens file for the first
    other = new_campaign(stack, f"{campaign_id}-b")
    new_campaign(stack, campaign_id)
    tag = uuid.uuid4().hex[:10].upper()
    a1, a2, b1 = f"A{tag}01", f"A{tag}02", f"B{tag}01"
    first = import_file(
        stack, store, f"tokens/{campaign_id}/codes.csv",
        f"Code,batch\n{a1},1\n{a2},1\nab,1\nhas space,1\n{a1},2\n",
    )

    # Then valid codes are in the campaign's pool; short, malformed and repeated ones are refused
    assert outcomes(first) == {"imported": 2, "invalid_code": 2, "duplicate_code": 1}
    for code in (a1, a2):
        stored = store.t.codes.get(code, consistent_read=True)
        assert (stored.campaign_id, stored.pool_campaign_id) == (campaign_id, campaign_id)
    assert report_rows(stack, first.report_key)[1:] == [
        ["3", "ab", "invalid_code"], ["4", "has space", "invalid_code"], ["5", a1, "duplicate_code"],
    ]

    # When another campaign's tokens file brings a code that exists already
    second = import_file(stack, store, f"tokens/{other}/codes.csv", f"code\n{a2}\n{b1}\n")

    # Then that code is refused and stays in the first campaign's pool
    assert outcomes(second) == {"imported": 1, "duplicate_code": 1}
    assert store.t.codes.get(a2, consistent_read=True).pool_campaign_id == campaign_id
    assert store.t.codes.get(b1, consistent_read=True).pool_campaign_id == other


# ------------------------------------------------------------------------------------------ the outcome
def test_the_import_record_holds_state_progress_and_every_outcome_and_the_campaign_shows_counters(
    stack, store, campaign_id
):
    # Given a file with six usable rows and six unusable ones of every kind
    new_campaign(stack, campaign_id)
    body = (
        "phone,name\n"
        "+1 415 555 2671,a\n+1 415 555 2672,b\n+1 415 555 2673,c\n+1 415 555 2674,d\n+1 415 555 2675,e\n"
        "+1 415 555 2676,f\n"
        "415 555 2671,dup\n"
        "+49 30 2000012,landline\n"
        "call me,not a number\n"
        "12,too short\n"
        "+999 1234567,no such country\n"
        ",empty\n"
    )

    # When it is imported
    key = f"imports/{campaign_id}/every outcome.csv"
    record = import_file(stack, store, key, body)

    # Then the record holds where it came from, its final state, progress and a count per outcome
    assert (record.kind, record.source, record.campaign_id, record.key) == ("recipients", "s3", campaign_id, key)
    assert record.version and record.finished_at and not record.reason and not record.warning
    assert record.state == "completed"  # half the rows unusable is not yet "most"
    assert int(record.rows_processed) == 12
    assert outcomes(record) == {
        "imported": 6, "duplicate": 1, "landline": 1,
        "invalid:not_a_number": 1, "invalid:too_short": 1, "invalid:invalid_country_code": 1, "invalid:empty": 1,
    }
    # And the campaign's status command shows its counters
    status = campaign_status(stack, campaign_id)
    assert status["counts"]["imported"] == 6
    assert status["rows_excluded"] == {"duplicate": 1, "invalid": 4, "landline": 1}


def test_the_rejected_rows_report_lists_row_value_and_reason_safe_from_formula_injection(stack, store, campaign_id):
    # Given a file with rows a spreadsheet would run as formulas
    new_campaign(stack, campaign_id)
    body = (
        "phone,name\n"
        '"=HYPERLINK(""http://evil.example"",""win"")",x\n'
        "+1 (555),y\n"
        "+1 415 555 2671,ok\n"
        "@SUM(A1),z\n"
        "+1 415 555 2671,dup\n"
        "-1,w\n"
    )

    # When it is imported
    record = import_file(stack, store, f"imports/{campaign_id}/evil.csv", body)

    # Then the report, under reports/, lists each rejected row with its number, original value and reason
    assert record.report_key.startswith(f"reports/imports/{campaign_id}/evil-{record.import_id}")
    assert record.report_key.endswith("-rejected.csv")
    assert report_rows(stack, record.report_key) == [
        ["row", "value", "reason"],
        ["1", "'=HYPERLINK(\"http://evil.example\",\"win\")", "invalid:not_a_number"],
        ["2", "'+1 (555)", "invalid:too_short"],
        ["4", "'@SUM(A1)", "invalid:not_a_number"],
        ["5", "'+1 415 555 2671", "duplicate"],
        ["6", "'-1", "invalid:not_a_number"],
    ]
    # And the report's parts are gone, and writing it started no import
    parts = boto3.client("s3").list_objects_v2(Bucket=stack.bucket, Prefix=f"reports/imports/.parts/{record.import_id}/")
    assert parts.get("KeyCount", 0) == 0
    stack.router.drain()
    assert imports_with_key(store, record.report_key) == []


@pytest.mark.parametrize(
    ("body", "state", "message"),
    [
        (b"", "failed", "empty_file: the file is empty"),
        (b"\r\n\r\n", "failed", "empty_file: the file is empty"),
        (b"Phone;Name\r\n", "failed", "no_rows: the file has a header but no rows"),
        (b"name,email\nAl,al@example.com\n", "failed", "no_phone_column: no phone column in the header"),
        (b"PK\x03\x04\x14\x00\x06\x00" + bytes(range(256)) * 8, "failed", "binary_file: the file is not a CSV text file"),
        (b"phone\nnope\nn/a\n+14155552671\n12\n", "completed_with_warnings", "3 of 4 rows could not be used"),
    ],
    ids=["empty", "blank lines", "header only", "no phone column", "binary garbage", "mostly invalid"],
)
def test_a_bad_file_ends_as_a_record_with_a_plain_reason_never_a_stack_trace(
    stack, store, campaign_id, body, state, message
):
    new_campaign(stack, campaign_id)
    record = import_file(stack, store, f"imports/{campaign_id}/bad.csv", body)
    assert record.state == state
    said = record.reason if state == "failed" else record.warning
    assert said.startswith(message) and plain(said)
    if state == "failed":
        assert recipients_of(store, campaign_id) == {}


# ------------------------------------------------------------------------------------------ the phone column
WORK_FILE = "Name,Phone,Work\nAl,+1 212 555 0100,+1 917 555 0123\n"


def test_the_upload_metadata_names_the_phone_column(stack, store, campaign_id):
    # Given a file whose usual phone column is not the one to text
    new_campaign(stack, campaign_id)

    # When it is uploaded with metadata naming the column (x-amz-meta-phone-column)
    record = import_file(stack, store, f"imports/{campaign_id}/work.csv", WORK_FILE, metadata={"phone-column": "Work"})

    # Then that column is the number, and the usual one is an attribute
    assert outcomes(record) == {"imported": 1}
    assert record.phone_column == "Work"
    recipient = recipients_of(store, campaign_id)["+19175550123"]
    assert recipient.fields.as_dict() == {"name": "Al", "phone": "+1 212 555 0100"}


def test_the_campaigns_phone_column_names_the_column_when_the_upload_does_not(stack, store, campaign_id):
    new_campaign(stack, campaign_id, phone_column="work")
    record = import_file(stack, store, f"imports/{campaign_id}/work.csv", WORK_FILE)
    assert outcomes(record) == {"imported": 1}
    assert list(recipients_of(store, campaign_id)) == ["+19175550123"]


def test_a_named_phone_column_that_is_missing_fails_the_import_plainly(stack, store, campaign_id):
    new_campaign(stack, campaign_id)
    record = import_file(stack, store, f"imports/{campaign_id}/work.csv", WORK_FILE, metadata={"phone-column": "Cell 2"})
    assert record.state == "failed"
    assert record.reason == "no_phone_column: no phone column in the header (looked for Cell 2)"


# ------------------------------------------------------------------------------------------ lists and panels
def test_add_recipients_runs_the_same_pipeline_and_gives_the_same_kind_of_record(stack, store, campaign_id, event):
    # Given the console sample, pointed at a new campaign, with a duplicate, an invalid entry and a landline
    new_campaign(stack, campaign_id)
    command = {**event("command-add-recipients.json"), "campaign_id": campaign_id, "request_id": f"r-{campaign_id}"}
    command["recipients"] = command["recipients"] + [
        {"phone": "(415) 555-2671", "first_name": "Ana again"},
        {"phone": "=1+1", "First Name": "Mallory"},
        {"phone": "030 2000013", "country": "DE"},
    ]

    # When the command runs
    answer = stack.command(command)

    # Then the list went through the import pipeline: an import record with the same outcomes and report
    assert answer["ok"], answer
    summary = answer["result"]
    assert summary["state"] == "completed" and summary["rows"] == 6
    assert summary["outcomes"] == {"imported": 3, "duplicate": 1, "invalid:not_a_number": 1, "landline": 1}
    record = store.t.imports.get(summary["import_id"], consistent_read=True)
    assert (record.kind, record.source, record.campaign_id) == ("recipients", "manual", campaign_id)
    assert (record.state, outcomes(record), record.report_key) == ("completed", summary["outcomes"], summary["report_key"])
    assert report_rows(stack, record.report_key)[1:] == [
        ["4", "(415) 555-2671", "duplicate"], ["5", "'=1+1", "invalid:not_a_number"], ["6", "030 2000013", "landline"],
    ]
    # And attributes are normalised merge fields, countries read per entry
    recipients = recipients_of(store, campaign_id)
    assert sorted(recipients) == ["+14155552671", "+33612345678", "+4915123456789"]
    assert recipients["+14155552671"].fields.as_dict() == {"first_name": "Ana", "store": "Union Square"}
    assert counts(stack, campaign_id) == {"imported": 3}


def test_add_recipients_with_a_repeated_request_id_imports_once(stack, store, campaign_id):
    new_campaign(stack, campaign_id)
    command = {"command": "add_recipients", "campaign_id": campaign_id, "request_id": "retry-me",
               "recipients": [{"phone": "+1 415 555 2671"}, {"phone": "+1 415 555 2672"}]}
    first = stack.command(command)
    again = stack.command(command)
    assert first["ok"] and again["ok"]
    assert again["result"] == first["result"]
    assert first["result"]["outcomes"] == {"imported": 2}
    assert counts(stack, campaign_id) == {"imported": 2}
    assert len(list(store.t.imports.scan(store.t.imports.campaign_id == campaign_id))) == 1


def test_add_recipients_refuses_entries_without_a_phone_and_lists_their_indexes(stack, store, campaign_id):
    new_campaign(stack, campaign_id)
    answer = stack.command(
        {"command": "add_recipients", "campaign_id": campaign_id,
         "recipients": [{"phone": "+14155552671"}, {"name": "no phone"}, {"phone": "+14155552672"}, {"mobile": "+1415"}]}
    )
    assert answer["ok"] is False
    assert answer["error"]["code"] == "invalid_input"
    assert "missing at index 1, 3" in " ".join(answer["error"]["details"])
    # Nothing half-applied
    assert recipients_of(store, campaign_id) == {}
    assert list(store.t.imports.scan(store.t.imports.campaign_id == campaign_id)) == []


def test_add_recipients_accepts_the_phone_key_in_any_case(stack, store, campaign_id):
    # The validator accepts "Phone" as the phone; the import must read it as the phone too
    new_campaign(stack, campaign_id)
    answer = stack.command(
        {"command": "add_recipients", "campaign_id": campaign_id,
         "recipients": [{"Phone": "+1 415 555 2671", "Country": "US", "Name": "Ana"}, {"phone": "+1 415 555 2672"}]}
    )
    assert answer["ok"], answer
    assert answer["result"]["outcomes"] == {"imported": 2}
    recipients = recipients_of(store, campaign_id)
    assert recipients["+14155552671"].fields.as_dict() == {"name": "Ana"}


def test_add_recipients_for_an_unknown_campaign_is_a_clear_error(stack):
    answer = stack.command({"command": "add_recipients", "campaign_id": "no-such-campaign",
                            "recipients": [{"phone": "+14155552671"}]})
    assert answer == {"ok": False, "error": {"code": "not_found", "message": "campaign no-such-campaign does not exist"}}


def test_add_panel_adds_a_panels_members_through_the_same_pipeline_per_campaign(stack, store, campaign_id, event, suppress):
    # Given a panel uploaded under panels/ (a repeated member and an invalid one are left out of it)
    panel_id = f"panel-{campaign_id}"
    members = import_file(
        stack, store, f"panels/{panel_id}/members.csv",
        "Mobile,Country,First Name\n"
        "+1 917 555 0101,,Ana\n0151 23456777,DE,Ben\n030 2000014,DE,Office\n"
        "+1 917 555 0199,,Suppressed\n(917) 555-0101,,Ana twice\nxyz,,Nobody\n+1 917 555 0102,,Cy\n",
    )
    assert outcomes(members) == {"imported": 5, "duplicate": 1, "invalid:not_a_number": 1}
    # And a number on the suppression list, a campaign that has one member already, and one that allows landlines
    suppress(store, "+19175550199")
    new_campaign(stack, campaign_id)
    added = stack.command({"command": "add_recipients", "campaign_id": campaign_id,
                           "recipients": [{"phone": "+1 917 555 0102", "first_name": "Cy first"}]})
    assert added["result"]["outcomes"] == {"imported": 1}
    lenient = new_campaign(stack, f"{campaign_id}-ll", allow_landlines=True)

    # When the panel is added to each campaign (the console sample, pointed at them)
    sample = event("command-add-panel.json")
    strict_answer = stack.command({**sample, "campaign_id": campaign_id, "panel_id": panel_id, "request_id": "p1"})
    lenient_answer = stack.command({**sample, "campaign_id": lenient, "panel_id": panel_id, "request_id": "p1"})

    # Then each campaign applied its own dedupe, suppression and landline rules, with an import record
    assert strict_answer["ok"] and lenient_answer["ok"], (strict_answer, lenient_answer)
    assert strict_answer["result"]["outcomes"] == {"imported": 2, "duplicate": 1, "landline": 1, "suppressed": 1}
    assert lenient_answer["result"]["outcomes"] == {"imported": 4, "suppressed": 1}
    record = store.t.imports.get(strict_answer["result"]["import_id"], consistent_read=True)
    assert (record.kind, record.source, record.panel_id, record.state) == ("recipients", "panel", panel_id, "completed")
    recipients = recipients_of(store, campaign_id)
    assert recipients["+4915123456777"].fields.as_dict() == {"first_name": "Ben"}
    assert recipients["+19175550102"].fields.as_dict() == {"first_name": "Cy first"}  # the first occurrence
    assert recipients["+19175550199"].status == "skipped_opted_out"
    assert counts(stack, campaign_id) == {"imported": 3, "skipped_opted_out": 1}
    assert campaign_status(stack, campaign_id)["rows_excluded"] == {"duplicate": 1, "invalid": 0, "landline": 1}
    assert recipients_of(store, lenient)["+49302000014"].line_type == "landline"


def test_add_panel_with_an_unknown_panel_is_a_clear_error(stack, store, campaign_id):
    new_campaign(stack, campaign_id)
    answer = stack.command({"command": "add_panel", "campaign_id": campaign_id, "panel_id": "nobody-here"})
    assert answer["ok"] is False
    assert answer["error"]["code"] == "not_found"
    assert "panels/nobody-here/" in answer["error"]["message"]
    assert list(store.t.imports.scan(store.t.imports.campaign_id == campaign_id)) == []


# ------------------------------------------------------------------------------------------ large files
@dataclass
class Audience:
    """A generated file and what importing it must give, worked out from how it was generated."""

    body: bytes
    rows: int
    outcomes: Counter = field(default_factory=Counter)
    first_rows: dict = field(default_factory=dict)  # e164 -> the row number of its first occurrence
    suppressed: set = field(default_factory=set)


def generated_audience(rows: int, base: int) -> Audience:
    """Mobiles +49151<8 digits> in three formats, repeats (near and far back), invalid values, landlines,
    suppressed numbers, multi-byte names, quoted names with a newline, and blank lines that are not rows."""
    audience = Audience(b"", rows)
    lines = ["Mobile,Name,Country"]
    for i in range(rows):
        number = i + 1
        kind = i % 10
        name = f"n{i}"
        if kind == 3:
            value, country, e164 = "n/a", "", None
            audience.outcomes["invalid:not_a_number"] += 1
        elif kind == 7:
            value, country, e164 = f"+49 30 2{i:06d}", "", None
            audience.outcomes["landline"] += 1
        elif kind == 5:
            earlier = i - 905 if i % 1000 == 995 else i - 5  # a row of kind 0, near or several checkpoints back
            value, country, e164 = f"+49-151-{base + earlier:08d}", "", f"+49151{base + earlier:08d}"
            audience.outcomes["duplicate"] += 1
        else:
            k = base + i
            e164 = f"+49151{k:08d}"
            value, country = (f"0151 {k:08d}", "DE") if i % 2 else (f"+49 151 {k:08d}", "")
            if i % 100 == 49:
                audience.suppressed.add(e164)
                audience.outcomes["suppressed"] += 1
            else:
                audience.outcomes["imported"] += 1
            audience.first_rows[e164] = number
            if i % 30 == 9:
                name = f'"J\u00fcrgen ""{i}""\nsecond line"'
            elif i % 7 == 1:
                name = f"Chlo\u00e9 \u674e {i}"
        lines.append(f"{value},{name},{country}")
        if i % 997 == 500:
            lines.append("")
    audience.body = ("\r\n".join(lines) + "\r\n").encode("utf-8")
    return audience


def suppress_all(store, phones) -> None:
    with store.t.suppressions.batch_write() as batch:
        for phone in phones:
            batch.save(store.t.suppressions(store.phone_key(phone), phone=phone, reason="opted_out", source="test", created_at=utcnow()))


def assert_imported_exactly(stack, store, campaign_id: str, record, audience: Audience) -> None:
    assert record.state == "completed", (record.reason, record.warning)
    assert int(record.rows_processed) == audience.rows
    assert outcomes(record) == dict(audience.outcomes)
    # Each number is one recipient, from its first row, with the right status: nothing lost, nothing twice
    stored = {
        r.phone: (int(r.row_number), r.status)
        for r in store.t.recipients.query(
            campaign_id, consistent_read=True, attributes_to_get=["phone", "row_number", "status"]
        )
    }
    assert stored == {
        phone: (row, "skipped_opted_out" if phone in audience.suppressed else "imported")
        for phone, row in audience.first_rows.items()
    }
    # The campaign's counters agree
    status = campaign_status(stack, campaign_id)
    assert {k: v for k, v in status["counts"].items() if v} == {
        "imported": audience.outcomes["imported"], "skipped_opted_out": audience.outcomes["suppressed"],
    }
    assert status["rows_excluded"] == {
        "duplicate": audience.outcomes["duplicate"], "invalid": audience.outcomes["invalid:not_a_number"],
        "landline": audience.outcomes["landline"],
    }
    # And the rejected-rows report lists every rejected row once
    rejected = report_rows(stack, record.report_key)[1:]
    numbers = [int(row[0]) for row in rejected]
    assert numbers == sorted(numbers)
    assert len(numbers) == len(set(numbers)) == (
        audience.outcomes["duplicate"] + audience.outcomes["landline"] + audience.outcomes["invalid:not_a_number"]
    )
    assert Counter(row[2] for row in rejected) == {
        reason: audience.outcomes[reason] for reason in ("duplicate", "landline", "invalid:not_a_number")
    }


@pytest.fixture
def tiny_timeout(stack, monkeypatch):
    """The import function gets 1.5 s per invocation and checkpoints every 500 rows."""
    monkeypatch.setitem(stack.router.timeout_override, "ImportFunction", 1.5)
    monkeypatch.setenv("IMPORT_CHECKPOINT_ROWS", "500")


def continuations(stack) -> int:
    return len(stack.router.invocations_of("ImportFunction", "SQS"))


def test_a_large_file_resumes_across_many_invocations_with_exact_counts(stack, store, campaign_id, tiny_timeout):
    # Given a generated 20,000-row file and its suppressed numbers
    audience = generated_audience(20_000, base=70_000_000)
    suppress_all(store, audience.suppressed)
    new_campaign(stack, campaign_id)
    before = continuations(stack)

    # When it is dropped while each invocation has only 1.5 s
    record = import_file(stack, store, f"imports/{campaign_id}/everyone.csv", audience.body, timeout=90)

    # Then it took many invocations, each resuming where the last checkpoint left off, with exact counts
    assert continuations(stack) - before >= 5
    assert_imported_exactly(stack, store, campaign_id, record, audience)


class CutOffs:
    """Make chosen calls fail as if the invocation died there; each fails once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: Counter = Counter()
        self.fired: list[str] = []

    def wrap(self, monkeypatch, owner, name: str, *, on_call: int, after: bool, when=lambda *a, **k: True) -> None:
        original = getattr(owner, name)
        label = f"{owner.__name__}.{name}#{on_call}{' after' if after else ' before'}"

        def cut(*args, **kwargs):
            if not when(*args, **kwargs):
                return original(*args, **kwargs)
            with self.lock:
                self.calls[name] += 1
                fire = self.calls[name] == on_call
            if fire and not after:
                self.fired.append(label)
                raise RuntimeError(f"cut off: {label}")
            result = original(*args, **kwargs)
            if fire:
                self.fired.append(label)
                raise RuntimeError(f"cut off: {label}")
            return result

        monkeypatch.setattr(owner, name, cut)


def test_an_import_cut_off_at_arbitrary_points_resumes_without_counting_a_row_twice(
    stack, store, campaign_id, tiny_timeout, monkeypatch
):
    # Given a generated 8,000-row file, and invocations that die at four points:
    audience = generated_audience(8_000, base=80_000_000)
    suppress_all(store, audience.suppressed)
    new_campaign(stack, campaign_id)
    cuts = CutOffs()
    import_queue = stack.queue_url("ImportQueue")
    # - just after handing the import over to a new invocation (so the retried one and the new one race),
    cuts.wrap(monkeypatch, Queue, "send", on_call=2, after=True, when=lambda queue, *a, **k: queue.url == import_queue)
    # - after a batch of rows was written, before the checkpoint that would count it,
    cuts.wrap(monkeypatch, DynamoBatches, "put", on_call=30, after=True)
    # - just after a checkpoint was saved,
    cuts.wrap(monkeypatch, ImportRunner, "_checkpoint", on_call=6, after=True)
    # - and after the last checkpoint, before the import is marked complete.
    cuts.wrap(monkeypatch, ImportRunner, "_complete", on_call=1, after=False)

    # When it is dropped, and SQS redelivers each failed invocation
    record = import_file(stack, store, f"imports/{campaign_id}/cut.csv", audience.body, timeout=90)

    # Then every cut-off happened, and the counts are still exact: no row lost, none counted twice
    assert sorted(cuts.fired) == sorted(
        [
            "Queue.send#2 after", "DynamoBatches.put#30 after",
            "ImportRunner._checkpoint#6 after", "ImportRunner._complete#1 before",
        ]
    )
    assert_imported_exactly(stack, store, campaign_id, record, audience)


# ------------------------------------------------------------------------------------------ what a file may hold
def lease_of(store, campaign_id: str):
    """The campaign's import lease, read from the raw table."""
    return store.t.campaigns.get(campaign_id, consistent_read=True).import_lease


def a_second_import_runs(stack, store, campaign_id: str) -> None:
    record = import_file(stack, store, f"imports/{campaign_id}/next-{uuid.uuid4().hex[:6]}.csv", "phone\n+1 212 555 0199\n")
    assert (record.state, outcomes(record)) == ("completed", {"imported": 1})


def test_a_row_too_large_to_store_is_rejected_alone_and_the_rest_of_the_file_imports(stack, store, campaign_id):
    # Given a file whose third row is 500 KB (five 100 KB columns: more than a DynamoDB item may hold)
    new_campaign(stack, campaign_id)
    big = ",".join(["y" * 100_000] * 5)
    body = (
        "phone,a,b,c,d,e\n+1 415 555 2671,1,2,3,4,5\n+1 415 555 2672,1,2,3,4,5\n"
        f"+1 415 555 2673,{big}\n+1 415 555 2674,1,2,3,4,5\n+1 415 555 2675,1,2,3,4,5\n"
    )

    # When it is dropped into the bucket
    record = import_file(stack, store, f"imports/{campaign_id}/wide.csv", body)

    # Then that row alone is rejected as too large, and the rest is imported (the raw table holds them)
    assert (record.state, outcomes(record)) == ("completed", {"imported": 4, "row_too_large": 1})
    assert sorted(recipients_of(store, campaign_id)) == ["+14155552671", "+14155552672", "+14155552674", "+14155552675"]
    assert report_rows(stack, record.report_key)[1:] == [["3", "", "row_too_large"]]
    # And the campaign is free for the next import
    assert lease_of(store, campaign_id) is None
    a_second_import_runs(stack, store, campaign_id)


@pytest.mark.parametrize(
    "header",
    ["phone," + "h" * (130 * 1024), "phone," + ",".join(f"column {i:06d}" for i in range(10_000))],
    ids=["one name over 128 KiB", "ten thousand columns"],
)
def test_a_header_line_too_large_fails_the_file_plainly_and_frees_the_campaign(stack, store, campaign_id, header):
    # Given a file whose header line is over 128 KiB
    new_campaign(stack, campaign_id)
    body = header + "\n+1 415 555 2671\n"

    # When it is dropped into the bucket
    record = import_file(stack, store, f"imports/{campaign_id}/wide-header.csv", body)

    # Then the import failed, saying why, nothing was imported, and the campaign is free
    assert record.state == "failed"
    assert record.reason == "header_too_large: the header line is over 65536 bytes" and plain(record.reason)
    assert recipients_of(store, campaign_id) == {}
    assert lease_of(store, campaign_id) is None
    a_second_import_runs(stack, store, campaign_id)


def test_a_32_mb_line_without_a_newline_is_one_rejected_row_after_the_rows_before_it(stack, store, campaign_id):
    # Given two good rows, then 32 MiB without a newline
    new_campaign(stack, campaign_id)
    body = b"phone,name\n+1 415 555 2671,Ana\n+1 415 555 2672,Ben\n" + b"x" * (32 * 1024 * 1024)

    # When it is dropped into the bucket
    record = import_file(stack, store, f"imports/{campaign_id}/runaway.csv", body, timeout=60)

    # Then the long line is one row, rejected as too large, and the rows before it are imported
    assert (record.state, outcomes(record)) == ("completed", {"imported": 2, "row_too_large": 1})
    assert sorted(recipients_of(store, campaign_id)) == ["+14155552671", "+14155552672"]
    assert lease_of(store, campaign_id) is None
    a_second_import_runs(stack, store, campaign_id)


def test_a_flood_of_blank_lines_hands_over_within_the_time_budget(stack, store, campaign_id, tiny_timeout):
    # Given a row, three million lines that hold no row (separators and spaces), and a last row,
    # while each invocation of the import function has only 1.5 s
    new_campaign(stack, campaign_id)
    body = b"phone,name\r\n+1 415 555 2671,Ana\r\n" + b", \r\n" * 3_000_000 + b"+1 415 555 2672,Ben\r\n"
    started = time.time()

    # When it is dropped into the bucket
    record = import_file(stack, store, f"imports/{campaign_id}/blank.csv", body, timeout=90)

    # Then both rows are imported
    assert (record.state, int(record.rows_processed), outcomes(record)) == ("completed", 2, {"imported": 2})
    # And the blank stretch was read in several invocations, each handing over before its time ran out
    steps = [i for i in stack.router.invocations_of("ImportFunction", "SQS") if i.started_at >= started]
    assert len(steps) >= 3
    assert max(step.duration for step in steps) < 1.5 + 0.75, [round(step.duration, 2) for step in steps]


def test_add_recipients_with_a_500_kb_value_is_refused_before_anything_is_written(stack, store, campaign_id):
    # Given a campaign
    new_campaign(stack, campaign_id)

    # When a list is added whose second entry carries a 500 KB attribute
    answer = stack.command(
        {"command": "add_recipients", "campaign_id": campaign_id,
         "recipients": [{"phone": "+1 415 555 2671"}, {"phone": "+1 415 555 2672", "notes": "n" * 500_000}]}
    )

    # Then it is refused, naming the entry and the limit
    assert answer["ok"] is False and answer["error"]["code"] == "invalid_input", answer
    details = " ".join(answer["error"]["details"])
    assert "entry 1" in details and "65536" in details
    # And nothing was written: no import record, no list in the bucket, no recipient
    assert list(store.t.imports.scan(store.t.imports.campaign_id == campaign_id, consistent_read=True)) == []
    listed = boto3.client("s3").list_objects_v2(Bucket=stack.bucket, Prefix=f"commands/recipients/{campaign_id}/")
    assert listed.get("KeyCount", 0) == 0
    assert recipients_of(store, campaign_id) == {}


def test_an_import_that_fails_on_every_attempt_ends_failed_with_a_reason_and_frees_the_campaign(
    stack, store, campaign_id, monkeypatch
):
    # Given a campaign, and a fault that makes every step of its imports fail (a dependency that keeps refusing)
    new_campaign(stack, campaign_id)
    failing = {"on": True}
    process = RecipientSink.process

    def refuse(sink, rows):
        if failing["on"] and sink.campaign.campaign_id == campaign_id:
            raise RuntimeError("a dependency refused")
        return process(sink, rows)

    monkeypatch.setattr(RecipientSink, "process", refuse)
    dead_letters = stack.queue_url("ImportQueueDeadLetterQueue")
    before = dead_letter_count(dead_letters)

    # When a file is dropped, and the import queue delivers its step again and again
    record = import_file(stack, store, f"imports/{campaign_id}/doomed.csv", "phone\n+1 415 555 2671\n", timeout=60)

    # Then the import ends failed with a plain reason, holds no lease, and its message is not dead-lettered
    assert record.state == "failed"
    assert record.reason.startswith("internal_error: ") and "RuntimeError" in record.reason and plain(record.reason)
    assert lease_of(store, campaign_id) is None
    assert dead_letter_count(dead_letters) == before
    # And once the fault is gone, the next import of the campaign runs
    failing["on"] = False
    a_second_import_runs(stack, store, campaign_id)


def dead_letter_count(queue_url: str) -> int:
    attributes = boto3.client("sqs").get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])
