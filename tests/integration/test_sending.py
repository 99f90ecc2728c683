"""The sender against DynamoDB Local and the Twilio simulator, on a frozen clock: quiet hours, the claim, slots.

The simulator's ledger is the witness of what was sent. Status callbacks go to a closed port on
127.0.0.1: these tests are about the send, not about the webhooks.
"""

import dataclasses
import uuid
from datetime import datetime, timedelta, timezone


from smsinvite.lanes import ThrottleLanes
from smsinvite.sending import MAX_INLINE_WAIT, InvitationSender, SendOutcome, SendRequest
from smsinvite.throttle import CEILING_MARGIN
from smsinvite.status import Status
from smsinvite.store import recipient_id_for
from smsinvite.twilio_gateway import TwilioGateway, _client

HAWAII = "+18085550123"
GERMANY = "+4915112345678"
IDAHO = "+12085550123"  # area code 208 spans Mountain and Pacific time


class RecordingQueue:
    def __init__(self):
        self.sent = []

    def send(self, body, *, delay_seconds=0):
        self.sent.append((body, delay_seconds))




def sender_at(store, settings, twilio, now: datetime, queue=None) -> InvitationSender:
    gateway = TwilioGateway(_client(twilio.account_sid, twilio.auth_token, twilio.base_url, 5.0))
    return InvitationSender(
        store,
        gateway,
        settings,
        send_queue=queue or RecordingQueue(),
        lanes=ThrottleLanes(settings.throttle_table, clock=now.timestamp),
        clock=lambda: now,
        sleep=lambda seconds: None,
    )


def a_sender_number():
    """Each test its own From number, so its send slots are its own."""
    return f"+1500555{uuid.uuid4().int % 9000 + 1000}"


def at_utc(*args) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def request(campaign_id, phone):
    return SendRequest(campaign_id=campaign_id, recipient_id=recipient_id_for(campaign_id, phone))


def test_a_hawaii_number_at_2055_local_is_sent_with_a_validity_that_ends_at_2100(
    store, settings, twilio, sending_campaign
):
    # Given a campaign with the default window (08:00-21:00) and a Honolulu number
    sender = a_sender_number()
    campaign_id = sending_campaign([{"phone": HAWAII}], sender=sender)

    # When it is sent at 20:55 in Honolulu (06:55 UTC)
    outcome = sender_at(store, settings, twilio, at_utc(2026, 12, 2, 6, 55)).send(request(campaign_id, HAWAII))

    # Then it goes out, and Twilio may hold it only until the window closes
    assert outcome is SendOutcome.SENT
    [message] = twilio.created(to=HAWAII, sender=sender)
    assert message.validity_period == 300


def test_a_german_number_at_0759_local_waits_until_0800(store, settings, twilio, sending_campaign):
    sender = a_sender_number()
    campaign_id = sending_campaign([{"phone": GERMANY}], sender=sender)
    queue = RecordingQueue()

    outcome = sender_at(store, settings, twilio, at_utc(2026, 12, 2, 6, 59), queue).send(request(campaign_id, GERMANY))

    # Deferred by a minute: back on the queue with that delay, and nothing sent
    assert outcome is SendOutcome.DEFERRED
    assert [delay for _, delay in queue.sent] == [60]
    assert twilio.created(to=GERMANY, sender=sender) == []
    assert store.recipient(campaign_id, recipient_id_for(campaign_id, GERMANY)).status == Status.IMPORTED.value


def test_a_number_spanning_two_zones_waits_until_the_window_is_open_in_both(store, settings, twilio, sending_campaign):
    # Given an Idaho number (Mountain and Pacific time) at 08:30 Mountain, 07:30 Pacific
    sender = a_sender_number()
    campaign_id = sending_campaign([{"phone": IDAHO}], sender=sender)
    now = at_utc(2026, 12, 2, 15, 30)

    # When it is sent, it is parked until 08:00 Pacific, more than a queue delay away
    outcome = sender_at(store, settings, twilio, now).send(request(campaign_id, IDAHO))
    assert outcome is SendOutcome.DEFERRED
    parked = store.recipient(campaign_id, recipient_id_for(campaign_id, IDAHO))
    assert parked.deferred_until == at_utc(2026, 12, 2, 16, 0).isoformat()
    assert [r.recipient_id for r in store.deferred_due(at_utc(2026, 12, 2, 16, 0))
            if r.campaign_id == campaign_id] == [parked.recipient_id]

    # And once both zones are open, it is sent
    later = sender_at(store, settings, twilio, at_utc(2026, 12, 2, 16, 1)).send(request(campaign_id, IDAHO))
    assert later is SendOutcome.SENT
    assert len(twilio.created(to=IDAHO, sender=sender)) == 1


def test_an_opt_out_after_prepare_stops_the_send_even_at_the_last_moment(store, settings, twilio, sending_campaign, suppress):
    # Given a planned send, and a STOP that arrives after the plan, before the claim
    phone, sender = "+14155550177", a_sender_number()
    campaign_id = sending_campaign([{"phone": phone}], sender=sender, window_opens="00:00", window_closes="24:00")
    invitations = sender_at(store, settings, twilio, datetime.now(timezone.utc))
    [plan] = invitations.plan([request(campaign_id, phone)])
    suppress(store, phone)

    # When the send is carried out
    outcome = invitations.carry_out(plan)

    # Then the claim saw the opt-out: nothing was sent, and the recipient is skipped
    assert outcome is SendOutcome.SKIPPED_OPTED_OUT
    assert twilio.created(to=phone, sender=sender) == []
    assert store.recipient(campaign_id, recipient_id_for(campaign_id, phone)).status == "skipped_opted_out"


def test_a_pause_after_the_plan_holds_the_send(store, settings, twilio, sending_campaign, lifecycle):
    phone, sender = "+14155550178", a_sender_number()
    campaign_id = sending_campaign([{"phone": phone}], sender=sender, window_opens="00:00", window_closes="24:00")
    invitations = sender_at(store, settings, twilio, datetime.now(timezone.utc))
    [plan] = invitations.plan([request(campaign_id, phone)])
    lifecycle.pause(campaign_id)

    assert invitations.carry_out(plan) is SendOutcome.HELD
    assert twilio.created(to=phone, sender=sender) == []
    assert store.recipient(campaign_id, recipient_id_for(campaign_id, phone)).status == "imported"


def test_an_expired_code_is_not_sent(store, settings, twilio, sending_campaign):
    phone, sender = "+14155550179", a_sender_number()
    campaign_id = sending_campaign(
        [{"phone": phone}], sender=sender, window_opens="00:00", window_closes="24:00", code_expires_after_seconds=3600
    )
    tomorrow = datetime.now(timezone.utc) + timedelta(days=1)

    outcome = sender_at(store, settings, twilio, tomorrow).send(request(campaign_id, phone))

    assert outcome is SendOutcome.FAILED
    recipient = store.recipient(campaign_id, recipient_id_for(campaign_id, phone))
    assert (recipient.status, recipient.failure_reason) == ("failed", "code_expired")


def test_a_batch_takes_consecutive_slots_and_what_does_not_fit_goes_back_to_the_queue(
    store, settings, twilio, sending_campaign
):
    # Given ten people, a ceiling of 2 a second, and a sender that may wait 5 s for a slot
    phones = [f"+1415555{1200 + i}" for i in range(10)]
    sender = a_sender_number()
    campaign_id = sending_campaign(
        [{"phone": p} for p in phones], sender=sender, window_opens="00:00", window_closes="24:00", rate_per_second=2
    )
    now = datetime.now(timezone.utc)
    slow = dataclasses.replace(settings, sender_ceiling_per_second=2)
    queue = RecordingQueue()

    plans = sender_at(store, slow, twilio, now, queue).plan([request(campaign_id, p) for p in phones])

    # Then the first ones get slots half a second apart (a little wider, for the ceiling's margin), the rest wait
    slotted = [p.at - now.timestamp() for p in plans if p.outcome is None]
    assert len(slotted) == 1 + int(MAX_INLINE_WAIT * 2 * CEILING_MARGIN)
    assert all(abs((b - a) - 1 / (2 * CEILING_MARGIN)) < 1e-6 for a, b in zip(slotted, slotted[1:]))
    requeued = [p for p in plans if p.outcome is SendOutcome.REQUEUED]
    assert len(requeued) == 10 - len(slotted) and all(p.delay > MAX_INLINE_WAIT for p in requeued)


def test_instances_racing_for_one_sender_never_get_slots_closer_than_its_spacing(settings):
    import threading

    from smsinvite.throttle import sender_lane

    # Given four sender instances (each with its own view of the lanes) reserving for one From number at once
    lane = sender_lane(a_sender_number(), 50)
    instances = [ThrottleLanes(settings.throttle_table) for _ in range(4)]
    taken, errors, start = [], [], threading.Barrier(len(instances))

    def reserve(instance):
        start.wait()
        try:
            for _ in range(10):
                reserved = instance.reserve((lane,), count=5, max_wait=30.0)
                taken.extend(reserved.slots.at(i) for i in range(reserved.slots.count))
        except Exception as error:  # noqa: BLE001 - the test names what went wrong
            errors.append(error)

    threads = [threading.Thread(target=reserve, args=(instance,)) for instance in instances]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then every slot is its own, and no two are closer than the lane's spacing
    slots = sorted(taken)
    assert errors == []
    assert len(slots) == 4 * 10 * 5
    assert min(b - a for a, b in zip(slots, slots[1:])) >= lane.interval - 1e-6
