"""Twilio status callbacks: the recipient's status moves forward only, and counts change once."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from smsinvite.errors import InvalidInput, NotFound
from smsinvite.observability import logger
from smsinvite.status import Status, from_twilio
from smsinvite.store import Store
from smsinvite.twilio_gateway import FormParams


class CallbackOutcome(str, Enum):
    APPLIED = "applied"
    IGNORED = "ignored"  # late, duplicate or out of order: the stored status is already further on


@dataclass(frozen=True)
class StatusReport:
    campaign_id: str
    recipient_id: str
    attempt_id: str
    message_sid: str
    status: Status
    error_code: int | None

    @classmethod
    def parse(cls, query: dict[str, str], form: FormParams) -> "StatusReport":
        problems = [f"query parameter {name} is missing" for name in ("c", "r", "a") if not query.get(name)]
        for name in ("MessageSid", "MessageStatus"):
            if not form.first(name):
                problems.append(f"form field {name} is missing")
        status = None
        if form.first("MessageStatus"):
            try:
                status = from_twilio(form.first("MessageStatus"))
            except ValueError as exc:
                problems.append(str(exc))
        error_code = form.first("ErrorCode")
        if error_code and not error_code.isdigit():
            problems.append("ErrorCode is not a number")
        if problems:
            raise InvalidInput("malformed status callback", details=problems)
        return cls(
            campaign_id=query["c"],
            recipient_id=query["r"],
            attempt_id=query["a"],
            message_sid=form.first("MessageSid"),
            status=status,
            error_code=int(error_code) if error_code else None,
        )


def apply_status_report(store: Store, report: StatusReport) -> CallbackOutcome:
    try:
        recipient = store.recipient(report.campaign_id, report.recipient_id)
    except NotFound:
        # Signed by Twilio, so it is ours; the recipient may have been erased since.
        logger.warning("status callback for a recipient that no longer exists")
        return CallbackOutcome.IGNORED
    changes = {
        "message_sid": report.message_sid,
        "unresolved_shard": None,
        # Twilio's word replaces any earlier guess (such as a lost connection).
        "failure_reason": f"twilio_{report.error_code}" if report.error_code else None,
    }
    if report.error_code is not None:
        changes["error_code"] = report.error_code
    moved = store.transition(recipient, report.status, owned_by=report.attempt_id, **changes)
    return CallbackOutcome.APPLIED if moved else CallbackOutcome.IGNORED
