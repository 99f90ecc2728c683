"""At most once, with nothing lost, on the local stack: the Twilio simulator's ledger is the witness."""

import json
import threading

import boto3

from local.demo import NO_QUIET_HOURS, command, create_campaign, prepare, prepare_and_approve, wait_for
from smsinvite.store import recipient_id_for


def audience(stack, campaign_id, phones):
    create_campaign(stack, campaign_id, quiet_hours=NO_QUIET_HOURS, rate=10)
    people = [{"phone": phone, "first_name": "P"} for phone in phones]
    command(stack, {"command": "add_recipients", "campaign_id": campaign_id, "recipients": people})


def creates(stack, phone, status=201):
    return [e for e in stack.twilio.ledger if e.to == phone and (status is None or e.status == status)]


def recipient(store, campaign_id, phone):
    return store.recipient(campaign_id, recipient_id_for(campaign_id, phone))


def settled(store, campaign_id, phone, *statuses):
    return wait_for(
        lambda: recipient(store, campaign_id, phone).status in statuses, timeout=30, what=f"a status in {statuses}"
    )


def sending_without_dispatch(stack, store, campaign_id, phones):
    """A prepared campaign marked sending, but nothing queued: the test delivers the send requests itself."""
    audience(stack, campaign_id, phones)
    prepare(stack, campaign_id)
    campaigns = store.t.campaigns
    store.change_campaign(
        campaign_id, [campaigns.state.set("sending"), campaigns.run.set(1)], campaigns.state == "prepared"
    )


def send_event(campaign_id, phone, copies):
    body = json.dumps({"campaign_id": campaign_id, "recipient_id": recipient_id_for(campaign_id, phone)})
    return {"Records": [sqs_record(body, f"copy-{i}") for i in range(copies)]}


def test_the_same_message_delivered_twice_at_once_gives_exactly_one_create(stack, store, campaign_id):
    # Given a send request that SQS delivers to two sender instances at the same moment, and twice in one batch
    phone = "+14155550301"
    sending_without_dispatch(stack, store, campaign_id, [phone])
    event = send_event(campaign_id, phone, copies=2)

    # When both instances handle their batches concurrently
    threads = [threading.Thread(target=stack.router.invoke, args=("SenderFunction", event)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then Twilio created it once
    assert len(creates(stack, phone)) == 1
    settled(store, campaign_id, phone, "delivered")


def sqs_record(body, message_id):
    return {
        "messageId": message_id,
        "receiptHandle": message_id,
        "body": body,
        "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:SendQueue",
        "awsRegion": "us-east-1",
    }


def test_twilio_answering_500_after_creating_gives_unknown_then_reconciles_to_sent_without_a_resend(
    stack, store, twilio, campaign_id
):
    # Given Twilio creates the message but answers 500 (the sender cannot know it was created)
    phone = "+14155550302"
    twilio.faults.next(["5xx_after_create"])
    audience(stack, campaign_id, [phone])

    # When the campaign is sent, the recipient's outcome is unknown
    prepare_and_approve(stack, campaign_id)
    settled(store, campaign_id, phone, "unknown", "queued", "sent", "delivered")

    # Then reconciliation finds Twilio's message: it is sent, and was never created twice
    wait_for(
        lambda: stack.router.fire_schedule("SchedulerFunction") and recipient(store, campaign_id, phone).message_sid,
        timeout=30,
        what="reconciliation",
        interval=1.0,
    )
    assert len(creates(stack, phone, status=None)) == 1
    assert recipient(store, campaign_id, phone).status in ("queued", "sending", "sent", "delivered")


def test_a_429_is_retried_with_backoff_and_yields_exactly_one_message(stack, store, twilio, campaign_id):
    phone = "+14155550303"
    twilio.faults.next(["429"])
    audience(stack, campaign_id, [phone])

    prepare_and_approve(stack, campaign_id)
    settled(store, campaign_id, phone, "delivered")

    assert [e.status for e in creates(stack, phone, status=None)] == [429, 201]


def test_a_stop_between_prepare_and_send_means_nothing_is_sent_to_that_number(stack, store, campaign_id, suppress):
    # Given a prepared campaign, and one of its people opting out before it is approved
    stopped, other = "+14155550304", "+14155550305"
    audience(stack, campaign_id, [stopped, other])
    prepare(stack, campaign_id)
    suppress(store, stopped)

    # When it is approved and sent
    command(stack, {"command": "approve", "campaign_id": campaign_id})
    settled(store, campaign_id, other, "delivered")
    settled(store, campaign_id, stopped, "skipped_opted_out")

    # Then the opt-out took effect at send time
    assert creates(stack, stopped, status=None) == []


def test_a_poison_message_fails_only_itself_and_reaches_the_dead_letter_queue(stack, store, campaign_id):
    # Given a batch with one good send request and one that is not a send request at all
    phone = "+14155550306"
    sending_without_dispatch(stack, store, campaign_id, [phone])
    sqs = boto3.client("sqs")
    good = json.dumps({"campaign_id": campaign_id, "recipient_id": recipient_id_for(campaign_id, phone)})
    poison = json.dumps({"campaign_id": campaign_id, "surprise": True})
    sqs.send_message_batch(
        QueueUrl=stack.queue_url("SendQueue"),
        Entries=[{"Id": "good", "MessageBody": good}, {"Id": "poison", "MessageBody": poison}],
    )

    # Then the good one is sent, and the poison one lands in the DLQ after its receives
    settled(store, campaign_id, phone, "delivered")
    dead_letters = stack.queue_url("SendDeadLetterQueue")

    def poisoned():
        messages = sqs.receive_message(QueueUrl=dead_letters, MaxNumberOfMessages=10).get("Messages", [])
        return [m for m in messages if m["Body"] == poison]

    assert wait_for(poisoned, timeout=60, what="the poison message in the DLQ", interval=0.5)
