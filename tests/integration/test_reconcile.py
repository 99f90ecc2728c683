"""Reconciling open sends against the Twilio simulator, with DynamoDB Local: resent only on strong evidence.

The witness is the simulator's ledger of creates (what Twilio really made), and the raw recipient item.
Timings are the settings' own, shortened: a grace of 1 s and a confirmation delay of 3 s.
"""

import dataclasses
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from smsinvite.consent import SuppressionReason
from smsinvite.lanes import ThrottleLanes
from smsinvite.reconcile import Reconciler
from smsinvite.sending import InvitationSender, SendOutcome, SendRequest
from smsinvite.status import Status
from smsinvite.store import recipient_id_for
from smsinvite.twilio_gateway import TwilioGateway, _client

ALL_DAY = {"window_opens": "00:00", "window_closes": "24:00"}
GRACE, CONFIRM = 1, 3


class RecordingQueue:
    def __init__(self):
        self.sent = []

    def send(self, body, *, delay_seconds=0):
        self.sent.append(body)



@pytest.fixture(autouse=True)
def clean_faults(twilio):
    yield
    twilio.faults.clear()
    twilio.lose_final_callbacks = False


@pytest.fixture
def settings(local_aws):
    return dataclasses.replace(
        local_aws, public_webhook_base_url="http://127.0.0.1:9", reconcile_grace_seconds=GRACE,
        reconcile_confirm_seconds=CONFIRM, final_status_after_seconds=2,
    )


def gateway(twilio):
    return TwilioGateway(_client(twilio.account_sid, twilio.auth_token, twilio.base_url, 5.0))


def sender(store, settings, twilio, queue=None):
    return InvitationSender(
        store, gateway(twilio), settings, send_queue=queue or RecordingQueue(),
        lanes=ThrottleLanes(settings.throttle_table), sleep=lambda seconds: None,
    )


def reconciler(store, settings, twilio, queue, at=None):
    clock = (lambda: at) if at is not None else (lambda: datetime.now(timezone.utc))
    return Reconciler(store, gateway(twilio), queue, settings, clock=clock)


def tick(reconciler_):
    return reconciler_.run(time_left=lambda: 60.0, margin=5.0)


def a_number():
    return f"+1415555{uuid.uuid4().int % 9000 + 1000}"


def a_sender():
    return f"+1500555{uuid.uuid4().int % 9000 + 1000}"


def creates(twilio, phone):
    return [e for e in twilio.ledger if e.to == phone and e.created]


def recipient(store, campaign_id, phone):
    return store.recipient(campaign_id, recipient_id_for(campaign_id, phone))


def send_once(store, settings, twilio, campaign_id, phone, queue=None):
    request = SendRequest(campaign_id=campaign_id, recipient_id=recipient_id_for(campaign_id, phone))
    return sender(store, settings, twilio, queue).send(request)


def test_a_message_twilio_created_but_listed_late_is_never_sent_twice(store, settings, twilio, sending_campaign):
    # Given Twilio creates the message but answers 500, and its list shows messages only 2.5 s after creating them
    phone = a_number()
    campaign_id = sending_campaign([{"phone": phone}], sender=a_sender(), **ALL_DAY)
    twilio.faults.next(["5xx_after_create"])
    twilio.faults.list_lag = 2.5
    assert send_once(store, settings, twilio, campaign_id, phone) is SendOutcome.UNKNOWN
    queue = RecordingQueue()

    # When the reconciler looks once the grace (1 s, less than the lag) has passed: Twilio's list is empty
    time.sleep(GRACE + 0.2)
    assert tick(reconciler(store, settings, twilio, queue))["confirming"] >= 1

    # And looks again after the confirmation delay, when the list has caught up
    time.sleep(CONFIRM)
    tick(reconciler(store, settings, twilio, queue))

    # Then the message Twilio made is recorded, and no second one was ever asked for
    assert len(creates(twilio, phone)) == 1
    found = recipient(store, campaign_id, phone)
    assert found.message_sid == creates(twilio, phone)[0].sid
    assert Status(found.status).rank >= Status.QUEUED.rank
    assert queue.sent == []


def test_a_send_twilio_never_received_is_sent_exactly_once_after_two_empty_reads(
    store, settings, twilio, sending_campaign
):
    # Given Twilio answers 503 without creating anything (the sender cannot know)
    phone = a_number()
    campaign_id = sending_campaign([{"phone": phone}], sender=a_sender(), **ALL_DAY)
    twilio.faults.next(["503"])
    assert send_once(store, settings, twilio, campaign_id, phone) is SendOutcome.UNKNOWN
    queue = RecordingQueue()

    # When the reconciler finds no message at one read, and none at a second one after the confirmation delay
    time.sleep(GRACE + 0.2)
    tick(reconciler(store, settings, twilio, queue))
    assert queue.sent == [] and recipient(store, campaign_id, phone).status == "unknown"
    time.sleep(CONFIRM)
    tick(reconciler(store, settings, twilio, queue))

    # Then it is queued again once, and the resend is the only message Twilio ever created
    assert queue.sent == [{"campaign_id": campaign_id, "recipient_id": recipient_id_for(campaign_id, phone)}]
    assert send_once(store, settings, twilio, campaign_id, phone) is SendOutcome.SENT
    assert len(creates(twilio, phone)) == 1


def test_without_strong_evidence_in_time_a_send_ends_unresolved_and_only_the_operator_resends_it(
    store, settings, twilio, sending_campaign, lifecycle
):
    # Given a send whose outcome is unknown, and a reconciler that first gets to look after the message's
    # validity has run out (Twilio's list was unreachable until then)
    phone = a_number()
    campaign_id = sending_campaign([{"phone": phone}], sender=a_sender(), **ALL_DAY)
    twilio.faults.next(["503"])
    send_once(store, settings, twilio, campaign_id, phone)
    queue = RecordingQueue()
    after_validity = datetime.now(timezone.utc) + timedelta(hours=11)

    # When it finds Twilio's list empty, once
    outcomes = tick(reconciler(store, settings, twilio, queue, at=after_validity))

    # Then the recipient is unresolved, visibly, and nothing is sent
    assert outcomes["unresolved"] >= 1
    assert recipient(store, campaign_id, phone).status == "unresolved"
    assert queue.sent == [] and creates(twilio, phone) == []
    assert store.counts(campaign_id)[Status.UNRESOLVED] == 1

    # And when the operator resends unresolved recipients on purpose, it is queued once and sent once
    resend_queue = RecordingQueue()
    assert lifecycle.resend_unresolved(campaign_id, resend_queue)["resent"] == 1
    assert lifecycle.resend_unresolved(campaign_id, resend_queue)["resent"] == 0
    assert len(resend_queue.sent) == 1
    assert send_once(store, settings, twilio, campaign_id, phone) is SendOutcome.SENT
    assert send_once(store, settings, twilio, campaign_id, phone) is SendOutcome.ALREADY_HANDLED
    assert len(creates(twilio, phone)) == 1


def test_a_message_listed_under_a_status_nobody_knows_is_recorded_and_the_sweep_goes_on(
    store, settings, twilio, sending_campaign
):
    # Given two unknown sends, the first of which Twilio lists under a status this code has never heard of
    first, second = a_number(), a_number()
    campaign_id = sending_campaign([{"phone": first}, {"phone": second}], sender=a_sender(), **ALL_DAY)
    twilio.faults.next(["5xx_after_create", "5xx_after_create"])
    send_once(store, settings, twilio, campaign_id, first)
    send_once(store, settings, twilio, campaign_id, second)
    twilio.wait_until_idle()
    twilio._store.advance(creates(twilio, first)[0].sid, "teleported", None, "+15005550006")

    # When the reconciler runs
    time.sleep(GRACE + 0.2)
    outcomes = tick(reconciler(store, settings, twilio, RecordingQueue()))

    # Then it raised for neither: both are recorded as Twilio's, none sent again
    assert outcomes["failed"] == 0
    assert Status(recipient(store, campaign_id, first).status).rank >= Status.QUEUED.rank
    assert Status(recipient(store, campaign_id, second).status).rank >= Status.QUEUED.rank
    assert len(creates(twilio, first)) == len(creates(twilio, second)) == 1


def test_a_lost_final_callback_is_fetched_by_sid_and_a_carrier_error_in_it_still_suppresses(
    store, settings, twilio, sending_campaign
):
    # Given two messages whose final callbacks never arrive: one delivered, one undelivered (30005: dead number)
    delivered, dead = a_number(), a_number()
    twilio.lose_final_callbacks = True
    twilio.set_outcome(dead, "undelivered", 30005)
    campaign_id = sending_campaign([{"phone": delivered}, {"phone": dead}], sender=a_sender(), **ALL_DAY)
    for phone in (delivered, dead):
        send_once(store, settings, twilio, campaign_id, phone)
    twilio.wait_until_idle()
    assert recipient(store, campaign_id, dead).status == "queued"

    # When the final-status sweep runs after FINAL_STATUS_AFTER_SECONDS
    time.sleep(2.2)
    outcomes = tick(reconciler(store, settings, twilio, RecordingQueue()))

    # Then each has the status Twilio holds, and the dead number is suppressed
    assert outcomes["finalised"] >= 2
    assert recipient(store, campaign_id, delivered).status == "delivered"
    assert (recipient(store, campaign_id, dead).status, recipient(store, campaign_id, dead).error_code) == (
        "undelivered", 30005)
    assert store.suppression(dead).reason == SuppressionReason.UNDELIVERABLE.value


def test_a_message_twilio_still_has_no_final_status_for_is_visibly_awaiting_and_its_run_completes(
    store, settings, twilio, sending_campaign
):
    # Given a message the carrier never confirms (Twilio keeps it `sent`), whose run is otherwise done
    phone = a_number()
    twilio.set_outcome(phone, "sent")
    campaign_id = sending_campaign([{"phone": phone}], sender=a_sender(), **ALL_DAY)
    send_once(store, settings, twilio, campaign_id, phone)
    twilio.wait_until_idle()
    campaigns = store.t.campaigns
    store.change_campaign(campaign_id, [campaigns.dispatch_done.set(1)], campaigns.state == "sending")
    from smsinvite.lifecycle import complete_if_done

    assert complete_if_done(store, store.campaign(campaign_id)) is None  # on its way: the run waits

    # When the final-status sweep fetches it, and the run is looked at again
    time.sleep(2.2)
    tick(reconciler(store, settings, twilio, RecordingQueue()))
    completed = complete_if_done(store, store.campaign(campaign_id))

    # Then it is awaiting its final status, the run is complete, and a late callback still moves it on
    assert recipient(store, campaign_id, phone).status == "awaiting_final_status"
    assert completed is not None and completed.state == "completed"


def test_resending_the_unresolved_of_a_completed_campaign_reopens_it_and_sends_each_once(
    store, settings, twilio, sending_campaign, lifecycle
):
    # Given a completed campaign whose one recipient ended unresolved
    from smsinvite.lifecycle import complete_if_done

    phone = a_number()
    campaign_id = sending_campaign([{"phone": phone}], sender=a_sender(), **ALL_DAY)
    twilio.faults.next(["503"])
    send_once(store, settings, twilio, campaign_id, phone)
    tick(reconciler(store, settings, twilio, RecordingQueue(), at=datetime.now(timezone.utc) + timedelta(hours=11)))
    campaigns = store.t.campaigns
    store.change_campaign(campaign_id, [campaigns.dispatch_done.set(1)], campaigns.state == "sending")
    assert complete_if_done(store, store.campaign(campaign_id)).state == "completed"

    # When the operator resends the unresolved
    queue = RecordingQueue()
    answer = lifecycle.resend_unresolved(campaign_id, queue)

    # Then the campaign is sending again (its run not yet counted as completed), and the recipient is sent once
    reopened = store.campaign(campaign_id)
    assert (answer["resent"], answer["state"], reopened.state, int(reopened.runs_completed)) == (1, "sending", "sending", 0)
    assert send_once(store, settings, twilio, campaign_id, phone) is SendOutcome.SENT
    assert len(creates(twilio, phone)) == 1 and len(queue.sent) == 1
