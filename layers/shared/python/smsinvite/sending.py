"""Sending one invitation, at most once.

1. Claim the recipient with a conditional write before Twilio is called.
2. Call Twilio, with the attempt id in the StatusCallback URL.
3. Record what happened: accepted, refused for good, not taken (retry), or unknown (reconcile).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import Enum
from urllib.parse import urlencode

from pydantic import BaseModel, ConfigDict, Field

from smsinvite.campaigns import CampaignState
from smsinvite.dispatch import left_out_status
from smsinvite.invitations import invitation_text
from smsinvite.lifecycle import complete_if_done
from smsinvite.messages import MissingField, body_digest
from smsinvite.observability import logger, mask_phone
from smsinvite.settings import Settings
from smsinvite.status import Status, from_twilio
from smsinvite.store import Store, unresolved_shard, utcnow
from smsinvite.twilio_gateway import ErrorKind, TwilioGateway, TwilioSendError

STATUS_CALLBACK_PATH = "/twilio/status"
# Twilio error codes that mean the number itself must not be texted again.
OPTED_OUT_CODES = frozenset({21610})


class SendRequest(BaseModel):
    """The body of a send-queue message."""

    model_config = ConfigDict(extra="forbid")
    campaign_id: str = Field(min_length=1, max_length=64)
    recipient_id: str = Field(min_length=1, max_length=64)


class SendOutcome(str, Enum):
    SENT = "sent"
    FAILED = "failed"
    UNKNOWN = "unknown"
    SKIPPED_OPTED_OUT = "skipped_opted_out"
    ALREADY_HANDLED = "already_handled"
    HELD = "held"  # the campaign is paused (or between runs): dropped unsent, queued again on resume
    CANCELLED = "cancelled"
    EXCLUDED = "excluded"


class RetryLater(Exception):
    """Twilio certainly did not take the message; the queue should deliver it again later."""


@dataclass(frozen=True)
class StatusCallback:
    campaign_id: str
    recipient_id: str
    attempt_id: str

    def url(self, base_url: str) -> str:
        query = urlencode({"c": self.campaign_id, "r": self.recipient_id, "a": self.attempt_id})
        return f"{base_url}{STATUS_CALLBACK_PATH}?{query}"


# Below this many unsent recipients (as read before a send), the sender tries to complete the run;
# above it the write would be wasted on the campaign's hot item. The scheduler's watchdog catches the rest.
# Dispatch being done is not required here: the dispatcher tries too, after its last page, and the
# conditional write needs both, so whichever of them moves last completes the run.
_COMPLETION_CHECK_BELOW = 25


def _nearly_done(campaign) -> bool:
    unsent = sum(int(getattr(campaign, f"count_{s}") or 0) for s in ("imported", "claimed", "unknown"))
    return unsent <= _COMPLETION_CHECK_BELOW


class InvitationSender:
    def __init__(self, store: Store, gateway: TwilioGateway, settings: Settings) -> None:
        self.store = store
        self.gateway = gateway
        self.settings = settings

    def send(self, request: SendRequest) -> SendOutcome:
        store = self.store
        recipient = store.recipient(request.campaign_id, request.recipient_id)
        if Status(recipient.status) is not Status.IMPORTED:
            return SendOutcome.ALREADY_HANDLED
        campaign = store.campaign(request.campaign_id)
        outcome = self._send(recipient, campaign)
        if outcome is not SendOutcome.HELD and _nearly_done(campaign):
            complete_if_done(store, store.campaign(campaign.campaign_id))
        return outcome

    def _send(self, recipient, campaign) -> SendOutcome:
        store = self.store
        state = CampaignState(campaign.state)
        if state is CampaignState.CANCELLED:
            store.transition(recipient, Status.CANCELLED, failure_reason="campaign_cancelled")
            return SendOutcome.CANCELLED
        if state is not CampaignState.SENDING:
            return SendOutcome.HELD
        if recipient.exclusion or not recipient.code:
            reason = recipient.exclusion or "not_prepared"
            store.transition(recipient, left_out_status(reason), failure_reason=reason)
            return SendOutcome.EXCLUDED
        # Checked again at send time: an opt-out since prepare must take effect before this send.
        if store.is_suppressed(recipient.phone):
            store.transition(recipient, Status.SKIPPED_OPTED_OUT, failure_reason="suppressed")
            return SendOutcome.SKIPPED_OPTED_OUT
        try:
            body = invitation_text(campaign.message_template, recipient.fields.as_dict(), recipient.code, self.settings)
        except MissingField as missing:
            store.transition(recipient, Status.FAILED, failure_reason=f"missing_field:{missing.name}")
            return SendOutcome.FAILED

        attempt_id = uuid.uuid4().hex
        claimed = store.transition(
            recipient,
            Status.CLAIMED,
            attempt_id=attempt_id,
            claimed_at=utcnow().isoformat(),
            unresolved_shard=unresolved_shard(recipient.recipient_id),
            body_digest=body_digest(body),
        )
        if claimed is None:
            return SendOutcome.ALREADY_HANDLED

        callback = StatusCallback(claimed.campaign_id, claimed.recipient_id, attempt_id)
        try:
            accepted = self.gateway.send(
                to=claimed.phone,
                body=body,
                sender=campaign.sender or self.settings.default_sender,
                status_callback=callback.url(self.settings.require_webhook_base_url()),
            )
        except TwilioSendError as error:
            return self._record_error(claimed, attempt_id, error)

        moved = store.transition(
            claimed, from_twilio(accepted.status), owned_by=attempt_id, message_sid=accepted.sid, unresolved_shard=None
        )
        if moved is None:  # a status callback got there first; keep its status, add the SID
            store.set_message_sid(claimed, attempt_id, accepted.sid)
        logger.info("invitation accepted by Twilio", extra={"to": mask_phone(claimed.phone), "sid": accepted.sid})
        return SendOutcome.SENT

    def _record_error(self, claimed, attempt_id: str, error: TwilioSendError) -> SendOutcome:
        store = self.store
        log = {"to": mask_phone(claimed.phone), "kind": error.kind.value, "reason": error.reason}
        if error.kind is ErrorKind.RETRYABLE:
            store.transition(
                claimed,
                Status.IMPORTED,
                owned_by=attempt_id,
                backward_from=(Status.CLAIMED,),
                attempt_id=None,
                claimed_at=None,
                unresolved_shard=None,
            )
            logger.info("Twilio did not take the message; it will be retried", extra=log)
            raise RetryLater(error.reason)
        if error.kind is ErrorKind.DEFINITE:
            store.transition(
                claimed,
                Status.FAILED,
                owned_by=attempt_id,
                error_code=error.code,
                failure_reason=error.reason,
                unresolved_shard=None,
            )
            if error.code in OPTED_OUT_CODES:
                store.suppress(claimed.phone, reason="opted_out", source="carrier_error")
            logger.info("Twilio refused the message", extra=log)
            return SendOutcome.FAILED
        store.transition(claimed, Status.UNKNOWN, owned_by=attempt_id, failure_reason=error.reason)
        logger.warning("Twilio's answer was lost; the recipient will be reconciled", extra=log)
        return SendOutcome.UNKNOWN
