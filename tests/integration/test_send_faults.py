"""What the sender records after calling Twilio survives a failing DynamoDB write.

Witnesses: the raw suppression and consent items, the simulator's ledger, the raw recipient item.
"""

import dataclasses
import uuid

import pytest
from botocore.exceptions import ClientError
from pynamodb.exceptions import TransactWriteError

from smsinvite.lanes import ThrottleLanes
from smsinvite.reconcile import Reconciler
from smsinvite.sending import InvitationSender, SendOutcome, SendRequest
from smsinvite.store import Store, recipient_id_for
from smsinvite.twilio_gateway import TwilioGateway, _client

ALL_DAY = {"window_opens": "00:00", "window_closes": "24:00"}
OPTED_OUT_AT_THE_CARRIER = "+15005550004"  # Twilio's magic number: every create is refused with 21610


class RecordingQueue:
    def __init__(self):
        self.sent = []

    def send(self, body, *, delay_seconds=0):
        self.sent.append(body)


class FailingOnce(Store):
    """A Store whose first call of the named operation fails as a throttled DynamoDB would."""

    def __init__(self, settings, operation: str):
        super().__init__(settings)
        self.operation, self.failed = operation, 0
        original = getattr(self, operation)

        def once(*args, **kwargs):
            if not self.failed:
                self.failed += 1
                throttled = ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}},
                                        "TransactWriteItems")
                raise TransactWriteError("Failed to write transaction items", cause=throttled)
            return original(*args, **kwargs)

        setattr(self, operation, once)




def sender(store, settings, twilio):
    gateway = TwilioGateway(_client(twilio.account_sid, twilio.auth_token, twilio.base_url, 5.0))
    return InvitationSender(store, gateway, settings, send_queue=RecordingQueue(),
                            lanes=ThrottleLanes(settings.throttle_table), sleep=lambda seconds: None)


def delivered_as_sqs_does(store, settings, twilio, campaign_id, phone, times=3):
    """Hand the record to the sender; as SQS does, again while it fails."""
    request = SendRequest(campaign_id=campaign_id, recipient_id=recipient_id_for(campaign_id, phone))
    outcomes = []
    for _ in range(times):
        try:
            outcomes.append(sender(store, settings, twilio).send(request))
            break
        except Exception as failed:  # noqa: BLE001 - redelivered, as SQS would
            outcomes.append(type(failed).__name__)
    return outcomes


def a_sender():
    return f"+1500555{uuid.uuid4().int % 9000 + 1000}"


@pytest.mark.parametrize("failing_write", ["transition", "suppress"])
def test_an_opt_out_twilio_reports_at_send_time_survives_a_write_that_fails_once(
    local_aws, settings, twilio, sending_campaign, failing_write
):
    # Given a number that opted out at the carrier (Twilio refuses it with 21610), and a DynamoDB write that
    # fails once just after Twilio's answer
    store, plain = FailingOnce(local_aws, failing_write), Store(local_aws)
    plain.t.suppressions(plain.phone_key(OPTED_OUT_AT_THE_CARRIER)).delete()  # not (yet) on our list
    campaign_id = sending_campaign([{"phone": OPTED_OUT_AT_THE_CARRIER}], sender=a_sender(), **ALL_DAY)
    before = carrier_entries(plain)

    # When the sender carries the record out (and SQS redelivers it if it fails)
    outcomes = delivered_as_sqs_does(store, settings, twilio, campaign_id, OPTED_OUT_AT_THE_CARRIER)

    # Then the number is suppressed, with exactly one new ledger entry, and the recipient failed with Twilio's code
    assert store.failed == 1 and outcomes[-1] is SendOutcome.FAILED
    suppression = plain.t.suppressions.get(plain.phone_key(OPTED_OUT_AT_THE_CARRIER), consistent_read=True)
    assert suppression.reason == "opted_out"
    assert len(carrier_entries(plain) - before) == 1
    recipient = plain.recipient(campaign_id, recipient_id_for(campaign_id, OPTED_OUT_AT_THE_CARRIER))
    assert (recipient.status, recipient.error_code) == ("failed", 21610)


def carrier_entries(store) -> set[str]:
    """The raw consent ledger's carrier-error entries for the opted-out number."""
    return {e.entry for e in store.consent_of(OPTED_OUT_AT_THE_CARRIER)
            if e.source == "carrier_error" and e.detail == "twilio_21610"}


def test_a_send_whose_outcome_cannot_be_written_does_not_fail_its_record_and_is_never_sent_twice(
    local_aws, settings, twilio, sending_campaign
):
    # Given a store whose every status write fails after Twilio has accepted the message
    phone = f"+1415556{uuid.uuid4().int % 9000 + 1000}"
    campaign_id = sending_campaign([{"phone": phone}], sender=a_sender(), **ALL_DAY)
    store = Store(local_aws)
    plain_transition = store.transition

    def failing_after_the_claim(recipient, new, **changes):
        if recipient.status == "claimed":
            raise TransactWriteError("Failed to write transaction items")
        return plain_transition(recipient, new, **changes)

    store.transition = failing_after_the_claim

    # When the sender carries the record out
    outcomes = delivered_as_sqs_does(store, settings, twilio, campaign_id, phone)

    # Then the record succeeds (nothing for SQS to redeliver), Twilio has one message, the recipient is claimed
    assert outcomes == [SendOutcome.UNKNOWN]
    assert len([e for e in twilio.ledger if e.to == phone and e.created]) == 1
    plain = Store(local_aws)
    assert plain.recipient(campaign_id, recipient_id_for(campaign_id, phone)).status == "claimed"

    # And the reconciler later records Twilio's message without sending another
    reconciler = Reconciler(plain, TwilioGateway(_client(twilio.account_sid, twilio.auth_token, twilio.base_url, 5.0)),
                            RecordingQueue(), dataclasses.replace(settings, reconcile_grace_seconds=1))
    import time

    time.sleep(1.2)
    assert reconciler.run(time_left=lambda: 60.0, margin=5.0)["found"] >= 1
    assert plain.recipient(campaign_id, recipient_id_for(campaign_id, phone)).message_sid
    assert len([e for e in twilio.ledger if e.to == phone and e.created]) == 1
