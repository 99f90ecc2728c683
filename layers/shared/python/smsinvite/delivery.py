"""Twilio status callbacks: the recipient's status moves forward only, counts change once, and a
number the carrier reports dead or opted out goes onto the suppression list."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from smsinvite.consent import ConsentEntry, ConsentEvent, ConsentSource, SuppressionReason
from smsinvite.errors import InvalidInput
from smsinvite.observability import MetricUnit, logger, mask_phone, metrics
from smsinvite.settings import Settings
from smsinvite.status import Status, from_twilio
from smsinvite.store import Store, utcnow
from smsinvite.tables import RecipientRecord
from smsinvite.twilio_gateway import FormParams


_RECIPIENT_ID = re.compile(r"^[0-9a-f]{24}$")


class CallbackOutcome(str, Enum):
    APPLIED = "applied"
    IGNORED = "ignored"  # late, duplicate or out of order: the stored status is already further on
    UNMAPPED = "unmapped"  # a status we cannot apply: kept as it is, noted on the recipient, logged, counted


@dataclass(frozen=True)
class StatusReport:
    """What Twilio says of one message: from a status callback, or from its own API."""

    campaign_id: str
    recipient_id: str
    attempt_id: str
    message_sid: str
    status: Status | None  # None: a Twilio status we cannot apply (twilio_status says which)
    error_code: int | None
    to: str
    twilio_status: str = ""

    @classmethod
    def parse(cls, query: dict[str, str], form: FormParams) -> "StatusReport":
        problems = [f"query parameter {name} is missing" for name in ("c", "r", "a") if not query.get(name)]
        if query.get("r") and not _RECIPIENT_ID.match(query["r"]):
            problems.append("query parameter r is not a recipient id")
        for name in ("MessageSid", "MessageStatus"):
            if not form.first(name):
                problems.append(f"form field {name} is missing")
        twilio_status = form.first("MessageStatus")
        if len(twilio_status) > 64:
            problems.append("form field MessageStatus is too long")
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
            status=from_twilio(twilio_status),
            error_code=int(error_code) if error_code else None,
            to=form.first("To"),
            twilio_status=twilio_status,
        )


# The status a message most likely has when Twilio reports the next one (callbacks mostly come in
# order). A wrong guess costs one refused write, which returns the status DynamoDB holds.
_LIKELY_BEFORE = {
    Status.QUEUED: Status.CLAIMED,
    Status.SENDING: Status.QUEUED,
    Status.SENT: Status.SENDING,
    Status.DELIVERED: Status.SENT,
    Status.UNDELIVERED: Status.SENT,
    Status.FAILED: Status.SENDING,
    Status.PARTIALLY_DELIVERED: Status.SENT,
}

# The person replied STOP to the sender: Twilio refuses to text them (error 21610).
OPTED_OUT_CODES = frozenset({21610})


def suppression_for(error_code: int | None, settings: Settings) -> SuppressionReason | None:
    """What an error code says about the number itself: opted out, dead for good, or nothing."""
    if error_code in OPTED_OUT_CODES:
        return SuppressionReason.OPTED_OUT
    if error_code in settings.undeliverable_error_codes:
        return SuppressionReason.UNDELIVERABLE
    return None


def suppress_for_error(
    store: Store, settings: Settings, phone: str, error_code: int | None, *,
    message_sid: str | None = None, occurrence: str | None = None,
) -> SuppressionReason | None:
    """Put a number the carrier reports dead or opted out on the suppression list, with its ledger entry.

    Idempotent per occurrence (the message, or the send attempt Twilio refused) and code, so the
    writer can write it again until the status that depends on it is written too.
    """
    reason = suppression_for(error_code, settings)
    if reason is None or not phone:
        return None
    event = ConsentEvent.OPT_OUT if reason is SuppressionReason.OPTED_OUT else ConsentEvent.UNDELIVERABLE
    occurrence = occurrence or message_sid
    entry = ConsentEntry(
        phone=phone, event=event, source=ConsentSource.CARRIER_ERROR, at=utcnow(),
        message_sid=message_sid, detail=f"twilio_{error_code}",
        key=f"carrier#{occurrence}#{error_code}" if occurrence else None,
    )
    store.suppress(entry, reason)
    logger.info("number suppressed on a carrier error", extra={"to": mask_phone(phone), "reason": reason.value,
                                                               "error_code": error_code})
    return reason


def apply_status_report(
    store: Store, settings: Settings, report: StatusReport, *, current: RecipientRecord | None = None
) -> CallbackOutcome:
    """One conditional write in the common case: the message's status and its counter shard.

    The write is conditioned on the status it moves from, so a callback repeated, delayed or
    delivered twice at once (the same idempotency token) is applied once and counted once. `current`
    is the recipient when the caller has read it (the reconciler); a callback guesses it.
    """
    if report.error_code is not None:
        # First, and written once per message and code: if the status write below fails, the
        # retried callback suppresses again harmlessly instead of finding the status moved and stopping.
        suppress_for_error(store, settings, report.to, report.error_code, message_sid=report.message_sid)
    if report.status is None:
        # Twilio has the message (it reports on it), under a status we do not know: keep ours, note its.
        store.note_attempt(report.campaign_id, report.recipient_id, report.attempt_id,
                           twilio_status=report.twilio_status[:64], message_sid=report.message_sid)
        logger.warning("Twilio reported a message status we do not know; kept as it is",
                       extra={"twilio_status": report.twilio_status[:64]})
        metrics.add_metric(name="UnmappedTwilioStatus", unit=MetricUnit.Count, value=1)
        return CallbackOutcome.UNMAPPED
    changes = {
        # Twilio's word replaces any earlier guess (such as a lost connection).
        "failure_reason": f"twilio_{report.error_code}" if report.error_code else None,
    }
    if report.message_sid:
        changes["message_sid"] = report.message_sid
    if report.error_code is not None:
        changes["error_code"] = report.error_code
    likely = current or store.guess(
        report.campaign_id, report.recipient_id, _LIKELY_BEFORE.get(report.status, Status.SENT), report.attempt_id
    )
    moved = store.transition(likely, report.status, owned_by=report.attempt_id, **changes)
    if moved is None:
        return CallbackOutcome.IGNORED
    if report.error_code is not None:
        # Expected outcomes of sending to real people: info, not error.
        logger.info("Twilio reported a failed message", extra={"status": report.status.value,
                                                               "error_code": report.error_code})
    return CallbackOutcome.APPLIED
