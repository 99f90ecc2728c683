"""Fanning a campaign's prepared audience out to the send queue, a page at a time, resumable from a cursor.

Each page is queued in SendMessageBatch calls of ten, then the cursor moves on in a conditional
write from the cursor the page started at. A dispatch cut off part-way resumes from the last saved
cursor; a page queued twice is harmless (the sender's claim admits one send), and two dispatchers
racing over one cursor cannot both move it. A cancelled campaign's dispatch marks whoever is left
`cancelled` instead of queueing them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from smsinvite.campaigns import CampaignState
from smsinvite.lifecycle import WATCHDOG, complete_if_done
from smsinvite.observability import logger
from smsinvite.queues import Queue
from smsinvite.status import Status
from smsinvite.store import Store, utcnow
from smsinvite.tables import RecipientRecord


class DispatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    campaign_id: str = Field(min_length=1, max_length=64)
    run: int | None = Field(default=None, ge=0)  # None: the campaign's current run
    cursor: str | None = None  # JSON of DynamoDB's LastEvaluatedKey
    # Not a page: the n-th check of a run whose last messages were on their way (lifecycle.settle_check).
    settle: int = Field(default=0, ge=0, le=100)


# The send queue holds at most about this much sending ahead: the sender waits for slots, not for a backlog.
LEAD_SECONDS = 30.0


@dataclass(frozen=True)
class DispatchPage:
    queued: int
    next_cursor: str | None
    stopped: str | None = None  # why this dispatch ends here without being done (paused, stale...)
    rate_per_second: float = 0.0  # the campaign's pace: its rate, capped by the sender ceiling

    @property
    def more(self) -> bool:
        return self.next_cursor is not None and self.stopped is None


def pause_before_next_page(queued: int, rate_per_second: float, elapsed: float, lead: float = LEAD_SECONDS) -> float:
    """Seconds to wait before queueing more: 0 while the queue holds less than `lead` seconds of sending.

    A campaign of 100,000 at 10 a second is queued as it is sent, not all at once: nothing sits in the
    queue for hours, and a pause or a cancel leaves little in it.
    """
    if rate_per_second <= 0:
        return 0.0
    ahead = queued / rate_per_second - elapsed
    return max(0.0, ahead - lead / 2) if ahead > lead else 0.0


def left_out_status(exclusion: str) -> Status:
    """What a recipient that prepare left out becomes once the campaign sends."""
    return Status.SKIPPED_OPTED_OUT if exclusion == "suppressed" else Status.EXCLUDED


class Dispatcher:
    def __init__(
        self, store: Store, send_queue: Queue, *, page_size: int, ceiling_per_second: float = float("inf"),
        dispatch_queue: Queue | None = None,
    ) -> None:
        self.store = store
        self.send_queue = send_queue
        self.dispatch_queue = dispatch_queue
        self.page_size = page_size
        self.ceiling_per_second = ceiling_per_second

    def dispatch_page(self, request: DispatchRequest) -> DispatchPage:
        store = self.store
        campaign = store.campaign(request.campaign_id)
        run = int(campaign.run) if request.run is None else request.run
        state = CampaignState(campaign.state)
        if run != int(campaign.run):
            return DispatchPage(0, None, stopped="a newer run has started")
        if state not in (CampaignState.SENDING, CampaignState.CANCELLED):
            return DispatchPage(0, None, stopped=f"the campaign is {state.value}")
        if (campaign.dispatch_cursor or None) != request.cursor:
            return DispatchPage(0, None, stopped="another dispatch has moved on")
        cancelling = state is CampaignState.CANCELLED

        start = json.loads(request.cursor) if request.cursor else None
        page, last_key = store.recipients_page(campaign.campaign_id, cursor=start, limit=self.page_size)
        bodies, now = [], utcnow().isoformat()
        for recipient in page:
            if recipient.status != Status.IMPORTED.value:
                continue
            if not cancelling and recipient.deferred_until and recipient.deferred_until > now:
                continue  # parked until its sending window opens; the scheduler queues it then
            if cancelling:
                store.transition(recipient, Status.CANCELLED, failure_reason="campaign_cancelled")
            elif recipient.exclusion or not recipient.code:
                self._leave_out(recipient)
            else:
                bodies.append({"campaign_id": recipient.campaign_id, "recipient_id": recipient.recipient_id})
        queued = self.send_queue.send_all(bodies)
        next_cursor = json.dumps(last_key) if last_key else None
        moved = store.save_dispatch_cursor(
            campaign.campaign_id,
            run,
            old=request.cursor,
            new=next_cursor,
            dispatched=queued,
            states=(state.value,),
            also=[] if cancelling else store.due(utcnow() + WATCHDOG),
        )
        if not moved:
            return DispatchPage(queued, None, stopped="another dispatch has moved on")
        if next_cursor is None and not cancelling:
            complete_if_done(store, store.campaign(campaign.campaign_id), settle_queue=self.dispatch_queue)
        rate = min(float(campaign.rate_per_second), self.ceiling_per_second)
        return DispatchPage(queued, next_cursor, rate_per_second=0.0 if cancelling else rate)

    def _leave_out(self, recipient: RecipientRecord) -> None:
        # Without a code it was never prepared; that cannot happen while sending, but must not block completion.
        reason = recipient.exclusion or "not_prepared"
        if not recipient.exclusion:
            logger.warning("recipient without a code in a sending campaign", extra={"campaign_id": recipient.campaign_id})
        self.store.transition(recipient, left_out_status(reason), failure_reason=reason)
