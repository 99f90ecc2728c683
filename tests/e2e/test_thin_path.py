"""The thin path through every layer, on the local stack with DynamoDB Local and the Twilio simulator."""

import base64
import time
from datetime import timedelta
from urllib.parse import parse_qsl, quote_plus

import boto3
import requests
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from local.demo import (
    DEMO_CSV,
    create_campaign,
    final_statuses,
    prepare,
    prepare_and_approve,
    command,
    run_demo_campaign,
    twilio_messages_of,
    upload_and_import,
    wait_for,
    whole_numbers_in,
)
from smsinvite.messages import body_digest
from smsinvite.status import Status
from smsinvite.store import recipient_id_for, utcnow
from smsinvite.twilio_gateway import _RedirectingHttpClient


def counters(stack, campaign_id):
    counts = stack.command({"command": "status", "campaign_id": campaign_id})["result"]["counts"]
    return {status: n for status, n in counts.items() if n}


def test_the_local_stack_runs_on_dynamodb_local(stack):
    assert stack.services.engine == "dynamodb-local"


def test_a_dropped_csv_is_imported_texted_and_each_message_reaches_its_final_status(stack, campaign_id, caplog):
    # Given the demo's messy CSV, when it runs the whole thin path
    caplog.set_level("INFO")
    result = run_demo_campaign(stack, campaign_id=campaign_id)

    # Then every row ended in one outcome, only valid mobiles were texted, once each
    assert result.import_summary == {
        "state": "completed", "rows": 9, "imported": 5, "suppressed": 1, "duplicate": 1, "landline": 1,
        "invalid:not_a_number": 1,
    }
    assert result.rejected_report.endswith("-rejected.csv")
    assert result.twilio_creates == 4
    assert sorted(result.statuses.values()) == [
        "deferred", "delivered", "delivered", "delivered", "skipped_opted_out", "undelivered"
    ]
    # And the night-time number waits, parked, for its window to open
    assert result.report["deferred_by_quiet_hours"]["recipients"] == 1
    assert stack.twilio.created(to="+819012345678") == []
    # And the signed callbacks moved the counters once per real transition
    assert counters(stack, campaign_id) == {"imported": 1, "delivered": 3, "undelivered": 1, "skipped_opted_out": 1}
    # And the functions logged, but no phone number whole (message or extra fields)
    logged = "\n".join(" ".join(str(value) for value in vars(record).values()) for record in caplog.records)
    assert "invitation accepted by Twilio" in logged
    assert whole_numbers_in(logged, result.statuses) == 0


def test_the_same_upload_reported_twice_imports_once(stack, store, campaign_id, event):
    # Given an upload the router already delivered and imported
    create_campaign(stack, campaign_id)
    upload_and_import(stack, store, campaign_id, DEMO_CSV)
    key = f"imports/{campaign_id}/customers march (1).csv"

    # When S3 delivers the same notification again (its delivery is at-least-once)
    head = boto3.client("s3").head_object(Bucket=stack.bucket, Key=key)
    record = event("s3-put-recipients.json")["Records"][0]
    record["s3"]["bucket"]["name"] = stack.bucket
    record["s3"]["object"].update(
        key=quote_plus(key, safe="/"), eTag=head["ETag"].strip('"'), versionId=head["VersionId"], size=head["ContentLength"]
    )
    again = stack.router.invoke("ImportFunction", {"Records": [record]})

    # Then it is recognised as the same import and nothing is counted twice
    assert again["imports"][0] == {"import_id": again["imports"][0]["import_id"], "state": "completed", "new": False}
    assert counters(stack, campaign_id)["imported"] == 5


def test_a_forged_status_callback_gets_403_and_changes_nothing(stack, store, campaign_id):
    # Given a delivered campaign
    run_demo_campaign(stack, campaign_id=campaign_id)
    before = counters(stack, campaign_id)
    recipient = next(r for r in store.t.recipients.query(campaign_id) if r.message_sid)

    # When someone posts a "failed" callback without Twilio's key
    url = f"{stack.api_url}/twilio/status?c={campaign_id}&r={recipient.recipient_id}&a={recipient.attempt_id}"
    form = {"MessageSid": recipient.message_sid, "MessageStatus": "failed", "ErrorCode": "30007"}
    forged = RequestValidator("not-the-auth-token").compute_signature(url, form)
    response = requests.post(url, data=form, headers={"X-Twilio-Signature": forged}, timeout=10)

    # Then it is refused and nothing moved
    assert response.status_code == 403
    assert "not-the-auth-token" not in response.text
    assert counters(stack, campaign_id) == before
    assert store.recipient(campaign_id, recipient.recipient_id).status == recipient.status


def test_a_tampered_genuine_callback_gets_403_and_a_replayed_one_changes_nothing(stack, store, campaign_id):
    # Given a genuine, signed callback that Twilio posted
    run_demo_campaign(stack, campaign_id=campaign_id)
    before = counters(stack, campaign_id)
    sids = {m.sid for m in twilio_messages_of(stack, campaign_id)}
    genuine = next(c for c in stack.twilio.callback_log if c.message_sid in sids and c.params["MessageStatus"] == "sent")
    headers = {"X-Twilio-Signature": genuine.signature}

    # When its status is changed in transit, it is refused
    tampered = {**genuine.params, "MessageStatus": "failed"}
    assert requests.post(genuine.url, data=tampered, headers=headers, timeout=10).status_code == 403

    # When it is replayed unchanged, it is accepted but moves nothing backwards and counts nothing twice
    assert requests.post(genuine.url, data=genuine.params, headers=headers, timeout=10).status_code == 204
    assert counters(stack, campaign_id) == before


def test_callbacks_out_of_order_and_twice_leave_the_right_final_status(stack, store, twilio, campaign_id):
    # Given a simulator that posts every callback twice, in reverse order
    twilio.callbacks_out_of_order = True
    twilio.duplicate_callbacks = True
    create_campaign(stack, campaign_id)
    upload_and_import(stack, store, campaign_id, "phone\n+14155550101\n+14155550102\n")

    # When the campaign is prepared and approved
    prepare_and_approve(stack, campaign_id)
    statuses = wait_for(lambda: final_statuses(store, campaign_id), timeout=60, what="final statuses")
    twilio.wait_until_idle(timeout=10)

    # Then each message ends delivered, counted once
    assert set(statuses.values()) == {"delivered"}
    assert counters(stack, campaign_id) == {"delivered": 2}


def test_a_connection_dropped_after_twilio_accepted_is_not_resent(stack, store, twilio, campaign_id):
    # Given Twilio takes the message but the connection drops before the answer
    create_campaign(stack, campaign_id)
    upload_and_import(stack, store, campaign_id, "phone\n+14155550103\n")
    twilio.faults.next(["drop"])

    # When the campaign is sent and SQS redelivers whatever it likes
    prepare_and_approve(stack, campaign_id)
    statuses = wait_for(lambda: final_statuses(store, campaign_id), timeout=60, what="a final status")
    stack.router.fire_schedule("SchedulerFunction")

    # Then exactly one message exists, and Twilio's callbacks resolved the unknown outcome
    assert len(twilio.created(to="+14155550103")) == 1
    assert statuses == {"+14155550103": "delivered"}


def test_a_final_status_callback_that_met_a_throttled_table_is_applied_on_twilios_retry(
        stack, store, twilio, campaign_id, monkeypatch):
    from botocore.exceptions import ClientError
    from pynamodb.exceptions import TransactWriteError

    from smsinvite.store import Store

    phone = "+14155550108"
    transition, refused = Store.transition, []

    def throttled_once(self, recipient, new, **changes):
        if new is Status.DELIVERED and not refused:
            refused.append(recipient.recipient_id)
            cause = ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}},
                                "TransactWriteItems")
            raise TransactWriteError("Failed to write transaction items", cause=cause)
        return transition(self, recipient, new, **changes)

    # Given DynamoDB throttles the first write of a "delivered"
    monkeypatch.setattr(Store, "transition", throttled_once)
    create_campaign(stack, campaign_id)
    upload_and_import(stack, store, campaign_id, f"phone\n{phone}\n")

    # When the invitation is sent and Twilio reports it delivered, to the URL the sender gave it
    prepare_and_approve(stack, campaign_id)
    [message] = wait_for(lambda: twilio.created(to=phone), timeout=60, what="the invitation")
    wait_for(lambda: refused, timeout=30, what="the delivered callback")
    twilio.wait_until_idle(timeout=10)

    # Then Twilio's first post of "delivered" got a 5xx, and its retry got 204
    delivered = [c for c in twilio.callbacks(message.sid) if c.params["MessageStatus"] == "delivered"]
    assert [(c.attempt, c.status) for c in delivered] == [(1, 500), (2, 204)]
    # And the recipient's row says delivered
    recipient = store.t.recipients.get(campaign_id, recipient_id_for(campaign_id, phone), consistent_read=True)
    assert (recipient.status, recipient.message_sid) == ("delivered", message.sid)


def _claim_as_a_crashed_sender(store, campaign_id, phone, body):
    recipient = store.recipient(campaign_id, recipient_id_for(campaign_id, phone))
    return store.transition(
        recipient,
        Status.CLAIMED,
        attempt_id="crashed-attempt",
        claimed_at=(utcnow() - timedelta(seconds=30)).isoformat(),
        body_digest=body_digest(body),
    )


def test_a_sender_that_died_after_twilio_accepted_is_reconciled_to_sent_without_a_resend(stack, store, campaign_id):
    # Given a sender claimed a recipient, Twilio created the message, and the sender died before saving it
    phone, body = "+14155550104", "Hi there, tell us how we did"
    create_campaign(stack, campaign_id)
    upload_and_import(stack, store, campaign_id, f"phone\n{phone}\n")
    prepare(stack, campaign_id)
    _claim_as_a_crashed_sender(store, campaign_id, phone, body)
    command(stack, {"command": "approve", "campaign_id": campaign_id})
    client = Client(stack.twilio.account_sid, stack.twilio.auth_token, http_client=_RedirectingHttpClient(stack.twilio.base_url))
    sid = client.messages.create(to=phone, from_="+15005550006", body=body).sid

    # When the scheduler reconciles unresolved sends
    result = stack.router.fire_schedule("SchedulerFunction")

    # Then the recipient carries Twilio's message, and nothing was sent again
    assert result["reconciled"].get("found") == 1
    recipient = store.recipient(campaign_id, recipient_id_for(campaign_id, phone))
    assert recipient.message_sid == sid
    assert Status(recipient.status).rank >= Status.QUEUED.rank
    assert len(stack.twilio.created(to=phone)) == 1


def test_a_send_that_twilio_never_received_is_sent_once_after_reconciliation(stack, store, campaign_id):
    # Given a sender claimed a recipient and died before calling Twilio
    phone = "+14155550105"
    create_campaign(stack, campaign_id)
    upload_and_import(stack, store, campaign_id, f"phone\n{phone}\n")
    prepare(stack, campaign_id)
    _claim_as_a_crashed_sender(store, campaign_id, phone, "never sent")
    command(stack, {"command": "approve", "campaign_id": campaign_id})

    # When the scheduler reconciles, Twilio's list has no such message, and still none a confirmation delay later
    first = stack.router.fire_schedule("SchedulerFunction")
    assert first["reconciled"].get("confirming") == 1
    time.sleep(2.1)  # the e2e stack's RECONCILE_CONFIRM_SECONDS
    result = stack.router.fire_schedule("SchedulerFunction")

    # Then the recipient is queued again and texted exactly once
    assert result["reconciled"].get("requeued") == 1
    wait_for(lambda: final_statuses(store, campaign_id), timeout=60, what="the resend to finish")
    assert len(stack.twilio.created(to=phone)) == 1


def test_an_inbound_reply_is_verified_and_kept_once(stack, store):
    # Given Twilio posts a signed inbound SMS (with blank parameters, as Twilio does)
    status, headers, body = stack.twilio.send_inbound(stack.inbound_webhook_url, "+14155550106", "+15005550006",
                                                      "Maybe later")

    # Then it is answered with empty TwiML and stored
    assert status == 200
    assert "<Response" in body
    replies = list(store.t.inbox.query("+14155550106"))
    assert [r.body for r in replies] == ["Maybe later"]


def test_an_inbound_post_without_a_valid_signature_gets_403(stack, store):
    url = f"{stack.api_url}/twilio/inbound"
    form = {"MessageSid": "SM" + "0" * 32, "From": "+14155550107", "To": "+15005550006", "Body": "STOP"}
    response = requests.post(url, data=form, headers={"X-Twilio-Signature": base64.b64encode(b"x" * 20)}, timeout=10)
    assert response.status_code == 403
    assert list(store.t.inbox.query("+14155550107")) == []


def test_the_console_status_callback_sample_is_refused_unsigned_and_accepted_when_signed(stack, event):
    # Given the console sample, delivered as API Gateway would deliver it
    sample = event("http-status-callback.json")
    assert stack.router.invoke("StatusWebhookFunction", sample)["statusCode"] == 403

    # When it carries a signature made with the account's token for the public URL
    form = dict(parse_qsl(base64.b64decode(sample["body"]).decode()))
    url = f"{stack.api_url}/twilio/status?{sample['rawQueryString']}"
    sample["headers"]["x-twilio-signature"] = RequestValidator(stack.twilio.auth_token).compute_signature(url, form)

    # Then it is accepted (its recipient does not exist here, so nothing changes)
    assert stack.router.invoke("StatusWebhookFunction", sample)["statusCode"] == 204


def test_a_short_link_redirects_to_the_survey_with_its_code(stack, store, campaign_id):
    # Given a campaign and a code for one invitee
    create_campaign(stack, campaign_id)
    store.t.codes("R3D1RECT7Q2X", campaign_id=campaign_id, recipient_id="r1").save()

    # When the invitee opens the link
    response = requests.get(f"{stack.api_url}/i/R3D1RECT7Q2X", allow_redirects=False, timeout=10)

    # Then they land on the survey with the code
    assert response.status_code == 302
    assert response.headers["Location"] == "https://survey.example.com/s/spring?code=R3D1RECT7Q2X"


def test_an_unknown_or_expired_short_link_gets_a_small_page_that_reveals_nothing(stack, store, campaign_id, event):
    create_campaign(stack, campaign_id)
    store.t.codes("EXPIRED2024X", campaign_id=campaign_id, recipient_id="r1", expires_at=utcnow() - timedelta(days=1)).save()
    store.t.codes("P00LC0DE7Q2X", campaign_id=campaign_id, pool_campaign_id=campaign_id).save()

    unknown = stack.router.invoke("CodesApiFunction", event("http-short-link.json"))
    expired = requests.get(f"{stack.api_url}/i/EXPIRED2024X", allow_redirects=False, timeout=10)
    malformed = requests.get(f"{stack.api_url}/i/%3Cscript%3E", allow_redirects=False, timeout=10)
    never_given = requests.get(f"{stack.api_url}/i/P00LC0DE7Q2X", allow_redirects=False, timeout=10)

    assert unknown["statusCode"] == 404
    assert expired.status_code == 410
    assert malformed.status_code == 404
    assert never_given.status_code == 404
    assert campaign_id not in expired.text and "survey.example.com" not in expired.text
