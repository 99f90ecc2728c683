"""Consent on the local stack: keywords, double opt-in, pumping limits, carrier errors and erasure."""

import itertools
import uuid
from urllib.parse import urldefrag

import pytest
from botocore.exceptions import ClientError
from pynamodb.exceptions import TransactWriteError

from local.demo import NO_QUIET_HOURS, command, create_campaign, final_statuses, prepare_and_approve, wait_for

SENDER = "+15005550006"


_SERIAL = itertools.count(1000 + uuid.uuid4().int % 4000)


def number(prefix: str = "+1415557") -> str:
    """A number of this test's own (suppression is system-wide): never the same twice in a module."""
    return f"{prefix}{next(_SERIAL):04d}"


def inbound(stack, phone: str, body: str, url: str | None = None, **redelivery) -> tuple[int, str]:
    """Someone texts `body`: Twilio posts it to the inbound webhook the operator registered."""
    status, _, twiml = stack.twilio.send_inbound(url or stack.inbound_webhook_url, phone, SENDER, body, **redelivery)
    return status, twiml


def throttled() -> TransactWriteError:
    """A ThrottlingException from DynamoDB, as PynamoDB raises it from a transaction."""
    cause = ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, "TransactWriteItems")
    return TransactWriteError("Failed to write transaction items", cause=cause)


@pytest.fixture
def throttle_next_suppression(monkeypatch):
    """Call it to have DynamoDB throttle the next suppression write, once; later ones go through."""
    from smsinvite.store import Store

    suppress, refused = Store.suppress, []

    def throttled_once(self, entry, reason):
        if not refused:
            refused.append(reason)
            raise throttled()
        return suppress(self, entry, reason)

    return lambda: monkeypatch.setattr(Store, "suppress", throttled_once)


def suppressions_in_table(store, phone: str) -> list:
    """The suppression table itself, scanned: its rows for this number."""
    return list(store.t.suppressions.scan(store.t.suppressions.phone == phone, consistent_read=True))


def ledger_in_table(store, phone: str) -> list[tuple[str, str]]:
    """The consent table itself, scanned: (event, source) of this number's entries."""
    return [(row.event, row.source) for row in store.t.consent.scan(store.t.consent.phone == phone, consistent_read=True)]


def s3():
    from smsinvite import aws_clients

    return aws_clients.client("s3")


def events(store, phone: str) -> list[tuple[str, str]]:
    return [(entry.event, entry.source) for entry in store.consent_of(phone)]


def new_list(stack, **fields) -> str:
    list_id = f"l-{uuid.uuid4().hex[:8]}"
    command(stack, {
        "command": "create_list", "list_id": list_id, "name": "Panel",
        "confirmation_text": "Acme: reply YES to join our survey panel.",
        "welcome_text": "Welcome to the Acme panel.", "quiet_hours": NO_QUIET_HOURS, "rate_per_second": 5, **fields,
    })
    return list_id


# ------------------------------------------------------------------------------------------- keywords
@pytest.mark.parametrize("body", [" stop ", "Stop.", "STOPALL", "unsubscribe", "ARRET"])
def test_an_opt_out_keyword_suppresses_the_number_and_is_in_the_ledger(stack, store, body):
    phone = number()
    status, twiml = inbound(stack, phone, body)
    assert status == 200 and "<Response" in twiml
    assert store.suppression(phone).reason == "opted_out"
    assert events(store, phone) == [("opt_out", "keyword")]
    [kept] = store.t.inbox.query(phone)
    assert (kept.body, kept.intent) == (body, "opt_out")


def test_twilio_answers_its_own_keywords_and_we_answer_local_ones(stack):
    # Given Twilio's Advanced Opt-Out answers STOP itself (the default), and ARRET is a local word
    _, standard = inbound(stack, number(), "STOP")
    _, local = inbound(stack, number(), "Arrêt")
    # Then only the local word gets our confirmation
    assert "<Message>" not in standard
    assert "<Message>" in local and "unsubscribed" in local


def test_help_gets_the_help_text_only_when_twilio_does_not_answer_it(stack):
    _, help_reply = inbound(stack, number(), "help")
    assert "<Message>" not in help_reply  # Twilio's own HELP answer goes out instead


def test_a_polite_opt_out_suppresses_and_is_flagged(stack, store):
    phone = number()
    inbound(stack, phone, "Please stop texting me")
    assert store.suppression(phone).reason == "opted_out"
    [kept] = store.t.inbox.query(phone)
    assert (kept.intent, int(kept.flagged)) == ("opt_out", 1)
    assert store.consent_of(phone)[0].detail == "polite phrasing"


def test_start_lifts_an_opt_out_but_not_a_blocklist(stack, store, suppress):
    opted_out, blocked = number(), number()
    inbound(stack, opted_out, "STOP")
    suppress(store, blocked, "blocklist")
    inbound(stack, opted_out, "START")
    inbound(stack, blocked, "START")
    assert store.suppression(opted_out) is None
    assert events(store, opted_out) == [("opt_out", "keyword"), ("resubscribe", "keyword")]
    assert store.suppression(blocked).reason == "blocklist"


def test_any_other_reply_is_kept_and_linked_to_the_invitation_it_answers(stack, store, campaign_id):
    create_campaign(stack, campaign_id)
    phone = number()
    command(stack, {"command": "add_recipients", "campaign_id": campaign_id, "recipients": [{"phone": phone}]})
    prepare_and_approve(stack, campaign_id)
    wait_for(lambda: final_statuses(store, campaign_id), timeout=60, what="the invitation")
    inbound(stack, phone, "Thanks, will do it tonight")
    [kept] = store.t.inbox.query(phone)
    assert (kept.campaign_id, kept.intent) == (campaign_id, "none")
    assert kept.recipient_id
    assert store.suppression(phone) is None


def test_a_redelivered_inbound_webhook_is_processed_once(stack, store):
    # Given Twilio posts the same STOP twice with one idempotency token (a retry)
    phone = number()
    delivery = {"token": uuid.uuid4().hex, "message_sid": "SM" + uuid.uuid4().hex}
    first = inbound(stack, phone, "STOP", **delivery)
    again = inbound(stack, phone, "STOP", **delivery)
    # Then both are answered alike, and the ledger has one opt-out
    assert first == again and first[0] == 200
    assert events(store, phone) == [("opt_out", "keyword")]


def test_an_opt_out_that_cannot_be_stored_is_not_acknowledged_and_the_retry_records_it(stack, store, monkeypatch):
    from smsinvite.store import Store

    phone = number()

    def refuse(self, entry, reason):
        raise throttled()

    # Given DynamoDB throttles the suppression's write, for longer than Twilio keeps retrying
    monkeypatch.setattr(Store, "suppress", refuse)
    delivery = {"token": uuid.uuid4().hex, "message_sid": "SM" + uuid.uuid4().hex}
    status, answer = inbound(stack, phone, "ARRET", **delivery)

    # Then Twilio gets a 5xx (every time it tries) and no confirmation
    assert status >= 500
    assert "<Message>" not in answer
    assert store.suppression(phone) is None

    # When DynamoDB recovers and the same delivery comes again, the opt-out is recorded and confirmed
    monkeypatch.undo()
    status, answer = inbound(stack, phone, "ARRET", **delivery)
    assert status == 200 and "<Message>" in answer
    assert store.suppression(phone).reason == "opted_out"


def test_a_stop_that_first_meets_a_throttled_table_is_recorded_on_twilios_retry(stack, store, throttle_next_suppression):
    phone = number()

    # Given the inbound webhook registered as the README says, and DynamoDB throttling the
    # suppression's first write
    throttle_next_suppression()

    # When the person texts STOP
    status, _ = inbound(stack, phone, "STOP")

    # Then Twilio's first post got a 5xx, and its retry of the same delivery got 200
    posts = [r for r in stack.twilio.callbacks(kind="inbound") if r.params["From"] == phone]
    assert [(r.attempt, r.status >= 500) for r in posts] == [(1, True), (2, False)]
    assert posts[-1].ok and status == 200
    assert len({(r.idempotency_token, r.message_sid) for r in posts}) == 1
    # And the suppression and its ledger entry are in the tables
    assert [(row.reason, row.source) for row in suppressions_in_table(store, phone)] == [("opted_out", "keyword")]
    assert ledger_in_table(store, phone) == [("opt_out", "keyword")]


def test_without_connection_overrides_twilio_does_not_retry_a_stop_answered_5xx(stack, store, throttle_next_suppression):
    phone = number()

    # Given the inbound webhook registered without a fragment, and the same throttled first write
    throttle_next_suppression()

    # When the person texts STOP
    status, _ = inbound(stack, phone, "STOP", url=urldefrag(stack.inbound_webhook_url).url)

    # Then Twilio posted once, got a 5xx and gave up: nothing is recorded
    posts = [r for r in stack.twilio.callbacks(kind="inbound") if r.params["From"] == phone]
    assert [(r.attempt, r.status) for r in posts] == [(1, status)] and status >= 500
    assert suppressions_in_table(store, phone) == []
    assert ledger_in_table(store, phone) == []


def test_a_stop_reply_suppresses_the_number_before_its_invitation_is_sent(stack, store, campaign_id):
    # Given a prepared campaign, and one of its people replies STOP to an earlier message
    create_campaign(stack, campaign_id)
    stopped, other = number(), number()
    command(stack, {"command": "add_recipients", "campaign_id": campaign_id,
                    "recipients": [{"phone": stopped}, {"phone": other}]})
    command(stack, {"command": "prepare", "campaign_id": campaign_id})
    inbound(stack, stopped, "STOP")
    # When it is sent
    command(stack, {"command": "approve", "campaign_id": campaign_id})
    statuses = wait_for(lambda: final_statuses(store, campaign_id), timeout=60, what="the send")
    # Then the number that said STOP is skipped, and only the other is texted
    assert statuses[stopped] == "skipped_opted_out"
    assert stack.twilio.created(to=stopped) == []
    assert len(stack.twilio.created(to=other)) == 1


# ------------------------------------------------------------------------------------- double opt-in
def test_double_opt_in_round_trip_subscribe_confirmation_signed_yes_active(stack, store):
    list_id, phone = new_list(stack), number()

    # When a number is subscribed
    result = command(stack, {"command": "subscribe", "list_id": list_id, "people": [{"phone": phone}]})
    assert result["outcomes"] == {"pending": 1}
    assert store.t.subscriptions.get(list_id, phone, consistent_read=True).state == "pending"

    # Then the confirmation SMS goes out through the sender
    [sent] = wait_for(lambda: stack.twilio.created(to=phone), timeout=30, what="the confirmation SMS")
    assert "reply YES" in sent.body

    # And a signed YES makes the subscription active, answered with the list's welcome
    status, twiml = inbound(stack, phone, "yes")
    assert status == 200 and "Welcome to the Acme panel." in twiml
    assert store.t.subscriptions.get(list_id, phone, consistent_read=True).state == "active"
    assert events(store, phone) == [("opt_in", "command"), ("confirmation", "keyword")]

    # And STOP ends it
    inbound(stack, phone, "STOP")
    assert store.t.subscriptions.get(list_id, phone, consistent_read=True).state == "unsubscribed"


def test_a_campaign_audience_takes_a_lists_active_subscribers_filtered_by_rules(stack, store, campaign_id):
    # Given a list with one confirmed gold subscriber, one confirmed silver and one still pending
    list_id = new_list(stack)
    gold, silver, pending = number(), number(), number()
    command(stack, {"command": "subscribe", "list_id": list_id, "people": [
        {"phone": gold, "tier": "gold"}, {"phone": silver, "tier": "silver"}, {"phone": pending, "tier": "gold"}]})
    for phone in (gold, silver):
        wait_for(lambda phone=phone: stack.twilio.created(to=phone), timeout=30, what="the confirmation SMS")
        inbound(stack, phone, "YES")

    # When a campaign takes the list's gold subscribers as its audience and is prepared
    create_campaign(stack, campaign_id)
    command(stack, {"command": "update_campaign", "campaign_id": campaign_id, "audience": {
        "lists": [{"list_id": list_id, "rules": [{"field": "tier", "op": "equals", "value": "gold"}]}]}})
    preview = command(stack, {"command": "prepare", "campaign_id": campaign_id})["preview"]

    # Then only the confirmed gold subscriber is invited
    assert preview["audience"]["eligible"] == 1
    invited = {r.phone for r in store.t.recipients.query(campaign_id) if not r.exclusion}
    assert invited == {gold}


def test_a_subscribe_retried_does_not_send_a_second_confirmation(stack, store):
    list_id, phone = new_list(stack), number()
    command(stack, {"command": "subscribe", "list_id": list_id, "people": [{"phone": phone}]})
    wait_for(lambda: stack.twilio.created(to=phone), timeout=30, what="the confirmation SMS")
    again = command(stack, {"command": "subscribe", "list_id": list_id, "people": [{"phone": phone}]})
    assert again["outcomes"] == {"already_pending": 1}
    assert len(stack.twilio.created(to=phone)) == 1


def test_unsubscribe_ends_a_subscription(stack, store):
    list_id, phone = new_list(stack), number()
    command(stack, {"command": "subscribe", "list_id": list_id, "people": [{"phone": phone}]})
    result = command(stack, {"command": "unsubscribe", "list_id": list_id, "phones": [phone]})
    assert result["outcomes"] == {"unsubscribed": 1}
    assert store.t.subscriptions.get(list_id, phone, consistent_read=True).state == "unsubscribed"


def test_pumping_limits_hold_and_no_twilio_call_is_made(stack, store):
    list_id = new_list(stack)
    premium, foreign, repeated = "+19005550100", number("+7916555"), number()
    result = command(stack, {"command": "subscribe", "list_id": list_id, "requested_by": "form-1", "people": [
        {"phone": premium}, {"phone": foreign}]})
    assert [p["outcome"] for p in result["people"]] == ["premium_rate", "country_not_allowed"]
    # And one number may be asked three times a day, across lists
    outcomes = []
    for _ in range(4):
        other_list = new_list(stack)
        outcomes += [p["outcome"] for p in command(stack, {
            "command": "subscribe", "list_id": other_list, "people": [{"phone": repeated}]})["people"]]
    assert outcomes == ["pending", "pending", "pending", "rate_limited:number"]
    wait_for(lambda: len(stack.twilio.created(to=repeated)) == 3, timeout=30, what="three confirmations")
    assert stack.twilio.created(to=premium) == [] and stack.twilio.created(to=foreign) == []


# ------------------------------------------------------------------------------------- carrier errors
def test_a_dead_number_reported_by_the_carrier_is_suppressed_as_undeliverable(stack, store, campaign_id):
    dead = number()
    stack.twilio.set_outcome(dead, "undelivered", 30005)
    create_campaign(stack, campaign_id)
    command(stack, {"command": "add_recipients", "campaign_id": campaign_id, "recipients": [{"phone": dead}]})
    prepare_and_approve(stack, campaign_id)
    statuses = wait_for(lambda: final_statuses(store, campaign_id), timeout=60, what="the callback")
    assert statuses[dead] == "undelivered"
    wait_for(lambda: store.suppression(dead), timeout=10, what="the suppression")
    assert store.suppression(dead).reason == "undeliverable"
    assert events(store, dead) == [("undeliverable", "carrier_error")]


# ------------------------------------------------------------------------------------- ledger and erasure
def test_the_consent_ledger_exports_as_csv(stack, store):
    phone = number()
    inbound(stack, phone, "STOP")
    result = command(stack, {"command": "export_consent", "phone": phone})
    body = s3().get_object(Bucket=result["bucket"], Key=result["key"])["Body"].read().decode()
    header, row = body.strip().splitlines()
    assert header.startswith("at,phone,event,source")
    assert f",'{phone},opt_out,keyword," in row  # a leading + is made formula-safe


def test_erasure_removes_the_number_and_a_reimport_stays_blocked(stack, store, campaign_id):
    # Given a number that was invited, replied and is in the ledger
    phone = number()
    create_campaign(stack, campaign_id)
    command(stack, {"command": "add_recipients", "campaign_id": campaign_id,
                    "recipients": [{"phone": phone, "first_name": "Zoe"}]})
    prepare_and_approve(stack, campaign_id)
    wait_for(lambda: final_statuses(store, campaign_id), timeout=60, what="the invitation")
    inbound(stack, phone, "who is this?")
    command(stack, {"command": "export", "campaign_id": campaign_id})

    # When it is erased
    result = command(stack, {"command": "erase_phone", "phone": phone})

    # Then its data is gone from every table and report
    assert result["erased"]["recipients"] == 1 and result["erased"]["inbox"] == 1
    assert list(store.t.inbox.query(phone)) == []
    assert store.consent_of(phone) == []
    assert phone not in {r.phone for r in store.t.recipients.query(campaign_id)}
    assert all(not r.fields.as_dict() for r in store.t.recipients.query(campaign_id))
    suppression = store.suppression(phone)
    assert (suppression.reason, suppression.phone) == ("erased", None)
    bucket = result_bucket()
    for page in s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="reports/"):
        for item in page.get("Contents", []):
            assert phone not in s3().get_object(Bucket=bucket, Key=item["Key"])["Body"].read().decode()

    # And a later import of the number stays blocked
    again = f"e2e-{uuid.uuid4().hex[:10]}"
    create_campaign(stack, again)
    command(stack, {"command": "add_recipients", "campaign_id": again, "recipients": [{"phone": phone}]})
    [recipient] = store.t.recipients.query(again)
    assert (recipient.status, recipient.failure_reason) == ("skipped_opted_out", "suppressed_at_import")


def result_bucket() -> str:
    from smsinvite.settings import Settings

    return Settings.from_env().imports_bucket
