"""The survey platform's side of a code, on the local stack: redeem once, complete, keys, guessing."""

import itertools
import json
import threading
import time
import uuid
from datetime import timedelta
from zoneinfo import ZoneInfo

import requests

from local.demo import command, create_campaign
from smsinvite.phones import normalise
from smsinvite.store import utcnow


_SERIAL = itertools.count(1000 + uuid.uuid4().int % 4000)


def number(prefix: str) -> str:
    """A number of this test's own: never the same twice in a module."""
    return f"{prefix}{next(_SERIAL):04d}"


def api_key() -> str:
    from smsinvite import aws_clients
    from smsinvite.settings import Settings

    secret = Settings.from_env().codes_api_key_secret
    return aws_clients.client("secretsmanager").get_secret_value(SecretId=secret)["SecretString"]


def invitee(store, campaign_id, *, expires_at=None, fields=None) -> str:
    """Given a code issued to one invitee of the campaign."""
    phone = normalise(number("+1415559"), "US")
    store.add_recipient(campaign_id, phone, fields or {}, import_id="i", row_number=1)
    [recipient] = [r for r in store.t.recipients.query(campaign_id) if r.phone == phone.e164]
    code = uuid.uuid4().hex[:12].upper()
    store.t.codes(code, campaign_id=campaign_id, recipient_id=recipient.recipient_id, expires_at=expires_at).save()
    return code


def post(stack, code, action, body=None, key="default"):
    headers = {"x-api-key": api_key() if key == "default" else key} if key is not None else {}
    return requests.post(f"{stack.api_url}/codes/{code}/{action}", data=json.dumps(body or {}), headers=headers,
                         timeout=10)


def test_the_first_redeem_admits_the_invitee_with_the_fields_the_campaign_allows(stack, store, campaign_id):
    create_campaign(stack, campaign_id)
    command(stack, {"command": "update_campaign", "campaign_id": campaign_id, "survey_fields": ["first_name"]})
    code = invitee(store, campaign_id, fields={"first_name": "Ana", "tier": "gold"})

    first = post(stack, code, "redeem", {"session_id": "s-1"})
    assert first.status_code == 200
    assert first.json() == {"campaign_id": campaign_id, "recipient": {"first_name": "Ana"}, "session_id": "s-1"}

    # And the same session again is the same answer; another session is refused
    assert post(stack, code, "redeem", {"session_id": "s-1"}).json() == first.json()
    assert post(stack, code, "redeem", {"session_id": "s-2"}).status_code == 409


def test_unknown_expired_and_closed_codes_are_refused(stack, store, campaign_id):
    create_campaign(stack, campaign_id)
    expired = invitee(store, campaign_id, expires_at=utcnow() - timedelta(minutes=1))
    assert post(stack, "NOSUCHC0DE42", "redeem", {"session_id": "s"}).status_code == 404
    assert post(stack, expired, "redeem", {"session_id": "s"}).status_code == 410

    closed = f"e2e-{uuid.uuid4().hex[:10]}"
    create_campaign(stack, closed)
    code = invitee(store, closed)
    command(stack, {"command": "cancel", "campaign_id": closed})
    assert post(stack, code, "redeem", {"session_id": "s"}).status_code == 410


def test_a_redeem_without_a_session_or_with_a_bad_body_gets_a_clear_400(stack, store, campaign_id):
    create_campaign(stack, campaign_id)
    code = invitee(store, campaign_id)
    assert post(stack, code, "redeem", {}).status_code == 400
    bad = requests.post(f"{stack.api_url}/codes/{code}/redeem", data="{not json", headers={"x-api-key": api_key()},
                        timeout=10)
    assert bad.status_code == 400 and "session_id" in bad.text


def test_wrong_or_missing_keys_get_401_and_log_no_secret(stack, store, campaign_id, caplog):
    create_campaign(stack, campaign_id)
    code = invitee(store, campaign_id)
    wrong = post(stack, code, "redeem", {"session_id": "s"}, key="not-the-key")
    missing = post(stack, code, "complete", key=None)
    assert (wrong.status_code, missing.status_code) == (401, 401)
    assert api_key() not in caplog.text and "not-the-key" not in caplog.text
    assert store.t.codes.get(code, consistent_read=True).redeemed_at is None


def test_complete_marks_the_answer_once(stack, store, campaign_id):
    create_campaign(stack, campaign_id)
    code = invitee(store, campaign_id)
    post(stack, code, "redeem", {"session_id": "s"})
    first, again = post(stack, code, "complete"), post(stack, code, "complete")
    assert (first.status_code, again.status_code) == (200, 200)
    assert (first.json()["new"], again.json()["new"]) == (True, False)
    assert first.json()["completed_at"] == again.json()["completed_at"]


def test_fifty_concurrent_redemptions_of_one_code_give_exactly_one_success(stack, store, campaign_id):
    create_campaign(stack, campaign_id)
    code = invitee(store, campaign_id)
    key, answers = api_key(), []

    def redeem(n):
        answers.append(post(stack, code, "redeem", {"session_id": f"s-{n}"}, key=key).status_code)

    threads = [threading.Thread(target=redeem, args=(n,)) for n in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [200] + [409] * 49


def test_the_short_link_records_the_first_click(stack, store, campaign_id):
    create_campaign(stack, campaign_id)
    code = invitee(store, campaign_id)
    assert requests.get(f"{stack.api_url}/i/{code}", allow_redirects=False, timeout=10).status_code == 302
    clicked = store.t.codes.get(code, consistent_read=True).clicked_at
    requests.get(f"{stack.api_url}/i/{code}", allow_redirects=False, timeout=10)
    assert clicked is not None and store.t.codes.get(code, consistent_read=True).clicked_at == clicked


def test_a_thousand_guesses_from_one_address_find_nothing_and_meet_429s(stack, store, campaign_id, event):
    # Given a campaign with real codes, and someone guessing from one address
    create_campaign(stack, campaign_id)
    real = invitee(store, campaign_id)
    guesser = f"203.0.113.{uuid.uuid4().int % 250 + 1}"

    def guess(code):
        request = event("http-short-link.json")
        request["rawPath"] = request["requestContext"]["http"]["path"] = f"/i/{code}"
        request["pathParameters"] = {"code": code}
        request["requestContext"]["http"]["sourceIp"] = guesser
        return stack.router.invoke("CodesApiFunction", request)["statusCode"]

    first_minute = int(time.time()) // 60
    answers = [guess(uuid.uuid4().hex[:12].upper()) for _ in range(1000)]
    minutes = int(time.time()) // 60 - first_minute + 1  # the limit is per fixed one-minute window

    # Then no guess succeeds, and once the limit is passed every answer is 429 (even for a real code)
    assert 302 not in answers
    assert answers[:20] == [404] * 20
    assert set(answers[20:]) <= {404, 429} and answers.count(404) <= 20 * minutes
    if minutes == 1:
        assert set(answers[20:]) == {429}
        assert guess(real) == 429
    # And the invitee, from another address, is not locked out
    assert requests.get(f"{stack.api_url}/i/{real}", allow_redirects=False, timeout=10).status_code == 302


def test_the_funnel_counts_each_stage_after_a_run(stack, store, campaign_id):
    from local.demo import final_statuses, prepare_and_approve, wait_for

    # Given four invitees texted, one of them unreachable
    create_campaign(stack, campaign_id)
    phones = [number("+1415556") for _ in range(4)]
    stack.twilio.set_outcome(phones[3], "undelivered", 30003)
    command(stack, {"command": "add_recipients", "campaign_id": campaign_id,
                    "recipients": [{"phone": p} for p in phones]})
    prepare_and_approve(stack, campaign_id)
    wait_for(lambda: final_statuses(store, campaign_id), timeout=60, what="the run")
    codes = {r.phone: r.code for r in store.t.recipients.query(campaign_id)}

    # When three click, two redeem and one completes
    for phone in phones[:3]:
        requests.get(f"{stack.api_url}/i/{codes[phone]}", allow_redirects=False, timeout=10)
    for phone in phones[:2]:
        post(stack, codes[phone], "redeem", {"session_id": f"s-{phone}"})
    post(stack, codes[phones[0]], "complete")

    # Then the report's funnel says so
    funnel = command(stack, {"command": "report", "campaign_id": campaign_id})["funnel"]
    assert funnel == {"audience": 4, "excluded": 0, "sent": 4, "delivered": 3, "failed": 1, "unresolved": 0,
                      "clicked": 3, "redeemed": 2, "completed": 1}


def test_reminders_go_only_to_reached_invitees_who_have_not_answered_with_the_same_code(stack, store, campaign_id):
    from local.demo import final_statuses, prepare_and_approve, wait_for

    # Given four invitees: one answers, one is unreachable, one opts out after the invitation, one is silent
    create_campaign(stack, campaign_id)
    answered, unreachable, stopped, silent = (number("+1415554") for _ in range(4))
    stack.twilio.set_outcome(unreachable, "undelivered", 30003)
    command(stack, {"command": "add_recipients", "campaign_id": campaign_id,
                    "recipients": [{"phone": p} for p in (answered, unreachable, stopped, silent)]})
    prepare_and_approve(stack, campaign_id)
    wait_for(lambda: final_statuses(store, campaign_id), timeout=60, what="the invitations")
    codes = {r.phone: r.code for r in store.t.recipients.query(campaign_id)}
    post(stack, codes[answered], "complete")
    stack.twilio.send_inbound(stack.inbound_webhook_url, stopped, "+15005550006", "STOP")

    # When two reminder rounds are due, at most one per invitee
    soon = [(utcnow() + timedelta(seconds=s)).isoformat() for s in (1, 2)]
    scheduled = command(stack, {"command": "schedule_reminders", "campaign_id": campaign_id,
                                "template": "Still time to tell us: {link}", "dates": soon, "max_per_invitee": 1})
    assert len(scheduled["rounds"]) == 2
    wait_for(lambda: utcnow().isoformat() > soon[1], timeout=5, what="both rounds to be due")
    stack.router.fire_schedule("SchedulerFunction")
    stack.router.fire_schedule("SchedulerFunction")

    # Then only the silent invitee is reminded, once, with the same code
    reminders = wait_for(lambda: [m for m in stack.twilio.created(to=silent) if "Still time" in m.body],
                         timeout=30, what="the reminder")
    assert len(reminders) == 1 and codes[silent] in reminders[0].body
    for phone in (answered, unreachable, stopped):
        assert not [m for m in stack.twilio.created(to=phone) if "Still time" in m.body]
    campaign = store.campaign(campaign_id)
    assert campaign.reminder_due_at is None  # both rounds ran


def test_reminder_dates_in_any_time_zone_are_kept_in_utc(stack, store, campaign_id):
    create_campaign(stack, campaign_id)
    tokyo = (utcnow() + timedelta(hours=1)).astimezone(ZoneInfo("Asia/Tokyo"))
    scheduled = command(stack, {"command": "schedule_reminders", "campaign_id": campaign_id,
                                "template": "Reminder: {link}", "dates": [tokyo.isoformat()]})
    assert scheduled["rounds"][0].endswith("+00:00")
    assert store.campaign(campaign_id).reminder_due_at == scheduled["rounds"][0]
