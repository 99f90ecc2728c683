"""`make demo`: the main job end to end on the embedded default, narrated step by step.

A CSV is dropped into the bucket; the import function stores its recipients; a dispatch fans them
out to the send queue; the sender texts each through the Twilio simulator; the simulator's signed
status callbacks reach the status webhook, which moves each message forward to its final status.
The same flow is the end-to-end test's (tests/e2e), so what the demo shows is what is tested.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import boto3

from local.stack import LocalStack, StackOptions
from smsinvite.observability import mask_phone
from smsinvite.settings import Settings
from smsinvite.store import Store

CAMPAIGN_ID = "spring-nps"
DEMO_CSV = (
    "\ufeffFirst Name;Mobile;Country\r\n"
    "Ana;+1 415 555 2671;US\r\n"
    "Ben;0151 23456789;DE\r\n"
    "Chloé;06 12 34 56 78;FR\r\n"
    "Dev;+1 (415) 555-2671;US\r\n"  # the same person as Ana: a duplicate
    "Eve;030 1234567;DE\r\n"  # a landline
    "Finn;not a number;US\r\n"
    "Gus;+44 7911 123456;GB\r\n"
)
UNDELIVERED_NUMBER = "+447911123456"  # the simulator's carrier reports this one unreachable


@dataclass
class ThinPathResult:
    import_summary: dict = field(default_factory=dict)
    campaign: dict = field(default_factory=dict)
    twilio_creates: int = 0
    callbacks_posted: int = 0
    statuses: dict[str, str] = field(default_factory=dict)


def wait_for(condition: Callable[[], object], *, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def run_thin_path(stack: LocalStack, say: Callable[[str], None] = lambda _: None) -> ThinPathResult:
    result = ThinPathResult()
    store = Store(Settings.from_env())
    stack.twilio.set_outcome(UNDELIVERED_NUMBER, "undelivered", 30003)

    say("1. create a campaign (the commands function)")
    created = stack.command(
        {
            "command": "create_campaign",
            "campaign_id": CAMPAIGN_ID,
            "name": "Spring NPS",
            "survey_url": "https://survey.example.com/s/spring",
            "message_template": "Hi {first_name|there}, tell us how we did: {link} Reply STOP to opt out",
            "default_region": "US",
        }
    )
    if not created["ok"]:
        raise RuntimeError(f"create_campaign failed: {created['error']}")
    say(f"   campaign {CAMPAIGN_ID!r} created")

    key = f"imports/{CAMPAIGN_ID}/customers march (1).csv"
    say(f"2. drop a CSV into s3://{stack.bucket}/{key}")
    boto3.client("s3").put_object(Bucket=stack.bucket, Key=key, Body=DEMO_CSV.encode("utf-8"))
    record = wait_for(lambda: _finished_import(store, CAMPAIGN_ID), timeout=30, what="the import to finish")
    result.import_summary = {"state": record.state, "rows": record.rows_processed, **record.outcomes.as_dict()}
    say(f"   import {record.state}: {record.rows_processed} rows -> {_outcomes(record.outcomes.as_dict())}")

    say("3. dispatch: the audience fans out to the send queue (approve will send this request)")
    boto3.client("sqs").send_message(
        QueueUrl=stack.queue_url("DispatchQueue"), MessageBody=f'{{"campaign_id": "{CAMPAIGN_ID}"}}'
    )
    imported = int(record.outcomes.as_dict().get("imported", 0))
    wait_for(lambda: len(stack.twilio.created()) >= imported, timeout=60, what="every invitation to reach Twilio")
    result.twilio_creates = len(stack.twilio.created())
    say(f"4. the sender texted {result.twilio_creates} recipients through the Twilio simulator")

    def final_statuses():
        recipients = list(store.t.recipients.query(CAMPAIGN_ID, consistent_read=True))
        statuses = {r.phone: r.status for r in recipients}
        return statuses if all(s in ("delivered", "undelivered", "failed") for s in statuses.values()) else None

    result.statuses = wait_for(final_statuses, timeout=60, what="the status callbacks")
    result.callbacks_posted = len(stack.twilio.callback_log)
    say(f"5. {result.callbacks_posted} signed status callbacks reached POST /twilio/status:")
    for phone, status in sorted(result.statuses.items()):
        say(f"   {mask_phone(phone):<16} {status}")

    status = stack.command({"command": "status", "campaign_id": CAMPAIGN_ID})
    result.campaign = status["result"]
    return result


def _finished_import(store: Store, campaign_id: str):
    for record in store.t.imports.scan(store.t.imports.campaign_id == campaign_id):
        if record.state != "running":
            return record
    return None


def _outcomes(outcomes: dict) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(outcomes.items()))


def main() -> int:
    started = time.monotonic()
    print("smsinvite demo: the thin path on the embedded default (moto, DynamoDB Local, Twilio simulator)\n")
    with LocalStack(StackOptions()) as stack:
        print(f"local stack up: DynamoDB engine {stack.services.engine}, API {stack.api_url}\n")
        result = run_thin_path(stack, say=print)
    counts = {name: n for name, n in result.campaign["counts"].items() if n}
    print("\nSummary")
    print(f"  rows in the CSV         {result.import_summary['rows']}")
    print(f"  imported / rejected     {result.import_summary.get('imported', 0)} / "
          f"{result.import_summary['rows'] - result.import_summary.get('imported', 0)}")
    print(f"  Twilio messages created {result.twilio_creates}")
    print(f"  status callbacks        {result.callbacks_posted}")
    print(f"  campaign counters       {_outcomes(counts)}")
    print(f"  took                    {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
