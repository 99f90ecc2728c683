"""Operator commands: JSON events from the console or the CLI, validated whole before anything changes."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, ValidationError, field_validator

from smsinvite.errors import InvalidInput, NotFound
from smsinvite.importing import ImportRunner, ImportSummary
from smsinvite.settings import Settings
from smsinvite.status import Status
from smsinvite.store import Store

MAX_LIST_ENTRIES = 10_000


@dataclass(frozen=True)
class CommandContext:
    store: Store
    settings: Settings
    runner: ImportRunner
    time_left: Callable[[], float]

_SENDER = re.compile(r"^(MG[0-9a-fA-F]{32}|\+[1-9]\d{6,14})$")


class _Command(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    command: str


class CreateCampaign(_Command):
    campaign_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    name: str = Field(min_length=1, max_length=200)
    survey_url: HttpUrl
    message_template: str = Field(min_length=1, max_length=1600)
    sender: str | None = Field(default=None, description="Messaging Service SID (MG...) or From number in E.164")
    default_region: str = Field(default="US", pattern=r"^[A-Za-z]{2}$")
    allow_landlines: bool = False
    phone_column: str | None = Field(default=None, min_length=1, max_length=100)

    @field_validator("sender")
    @classmethod
    def _sender_shape(cls, value: str | None) -> str | None:
        if value is not None and not _SENDER.match(value):
            raise ValueError("must be a Messaging Service SID (MG + 32 hex) or an E.164 number")
        return value


class CampaignStatus(_Command):
    campaign_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")


class AddRecipients(_Command):
    campaign_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    recipients: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_LIST_ENTRIES)
    # The same request_id twice is one import: a retried command adds nobody twice.
    request_id: str = Field(default_factory=lambda: uuid.uuid4().hex, pattern=r"^[A-Za-z0-9_-]{1,64}$")

    @field_validator("recipients")
    @classmethod
    def _each_has_a_phone(cls, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        missing = [i for i, entry in enumerate(entries) if not any(str(k).strip().lower() == "phone" for k in entry)]
        if missing:
            shown = ", ".join(str(i) for i in missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise ValueError(f"every recipient needs a 'phone'; missing at index {shown}")
        return entries


class AddPanel(_Command):
    campaign_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    panel_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    request_id: str = Field(default_factory=lambda: uuid.uuid4().hex, pattern=r"^[A-Za-z0-9_-]{1,64}$")


def create_campaign(context: CommandContext, command: CreateCampaign) -> dict:
    store = context.store
    record = store.new_campaign(
        campaign_id=command.campaign_id,
        name=command.name,
        survey_url=str(command.survey_url),
        message_template=command.message_template,
        sender=command.sender,
        default_region=command.default_region.upper(),
        allow_landlines=int(command.allow_landlines),
        phone_column=command.phone_column,
    )
    store.create_campaign(record)
    return {"campaign_id": record.campaign_id, "state": record.state}


def campaign_status(context: CommandContext, command: CampaignStatus) -> dict:
    campaign = context.store.campaign(command.campaign_id)
    counts = {status.value: int(getattr(campaign, f"count_{status.value}") or 0) for status in Status}
    return {
        "campaign_id": campaign.campaign_id,
        "name": campaign.name,
        "state": campaign.state,
        "counts": counts,
        "dispatched": int(campaign.dispatched or 0),
        "rows_excluded": {
            "duplicate": int(campaign.rows_duplicate or 0),
            "invalid": int(campaign.rows_invalid or 0),
            "landline": int(campaign.rows_landline or 0),
        },
    }


def _run_import(context: CommandContext, record, new: bool) -> dict:
    """Run the import now for as long as the command may; a long one continues on the import queue."""
    if new or record.state == "running":
        summary = context.runner.run(
            record.import_id, time_left=context.time_left, margin=min(15.0, context.time_left() / 4)
        )
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


COMMANDS: dict[str, tuple[type[_Command], Callable[[CommandContext, _Command], dict]]] = {
    "create_campaign": (CreateCampaign, create_campaign),
    "add_recipients": (AddRecipients, add_recipients),
    "add_panel": (AddPanel, add_panel),
    "status": (CampaignStatus, campaign_status),
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
        problems = [
            f"{'.'.join(str(p) for p in error['loc']) or 'command'}: {error['msg']}" for error in invalid.errors()
        ]
        raise InvalidInput(f"{name} is not valid", details=problems) from None


def run_command(context: CommandContext, event: object) -> dict:
    command = parse_command(event)
    _, action = COMMANDS[command.command]
    return action(context, command)
