"""Operator commands: JSON events from the console or the CLI, validated whole before anything changes."""

from __future__ import annotations

import re
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, ValidationError, field_validator

from smsinvite.errors import InvalidInput
from smsinvite.status import Status
from smsinvite.store import Store

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

    @field_validator("sender")
    @classmethod
    def _sender_shape(cls, value: str | None) -> str | None:
        if value is not None and not _SENDER.match(value):
            raise ValueError("must be a Messaging Service SID (MG + 32 hex) or an E.164 number")
        return value


class CampaignStatus(_Command):
    campaign_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")


def create_campaign(store: Store, command: CreateCampaign) -> dict:
    record = store.new_campaign(
        campaign_id=command.campaign_id,
        name=command.name,
        survey_url=str(command.survey_url),
        message_template=command.message_template,
        sender=command.sender,
        default_region=command.default_region.upper(),
        allow_landlines=int(command.allow_landlines),
    )
    store.create_campaign(record)
    return {"campaign_id": record.campaign_id, "state": record.state}


def campaign_status(store: Store, command: CampaignStatus) -> dict:
    campaign = store.campaign(command.campaign_id)
    counts = {status.value: int(getattr(campaign, f"count_{status.value}") or 0) for status in Status}
    return {
        "campaign_id": campaign.campaign_id,
        "name": campaign.name,
        "state": campaign.state,
        "counts": counts,
        "dispatched": int(campaign.dispatched or 0),
    }


COMMANDS: dict[str, tuple[type[_Command], Callable[[Store, _Command], dict]]] = {
    "create_campaign": (CreateCampaign, create_campaign),
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


def run_command(store: Store, event: object) -> dict:
    command = parse_command(event)
    _, action = COMMANDS[command.command]
    return action(store, command)
