"""Campaign commands end to end on the local stack: prepare, approve, pause, resume, cancel, schedules, recurrence."""

import csv
import io
import time
from datetime import datetime, timedelta, timezone

import boto3
import pytest

from local.demo import NO_QUIET_HOURS, command, prepare, prepare_and_approve, wait_for
from smsinvite.observability import mask_phone

TEMPLATE = "Hi {first_name|there}, tell us how we did: {link}"


def create(stack, campaign_id, **fields):
    return command(
        stack,
        {
            "command": "create_campaign",
            "campaign_id": campaign_id,
            "name": "E2E",
            "survey_url": "https://survey.example.com/s/e2e",
            "message_template": TEMPLATE,
            "rate_per_second": 5,
            "quiet_hours": NO_QUIET_HOURS,
            **fields,
        },
    )


def add(stack, campaign_id, phones, request_id="list"):
    people = [{"phone": phone, "first_name": f"P{i}"} for i, phone in enumerate(phones)]
    return command(stack, {"command": "add_recipients", "campaign_id": campaign_id, "recipients": people, "request_id": request_id})


def numbers(first, n):
    return [f"+1415555{first + i:04d}" for i in range(n)]


def status(stack, campaign_id):
    return command(stack, {"command": "status", "campaign_id": campaign_id})


def refused(stack, payload):
    answer = stack.command(payload)
    assert answer["ok"] is False
    return answer["error"]


def sent_to(stack, phones):
    return sum(len(stack.twilio.created(to=phone)) for phone in phones)


def completed(stack, campaign_id, timeout=60):
    return wait_for(
        lambda: (lambda s: s if s["state"] == "completed" else None)(status(stack, campaign_id)),
        timeout=timeout,
        what=f"campaign {campaign_id} to complete",
        interval=0.2,
    )


def test_a_campaign_goes_from_draft_to_completed_and_reports_and_exports_every_recipient(stack, campaign_id):
    # Given a draft campaign with three people
    phones = numbers(2000, 3)
    assert create(stack, campaign_id)["state"] == "draft"
    add(stack, campaign_id, phones)

    # When it is prepared, then approved
    preview = prepare_and_approve(stack, campaign_id)

    # Then the preview said exactly what went out, and every one was texted once
    assert preview["audience"]["eligible"] == 3
    final = completed(stack, campaign_id)
    assert sent_to(stack, phones) == 3
    assert final["progress"] == {"total": 3, "done": 3}
    texts = [m.body for phone in phones for m in stack.twilio.created(to=phone)]
    assert all("/i/" in text and text.endswith("Reply STOP to opt out") for text in texts)

    # And the report and the export account for each of them
    report = command(stack, {"command": "report", "campaign_id": campaign_id})
    assert report["state"] == "completed" and report["preview"]["eligible"] == 3
    assert report["funnel"] == {"audience": 3, "excluded": 0, "sent": 3, "delivered": 3, "failed": 0, "unresolved": 0,
                                "clicked": 0, "redeemed": 0, "completed": 0}
    exported = command(stack, {"command": "export", "campaign_id": campaign_id})
    assert exported["key"].startswith(f"reports/campaigns/{campaign_id}/") and exported["rows"] == 3
    rows = exported_rows(stack, exported)
    assert sorted(row["phone"] for row in rows) == sorted(f"'{mask_phone(p)}" for p in phones)  # masked, formula-safe
    assert {row["first_name"] for row in rows} == {"P0", "P1", "P2"}

    # And numbers appear in full only when asked for
    full = exported_rows(stack, command(stack, {"command": "export", "campaign_id": campaign_id, "full_numbers": True}))
    assert sorted(row["phone"] for row in full) == sorted(f"'{p}" for p in phones)


def exported_rows(stack, exported) -> list[dict]:
    body = boto3.client("s3").get_object(Bucket=stack.bucket, Key=exported["key"])["Body"].read().decode()
    return list(csv.DictReader(io.StringIO(body)))


def test_refused_transitions_are_one_clear_error_and_change_nothing(stack, campaign_id):
    create(stack, campaign_id)
    add(stack, campaign_id, numbers(2100, 1))

    assert "prepare it first" in refused(stack, {"command": "approve", "campaign_id": campaign_id})["message"]
    assert refused(stack, {"command": "pause", "campaign_id": campaign_id})["code"] == "invalid_transition"
    assert refused(stack, {"command": "resume", "campaign_id": campaign_id})["code"] == "invalid_transition"
    assert refused(stack, {"command": "prepare", "campaign_id": "no-such-campaign"})["code"] == "not_found"
    assert status(stack, campaign_id)["state"] == "draft"

    # A campaign that is sending can no longer be edited or prepared
    prepare_and_approve(stack, campaign_id)
    completed(stack, campaign_id)
    update = {"command": "update_campaign", "campaign_id": campaign_id, "message_template": "New {link}"}
    assert "it is completed" in refused(stack, update)["message"]
    assert refused(stack, {"command": "cancel", "campaign_id": campaign_id})["code"] == "invalid_transition"


def test_a_change_after_prepare_makes_approve_refuse_until_prepared_again(stack, campaign_id):
    create(stack, campaign_id)
    add(stack, campaign_id, numbers(2200, 2))
    prepare(stack, campaign_id)

    # When the message changes after prepare, the campaign is a draft again and approve is refused
    changed = command(stack, {"command": "update_campaign", "campaign_id": campaign_id, "message_template": "Hello {link}"})
    assert changed["state"] == "draft"
    assert refused(stack, {"command": "approve", "campaign_id": campaign_id})["code"] == "invalid_transition"

    # When someone is added after a fresh prepare, approve says to prepare again
    prepare(stack, campaign_id)
    add(stack, campaign_id, numbers(2210, 1), request_id="late")
    assert "prepare again" in refused(stack, {"command": "approve", "campaign_id": campaign_id})["message"]
    assert status(stack, campaign_id)["prepared_is_current"] is False

    # Then, prepared again, the new message goes to all three
    prepare_and_approve(stack, campaign_id)
    completed(stack, campaign_id)
    assert all(m.body.startswith("Hello ") for p in numbers(2200, 2) for m in stack.twilio.created(to=p))


@pytest.fixture
def slow_twilio(twilio):
    twilio.faults.latency = 0.15
    yield twilio
    twilio.faults.latency = 0.0


def sending_thirty(stack, campaign_id, *, first):
    """An approved campaign of 30 whose first few messages have gone out."""
    phones = numbers(first, 30)
    create(stack, campaign_id)
    add(stack, campaign_id, phones)
    prepare_and_approve(stack, campaign_id)
    wait_for(lambda: sent_to(stack, phones) >= 3, timeout=30, what="the first messages")
    return phones


def test_pause_holds_the_rest_and_resume_sends_it_once(stack, slow_twilio, campaign_id):
    # Given a campaign of 30 being sent slowly
    phones = sending_thirty(stack, campaign_id, first=2300)

    # When it is paused, nothing more is sent (beyond the creates already under way)
    command(stack, {"command": "pause", "campaign_id": campaign_id})
    time.sleep(1.0)
    at_pause = sent_to(stack, phones)
    time.sleep(1.5)
    assert sent_to(stack, phones) == at_pause < 30
    assert status(stack, campaign_id)["state"] == "paused"

    # When it is resumed, the rest is sent and nobody is texted twice
    command(stack, {"command": "resume", "campaign_id": campaign_id})
    completed(stack, campaign_id)
    assert [len(stack.twilio.created(to=p)) for p in phones] == [1] * 30


def test_cancel_means_whatever_is_left_is_never_sent(stack, slow_twilio, campaign_id):
    phones = sending_thirty(stack, campaign_id, first=2400)

    command(stack, {"command": "cancel", "campaign_id": campaign_id})
    counts = wait_for(
        lambda: (lambda c: c if c["imported"] == 0 and c["claimed"] == 0 else None)(status(stack, campaign_id)["counts"]),
        timeout=30,
        what="everyone left to be cancelled",
    )
    sent = sent_to(stack, phones)
    time.sleep(1.0)

    assert sent_to(stack, phones) == sent < 30
    assert counts["cancelled"] == 30 - sent
    assert status(stack, campaign_id)["state"] == "cancelled"


def test_a_scheduled_campaign_starts_at_its_time_through_the_scheduler(stack, campaign_id):
    phones = numbers(2500, 2)
    start_at = datetime.now(timezone.utc) + timedelta(seconds=3)
    create(stack, campaign_id, start_at=start_at.isoformat())
    add(stack, campaign_id, phones)
    prepare(stack, campaign_id)

    approved = command(stack, {"command": "approve", "campaign_id": campaign_id})
    assert approved["state"] == "scheduled"
    stack.router.fire_schedule("SchedulerFunction")
    assert status(stack, campaign_id)["state"] == "scheduled" and sent_to(stack, phones) == 0

    time.sleep(max(0.0, (start_at - datetime.now(timezone.utc)).total_seconds()) + 0.2)
    tick = stack.router.fire_schedule("SchedulerFunction")
    assert tick["campaigns"].get("started") == 1
    completed(stack, campaign_id)
    assert sent_to(stack, phones) == 2


def test_a_recurring_campaign_invites_only_people_new_to_its_audience(stack, store, campaign_id):
    # Given a daily campaign whose first run texted two people
    first, newcomer = numbers(2600, 2), numbers(2610, 1)
    create(stack, campaign_id, recurrence={"every": "1d", "max_runs": 3})
    add(stack, campaign_id, first)
    prepare_and_approve(stack, campaign_id)
    waiting = wait_for(
        lambda: (lambda s: s if s["state"] == "waiting" else None)(status(stack, campaign_id)),
        timeout=60,
        what="the first run to end",
    )
    assert waiting["run"] == 1

    # When someone new joins and the next run comes due
    add(stack, campaign_id, newcomer + first, request_id="day-2")
    campaigns = store.t.campaigns
    campaigns(campaign_id).update(actions=[campaigns.due_at.set(datetime.now(timezone.utc).isoformat())])
    tick = stack.router.fire_schedule("SchedulerFunction")

    # Then the run prepares itself and texts only the newcomer
    assert tick["campaigns"].get("run_started") == 1
    wait_for(lambda: sent_to(stack, newcomer) == 1, timeout=30, what="the newcomer's invitation")
    wait_for(lambda: status(stack, campaign_id)["state"] == "waiting", timeout=30, what="the second run to end")
    assert sent_to(stack, first) == 2  # once each, in the first run
    assert status(stack, campaign_id)["run"] == 2
