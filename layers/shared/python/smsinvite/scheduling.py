"""The scheduler's campaign jobs: start what is due, run recurrences, continue prepares, watch sends.

Campaigns that need the scheduler carry `due_at` in a sparse index, so a tick reads only those.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime

from smsinvite.campaigns import CampaignState
from smsinvite.errors import SmsInviteError
from smsinvite.lifecycle import CampaignLifecycle
from smsinvite.observability import logger
from smsinvite.preparation import Preparer
from smsinvite.queues import Queue
from smsinvite.store import Store
from smsinvite.sweeps import sweep
from smsinvite.tables import CampaignRecord

S = CampaignState


def release_deferred(store: Store, send_queue: Queue, now: datetime, *, time_left: Callable[[], float], margin: float) -> Counter:
    """Queue again the recipients parked outside their sending window whose window has opened.

    Queued first, then unparked: a crash in between queues one twice (the claim admits one send),
    never none.
    """

    def release(parked) -> str:
        send_queue.send({"campaign_id": parked.campaign_id, "recipient_id": parked.recipient_id})
        return "released" if store.release(parked) else "changed_meanwhile"

    return sweep("release_deferred", store.deferred_due(now), release, time_left=time_left, margin=margin)


class DueCampaigns:
    def __init__(self, store: Store, lifecycle: CampaignLifecycle, preparer: Preparer) -> None:
        self.store = store
        self.lifecycle = lifecycle
        self.preparer = preparer

    def run(self, now: datetime, *, time_left: Callable[[], float], margin: float) -> Counter:
        def act(campaign_id: str) -> str:
            try:
                return self._act(self.store.campaign(campaign_id), time_left, margin)
            except SmsInviteError as error:
                # One campaign's trouble (a dry tokens pool, say) is its own; the others go on.
                logger.warning("scheduled campaign job refused", extra={"campaign_id": campaign_id, "code": error.code})
                return error.code

        return sweep("due_campaigns", list(self.store.due_campaigns(now)), act, time_left=time_left, margin=margin)

    def _act(self, campaign: CampaignRecord, time_left, margin) -> str:
        state = CampaignState(campaign.state)
        recurring_run = int(campaign.run) > 0  # only a recurrence prepares again after it has sent
        if state is S.SCHEDULED:
            return "started" if self.lifecycle.start_scheduled(campaign) else "changed_meanwhile"
        if state in (S.WAITING, S.PREPARING) or (state is S.PREPARED and recurring_run):
            stale = campaign.prepared_revision is None or int(campaign.prepared_revision) != int(campaign.revision)
            if state is not S.PREPARED or stale:
                outcome = self.preparer.prepare(
                    campaign.campaign_id, time_left=time_left, margin=margin, automatic=state is S.WAITING
                )
                if outcome.state != S.PREPARED.value:
                    return "preparing"
                if not recurring_run:
                    return "prepared"  # an operator approves it
            started = self.lifecycle.start_prepared_run(self.store.campaign(campaign.campaign_id))
            return "run_started" if started else "prepare_again"
        if state is S.SENDING:
            self.lifecycle.watch(campaign)
            return "watched"
        self.store.change_campaign(campaign.campaign_id, self.store.due(None), self.store.t.campaigns.state == state.value)
        return "nothing_due"
