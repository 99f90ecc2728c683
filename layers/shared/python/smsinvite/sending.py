"""Sending invitations: at most once, at the throttle's pace, inside each recipient's sending window.

A batch from the send queue is planned, then each record is carried out, concurrently:

1. Plan. The batch's recipients, campaigns and suppressions are read together, and each record is
   decided: already handled, held (the campaign is paused), cancelled, left out by prepare, opted
   out, code expired, a merge field missing, outside its sending window (deferred until it opens),
   or ready. The ready ones reserve send slots on their sender's lane (the ceiling) and their
   campaign's lane (its rate); a record whose slot is further off than the invocation may wait goes
   back to the queue with a delay. Nothing waits by spinning.
2. Send, at the slot. Claim the recipient in one transaction that also requires the campaign to be
   sending and the number not to be suppressed at that moment; call Twilio with the attempt id in
   the StatusCallback URL and a ValidityPeriod that ends when the window closes; record what
   happened: accepted, refused for good, not taken (queued again with backoff), or unknown
   (reconciled later, never resent blindly).
"""

from __future__ import annotations

import random
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from urllib.parse import urlencode

from pydantic import BaseModel, ConfigDict, Field

from smsinvite.batches import DynamoBatches
from smsinvite.campaigns import CampaignState
from smsinvite.delivery import suppress_for_error
from smsinvite.dispatch import left_out_status
from smsinvite.errors import NotFound
from smsinvite.invitations import invitation_text
from smsinvite.lanes import ThrottleLanes
from smsinvite.lifecycle import complete_if_done
from smsinvite.messages import MissingField, body_digest
from smsinvite.observability import MetricUnit, logger, mask_phone, metrics
from smsinvite.phones import zones_for
from smsinvite.preparation import sending_window
from smsinvite.queues import Queue
from smsinvite.sending_window import NoSendingTime
from smsinvite.settings import Settings
from smsinvite.status import Status, from_twilio
from smsinvite.subscriptions import is_list
from smsinvite.store import Store, utcnow
from smsinvite.tables import CampaignRecord, RecipientRecord
from smsinvite.throttle import LATE_BUDGET, Busy, lanes_for
from smsinvite.twilio_gateway import CONNECTION_OVERRIDES, ErrorKind, TwilioGateway, TwilioSendError

STATUS_CALLBACK_PATH = "/twilio/status"
# The longest a record waits for its slot inside an invocation; longer waits go back to the queue.
MAX_INLINE_WAIT = 5.0
# SQS delays a message by at most 15 minutes; a longer deferral parks the recipient instead.
MAX_QUEUE_DELAY = 900
# Twilio's ValidityPeriod is 1 to 36000 s. A window closing sooner than MIN_VALIDITY waits for the next.
MAX_VALIDITY = 36_000
MIN_VALIDITY = 120
# A record is claimed this long before its slot: the claim's latency is then not the send's lateness,
# and an opt-out or a pause still takes effect up to a fraction of a second before the send.
CLAIM_LEAD = 0.25
# Writing what Twilio did is tried this often, backing off from OUTCOME_WRITE_BACKOFF seconds.
OUTCOME_WRITE_TRIES = 4
OUTCOME_WRITE_BACKOFF = 0.2


class SendRequest(BaseModel):
    """The body of a send-queue message."""

    model_config = ConfigDict(extra="forbid")
    campaign_id: str = Field(min_length=1, max_length=64)
    recipient_id: str = Field(min_length=1, max_length=64)
    retry: int = Field(default=0, ge=0, le=50)  # how often Twilio answered 429 for this invitation

    def body(self, **changes) -> dict:
        return self.model_copy(update=changes).model_dump(exclude_defaults=True)


class SendOutcome(str, Enum):
    SENT = "sent"
    FAILED = "failed"
    UNKNOWN = "unknown"
    SKIPPED_OPTED_OUT = "skipped_opted_out"
    ALREADY_HANDLED = "already_handled"
    HELD = "held"  # the campaign is paused (or between runs): dropped unsent, queued again on resume
    CANCELLED = "cancelled"
    EXCLUDED = "excluded"
    DEFERRED = "deferred"  # outside the recipient's sending window: it waits until the window opens
    REQUEUED = "requeued"  # its send slot, or Twilio's backoff, is further off than this invocation waits


@dataclass(frozen=True)
class StatusCallback:
    campaign_id: str
    recipient_id: str
    attempt_id: str

    def url(self, base_url: str) -> str:
        """With Twilio's connection overrides, so a callback answered 5xx is retried."""
        query = urlencode({"c": self.campaign_id, "r": self.recipient_id, "a": self.attempt_id})
        return f"{base_url}{STATUS_CALLBACK_PATH}?{query}#{CONNECTION_OVERRIDES}"


@dataclass
class SendPlan:
    """What to do with one send-queue record, decided with the rest of its batch."""

    request: SendRequest
    outcome: SendOutcome | None = None  # decided without Twilio; None while it is to be sent
    recipient: RecipientRecord | None = None
    campaign: CampaignRecord | None = None
    reason: str | None = None  # the failure_reason of a decided outcome
    body: str = ""
    at: float = 0.0  # the send slot (epoch seconds, on the sender's clock)
    validity: int | None = None
    delay: float = 0.0  # REQUEUED: seconds until it is due
    until: datetime | None = None  # DEFERRED: when its window opens
    error: Exception | None = field(default=None, repr=False)  # a poison record: raised when carried out


class InvitationSender:
    def __init__(
        self,
        store: Store,
        gateway: TwilioGateway,
        settings: Settings,
        *,
        send_queue: Queue,
        lanes: ThrottleLanes,
        clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], None] = time.sleep,
        max_wait: float = MAX_INLINE_WAIT,
        batches: DynamoBatches | None = None,
        dispatch_queue: Queue | None = None,
    ) -> None:
        self.store = store
        self.gateway = gateway
        self.settings = settings
        self.send_queue = send_queue
        self.lanes = lanes
        self.clock = clock
        self.sleep = sleep
        self.max_wait = max_wait
        self.batches = batches or DynamoBatches()
        self.dispatch_queue = dispatch_queue  # for the settle checks of a run whose last messages are out

    @classmethod
    def from_settings(cls, settings: Settings, *, max_wait: float = MAX_INLINE_WAIT) -> "InvitationSender":
        return cls(
            Store(settings),
            TwilioGateway.from_settings(settings),
            settings,
            send_queue=Queue(settings.send_queue_url),
            lanes=ThrottleLanes(settings.throttle_table),
            max_wait=max_wait,
            dispatch_queue=Queue(settings.dispatch_queue_url),
        )

    def send(self, request: SendRequest) -> SendOutcome:
        """One record on its own: planned, carried out, and its run completed if it was the last."""
        plan = self.plan([request])[0]
        outcome = self.carry_out(plan)
        self.complete_runs([plan])
        return outcome

    # ------------------------------------------------------------------ 1. plan the batch
    def plan(self, requests: Sequence[SendRequest]) -> list[SendPlan]:
        store, now = self.store, self.clock()
        keys = list(dict.fromkeys((r.campaign_id, r.recipient_id) for r in requests))
        found = {(r.campaign_id, r.recipient_id): r for r in self.batches.get(store.t.recipients, keys)}
        campaigns: dict[str, CampaignRecord | None] = {}
        for campaign_id in dict.fromkeys(r.campaign_id for r in requests):
            try:
                campaigns[campaign_id] = store.campaign(campaign_id)
            except NotFound:
                campaigns[campaign_id] = None
        suppressed = store.suppressed_among(
            self.batches, {r.phone for r in found.values() if r.status == Status.IMPORTED.value}
        )
        plans = [
            self._decide(request, found.get((request.campaign_id, request.recipient_id)),
                         campaigns[request.campaign_id], suppressed, now)
            for request in requests
        ]
        self._reserve([p for p in plans if p.outcome is None and p.error is None], now)
        return plans

    def _decide(self, request, recipient, campaign, suppressed: set[str], now: datetime) -> SendPlan:
        plan = SendPlan(request, recipient=recipient, campaign=campaign)
        if recipient is None or campaign is None:
            plan.error = NotFound("the recipient or its campaign does not exist")
            return plan
        if recipient.status != Status.IMPORTED.value:
            return _decided(plan, SendOutcome.ALREADY_HANDLED)
        state = CampaignState(campaign.state)
        if state is CampaignState.CANCELLED:
            return _decided(plan, SendOutcome.CANCELLED, "campaign_cancelled")
        if state is not CampaignState.SENDING:
            return _decided(plan, SendOutcome.HELD)
        if recipient.exclusion or (not recipient.code and not is_list(campaign)):
            return _decided(plan, SendOutcome.EXCLUDED, recipient.exclusion or "not_prepared")
        if recipient.phone in suppressed:
            return _decided(plan, SendOutcome.SKIPPED_OPTED_OUT, "suppressed")
        if recipient.code_expires_at is not None and recipient.code_expires_at <= now:
            return _decided(plan, SendOutcome.FAILED, "code_expired")
        try:
            plan.body = invitation_text(campaign.message_template, recipient.fields.as_dict(), recipient.code, self.settings)
        except MissingField as missing:
            return _decided(plan, SendOutcome.FAILED, f"missing_field:{missing.name}")
        window, zones = sending_window(campaign), zones_for(recipient.phone)
        if window.all_day:
            plan.validity = MAX_VALIDITY
            return plan
        try:
            closes = window.closes_at(now, zones)
            if closes is None or closes - now < timedelta(seconds=MIN_VALIDITY):
                plan.until = window.next_open(now if closes is None else closes, zones)
                return _decided(plan, SendOutcome.DEFERRED)
        except NoSendingTime:
            return _decided(plan, SendOutcome.FAILED, "no_common_sending_window")
        plan.validity = int(min(MAX_VALIDITY, (closes - now).total_seconds()))
        return plan

    def _reserve(self, sending: list[SendPlan], now: datetime) -> None:
        """Send slots for the ready records, campaign by campaign; the rest go back to the queue."""
        by_campaign: dict[str, list[SendPlan]] = defaultdict(list)
        for plan in sending:
            by_campaign[plan.campaign.campaign_id].append(plan)
        for group in by_campaign.values():
            reserved = self.lanes.reserve(
                self._lanes(group[0].campaign), count=len(group), max_wait=self.max_wait, lead=CLAIM_LEAD
            )
            epoch = now.timestamp()
            for index, plan in enumerate(group):
                if isinstance(reserved, Busy):
                    plan.outcome, plan.delay = SendOutcome.REQUEUED, reserved.until - epoch
                elif index >= reserved.slots.count:
                    plan.outcome, plan.delay = SendOutcome.REQUEUED, reserved.slots.at(index) - epoch
                else:
                    plan.at = reserved.slots.at(index)
                    plan.validity = max(1, plan.validity - int(max(0.0, plan.at - epoch)))

    # ------------------------------------------------------------------ 2. carry it out
    def carry_out(self, plan: SendPlan) -> SendOutcome:
        if plan.error is not None:
            raise plan.error
        return self._decided(plan) if plan.outcome is not None else self._send_at_slot(plan)

    def complete_runs(self, plans: Sequence[SendPlan]) -> None:
        """After a batch: try to complete the run of each campaign it sent for (one conditional write each).

        The batch that finishes last sees every other send recorded, and the dispatcher tries after its
        last page, so a run completes as soon as its last message is out, whoever sent it.
        """
        for campaign_id in dict.fromkeys(p.campaign.campaign_id for p in plans if p.campaign is not None):
            try:
                complete_if_done(self.store, self.store.campaign(campaign_id), settle_queue=self.dispatch_queue)
            except Exception as error:  # noqa: BLE001 - the batch is sent; the scheduler's watchdog completes the run
                logger.warning("a run could not be completed after its batch; the scheduler will",
                               extra={"campaign_id": campaign_id, "error_type": type(error).__name__})
                metrics.add_metric(name="RunCompletionDeferred", unit=MetricUnit.Count, value=1)

    def _decided(self, plan: SendPlan) -> SendOutcome:
        store, recipient, outcome = self.store, plan.recipient, plan.outcome
        if outcome is SendOutcome.CANCELLED:
            store.transition(recipient, Status.CANCELLED, failure_reason=plan.reason)
        elif outcome is SendOutcome.EXCLUDED:
            store.transition(recipient, left_out_status(plan.reason), failure_reason=plan.reason)
        elif outcome is SendOutcome.SKIPPED_OPTED_OUT:
            store.transition(recipient, Status.SKIPPED_OPTED_OUT, failure_reason=plan.reason)
        elif outcome is SendOutcome.FAILED:
            store.transition(recipient, Status.FAILED, failure_reason=plan.reason)
        elif outcome is SendOutcome.REQUEUED:
            self.send_queue.send(plan.request.body(), delay_seconds=_queue_delay(plan.delay))
        elif outcome is SendOutcome.DEFERRED:
            self._defer(plan)
        return outcome

    def _defer(self, plan: SendPlan) -> None:
        wait = (plan.until - self.clock()).total_seconds()
        if wait <= MAX_QUEUE_DELAY:
            self.send_queue.send(plan.request.body(), delay_seconds=_queue_delay(wait))
        else:
            self.store.defer(plan.recipient, plan.until)
        logger.info(
            "outside the recipient's sending window; deferred",
            extra={"to": mask_phone(plan.recipient.phone), "until": plan.until.isoformat()},
        )

    def _send_at_slot(self, plan: SendPlan) -> SendOutcome:
        """Claim just ahead of the slot, so the claim's own latency does not make the send late; then send
        at the slot, or, when the send would go out too late to keep the ceiling, at a fresh slot."""
        self._sleep_until(plan.at - CLAIM_LEAD)
        store, recipient, campaign = self.store, plan.recipient, plan.campaign
        attempt_id = uuid.uuid4().hex
        claimed_at = utcnow()
        claimed, stopped_by = store.claim(
            recipient,
            attempt_id=attempt_id,
            claimed_at=claimed_at.isoformat(),
            valid_until=(claimed_at + timedelta(seconds=(plan.validity or MAX_VALIDITY) + CLAIM_LEAD)).isoformat(),
            body_digest=body_digest(plan.body),
            list_empty_at=None,
            twilio_status=None,
        )
        if claimed is None:
            return self._not_claimed(plan, stopped_by)
        at = plan.at
        if self.clock().timestamp() > at + LATE_BUDGET:
            # A fresh slot only if it is near: a claim must not outlive a pause or an opt-out by long.
            fresh = self.lanes.reserve(self._lanes(campaign), count=1, max_wait=CLAIM_LEAD)
            if isinstance(fresh, Busy):
                self._unclaim(claimed, attempt_id)
                self.send_queue.send(plan.request.body(), delay_seconds=_queue_delay(fresh.until - self.clock().timestamp()))
                return SendOutcome.REQUEUED
            at = fresh.slots.at(0)
        self._sleep_until(at)

        callback = StatusCallback(claimed.campaign_id, claimed.recipient_id, attempt_id)
        try:
            accepted = self.gateway.send(
                to=claimed.phone,
                body=plan.body,
                sender=self._sender(campaign),
                status_callback=callback.url(self.settings.require_webhook_base_url()),
                validity_period=plan.validity,
            )
        except TwilioSendError as error:
            refused = error
        else:
            return self._recorded(claimed, lambda: self._record_accepted(claimed, attempt_id, accepted))
        return self._recorded(claimed, lambda: self._record_error(plan, claimed, attempt_id, refused))

    def _recorded(self, claimed: RecipientRecord, record: Callable[[], SendOutcome]) -> SendOutcome:
        """Record what Twilio did, trying again on a failed write. Twilio has been called, so this record
        must not fail: redelivered, it would only find its recipient claimed. If the outcome still cannot
        be written, the recipient stays claimed and the reconciler settles it against Twilio's list."""
        for attempt in range(OUTCOME_WRITE_TRIES):
            try:
                return record()
            except Exception as error:  # noqa: BLE001 - any failed write; the claim keeps the send safe
                if attempt == OUTCOME_WRITE_TRIES - 1:
                    logger.error(
                        "the outcome of a Twilio call could not be recorded; the recipient will be reconciled",
                        extra={"to": mask_phone(claimed.phone), "error_type": type(error).__name__},
                    )
                    metrics.add_metric(name="SendOutcomeUnrecorded", unit=MetricUnit.Count, value=1)
                    return SendOutcome.UNKNOWN
                self.sleep(OUTCOME_WRITE_BACKOFF * 2**attempt * random.uniform(0.5, 1.0))
        raise AssertionError("unreachable")

    def _record_accepted(self, claimed: RecipientRecord, attempt_id: str, accepted) -> SendOutcome:
        status = from_twilio(accepted.status)
        if status is None:  # Twilio created it (201) under a status we cannot name: it has it, at least queued
            logger.warning("Twilio accepted a message with a status we do not know", extra={"status": accepted.status})
            status = Status.QUEUED
        moved = self.store.transition(claimed, status, owned_by=attempt_id, message_sid=accepted.sid)
        if moved is None:  # a status callback got there first; keep its status, add the SID
            self.store.set_message_sid(claimed, attempt_id, accepted.sid)
        logger.info("invitation accepted by Twilio", extra={"to": mask_phone(claimed.phone), "sid": accepted.sid})
        return SendOutcome.SENT

    def _sleep_until(self, at: float) -> None:
        wait = at - self.clock().timestamp()
        if wait > 0:
            self.sleep(wait)

    def _unclaim(self, claimed, attempt_id: str) -> None:
        """Back to `imported`: Twilio was certainly not called (or certainly did not take it)."""
        self.store.transition(
            claimed,
            Status.IMPORTED,
            owned_by=attempt_id,
            backward_from=(Status.CLAIMED,),
            attempt_id=None,
            claimed_at=None,
            valid_until=None,
        )

    def _lanes(self, campaign: CampaignRecord):
        ceiling = float(self.settings.sender_ceiling_per_second)
        return lanes_for(campaign.campaign_id, float(campaign.rate_per_second), self._sender(campaign), ceiling)

    def _not_claimed(self, plan: SendPlan, stopped_by: str | None) -> SendOutcome:
        """The claim's own conditions said no: someone else has it, the campaign stopped, or an opt-out came in."""
        if stopped_by == "suppressed":
            self.store.transition(plan.recipient, Status.SKIPPED_OPTED_OUT, failure_reason="suppressed")
            return SendOutcome.SKIPPED_OPTED_OUT
        if stopped_by == "campaign":
            if self.store.campaign(plan.campaign.campaign_id).state == CampaignState.CANCELLED.value:
                self.store.transition(plan.recipient, Status.CANCELLED, failure_reason="campaign_cancelled")
                return SendOutcome.CANCELLED
            return SendOutcome.HELD
        return SendOutcome.ALREADY_HANDLED

    def _record_error(self, plan: SendPlan, claimed, attempt_id: str, error: TwilioSendError) -> SendOutcome:
        store = self.store
        log = {"to": mask_phone(claimed.phone), "kind": error.kind.value, "reason": error.reason}
        if error.kind is ErrorKind.RETRYABLE:
            self._unclaim(claimed, attempt_id)
            # Certainly not sent: back to the queue with exponential backoff and jitter, not to the DLQ.
            retry = plan.request.retry + 1
            delay = min(MAX_QUEUE_DELAY, 2**retry) * random.uniform(0.5, 1.0)
            self.send_queue.send(plan.request.body(retry=retry), delay_seconds=_queue_delay(delay))
            logger.info("Twilio did not take the message; it is queued again", extra={**log, "retry": retry})
            return SendOutcome.REQUEUED
        if error.kind is ErrorKind.DEFINITE:
            # What the refusal says about the number first, once per attempt and code: if the status
            # write below fails, writing both again repairs the outcome instead of losing the opt-out.
            suppress_for_error(store, self.settings, claimed.phone, error.code, occurrence=attempt_id)
            store.transition(
                claimed, Status.FAILED, owned_by=attempt_id, error_code=error.code, failure_reason=error.reason
            )
            logger.info("Twilio refused the message", extra=log)
            return SendOutcome.FAILED
        store.transition(claimed, Status.UNKNOWN, owned_by=attempt_id, failure_reason=error.reason)
        logger.warning("Twilio's answer was lost; the recipient will be reconciled", extra=log)
        return SendOutcome.UNKNOWN

    def _sender(self, campaign: CampaignRecord) -> str:
        return campaign.sender or self.settings.default_sender


def _decided(plan: SendPlan, outcome: SendOutcome, reason: str | None = None) -> SendPlan:
    plan.outcome, plan.reason = outcome, reason
    return plan


def _queue_delay(seconds: float) -> int:
    return max(0, min(MAX_QUEUE_DELAY, int(seconds + 0.999)))
