"""Operator commands: JSON events from the console or the CLI, validated whole before anything changes."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, HttpUrl, ValidationError, field_validator, model_validator

from smsinvite.campaigns import Audience, PanelSource, Recurrence, Rule, parse_every, require
from smsinvite.codes import DEFAULT_LENGTH, CodeSettings, CodeSource, InvalidCodeSettings
from smsinvite.errors import InvalidInput, NotFound
from smsinvite.erasure import Erasure
from smsinvite.exports import CampaignReport, export_ledger, export_recipients
from smsinvite.importing import ImportRunner, ImportSummary, list_problems
from smsinvite.lifecycle import CampaignLifecycle
from smsinvite.messages import TemplateError, validate_template
from smsinvite.phones import InvalidPhone, normalise
from smsinvite.preparation import Preparer
from smsinvite.queues import Queue
from smsinvite.reminders import ReminderPlan, Reminders, plan_rounds
from smsinvite.settings import Settings
from smsinvite.sizes import oversized
from smsinvite.store import Store, utcnow
from smsinvite.subscriptions import SubscriptionLists
from smsinvite.tables import CampaignRecord

MAX_LIST_ENTRIES = 10_000
_ID = r"^[A-Za-z0-9_-]{1,64}$"
_SENDER = re.compile(r"^(MG[0-9a-fA-F]{32}|\+[1-9]\d{6,14})$")
_HH_MM = r"^([01]\d|2[0-3]):[0-5]\d$"


@dataclass(frozen=True)
class CommandContext:
    store: Store
    settings: Settings
    runner: ImportRunner
    time_left: Callable[[], float]

    @property
    def margin(self) -> float:
        # Room to save a checkpoint and answer before the invocation is cut off.
        return min(15.0, self.time_left() / 4)

    def lifecycle(self) -> CampaignLifecycle:
        return CampaignLifecycle(self.store, Queue(self.settings.dispatch_queue_url))

    def preparer(self) -> Preparer:
        return Preparer(self.store, self.settings, self.runner)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class _Command(_Strict):
    command: str


# ------------------------------------------------------------------------------------ campaign fields
class QuietHours(_Strict):
    """The sending window in the recipient's local time; outside it messages wait."""

    opens: str = Field(default="08:00", pattern=_HH_MM)
    closes: str = Field(default="21:00", pattern=r"^(([01]\d|2[0-3]):[0-5]\d|24:00)$")  # 00:00-24:00: no quiet hours

    @model_validator(mode="after")
    def _a_window(self) -> "QuietHours":
        if self.opens == self.closes:
            raise ValueError("opens and closes must differ")
        return self


class Codes(_Strict):
    length: int = Field(default=DEFAULT_LENGTH, ge=1, le=64)
    source: Literal["generated", "tokens"] = "generated"
    expires_after_hours: float | None = Field(default=None, gt=0, le=24 * 366)

    @model_validator(mode="after")
    def _enough_entropy(self) -> "Codes":
        try:
            self.settings()
        except InvalidCodeSettings as invalid:
            raise ValueError("; ".join(invalid.details)) from None
        return self

    def settings(self) -> CodeSettings:
        expires = timedelta(hours=self.expires_after_hours) if self.expires_after_hours else None
        return CodeSettings(length=self.length, source=CodeSource(self.source), expires_after=expires)


class AudienceRule(_Strict):
    field: str = Field(pattern=r"^\w{1,100}$")
    op: str
    value: Any = None

    @model_validator(mode="after")
    def _usable(self) -> "AudienceRule":
        problems = self.rule().problems()
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def rule(self) -> Rule:
        return Rule(self.field, self.op, self.value)


class AudiencePanel(_Strict):
    panel_id: str = Field(pattern=_ID)
    rules: list[AudienceRule] = Field(default_factory=list, max_length=20)


class AudienceList(_Strict):
    list_id: str = Field(pattern=_ID)
    rules: list[AudienceRule] = Field(default_factory=list, max_length=20)


class AudienceSources(_Strict):
    """The campaign's own recipients always count; panels and lists' active subscribers are imported at
    every prepare."""

    panels: list[AudiencePanel] = Field(default_factory=list, max_length=20)
    lists: list[AudienceList] = Field(default_factory=list, max_length=20)
    rules: list[AudienceRule] = Field(default_factory=list, max_length=20)

    def audience(self) -> Audience:
        return Audience(
            panels=tuple(PanelSource(p.panel_id, tuple(r.rule() for r in p.rules)) for p in self.panels)
            + tuple(PanelSource(s.list_id, tuple(r.rule() for r in s.rules), kind="list") for s in self.lists),
            rules=tuple(r.rule() for r in self.rules),
        )


class RecurrenceInput(_Strict):
    every: str
    until: AwareDatetime | None = None
    max_runs: int | None = Field(default=None, ge=1, le=10_000)

    @field_validator("every")
    @classmethod
    def _interval(cls, value: str) -> str:
        parse_every(value)
        return value.strip().lower()


class _CampaignFields(_Strict):
    """What create_campaign sets and update_campaign may change."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    survey_url: HttpUrl | None = None
    message_template: str | None = Field(default=None, min_length=1, max_length=1600)
    sender: str | None = Field(default=None, description="Messaging Service SID (MG...) or From number in E.164")
    default_region: str | None = Field(default=None, pattern=r"^[A-Za-z]{2}$")
    allow_landlines: bool | None = None
    phone_column: str | None = Field(default=None, min_length=1, max_length=100)
    rate_per_second: float | None = Field(default=None, gt=0, le=1000)
    quiet_hours: QuietHours | None = None
    codes: Codes | None = None
    audience: AudienceSources | None = None
    start_at: AwareDatetime | None = None
    recurrence: RecurrenceInput | None = None
    # Recipient fields a redeem hands to the survey (nothing else about the invitee leaves smsinvite).
    survey_fields: list[str] | None = Field(default=None, max_length=50)

    @field_validator("survey_fields")
    @classmethod
    def _field_names(cls, names: list[str] | None) -> list[str] | None:
        bad = [n for n in names or [] if not re.match(r"^\w{1,100}$", n) or n.lower() == "phone"]
        if bad:
            raise ValueError(f"not usable as survey fields: {', '.join(bad)} (field names; never phone)")
        return names

    @field_validator("sender")
    @classmethod
    def _sender_shape(cls, value: str | None) -> str | None:
        if value is not None and not _SENDER.match(value):
            raise ValueError("must be a Messaging Service SID (MG + 32 hex) or an E.164 number")
        return value

    @field_validator("message_template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                validate_template(value)
            except TemplateError as invalid:
                raise ValueError("; ".join(invalid.problems)) from None
        return value

    def record_attributes(self) -> dict[str, Any]:
        """The given fields as campaign attributes (fields left out are not in the result)."""
        given = self.model_dump(exclude_unset=True, exclude={"command", "campaign_id"})
        attributes: dict[str, Any] = {}
        for name in ("name", "message_template", "sender", "phone_column", "start_at"):
            if name in given:
                attributes[name] = getattr(self, name)
        if "survey_url" in given:
            attributes["survey_url"] = str(self.survey_url)
        if "default_region" in given:
            attributes["default_region"] = self.default_region.upper()
        if "allow_landlines" in given:
            attributes["allow_landlines"] = int(self.allow_landlines)
        if "rate_per_second" in given:
            attributes["rate_per_second"] = self.rate_per_second
        if "quiet_hours" in given:
            window = self.quiet_hours or QuietHours()
            attributes.update(window_opens=window.opens, window_closes=window.closes)
        if "codes" in given:
            codes = self.codes or Codes()
            attributes.update(
                code_length=codes.length,
                code_source=codes.source,
                code_expires_after_seconds=int(codes.expires_after_hours * 3600) if codes.expires_after_hours else None,
            )
        if "survey_fields" in given:
            attributes["survey_fields"] = ",".join(self.survey_fields) if self.survey_fields else None
        if "audience" in given:
            attributes["audience"] = (self.audience or AudienceSources()).audience().as_json()
        if "recurrence" in given:
            recurrence = self.recurrence
            attributes["recurrence"] = (
                Recurrence(recurrence.every, recurrence.until, recurrence.max_runs).as_json() if recurrence else None
            )
        return attributes


class CreateCampaign(_CampaignFields, _Command):
    campaign_id: str = Field(pattern=_ID)
    name: str = Field(min_length=1, max_length=200)
    survey_url: HttpUrl
    message_template: str = Field(min_length=1, max_length=1600)


class UpdateCampaign(_CampaignFields, _Command):
    campaign_id: str = Field(pattern=_ID)

    @model_validator(mode="after")
    def _changes_something(self) -> "UpdateCampaign":
        if not self.model_fields_set - {"command", "campaign_id"}:
            raise ValueError("name at least one field to change")
        return self


class CampaignCommand(_Command):
    campaign_id: str = Field(pattern=_ID)


class ExportRecipients(CampaignCommand):
    # Phone numbers are masked in the export unless asked for in full.
    full_numbers: bool = False


class AddRecipients(_Command):
    campaign_id: str = Field(pattern=_ID)
    recipients: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_LIST_ENTRIES)
    # The same request_id twice is one import: a retried command adds nobody twice.
    request_id: str = Field(default_factory=lambda: uuid.uuid4().hex, pattern=_ID)

    @field_validator("recipients")
    @classmethod
    def _each_has_a_phone(cls, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        missing = [i for i, entry in enumerate(entries) if not any(str(k).strip().lower() == "phone" for k in entry)]
        if missing:
            shown = ", ".join(str(i) for i in missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise ValueError(f"every recipient needs a 'phone'; missing at index {shown}")
        return entries

    @field_validator("recipients")
    @classmethod
    def _each_fits(cls, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # As the import would find them, before the list is written anywhere.
        problems = list_problems(entries)
        if problems:
            raise ValueError(_listed(problems))
        return entries


class AddPanel(_Command):
    campaign_id: str = Field(pattern=_ID)
    panel_id: str = Field(pattern=_ID)
    request_id: str = Field(default_factory=lambda: uuid.uuid4().hex, pattern=_ID)


# ------------------------------------------------------------------------------------ reminders
class ScheduleReminders(_Command):
    campaign_id: str = Field(pattern=_ID)
    # The reminder's own text; each invitee keeps their code, so it needs {link} or {code}.
    template: str = Field(min_length=1, max_length=1600)
    after_days: float | None = Field(default=None, gt=0, le=366)
    every_days: float | None = Field(default=None, gt=0, le=366)
    until: AwareDatetime | None = None
    dates: list[AwareDatetime] | None = Field(default=None, min_length=1, max_length=20)
    max_per_invitee: int = Field(default=2, ge=1, le=10)

    @field_validator("template")
    @classmethod
    def _template(cls, value: str) -> str:
        _CampaignFields._template(value)
        if "{link}" not in value and "{code}" not in value:
            raise ValueError("a reminder carries the invitee's {link} or {code}")
        return value

    @model_validator(mode="after")
    def _one_schedule(self) -> "ScheduleReminders":
        given = [name for name in ("after_days", "every_days", "dates") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one schedule: after_days, every_days (optionally until) or dates")
        if self.until is not None and self.every_days is None:
            raise ValueError("until goes with every_days")
        return self


def schedule_reminders(context: CommandContext, command: ScheduleReminders) -> dict:
    campaign = context.store.campaign(command.campaign_id)
    now = utcnow()
    rounds = plan_rounds(
        campaign.started_at or now, now, after_days=command.after_days, every_days=command.every_days,
        until=command.until, dates=tuple(command.dates or ()), max_per_invitee=command.max_per_invitee,
    )
    # In UTC: rounds are compared as text with the scheduler's clock.
    utc = tuple(r.astimezone(timezone.utc).isoformat() for r in rounds)
    plan = ReminderPlan(command.template, utc, command.max_per_invitee)
    Reminders(context.store, Queue(context.settings.send_queue_url)).schedule(command.campaign_id, plan)
    return {"campaign_id": command.campaign_id, "rounds": list(plan.rounds), "max_per_invitee": plan.max_per_invitee}


# ------------------------------------------------------------------------------------ lists and consent
MAX_SUBSCRIBE_ENTRIES = 100


class CreateList(_Command):
    list_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,59}$")
    name: str = Field(min_length=1, max_length=200)
    # What the confirmation SMS says; it must ask for a YES. Merge fields come from subscribe's entries.
    confirmation_text: str = Field(min_length=1, max_length=640)
    welcome_text: str | None = Field(default=None, min_length=1, max_length=640)
    sender: str | None = None
    default_region: str = Field(default="US", pattern=r"^[A-Za-z]{2}$")
    rate_per_second: float = Field(default=1, gt=0, le=1000)
    quiet_hours: QuietHours = Field(default_factory=QuietHours)

    @field_validator("sender")
    @classmethod
    def _sender_shape(cls, value: str | None) -> str | None:
        return _CampaignFields._sender_shape(value)

    @field_validator("confirmation_text")
    @classmethod
    def _asks_for_yes(cls, value: str) -> str:
        _CampaignFields._template(value)
        if "{link}" in value or "{code}" in value:
            raise ValueError("a confirmation has no {link} or {code}")
        if not re.search(r"\bYES\b", value):
            raise ValueError("must ask the person to reply YES")
        return value


class Subscribe(_Command):
    list_id: str = Field(pattern=_ID)
    people: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_SUBSCRIBE_ENTRIES)
    # Who asks (a sign-up form passes its visitor's address): one caller may ask only so often.
    requested_by: str = Field(default="console", min_length=1, max_length=200)

    @field_validator("people")
    @classmethod
    def _each_has_a_phone(cls, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        missing = [i for i, entry in enumerate(entries) if not str(entry.get("phone") or "").strip()]
        if missing:
            raise ValueError(f"every entry needs a 'phone'; missing at index {', '.join(map(str, missing[:10]))}")
        return entries

    @field_validator("people")
    @classmethod
    def _each_fits(cls, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        problems = oversized(entries)
        if problems:
            raise ValueError(_listed(problems))
        return entries


def _listed(problems: list[str]) -> str:
    """At most ten problems of a long list, and how many more."""
    more = f"; and {len(problems) - 10} more" if len(problems) > 10 else ""
    return "; ".join(problems[:10]) + more


class Unsubscribe(_Command):
    list_id: str = Field(pattern=_ID)
    phones: list[str] = Field(min_length=1, max_length=MAX_LIST_ENTRIES)


class ErasePhone(_Command):
    phone: str = Field(min_length=1, max_length=40)
    default_region: str = Field(default="US", pattern=r"^[A-Za-z]{2}$")


class ExportConsent(_Command):
    phone: str | None = Field(default=None, min_length=1, max_length=40)
    default_region: str = Field(default="US", pattern=r"^[A-Za-z]{2}$")


def _lists(context: CommandContext) -> SubscriptionLists:
    return SubscriptionLists(context.store, context.settings, Queue(context.settings.send_queue_url))


def create_list(context: CommandContext, command: CreateList) -> dict:
    if command.rate_per_second > context.settings.sender_ceiling_per_second:
        raise InvalidInput("create_list is not valid", details=[
            f"rate_per_second: {command.rate_per_second:g} is over the sender ceiling of "
            f"{context.settings.sender_ceiling_per_second} per second"])
    record = _lists(context).create_list(
        command.list_id, name=command.name, message_template=command.confirmation_text,
        reply_text=command.welcome_text, sender=command.sender, default_region=command.default_region.upper(),
        rate_per_second=command.rate_per_second, window_opens=command.quiet_hours.opens,
        window_closes=command.quiet_hours.closes,
    )
    return {"list_id": command.list_id, "campaign_id": record.campaign_id, "state": record.state}


def subscribe(context: CommandContext, command: Subscribe) -> dict:
    outcomes = _lists(context).subscribe(command.list_id, command.people, command.requested_by)
    return _outcomes(outcomes)


def unsubscribe(context: CommandContext, command: Unsubscribe) -> dict:
    return _outcomes(_lists(context).unsubscribe(command.list_id, command.phones))


def _outcomes(outcomes) -> dict:
    tally: dict[str, int] = {}
    for outcome in outcomes:
        tally[outcome.outcome] = tally.get(outcome.outcome, 0) + 1
    return {"outcomes": tally, "people": [o.as_dict() for o in outcomes]}


def _e164(raw: str, region: str) -> str:
    try:
        return normalise(raw, region).e164
    except InvalidPhone as invalid:
        raise InvalidInput(f"phone is not valid: {invalid.reason.value}") from None


def erase_phone(context: CommandContext, command: ErasePhone) -> dict:
    return Erasure(context.store, context.settings).erase(_e164(command.phone, command.default_region))


def export_consent(context: CommandContext, command: ExportConsent) -> dict:
    phone = _e164(command.phone, command.default_region) if command.phone else None
    return export_ledger(context.store, context.settings, phone)


# ------------------------------------------------------------------------------------ checks that need context
def _check_against_settings(context: CommandContext, fields: _CampaignFields, now: datetime) -> None:
    """What the schema cannot know: the deployment's sender ceiling, the clock, panels that exist."""
    problems = []
    ceiling = context.settings.sender_ceiling_per_second
    if fields.rate_per_second is not None and fields.rate_per_second > ceiling:
        problems.append(f"rate_per_second: {fields.rate_per_second:g} is over the sender ceiling of {ceiling} per second")
    if fields.start_at is not None and fields.start_at <= now:
        problems.append("start_at: must be in the future")
    if fields.recurrence is not None and fields.recurrence.until is not None and fields.recurrence.until <= now:
        problems.append("recurrence.until: must be in the future")
    for panel in fields.audience.panels if fields.audience else []:
        if not context.store.panel_exists(panel.panel_id):
            problems.append(f"audience.panels: panel {panel.panel_id} has no members (upload panels/{panel.panel_id}/<name>.csv first)")
    for listed in fields.audience.lists if fields.audience else []:
        try:
            _lists(context).list_campaign(listed.list_id)
        except NotFound:
            problems.append(f"audience.lists: list {listed.list_id} does not exist (create_list first)")
    if problems:
        raise InvalidInput(f"{fields.command} is not valid", details=problems)


# ------------------------------------------------------------------------------------ actions
def create_campaign(context: CommandContext, command: CreateCampaign) -> dict:
    _check_against_settings(context, command, utcnow())
    defaults = {
        "sender": None,
        "default_region": "US",
        "allow_landlines": 0,
        "rate_per_second": min(1.0, float(context.settings.sender_ceiling_per_second)),
    }
    record = context.store.new_campaign(
        campaign_id=command.campaign_id, **{**defaults, **command.record_attributes()}
    )
    context.store.create_campaign(record)
    return campaign_summary(record)


def update_campaign(context: CommandContext, command: UpdateCampaign) -> dict:
    store, campaigns = context.store, context.store.t.campaigns
    campaign = store.campaign(command.campaign_id)
    state = require("update", command.campaign_id, campaign.state)
    _check_against_settings(context, command, utcnow())
    actions = [getattr(campaigns, name).set(value) if value is not None else getattr(campaigns, name).remove()
               for name, value in command.record_attributes().items()]
    # Back to draft: what was prepared is no longer what would be sent.
    actions += [campaigns.revision.add(1), campaigns.state.set("draft")]
    changed = store.change_campaign(command.campaign_id, actions, campaigns.state == state.value)
    if changed is None:
        require("update", command.campaign_id, store.campaign(command.campaign_id).state)
        raise InvalidInput("the campaign changed while it was updated; try again")
    return campaign_summary(changed)


def prepare(context: CommandContext, command: CampaignCommand) -> dict:
    outcome = context.preparer().prepare(command.campaign_id, time_left=context.time_left, margin=context.margin)
    return outcome.as_dict()


def approve(context: CommandContext, command: CampaignCommand) -> dict:
    return campaign_summary(context.lifecycle().approve(command.campaign_id))


def pause(context: CommandContext, command: CampaignCommand) -> dict:
    return campaign_summary(context.lifecycle().pause(command.campaign_id))


def resume(context: CommandContext, command: CampaignCommand) -> dict:
    return campaign_summary(context.lifecycle().resume(command.campaign_id))


def cancel(context: CommandContext, command: CampaignCommand) -> dict:
    return campaign_summary(context.lifecycle().cancel(command.campaign_id))


def resend_unresolved(context: CommandContext, command: CampaignCommand) -> dict:
    return context.lifecycle().resend_unresolved(command.campaign_id, Queue(context.settings.send_queue_url))


def campaign_status(context: CommandContext, command: CampaignCommand) -> dict:
    return CampaignReport(context.store.campaign(command.campaign_id), context.store).status()


def report(context: CommandContext, command: CampaignCommand) -> dict:
    return CampaignReport(context.store.campaign(command.campaign_id), context.store).report()


def export(context: CommandContext, command: ExportRecipients) -> dict:
    campaign = context.store.campaign(command.campaign_id)
    return export_recipients(context.store, context.settings, campaign, full_numbers=command.full_numbers)


def _run_import(context: CommandContext, record, new: bool) -> dict:
    """Run the import now for as long as the command may; a long one continues on the import queue."""
    if new or record.state == "running":
        summary = context.runner.run(record.import_id, time_left=context.time_left, margin=context.margin)
    else:
        summary = ImportSummary.of(record)
    return summary.as_dict()


def add_recipients(context: CommandContext, command: AddRecipients) -> dict:
    context.store.campaign(command.campaign_id)
    record, new = context.runner.register_list(command.campaign_id, command.recipients, command.request_id)
    return _run_import(context, record, new)


def add_panel(context: CommandContext, command: AddPanel) -> dict:
    context.store.campaign(command.campaign_id)
    if not context.store.panel_exists(command.panel_id):
        raise NotFound(f"panel {command.panel_id} has no members (upload panels/{command.panel_id}/<name>.csv first)")
    record, new = context.runner.register_panel(command.campaign_id, command.panel_id, command.request_id)
    return _run_import(context, record, new)


def campaign_summary(campaign: CampaignRecord) -> dict:
    body = {"campaign_id": campaign.campaign_id, "state": campaign.state, "revision": int(campaign.revision)}
    if campaign.start_at is not None:
        body["start_at"] = campaign.start_at.isoformat()
    if campaign.due_at:
        body["next_check_at"] = campaign.due_at
    return body


COMMANDS: dict[str, tuple[type[_Command], Callable[[CommandContext, Any], dict]]] = {
    "create_campaign": (CreateCampaign, create_campaign),
    "update_campaign": (UpdateCampaign, update_campaign),
    "add_recipients": (AddRecipients, add_recipients),
    "add_panel": (AddPanel, add_panel),
    "prepare": (CampaignCommand, prepare),
    "approve": (CampaignCommand, approve),
    "pause": (CampaignCommand, pause),
    "resume": (CampaignCommand, resume),
    "cancel": (CampaignCommand, cancel),
    "resend_unresolved": (CampaignCommand, resend_unresolved),
    "status": (CampaignCommand, campaign_status),
    "report": (CampaignCommand, report),
    "export": (ExportRecipients, export),
    "schedule_reminders": (ScheduleReminders, schedule_reminders),
    "create_list": (CreateList, create_list),
    "subscribe": (Subscribe, subscribe),
    "unsubscribe": (Unsubscribe, unsubscribe),
    "erase_phone": (ErasePhone, erase_phone),
    "export_consent": (ExportConsent, export_consent),
}


def parse_command(event: object) -> _Command:
    if not isinstance(event, dict) or not isinstance(event.get("command"), str):
        raise InvalidInput('a command is a JSON object with a "command" field', details=[f"known commands: {', '.join(COMMANDS)}"])
    name = event["command"]
    if name not in COMMANDS:
        raise InvalidInput(f"unknown command {name!r}", details=[f"known commands: {', '.join(COMMANDS)}"])
    model, _ = COMMANDS[name]
    try:
        return model.model_validate(event)
    except ValidationError as invalid:
        problems = [_problem(error) for error in invalid.errors()]
        raise InvalidInput(f"{name} is not valid", details=problems) from None


def _problem(error: dict) -> str:
    where = ".".join(str(p) for p in error["loc"]) or "command"
    message = error["msg"].removeprefix("Value error, ")
    return f"{where}: {message}"


def run_command(context: CommandContext, event: object) -> dict:
    command = parse_command(event)
    _, action = COMMANDS[command.command]
    return action(context, command)
