"""Settling open sends against Twilio's own records, never resending on weak evidence.

Two kinds of open send, each found through the by-unresolved index:

- **Unknown outcome** (claimed or unknown: a timeout, a 5xx, a sender that died), once the grace has
  passed. Found in Twilio's message list (or reported by a callback under a status we could not
  apply): recorded, never sent again. Sent again only on strong evidence that Twilio never created it:
  no callback for its attempt, and an empty list for the number at two reads spaced by the
  confirmation delay. Without that evidence by the time the message could no longer be delivered in
  time (its ValidityPeriod has run out), it ends `unresolved`: visible, and only an operator resends.
- **No final status** (queued, sending or sent) long after the send: fetched from Twilio by its SID
  and moved to what Twilio says; still not final there, it ends `awaiting_final_status`, which a late
  callback still moves on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta

from smsinvite.delivery import CallbackOutcome, StatusReport, apply_status_report
from smsinvite.messages import body_digest
from smsinvite.observability import logger, mask_phone
from smsinvite.queues import Queue
from smsinvite.settings import Settings
from smsinvite.status import Status, from_twilio
from smsinvite.store import Store, utcnow
from smsinvite.sweeps import sweep
from smsinvite.tables import RecipientRecord
from smsinvite.twilio_gateway import SentMessage, TwilioGateway, TwilioSendError

CLOCK_SKEW = timedelta(seconds=30)
# Without a recorded ValidityPeriod, Twilio's longest (36,000 s) bounds when a message could arrive.
LONGEST_VALIDITY = timedelta(seconds=36_000)


class Reconciler:
    def __init__(
        self, store: Store, gateway: TwilioGateway, send_queue: Queue, settings: Settings, *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.gateway = gateway
        self.send_queue = send_queue
        self.settings = settings
        self.clock = clock
        self.grace = timedelta(seconds=settings.reconcile_grace_seconds)
        self.confirm_delay = timedelta(seconds=settings.reconcile_confirm_seconds)
        self.final_after = timedelta(seconds=settings.final_status_after_seconds)

    def run(self, *, time_left: Callable[[], float], margin: float) -> Counter:
        """One tick's worth: unknown outcomes first, then missing final statuses, within the time left.
        When Twilio does not answer, the rest waits for the next tick."""
        now = self.clock()
        unknown = self.store.unresolved_recipients(claimed_before=(now - self.grace).isoformat())
        outcomes = sweep("reconcile", unknown, lambda r: self.resolve(r, now), time_left=time_left, margin=margin,
                         stop_on=(TwilioSendError,))
        if outcomes["postponed"] or outcomes["left_for_next_tick"]:
            return outcomes
        in_flight = self.store.in_flight_recipients(sent_before=(now - self.final_after).isoformat())
        outcomes += sweep("final_status", in_flight, lambda r: self.finalise(r, now), time_left=time_left,
                          margin=margin, stop_on=(TwilioSendError,))
        return outcomes

    # ------------------------------------------------------------------ unknown outcomes
    def resolve(self, recipient: RecipientRecord, now: datetime) -> str:
        if recipient.twilio_status:
            # A callback for this attempt came, under a status we could not apply: Twilio has it.
            return self._found(recipient, None)
        claimed_at = datetime.fromisoformat(recipient.claimed_at)
        listed = self.gateway.messages_to(recipient.phone, since=claimed_at - CLOCK_SKEW)
        ours = [m for m in listed if recipient.body_digest is None or _digest_of(m.body) == recipient.body_digest]
        if ours:
            return self._found(recipient, ours[-1])  # newest first: the last one is the earliest after the claim
        first_empty = datetime.fromisoformat(recipient.list_empty_at) if recipient.list_empty_at else None
        if first_empty is not None and now - first_empty >= self.confirm_delay:
            return self._send_again(recipient)
        if now >= self._deadline(recipient, claimed_at):
            return self._unresolved(recipient)
        if first_empty is None:
            self.store.note_attempt(recipient.campaign_id, recipient.recipient_id, recipient.attempt_id,
                                    list_empty_at=now.isoformat())
        return "confirming"

    def _found(self, recipient: RecipientRecord, message: SentMessage | None) -> str:
        """Twilio has it: record what it says (a status we cannot name counts as queued), never resend."""
        status = from_twilio(message.status) if message else None
        report = StatusReport(
            campaign_id=recipient.campaign_id, recipient_id=recipient.recipient_id, attempt_id=recipient.attempt_id,
            message_sid=message.sid if message else (recipient.message_sid or ""),
            status=status or Status.QUEUED, error_code=message.error_code if message else None,
            to=recipient.phone, twilio_status=message.status if message else recipient.twilio_status,
        )
        if message is not None and status is None:
            logger.warning("an unresolved send is at Twilio under a status we do not know",
                           extra={"twilio_status": (message.status or "")[:64]})
        apply_status_report(self.store, self.settings, report, current=recipient)
        logger.info("unresolved send found at Twilio", extra={"to": mask_phone(recipient.phone), "sid": report.message_sid})
        return "found"

    def _send_again(self, recipient: RecipientRecord) -> str:
        """Twilio never created it: back to `imported` and onto the send queue, where the sender decides
        again whether the campaign and the recipient's sending window still allow the send."""
        reset = self.store.transition(
            recipient,
            Status.IMPORTED,
            owned_by=recipient.attempt_id,
            backward_from=(Status.CLAIMED, Status.UNKNOWN),
            attempt_id=None,
            claimed_at=None,
            valid_until=None,
            list_empty_at=None,
            failure_reason=None,
        )
        if reset is None:
            return "changed_meanwhile"
        self.send_queue.send({"campaign_id": recipient.campaign_id, "recipient_id": recipient.recipient_id})
        logger.info("Twilio has no such message at two reads; queued again", extra={"to": mask_phone(recipient.phone)})
        return "requeued"

    def _unresolved(self, recipient: RecipientRecord) -> str:
        moved = self.store.transition(
            recipient, Status.UNRESOLVED, owned_by=recipient.attempt_id,
            failure_reason=recipient.failure_reason or "outcome_unknown",
        )
        if moved is None:
            return "changed_meanwhile"
        logger.warning("a send's outcome could not be settled in time; it is unresolved",
                       extra={"to": mask_phone(recipient.phone)})
        return "unresolved"

    @staticmethod
    def _deadline(recipient: RecipientRecord, claimed_at: datetime) -> datetime:
        """When Twilio would no longer deliver the message, had it created it."""
        if recipient.valid_until:
            return datetime.fromisoformat(recipient.valid_until)
        return claimed_at + LONGEST_VALIDITY

    # ------------------------------------------------------------------ missing final statuses
    def finalise(self, recipient: RecipientRecord, now: datetime) -> str:
        message = self.gateway.fetch(recipient.message_sid) if recipient.message_sid else None
        status = from_twilio(message.status) if message else None
        if message is not None and status is not None and status.is_terminal:
            report = StatusReport(
                campaign_id=recipient.campaign_id, recipient_id=recipient.recipient_id,
                attempt_id=recipient.attempt_id, message_sid=message.sid, status=status,
                error_code=message.error_code, to=recipient.phone, twilio_status=message.status,
            )
            applied = apply_status_report(self.store, self.settings, report, current=recipient)
            return "finalised" if applied is CallbackOutcome.APPLIED else "changed_meanwhile"
        moved = self.store.transition(
            recipient, Status.AWAITING_FINAL_STATUS, owned_by=recipient.attempt_id,
            twilio_status=(message.status or "")[:64] if message else None,
        )
        if moved is None:
            return "changed_meanwhile"
        logger.info("no final status from Twilio long after the send", extra={"to": mask_phone(recipient.phone)})
        return "awaiting_final_status"


def _digest_of(body: str | None) -> str | None:
    return body_digest(body) if body is not None else None
