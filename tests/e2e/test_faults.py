"""The promises under the faults Twilio and AWS really produce, on the whole local stack.

Witnesses: the Twilio simulator's ledger (every create Twilio really made), the raw recipient table,
the dead-letter queues. Timings are the settings', shortened: a grace of 1 s, a confirmation delay of
3 s, final statuses fetched 3 s after the send.
"""

import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from urllib.parse import urlencode

import boto3
import pytest
import requests
from twilio.request_validator import RequestValidator

from local.demo import NO_QUIET_HOURS, command, prepare, prepare_and_approve, wait_for
from local.stack import LocalStack, StackOptions
from smsinvite.store import recipient_id_for

FINAL = ("delivered", "undelivered", "failed", "partially_delivered", "awaiting_final_status", "unresolved")


@pytest.fixture(scope="module")
def stack():
    options = StackOptions(reconcile_grace_seconds=1, reconcile_confirm_seconds=3, final_status_after_seconds=3)
    with LocalStack(options) as running:
        yield running


@pytest.fixture(autouse=True)
def twilio(stack):
    yield stack.twilio
    stack.twilio.reset()


@pytest.fixture
def store(stack):
    from smsinvite.settings import Settings
    from smsinvite.store import Store

    return Store(Settings.from_env())


@pytest.fixture
def campaign_id():
    return f"f-{uuid.uuid4().hex[:10]}"


def numbers(n):
    base = uuid.uuid4().int % 9000
    return [f"+1415557{(base + i) % 10000:04d}" for i in range(n)]


def campaign(stack, campaign_id, phones, *, rate=5, **fields):
    command(stack, {"command": "create_campaign", "campaign_id": campaign_id, "name": "Faults",
                    "survey_url": "https://survey.example.com/s/f", "message_template": "Hi {first_name|there} {link}",
                    "rate_per_second": rate, "quiet_hours": NO_QUIET_HOURS, **fields})
    command(stack, {"command": "add_recipients", "campaign_id": campaign_id,
                    "recipients": [{"phone": phone} for phone in phones]})


def creates(stack, phone):
    return [e for e in stack.twilio.ledger if e.to == phone and e.created]


def statuses(store, campaign_id):
    return {r.phone: r.status for r in store.t.recipients.query(campaign_id, consistent_read=True)}


def all_final(store, campaign_id):
    found = statuses(store, campaign_id)
    return found if found and all(s in FINAL for s in found.values()) else None


class Ticking:
    """The scheduler firing every `every` seconds, as EventBridge would (faster), while a test waits."""

    def __init__(self, stack, every=0.5):
        self.stack, self.every, self.stop, self.ticks = stack, every, threading.Event(), []

    def __enter__(self):
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        while not self.stop.wait(self.every):
            self.ticks.append(self.stack.router.fire_schedule("SchedulerFunction"))

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(30)


def dead_letters(stack, campaign_id, queue="SendDeadLetterQueue"):
    """This campaign's messages in the DLQ. (moto's backends are shared by every stack of the process, so
    other modules' poison can land in it too.)"""
    sqs, found = boto3.client("sqs"), {}
    for _ in range(5):
        got = sqs.receive_message(QueueUrl=stack.queue_url(queue), MaxNumberOfMessages=10, VisibilityTimeout=0)
        found.update({m["MessageId"]: m["Body"] for m in got.get("Messages", [])})
    return [body for body in found.values() if campaign_id in body]


def a_scheduled_campaign_now_due(stack, campaign_id):
    """Approved to start a few seconds from now; returns once its start is due."""
    start_at = datetime.now(timezone.utc) + timedelta(seconds=4)
    campaign(stack, campaign_id, numbers(1), start_at=start_at.isoformat())
    prepare(stack, campaign_id)
    command(stack, {"command": "approve", "campaign_id": campaign_id})
    time.sleep(max(0.0, (start_at - datetime.now(timezone.utc)).total_seconds()) + 0.2)


def test_a_message_list_lagging_past_the_grace_still_gives_one_sms_per_recipient(stack, store, twilio, campaign_id):
    # Given Twilio creates every message but answers 500, its list shows messages 2.5 s late (more than the
    # 1 s grace), and its status callbacks are slower still
    phones = numbers(3)
    campaign(stack, campaign_id, phones)
    twilio.faults.rate_5xx_after_create = 1.0
    twilio.faults.list_lag = 2.5
    twilio.callback_delay = 3.0

    # When the campaign is sent while the scheduler reconciles every half second
    with Ticking(stack):
        prepare_and_approve(stack, campaign_id)
        wait_for(lambda: set(statuses(store, campaign_id).values()) == {"delivered"}, timeout=90,
                 what="every recipient delivered")

    # Then Twilio created exactly one message per recipient
    assert {phone: len(creates(stack, phone)) for phone in phones} == dict.fromkeys(phones, 1)


def test_a_twilio_outage_mid_campaign_ends_with_every_recipient_texted_once_and_nothing_in_the_dlq(
    stack, store, twilio, campaign_id
):
    # Given a campaign of eight at two a second
    phones = numbers(8)
    campaign(stack, campaign_id, phones, rate=2)
    with Ticking(stack):
        prepare_and_approve(stack, campaign_id)
        wait_for(lambda: sum(len(creates(stack, p)) for p in phones) >= 2, timeout=30, what="the first sends")

        # When Twilio refuses connections for 3 s: those sends certainly never reached Twilio
        twilio.refuse_connections()
        time.sleep(3)
        assert "unknown" not in statuses(store, campaign_id).values()
        # Then answers 503 to everything for 3 s (those sends may or may not have reached it)
        twilio.faults.unavailable = True
        twilio.accept_connections()
        time.sleep(3)
        twilio.faults.unavailable = False
        final = wait_for(lambda: all_final(store, campaign_id), timeout=120, what="every recipient final")

    # Then every recipient was texted exactly once, every one is delivered, and nothing went to a DLQ
    assert {phone: len(creates(stack, phone)) for phone in phones} == dict.fromkeys(phones, 1)
    assert set(final.values()) == {"delivered"}
    assert dead_letters(stack, campaign_id) == []


def test_a_run_whose_completion_step_fails_after_its_batch_loses_no_record_and_sends_nothing_again(
    stack, store, twilio, campaign_id, monkeypatch
):
    # Given completing a run fails after every sender batch
    import smsinvite.sending

    def broken(*args, **kwargs):
        raise RuntimeError("the completion step failed")

    monkeypatch.setattr(smsinvite.sending, "complete_if_done", broken)
    phones = numbers(3)
    campaign(stack, campaign_id, phones)

    # When the campaign is sent
    prepare_and_approve(stack, campaign_id)
    wait_for(lambda: all_final(store, campaign_id), timeout=60, what="every recipient final")
    time.sleep(5)  # longer than the stack's SQS redelivery delay, several times over

    # Then each was texted once, no sender invocation failed (so no record came back to be handled again),
    # and nothing reached the DLQ
    assert {phone: len(creates(stack, phone)) for phone in phones} == dict.fromkeys(phones, 1)
    assert [i.error for i in stack.router.invocations_of("SenderFunction") if i.error] == []
    assert dead_letters(stack, campaign_id) == []


def test_a_run_completes_only_when_every_message_is_final_even_when_its_final_callbacks_are_lost(
    stack, store, twilio, campaign_id
):
    # Given Twilio delivers every message but its final callbacks never arrive
    phones = numbers(2)
    twilio.lose_final_callbacks = True
    twilio.set_outcome(phones[1], "undelivered", 30005)  # a dead number, said only in the lost callback
    campaign(stack, campaign_id, phones)

    # When the campaign is sent and the scheduler ticks
    with Ticking(stack):
        prepare_and_approve(stack, campaign_id)
        done = wait_for(lambda: (lambda s: s if s["state"] == "completed" else None)(
            command(stack, {"command": "status", "campaign_id": campaign_id})), timeout=90, what="the run to complete")

    # Then at completion every recipient has the final status Twilio holds, fetched by its SID
    assert statuses(store, campaign_id) == {phones[0]: "delivered", phones[1]: "undelivered"}
    assert done["counts"]["delivered"] == 1 and done["counts"]["undelivered"] == 1
    # And the carrier's word about the dead number still suppressed it
    assert store.suppression(phones[1]).reason == "undeliverable"


def test_a_status_nobody_knows_neither_stops_the_scheduler_nor_gets_its_callback_refused(
    stack, store, twilio, campaign_id
):
    # Given an unknown send that Twilio lists as partially delivered, and its callback slow to come
    phone = numbers(1)[0]
    campaign(stack, campaign_id, [phone])
    twilio.faults.rate_5xx_after_create = 1.0
    twilio.callback_delay = 30.0
    prepare_and_approve(stack, campaign_id)
    recipient_id = recipient_id_for(campaign_id, phone)
    wait_for(lambda: store.recipient(campaign_id, recipient_id).status == "unknown", timeout=30, what="unknown")
    sid = creates(stack, phone)[0].sid
    twilio._store.advance(sid, "partially_delivered", None, "+15005550006")
    # And a scheduled campaign that is due
    a_scheduled_campaign_now_due(stack, f"{campaign_id}-due")

    # When the scheduler ticks
    tick = stack.router.fire_schedule("SchedulerFunction")

    # Then the tick went through: the send is recorded as partially delivered, and the due campaign started
    assert store.recipient(campaign_id, recipient_id).status == "partially_delivered"
    assert tick["campaigns"].get("started") == 1

    # And a status callback with a status nobody knows is answered 204, and changes nothing
    attempt = store.recipient(campaign_id, recipient_id).attempt_id
    url = f"{stack.api_url}/twilio/status?{urlencode({'c': campaign_id, 'r': recipient_id, 'a': attempt})}"
    form = {"MessageSid": sid, "MessageStatus": "teleported", "To": phone, "AccountSid": twilio.account_sid}
    signature = RequestValidator(twilio.auth_token).compute_signature(url, form)
    answer = requests.post(url, data=form, headers={"X-Twilio-Signature": signature}, timeout=10)
    assert answer.status_code == 204
    assert store.recipient(campaign_id, recipient_id).status == "partially_delivered"


def test_a_tick_during_a_twilio_outage_asks_twilio_once_and_still_runs_its_other_sweeps(
    stack, store, twilio, campaign_id
):
    # Given four sends whose outcome is unknown (Twilio answered 503), and a scheduled campaign that is due
    phones = numbers(4)
    campaign(stack, campaign_id, phones)
    twilio.faults.unavailable = True
    prepare_and_approve(stack, campaign_id)
    wait_for(lambda: set(statuses(store, campaign_id).values()) == {"unknown"}, timeout=30, what="four unknowns")
    a_scheduled_campaign_now_due(stack, f"{campaign_id}-due")
    time.sleep(1.0)  # past the grace: the four are the reconciler's to settle

    # When Twilio is still down (503 to everything) and the scheduler ticks
    lists_before = twilio.api_calls.get("list", 0)
    tick = stack.router.fire_schedule("SchedulerFunction")
    lists_in_the_tick = twilio.api_calls.get("list", 0) - lists_before
    twilio.faults.unavailable = False

    # Then the reconciler asked Twilio once and left the rest for the next tick, and the due campaign started
    assert lists_in_the_tick == 1
    assert tick["campaigns"].get("started") == 1
    assert set(statuses(store, campaign_id).values()) == {"unknown"}
