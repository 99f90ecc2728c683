"""What an invitation code admits: the short link's redirect, one redemption, and the answer.

Redeeming is one conditional write on the code: the first caller wins, however many race. A repeat
from the same survey session gets the same answer again; any other repeat is refused. Failed
look-ups (on the short link and on redeem) are counted per source address and in total, in fixed
one-minute windows in LimitsTable, so guessing codes soon meets a 429.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from pynamodb.exceptions import DoesNotExist, UpdateError

from smsinvite.aws_clients import secrets_provider
from smsinvite.errors import Conflict, Gone, InvalidInput, NotFound, TooManyRequests, Unauthorized
from smsinvite.settings import Settings
from smsinvite.short_links import with_code
from smsinvite.store import SECRET_MAX_AGE_SECONDS, Store, _is_condition_failure, utcnow
from smsinvite.tables import CampaignRecord, CodeRecord

_CODE_SHAPE = re.compile(r"^[A-Za-z0-9]{4,64}$")
_SESSION_SHAPE = re.compile(r"^[\x21-\x7e]{1,200}$")
GUESS_WINDOW = timedelta(minutes=1)
# A survey stops admitting invitees when its campaign is cancelled.
CLOSED_STATES = frozenset({"cancelled"})


def check_api_key(settings: Settings, presented: str | None) -> None:
    """The survey platform's key, compared in constant time; neither key is ever logged."""
    expected = secrets_provider().get(settings.codes_api_key_secret, max_age=SECRET_MAX_AGE_SECONDS)
    if not presented or not hmac.compare_digest(presented.encode(), str(expected).encode()):
        raise Unauthorized("a valid API key is required (header x-api-key)")


def session_id_in(body: str | None) -> str:
    """The survey session from a redeem body, {"session_id": "..."}; a clear 400 for anything else."""
    try:
        data = json.loads(body or "{}")
    except ValueError:
        raise InvalidInput('the body must be JSON: {"session_id": "..."}') from None
    session_id = data.get("session_id") if isinstance(data, dict) else None
    if not isinstance(session_id, str) or not _SESSION_SHAPE.match(session_id):
        raise InvalidInput("session_id is required: 1 to 200 printable characters, no spaces")
    return session_id


@dataclass(frozen=True)
class Admission:
    campaign_id: str
    fields: dict[str, str]
    session_id: str

    def as_dict(self) -> dict:
        return {"campaign_id": self.campaign_id, "recipient": self.fields, "session_id": self.session_id}


class GuessGuard:
    """Failed look-ups per source address and in total; over either limit every look-up gets 429."""

    def __init__(self, store: Store, settings: Settings, clock: Callable[[], datetime] = utcnow) -> None:
        self.store, self.settings, self.clock = store, settings, clock

    def _counters(self, source_ip: str) -> list[tuple[str, int]]:
        return [(f"guess#ip#{source_ip}", self.settings.guesses_per_ip), ("guess#all", self.settings.guesses_in_total)]

    def check(self, source_ip: str) -> None:
        now = self.clock()
        for name, limit in self._counters(source_ip):
            if self.store.used_in_window(name, GUESS_WINDOW, now) >= limit:
                raise TooManyRequests("too many failed look-ups; try again in a minute")

    def failed(self, source_ip: str) -> None:
        now = self.clock()
        for name, _ in self._counters(source_ip):
            self.store.add_to_window(name, GUESS_WINDOW, now)


class Redemptions:
    def __init__(self, store: Store, settings: Settings, clock: Callable[[], datetime] = utcnow) -> None:
        self.store, self.settings, self.clock = store, settings, clock
        self.guard = GuessGuard(store, settings, clock)

    # ------------------------------------------------------------------ look-ups
    def invitation(self, code: str, source_ip: str) -> tuple[CodeRecord, CampaignRecord]:
        """The code as issued to an invitee, and its campaign, if it may still be used.

        NotFound says nothing of other codes and counts as a guess; Gone when it expired or its
        campaign closed. An address over its guessing limit gets 429 before any look-up."""
        self.guard.check(source_ip)
        record = self._code(code)
        if record is None or record.recipient_id is None:  # unknown, or still in a tokens pool
            self.guard.failed(source_ip)
            raise NotFound("no such code")
        if record.expires_at is not None and record.expires_at <= self.clock():
            raise Gone("this invitation has expired")
        campaign = self.store.campaign(record.campaign_id)
        if campaign.state in CLOSED_STATES:
            raise Gone("this survey is closed")
        return record, campaign

    def _code(self, code: str) -> CodeRecord | None:
        if not _CODE_SHAPE.match(code or ""):
            return None
        try:
            return self.store.t.codes.get(code, consistent_read=True)
        except DoesNotExist:
            return None

    # ------------------------------------------------------------------ the invitee and the survey
    def follow(self, code: str, source_ip: str) -> str:
        """The survey URL with the code, for the short link; the first click is recorded."""
        record, campaign = self.invitation(code, source_ip)
        self._set_once(code, "clicked_at")
        return with_code(campaign.survey_url, code, self.settings.code_query_parameter)

    def redeem(self, code: str, session_id: str, source_ip: str) -> Admission:
        record, campaign = self.invitation(code, source_ip)
        codes = self.store.t.codes
        try:
            codes(code).update(
                actions=[codes.redeemed_at.set(self.clock()), codes.session_id.set(session_id)],
                condition=codes.code.exists() & codes.redeemed_at.does_not_exist(),
            )
        except UpdateError as exc:
            if not _is_condition_failure(exc):
                raise
            if self._code(code).session_id != session_id:
                raise Conflict("this invitation was already used") from None
        return Admission(record.campaign_id, self._survey_fields(campaign, record), session_id)

    def complete(self, code: str, source_ip: str) -> dict:
        """Mark the invitee as having answered: once, however often the survey says so."""
        record, _ = self.invitation(code, source_ip)
        new = self._set_once(code, "completed_at", also_redeemed=True)
        completed = self._code(code).completed_at
        return {"campaign_id": record.campaign_id, "completed_at": completed.isoformat(), "new": new}

    def _set_once(self, code: str, name: str, *, also_redeemed: bool = False) -> bool:
        codes, now = self.store.t.codes, self.clock()
        attribute = getattr(codes, name)
        actions = [attribute.set(now)]
        if also_redeemed:  # an answer without a redeem call still means the code was used
            actions.append(codes.redeemed_at.set(codes.redeemed_at | now))
        try:
            codes(code).update(actions=actions, condition=codes.code.exists() & attribute.does_not_exist())
        except UpdateError as exc:
            if _is_condition_failure(exc):
                return False
            raise
        return True

    def _survey_fields(self, campaign: CampaignRecord, record: CodeRecord) -> dict[str, str]:
        allowed = [name for name in (campaign.survey_fields or "").split(",") if name]
        if not allowed:
            return {}
        values = self.store.recipient(record.campaign_id, record.recipient_id).fields.as_dict()
        return {name: values[name] for name in allowed if name in values}
