"""`make demo`: the main job end to end on the embedded default, narrated step by step.

A campaign is created; a CSV is dropped into the bucket and imported; prepare builds the audience,
gives each invitee a code and prints the preview; approve starts the send; the dispatcher fans the
audience out to the send queue; the sender texts each through the Twilio simulator while a progress
bar moves; the simulator's signed status callbacks move each message forward; the report is printed.
The same flow is the end-to-end test's (tests/e2e), so what the demo shows is what is tested.

`make demo` also shows consent at work: a STOP posted mid-send by a recipient not yet texted (the
sender skips the number and the ledger says why), a HELP, and a double opt-in to a subscription
list (subscribe, the confirmation SMS, the YES reply, the welcome, the active subscription).

It ends with what follows the send: a few invitees click their link, the survey platform redeems
their code and records one answer; a reminder round texts the invitees reached who have not
answered; and the campaign's funnel, from audience to completed.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from zoneinfo import ZoneInfo
from dataclasses import dataclass, field
from pathlib import Path

import boto3

CAMPAIGN_ID = "spring-nps"
DEMO_CSV = (
    "\ufeffFirst Name;Mobile;Country\r\n"
    "Ana;+1 415 555 2671;US\r\n"
    "Ben;0151 23456789;DE\r\n"
    "Chloé;06 12 34 56 78;FR\r\n"
    "Dev;+1 (415) 555-2671;US\r\n"  # the same person as Ana: a duplicate
    "Eve;030 1234567;DE\r\n"  # a landline
    "Finn;not a number;US\r\n"
    "Gus;+44 7911 123456;GB\r\n"
    "Hana;(415) 555-0188;US\r\n"  # on the blocklist
    "Kenji;090-1234-5678;JP\r\n"  # night in Tokyo during the demo: deferred by quiet hours
)
BLOCKLIST_CSV = "phone,note\r\n+14155550188,asked never to be texted\r\n"
UNDELIVERED_NUMBER = "+447911123456"  # the simulator's carrier reports this one unreachable
# The double opt-in's numbers: not in DEMO_CSV nor BLOCKLIST_CSV (a STOP or the blocklist suppresses a number everywhere).
PANEL_PERSON = {"phone": "+1 415 555 0142", "first_name": "Dana"}
PANEL_PREMIUM_RATE = {"phone": "+1 900 555 0100"}
DEMO_TEMPLATE = "Hi {first_name|there}, tell us how we did: {link} Reply STOP to opt out"
FINAL_STATUSES = ("delivered", "undelivered", "failed", "skipped_opted_out")
# Every campaign a test sends without a quiet-hours question of its own: then the hour it runs at does not matter.
NO_QUIET_HOURS = {"opens": "00:00", "closes": "24:00"}


def demo_quiet_hours(now: datetime) -> dict[str, str]:
    """A window open now from California to Germany and shut in Tokyo, whatever the hour the demo runs at.

    It opens an hour before the local hour in Los Angeles and closes an hour after the local hour in
    Berlin; Tokyo is always 6 to 7 hours past that, so the Japanese recipient is deferred.
    """
    opens = (now.astimezone(ZoneInfo("America/Los_Angeles")).hour - 1) % 24
    closes = (now.astimezone(ZoneInfo("Europe/Berlin")).hour + 2) % 24
    return {"opens": f"{opens:02d}:00", "closes": f"{closes:02d}:00"}


@dataclass
class DemoResult:
    import_summary: dict = field(default_factory=dict)
    rejected_report: str = ""
    campaign: dict = field(default_factory=dict)
    twilio_creates: int = 0
    callbacks_posted: int = 0
    statuses: dict[str, str] = field(default_factory=dict)
    preview: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)


def wait_for(condition: Callable[[], object], *, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def create_campaign(
    stack, campaign_id: str, *, template: str = DEMO_TEMPLATE, quiet_hours: dict = NO_QUIET_HOURS, rate: float = 2
) -> None:
    created = stack.command(
        {
            "command": "create_campaign",
            "campaign_id": campaign_id,
            "name": "Spring NPS",
            "survey_url": "https://survey.example.com/s/spring",
            "message_template": template,
            "default_region": "US",
            "rate_per_second": rate,
            "quiet_hours": quiet_hours,
        }
    )
    if not created["ok"]:
        raise RuntimeError(f"create_campaign failed: {created['error']}")


def upload(stack, key: str, body: str | bytes, **extra):
    """Drop a file into the bucket as an operator would; the router delivers the S3 event."""
    data = body.encode("utf-8") if isinstance(body, str) else body
    return boto3.client("s3").put_object(Bucket=stack.bucket, Key=key, Body=data, **extra)


def finished_import(store, key: str, version_id: str | None = None, *, timeout: float = 60):
    """The import record of an upload, once it has reached a final state."""

    def final():
        for record in store.t.imports.scan(store.t.imports.key == key, consistent_read=True):
            if record.state != "running" and (version_id is None or record.version == version_id):
                return record
        return None

    return wait_for(final, timeout=timeout, what=f"the import of {key}")


def upload_and_import(stack, store, campaign_id: str, csv_text: str, *, name: str = "customers march (1).csv"):
    key = f"imports/{campaign_id}/{name}"
    version = upload(stack, key, csv_text).get("VersionId")
    return finished_import(store, key, version)


def read_report(stack, key: str) -> str:
    return boto3.client("s3").get_object(Bucket=stack.bucket, Key=key)["Body"].read().decode("utf-8")


def command(stack, payload: dict) -> dict:
    """Run a command as the console or the CLI does; a refusal raises with the function's own message."""
    answer = stack.command(payload)
    if not answer["ok"]:
        error = answer["error"]
        raise RuntimeError(f"{payload['command']} refused: {error['message']} {error.get('details', '')}".strip())
    return answer["result"]


def prepare(stack, campaign_id: str, *, timeout: float = 60) -> dict:
    """Prepare until the preview is ready (a large audience takes more than one call)."""
    return wait_for(
        lambda: (lambda r: r if r["state"] == "prepared" else None)(
            command(stack, {"command": "prepare", "campaign_id": campaign_id})
        ),
        timeout=timeout,
        what=f"campaign {campaign_id} to be prepared",
        interval=0.5,
    )


def prepare_and_approve(stack, campaign_id: str) -> dict:
    preview = prepare(stack, campaign_id)["preview"]
    command(stack, {"command": "approve", "campaign_id": campaign_id})
    return preview


def twilio_messages_of(stack, campaign_id: str) -> list:
    """The simulator's messages for one campaign, told apart by the campaign id in their callback URL."""
    marker = f"c={campaign_id}&"
    return [m for m in stack.twilio.created() if m.status_callback and marker in m.status_callback]


def final_statuses(store, campaign_id: str) -> dict[str, str] | None:
    """Each recipient's status once every one is final, or parked until its window opens ("deferred")."""
    statuses = {
        r.phone: "deferred" if r.status == "imported" and r.deferred_until else r.status
        for r in store.t.recipients.query(campaign_id, consistent_read=True)
    }
    return statuses if all(s in (*FINAL_STATUSES, "deferred") for s in statuses.values()) else None


def sender_number() -> str:
    """The number invitations come from, which replies are sent to."""
    from local.stack import LOCAL_FROM_NUMBER
    from smsinvite.settings import Settings

    return Settings.from_env().twilio_from_number or LOCAL_FROM_NUMBER


def reply(stack, phone: str, body: str) -> tuple[int, str]:
    """The person texts `body` back: the simulator posts Twilio's signed inbound webhook; (status, TwiML)."""
    status, _headers, twiml = stack.twilio.send_inbound(stack.inbound_webhook_url, from_=phone,
                                                        to=sender_number(), body=body)
    return status, twiml


def twiml_says(twiml: str) -> str:
    """The TwiML's reply text, or "" when it answers nothing."""
    import xml.etree.ElementTree as ET

    try:
        return " ".join((m.text or "").strip() for m in ET.fromstring(twiml).iter("Message")).strip()
    except ET.ParseError:
        return twiml.strip()


def ledger_lines(store, phone: str) -> list[str]:
    lines = []
    for record in store.consent_of(phone):
        text = f' "{record.text}"' if record.text else ""
        where = f" list {record.list_id}" if record.list_id else ""
        detail = f" ({record.detail})" if record.detail else ""
        lines.append(f"{record.at:%H:%M:%S} {record.event:<12} from {record.source}{where}{text}{detail}")
    return lines


@dataclass
class MidSendStop:
    """Once the first invitation exists at the simulator, a recipient not yet texted replies STOP."""

    stack: object
    store: object
    campaign_id: str
    say: Callable[[str], None]
    phone: str | None = None
    first_texted: str | None = None
    too_late: bool = False

    def __call__(self) -> None:
        from smsinvite.observability import mask_phone

        if self.phone or self.too_late:
            return
        texted = twilio_messages_of(self.stack, self.campaign_id)
        if not texted:
            return
        self.first_texted = texted[0].to
        waiting = sorted(
            r.phone for r in self.store.t.recipients.query(self.campaign_id, consistent_read=True)
            if r.status == "imported" and not r.deferred_until and not r.exclusion
            and r.phone != UNDELIVERED_NUMBER and not self.stack.twilio.created(to=r.phone)
        )
        if not waiting:
            self.too_late = True
            self.say("   (every recipient was texted before a STOP could arrive: no mid-send STOP this run)")
            return
        self.phone = waiting[-1]
        status, twiml = reply(self.stack, self.phone, "STOP")
        self.say(f"   STOP arrives from {mask_phone(self.phone)}, not texted yet: POST /twilio/inbound -> {status}, "
                 f"reply {twiml_says(twiml) or 'empty'}")


def run_demo_campaign(
    stack, say: Callable[[str], None] = lambda _: None, *, campaign_id: str = CAMPAIGN_ID, stop_mid_send: bool = False
) -> DemoResult:
    """The thin path; with `stop_mid_send` (as `make demo` runs it), one recipient replies STOP while the send runs."""
    from smsinvite.observability import mask_phone
    from smsinvite.settings import Settings
    from smsinvite.store import Store

    result = DemoResult()
    store = Store(Settings.from_env())
    stack.twilio.set_outcome(UNDELIVERED_NUMBER, "undelivered", 30003)
    # Slower when a STOP is to land mid-send, so there is a "mid" to land in.
    rate = 1 if stop_mid_send else 2
    stop = MidSendStop(stack, store, campaign_id, say) if stop_mid_send else None

    say("1. create a campaign (the commands function)")
    window = demo_quiet_hours(datetime.now(timezone.utc))
    create_campaign(stack, campaign_id, quiet_hours=window, rate=rate)
    say(f"   campaign {campaign_id!r} created: {rate:g} message{'s' if rate != 1 else ''} a second, "
        f"quiet hours outside {window['opens']}-{window['closes']} local time")

    say(f"2. drop a blocklist into s3://{stack.bucket}/suppressions/")
    blocklist = finished_import(store, "suppressions/blocklist.csv", upload(stack, "suppressions/blocklist.csv", BLOCKLIST_CSV).get("VersionId"))
    say(f"   {blocklist.state}: {_outcomes(blocklist.outcomes.as_dict())}")

    say(f"3. drop a messy CSV (BOM, semicolons, five countries) into s3://{stack.bucket}/imports/{campaign_id}/")
    record = upload_and_import(stack, store, campaign_id, DEMO_CSV)
    outcomes = {k: int(v) for k, v in record.outcomes.as_dict().items()}
    result.import_summary = {"state": record.state, "rows": int(record.rows_processed), **outcomes}
    result.rejected_report = record.report_key or ""
    say(f"   import {record.state}: {record.rows_processed} rows -> {_outcomes(outcomes)}")
    if record.report_key:
        say(f"   rejected rows: s3://{stack.bucket}/{record.report_key}")
        for line in read_report(stack, record.report_key).splitlines():
            say(f"     {line}")

    say("4. prepare: the audience, a code for everyone invited, and the preview (nothing is sent)")
    result.preview = prepare(stack, campaign_id)["preview"]
    for line in preview_lines(result.preview):
        say(f"   {line}")

    say("5. approve: review and send")
    approved = command(stack, {"command": "approve", "campaign_id": campaign_id})
    say(f"   campaign is {approved['state']}")

    say("6. the sender texts each recipient through the Twilio simulator")
    result.campaign = watch_progress(stack, store, campaign_id, say, during=stop)
    result.twilio_creates = len(twilio_messages_of(stack, campaign_id))
    result.statuses = wait_for(lambda: final_statuses(store, campaign_id), timeout=60, what="the status callbacks")
    sids = {m.sid for m in twilio_messages_of(stack, campaign_id)}
    result.callbacks_posted = sum(1 for c in stack.twilio.callback_log if c.message_sid in sids)
    say(f"   {result.twilio_creates} messages created; {result.callbacks_posted} signed status callbacks reached POST /twilio/status:")
    for phone, status in sorted(result.statuses.items()):
        say(f"   {mask_phone(phone):<16} {status}")

    step = 7
    if stop is not None:
        say(f"{step}. the STOP and a HELP (POST /twilio/inbound, signed by the simulator)")
        step += 1
        if stop.phone:
            created = stack.twilio.created(to=stop.phone)
            ended = result.statuses.get(stop.phone)
            verdict = ("suppressed before its turn" if ended == "skipped_opted_out" and not created
                       else "too late: it had been claimed before the STOP landed")
            say(f"   {mask_phone(stop.phone)} ended {ended}, {len(created)} messages created for it: {verdict}")
            say("   its consent ledger:")
            for line in ledger_lines(store, stop.phone):
                say(f"     {line}")
        helper = stop.first_texted or next(iter(sorted(result.statuses)))
        status, twiml = reply(stack, helper, "HELP")
        says = twiml_says(twiml)
        say(f"   HELP from {mask_phone(helper)}: {status} {twiml.strip()}")
        if not says and Settings.from_env().twilio_answers_keywords:
            say("   (empty on purpose: with TWILIO_ANSWERS_KEYWORDS=true Twilio's Advanced Opt-Out answers HELP)")

    say(f"{step}. the report (smsinvite report): fetched now, printed at the end")
    result.report = command(stack, {"command": "report", "campaign_id": campaign_id})
    result.campaign = command(stack, {"command": "status", "campaign_id": campaign_id})
    return result


def watch_progress(
    stack, store, campaign_id: str, say: Callable[[str], None], *, timeout: float = 90,
    during: Callable[[], None] | None = None,
) -> dict:
    """Poll the status command and draw the CLI's progress bar until everyone is sent or waits for their window.

    `during` is called at every poll, while the send runs (the demo's mid-send STOP).
    """
    from smsinvite.cli import progress_bar

    shown = None

    def settled():
        nonlocal shown
        if during is not None:
            during()
        status = command(stack, {"command": "status", "campaign_id": campaign_id})
        line = f"{progress_bar(status['progress']['done'], status['progress']['total'])}  {status['state']}"
        if line != shown:
            say(f"   {line}")
            shown = line
        return status if status["state"] == "completed" or final_statuses(store, campaign_id) else None

    return wait_for(settled, timeout=timeout, what=f"campaign {campaign_id} to be sent", interval=0.2)


def run_double_opt_in(stack, say: Callable[[str], None], *, first_step: int = 9) -> list[str]:
    """A subscription list with double opt-in: subscribe, the confirmation SMS, YES, the welcome. The numbers used."""
    import secrets

    from smsinvite.observability import mask_phone
    from smsinvite.phones import normalise
    from smsinvite.settings import Settings
    from smsinvite.store import Store

    store = Store(Settings.from_env())
    list_id = f"demo-panel-{secrets.token_hex(3)}"
    phone = normalise(PANEL_PERSON["phone"], "US").e164
    steps = iter(range(first_step, first_step + 10))

    def attempt(payload: dict) -> dict | None:
        try:
            return command(stack, payload)
        except RuntimeError as refused:
            say(f"   {refused}")
            return None

    say(f"{next(steps)}. double opt-in: create a subscription list (create_list)")
    created = attempt({
        "command": "create_list", "list_id": list_id, "name": "Customer panel",
        "confirmation_text": "Acme: reply YES to join our customer panel for occasional surveys. Msg&data rates may apply.",
        "welcome_text": "Welcome to the Acme customer panel! Reply STOP to leave.",
        "quiet_hours": NO_QUIET_HOURS, "rate_per_second": 1,
    })
    if created is None:
        return [phone]
    say(f"   list {list_id!r} created (its confirmations are campaign {created['campaign_id']!r}, {created['state']})")

    say(f"{next(steps)}. subscribe two people (subscribe): each is checked before any Twilio call")
    subscribed = attempt({"command": "subscribe", "list_id": list_id, "people": [PANEL_PERSON, PANEL_PREMIUM_RATE],
                          "requested_by": "demo"})
    if subscribed is None:
        return [phone]
    for person in subscribed["people"]:
        say(f"   {person['phone']:<16} {person['outcome']}")

    say(f"{next(steps)}. the sender texts the confirmation through the Twilio simulator")
    try:
        confirmation = wait_for(lambda: stack.twilio.created(to=phone), timeout=30, what="the confirmation SMS")[0]
    except TimeoutError as late:
        say(f"   {late}")
        return [phone]
    say(f"   to {mask_phone(phone)}: {confirmation.body}")

    say(f"{next(steps)}. {PANEL_PERSON['first_name']} replies YES (POST /twilio/inbound, signed)")
    status, twiml = reply(stack, phone, "YES")
    say(f"   {status}, reply: {twiml_says(twiml) or twiml.strip()}")

    say(f"{next(steps)}. the subscription and the number's consent ledger")
    subscription = store.t.subscriptions.get(list_id, phone, consistent_read=True)
    say(f"   {mask_phone(phone)} on {list_id}: {subscription.state}")
    for line in ledger_lines(store, phone):
        say(f"     {line}")
    return [phone]


REMINDER_TEMPLATE = "A reminder: your survey is still open at {link}"
FUNNEL_STAGES = ("audience", "excluded", "sent", "delivered", "failed", "unresolved", "clicked", "redeemed", "completed")


def codes_api_key() -> str:
    """The survey platform's key for POST /codes/..., from Secrets Manager."""
    from smsinvite import aws_clients
    from smsinvite.settings import Settings

    secret = Settings.from_env().codes_api_key_secret
    return aws_clients.client("secretsmanager").get_secret_value(SecretId=secret)["SecretString"]


def _answer(response) -> str:
    try:
        return json.dumps(response.json(), sort_keys=True)
    except ValueError:
        return response.text.strip()[:120]


def run_survey_visits(stack, campaign_id: str, say: Callable[[str], None], *, first_step: int, visitors: int = 2
                      ) -> tuple[int, list[str]]:
    """Delivered invitees click their link, the survey redeems their code, one completes; a guessed code.

    The next step number, and the numbers of the invitees who completed."""
    import requests

    from smsinvite.observability import mask_phone
    from smsinvite.settings import Settings
    from smsinvite.store import Store

    store = Store(Settings.from_env())
    step = first_step
    delivered = sorted(
        (r for r in store.t.recipients.query(campaign_id, consistent_read=True) if r.status == "delivered" and r.code),
        key=lambda r: r.phone,
    )[:visitors]
    say(f"{step}. {len(delivered)} delivered invitees click their link (GET /i/<code>)")
    step += 1
    for invitee in delivered:
        response = requests.get(f"{stack.api_url}/i/{invitee.code}", allow_redirects=False, timeout=10)
        say(f"   {mask_phone(invitee.phone):<16} GET /i/{invitee.code} -> {response.status_code} "
            f"Location: {response.headers.get('Location', '-')}")
    guess = requests.get(f"{stack.api_url}/i/NOSUCHCODE12", allow_redirects=False, timeout=10)
    say(f"   a guess: GET /i/NOSUCHCODE12 -> {guess.status_code} (a page that reveals nothing; guesses are counted)")
    if not delivered:
        return step, []

    say(f"{step}. the survey platform redeems each code (POST /codes/<code>/redeem, header x-api-key)")
    step += 1
    headers = {"x-api-key": codes_api_key(), "content-type": "application/json"}
    for n, invitee in enumerate(delivered, start=1):
        response = requests.post(f"{stack.api_url}/codes/{invitee.code}/redeem",
                                 data=json.dumps({"session_id": f"demo-{n}"}), headers=headers, timeout=10)
        say(f"   {invitee.code}: {response.status_code} {_answer(response)}")

    finisher = delivered[0]
    say(f"{step}. {mask_phone(finisher.phone)} answers the survey (POST /codes/<code>/complete)")
    step += 1
    response = requests.post(f"{stack.api_url}/codes/{finisher.code}/complete", headers=headers, timeout=10)
    say(f"   {finisher.code}: {response.status_code} {_answer(response)}")
    return step, ([finisher.phone] if response.status_code == 200 else [])


def run_reminder_round(stack, campaign_id: str, say: Callable[[str], None], *, first_step: int,
                       completed: list[str], in_seconds: float = 2) -> tuple[int, int]:
    """One reminder round, due in a moment; the scheduler runs it; who is reminded and why the others not.

    The next step number, and how many reminders the simulator received."""
    from datetime import timedelta

    from smsinvite.batches import DynamoBatches
    from smsinvite.observability import mask_phone
    from smsinvite.reminders import round_campaign_id
    from smsinvite.settings import Settings
    from smsinvite.store import Store

    store = Store(Settings.from_env())
    step = first_step
    due = datetime.now(timezone.utc) + timedelta(seconds=in_seconds)
    say(f"{step}. schedule a reminder round (schedule_reminders): due at {due:%H:%M:%S} UTC, at most 1 per invitee")
    step += 1
    scheduled = command(stack, {"command": "schedule_reminders", "campaign_id": campaign_id, "template": REMINDER_TEMPLATE,
                                "dates": [due.isoformat()], "max_per_invitee": 1})
    say(f"   rounds {', '.join(scheduled['rounds'])}; text: {REMINDER_TEMPLATE}")

    say(f"{step}. the scheduler's tick (every minute in AWS; fired here once the round is due)")
    step += 1
    time.sleep(max(0.0, (due - datetime.now(timezone.utc)).total_seconds()) + 0.2)
    tick = stack.router.fire_schedule("SchedulerFunction")
    queued = tick.get("reminders", {}).get("queued", 0)
    say(f"   reminders queued {queued}")
    if not queued:
        say("   (none queued by this tick: the stack's own schedule may have run the round first)")

    round_id = round_campaign_id(campaign_id, 1)
    invitees = {r.phone: r for r in store.t.recipients.query(campaign_id, consistent_read=True)}
    try:
        rounds = wait_for(lambda: final_statuses(store, round_id), timeout=60, what="the reminders")
    except TimeoutError as late:
        say(f"   {late}")
        return step, 0
    reminded = {phone: [m for m in stack.twilio.created(to=phone) if "A reminder" in m.body] for phone in invitees}
    reminded = {phone: messages for phone, messages in reminded.items() if messages}
    say(f"   round {round_id!r}: {len(rounds)} invitee{'s' if len(rounds) != 1 else ''} put in it")
    suppressed = store.suppressed_among(DynamoBatches(), invitees)
    for phone, invitee in sorted(invitees.items()):
        if phone in reminded:
            why = f"reminded: {reminded[phone][-1].body}"
        elif rounds.get(phone) == "deferred":
            why = "in the round, deferred by quiet hours: reminded when its window opens"
        elif phone in rounds:
            why = f"in the round, {rounds[phone]}"
        elif phone in completed:
            why = "not reminded: answered the survey"
        elif phone in suppressed:
            why = "not reminded: opted out"
        elif invitee.status == "imported" and invitee.deferred_until:
            why = "not reminded: its invitation still waits for quiet hours to end"
        else:
            why = f"not reminded: invitation {invitee.status}"
        say(f"   {mask_phone(phone):<16} {why}")
    expected = {p for p, r in invitees.items() if r.status == "delivered" and p not in completed and p not in suppressed}
    if set(reminded) != expected:
        say(f"   (expected {len(expected)} reminded, the delivered who did not answer; {len(reminded)} were)")
    return step, sum(len(messages) for messages in reminded.values())


def funnel_lines(funnel: dict) -> list[str]:
    stages = [s for s in FUNNEL_STAGES if s in funnel] + [s for s in funnel if s not in FUNNEL_STAGES]
    width = max(len("stage"), *(len(s) for s in stages))
    lines = [f"{'stage':<{width}}  count", f"{'-' * width}  -----"]
    lines += [f"{stage:<{width}}  {funnel[stage]:>5}" for stage in stages]
    return lines


def preview_lines(preview: dict) -> list[str]:
    audience, messages, cost = preview["audience"], preview["messages"], preview["cost"]
    lines = [f"eligible {audience['eligible']}; excluded at prepare {_outcomes(audience['excluded']) or 'none'}; "
             f"excluded at import {_outcomes(audience['excluded_at_import']) or 'none'}"]
    for source, counts in preview["sources"].items():
        lines.append(f"  source {source}: {_outcomes(counts)}")
    for sample in messages["samples"]:
        lines.append(f"  sample to {sample['to']} ({sample['segments']} segment, {sample['encoding']}): {sample['text']}")
    lines.append(f"segments per message {_outcomes(messages['segments'])}; {messages['total_segments']} in all")
    per_country = ", ".join(
        f"{country} {row['segments']} x {row['price_per_segment']}" for country, row in cost["by_country"].items()
    )
    lines.append(f"estimated cost {cost['total']:.2f} {cost['currency']} ({per_country})")
    duration = preview["sending"]["duration"]
    lines.append(f"at {preview['sending']['rate_per_second']:g}/s within "
                 f"{preview['sending']['window']['opens']}-{preview['sending']['window']['closes']} local time: "
                 f"{duration.get('summary', duration.get('error'))}")
    lines.extend(f"warning: {warning}" for warning in preview["warnings"])
    return lines


def _outcomes(outcomes: dict) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(outcomes.items()))


def whole_numbers_in(log_text: str, phones) -> int:
    """How many times a phone number appears unmasked in the logs (the promise: never)."""
    return sum(log_text.count(phone.lstrip("+")) for phone in phones)


def main() -> int:
    started = time.monotonic()
    # The functions log JSON to stdout, as in Lambda; here it goes to a file, the narration to the terminal.
    log_path = Path(tempfile.mkdtemp(prefix="smsinvite-demo-")) / "functions.log"
    narration, sys.stdout = sys.stdout, open(log_path, "w", encoding="utf-8", buffering=1)  # noqa: SIM115

    def say(line: str = "") -> None:
        print(line, file=narration, flush=True)

    from local.stack import LocalStack, StackOptions

    from smsinvite.cli import format_report

    say("smsinvite demo: a campaign end to end on the embedded default (moto, DynamoDB Local, Twilio simulator)\n")
    reminders = 0
    try:
        with LocalStack(StackOptions()) as stack:
            say(f"local stack up: DynamoDB engine {stack.services.engine}, API {stack.api_url}\n")
            result = run_demo_campaign(stack, say=say, stop_mid_send=True)
            say("")
            panel_phones = run_double_opt_in(stack, say)
            say("")
            step, completed = run_survey_visits(stack, CAMPAIGN_ID, say, first_step=14)
            step, reminders = run_reminder_round(stack, CAMPAIGN_ID, say, first_step=step, completed=completed)
            say(f"{step}. the funnel (smsinvite report, fetched again: the report printed below is this one)")
            result.report = command(stack, {"command": "report", "campaign_id": CAMPAIGN_ID})
            result.campaign = command(stack, {"command": "status", "campaign_id": CAMPAIGN_ID})
            for line in funnel_lines(result.report["funnel"]):
                say(f"   {line}")
            say("   each stage is also published as a CloudWatch metric Funnel_<stage> (EMF, namespace SmsInvite, "
                "dimension campaign_id)")
    finally:
        sys.stdout.close()
        sys.stdout = narration
    leaked = whole_numbers_in(log_path.read_text(encoding="utf-8"), [*result.statuses, *panel_phones])
    counts = {name: n for name, n in result.campaign["counts"].items() if n}
    print("\nReport (smsinvite report)")
    print(format_report(result.report))
    print("\nSummary")
    print(f"  rows in the CSV         {result.import_summary['rows']}")
    print(f"  imported / not          {result.import_summary.get('imported', 0)} / "
          f"{result.import_summary['rows'] - result.import_summary.get('imported', 0)}")
    print(f"  rejected-rows report    {result.rejected_report}")
    print(f"  invited after prepare   {result.preview['audience']['eligible']}")
    print(f"  Twilio messages created {result.twilio_creates}")
    print(f"  status callbacks        {result.callbacks_posted}")
    funnel = result.report["funnel"]
    print(f"  codes clicked/redeemed  {funnel['clicked']} / {funnel['redeemed']}")
    print(f"  surveys completed       {funnel['completed']}")
    print(f"  reminders created       {reminders}")
    print(f"  campaign counters       {_outcomes(counts)}")
    print(f"  function logs           {log_path}")
    print(f"  whole numbers in logs   {leaked}")
    print(f"  took                    {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
