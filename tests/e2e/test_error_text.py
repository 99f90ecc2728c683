"""Failures tell what went wrong without the number, code or body they were about.

The witness is the functions' own log stream (`stack.router.logs`, with the runtime's `[ERROR]` record of
each exception a handler raised, as Lambda writes it), scanned against the raw tables, the simulator's
messages and the secrets. Every e2e test is scanned too (tests/e2e/conftest.py); these are the paths where
other systems' error text, which holds numbers, met the code.
"""

import json

import boto3
from botocore.exceptions import ClientError
from pynamodb.exceptions import UpdateError

from local.demo import NO_QUIET_HOURS, command, create_campaign, prepare_and_approve, wait_for
from local.log_scan import assert_no_leaks, forbidden_on
from smsinvite.status import Status
from smsinvite.store import Store

TWILIO_INVALID = "+15005550001"  # Twilio refuses it: 21211, "The 'To' number +15005550001 is not a valid phone number."
SOMEONE = "+14155552671"


def failed_invocations(stack, function, containing):
    return [i.error for i in stack.router.invocations_of(function) if i.error and containing in i.error]


def test_a_number_twilio_refused_is_in_no_log_when_recording_the_refusal_keeps_failing(
    stack, store, campaign_id, monkeypatch
):
    # Given a recipient whose number Twilio refuses with an error that quotes it,
    create_campaign(stack, campaign_id, quiet_hours=NO_QUIET_HOURS, rate=10)
    command(stack, {"command": "add_recipients", "campaign_id": campaign_id, "recipients": [{"phone": TWILIO_INVALID}]})
    # and every write that would record the refusal throttled
    throttled = ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "Rate exceeded"}},
                            "UpdateItem")
    transition, refused = Store.transition, []

    def record_throttled(self, recipient, new, **changes):
        if new is Status.FAILED and recipient.campaign_id == campaign_id:
            refused.append(recipient.recipient_id)
            raise UpdateError(f"Failed to update item: {throttled}", throttled)
        return transition(self, recipient, new, **changes)

    monkeypatch.setattr(Store, "transition", record_throttled)
    mark = stack.router.logs.mark()

    # When the campaign is sent
    prepare_and_approve(stack, campaign_id)
    wait_for(lambda: unrecorded(stack, mark), timeout=30, what="the sender giving up on recording the refusal")

    # Then Twilio refused it (the simulator's ledger), and the sender said it could not record it, by error type
    assert [e.error_code for e in stack.twilio.ledger if e.to == TWILIO_INVALID][:1] == [21211]
    assert all('"error_type":"UpdateError"' in line for line in unrecorded(stack, mark))
    # And its batch did not fail (Twilio was called: a redelivery could only find the recipient claimed)
    assert not [i for i in stack.router.invocations_of("SenderFunction") if i.error]
    # And no line of any function's log holds the number, in any format
    assert_no_leaks(stack.router.logs.since(mark)[0], forbidden_on(stack))


def unrecorded(stack, mark):
    lines, _ = stack.router.logs.since(mark)
    return [line.text for line in lines if "could not be recorded" in line.text]


def test_a_poison_send_request_carrying_a_number_is_in_no_log(stack, campaign_id):
    # Given a send request with a number in a field it does not have (pydantic quotes the input it refuses)
    sqs = boto3.client("sqs")
    poison = json.dumps({"campaign_id": campaign_id, "recipient_id": "r-1", "to": SOMEONE})
    mark = stack.router.logs.mark()
    sqs.send_message(QueueUrl=stack.queue_url("SendQueue"), MessageBody=poison)

    # When the sender receives it until it reaches the dead-letter queue
    def dead_lettered():
        messages = sqs.receive_message(QueueUrl=stack.queue_url("SendDeadLetterQueue"), MaxNumberOfMessages=10)
        return [m for m in messages.get("Messages", []) if m["Body"] == poison]

    wait_for(dead_lettered, timeout=60, what="the poison request in the DLQ", interval=0.5)

    # Then each receive failed that record alone (a partial batch response, not an error of the function),
    # and no line of any function's log holds the number
    assert not [i for i in stack.router.invocations_of("SenderFunction") if i.error]
    assert_no_leaks(stack.router.logs.since(mark)[0], forbidden_on(stack))


def test_a_malformed_command_carrying_a_number_is_refused_and_is_in_no_log(stack, campaign_id):
    # Given commands with a number where a command name, a known field or a string belongs
    create_campaign(stack, campaign_id)
    malformed = [
        {"command": SOMEONE},
        {"command": "erase_phone", "phone": SOMEONE, "country": SOMEONE},
        {"command": "update_campaign", "campaign_id": campaign_id, "sender": int(SOMEONE[1:])},
        {"command": "unsubscribe", "list_id": "l-1", "phones": [{"phone": SOMEONE}]},
    ]
    mark = stack.router.logs.mark()

    # When they are sent
    replies = [stack.command(each) for each in malformed]

    # Then each is refused with a clear error, and no function's log holds the number
    assert [reply["error"]["code"] for reply in replies] == ["invalid_input"] * len(malformed)
    assert_no_leaks(stack.router.logs.since(mark)[0], forbidden_on(stack))
