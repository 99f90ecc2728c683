"""Moving a campaign through its states: approve, pause, resume, cancel, start a run, complete a run.

Every move is one conditional write on the state it was decided in. Queue messages follow the
write; if one is lost, the scheduler's watchdog (the campaign's `due_at`) sends it again, and a
dispatch request delivered twice is harmless (the dispatch cursor admits one).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from smsinvite.campaigns import CampaignState, InvalidTransition, Recurrence, require
from smsinvite.errors import Conflict
from smsinvite.queues import Queue
from smsinvite.status import Status
from smsinvite.store import Store, utcnow
from smsinvite.tables import CampaignRecord

S = CampaignState
# How long a sending campaign may go unattended before the scheduler checks on it.
WATCHDOG = timedelta(minutes=5)


class StalePreparation(Conflict):
    code = "stale_preparation"


class ImportRunning(Conflict):
    code = "import_running"


# Recipients of a run that still wait to be sent or to have their send settled.
WAITING_TO_SEND = (Status.IMPORTED, Status.CLAIMED, Status.UNKNOWN)


def complete_if_done(store: Store, campaign: CampaignRecord, now: datetime | None = None) -> CampaignRecord | None:
    """End the campaign's run once its dispatch is done and nobody in it waits to be sent.

    One conditional write, so the last sender and the scheduler can both try: one wins. A recurring
    campaign then waits for its next run; any other is completed.

    The counts are read first, shard by shard. Once a run's dispatch is done nothing enters the
    waiting states (imports wait for another state; a claim released or an unknown reset moves within
    them), so shards read at zero one after another mean the run was done when the last was read.
    """
    now = now or utcnow()
    if int(campaign.dispatch_done or -1) != int(campaign.run) or campaign.state != S.SENDING.value:
        return None
    counts = store.counts(campaign.campaign_id)
    if any(counts[status] for status in WAITING_TO_SEND):
        return None
    campaigns = store.t.campaigns
    run = int(campaign.run)
    recurrence = Recurrence.from_json(campaign.recurrence)
    started = campaign.started_at or now
    next_at = recurrence.next_run_at(started, int(campaign.runs_completed) + 1, now) if recurrence else None
    actions = [campaigns.runs_completed.add(1)]
    if next_at is not None:
        actions += [campaigns.state.set(S.WAITING.value), *store.due(next_at)]
    else:
        actions += [campaigns.state.set(S.COMPLETED.value), campaigns.finished_at.set(now), *store.due(None)]
    condition = (
        (campaigns.state == S.SENDING.value)
        & (campaigns.run == run)
        & (campaigns.dispatch_done == run)
    )
    return store.change_campaign(campaign.campaign_id, actions, condition)


class CampaignLifecycle:
    def __init__(self, store: Store, dispatch_queue: Queue, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.dispatch_queue = dispatch_queue
        self.clock = clock

    # ------------------------------------------------------------------ operator actions
    def approve(self, campaign_id: str) -> CampaignRecord:
        """Review-and-send: start (or schedule) the campaign exactly as it was prepared."""
        store, campaigns, now = self.store, self.store.t.campaigns, self.clock()
        campaign = store.campaign(campaign_id)
        require("approve", campaign_id, campaign.state)
        if campaign.prepared_revision is None or int(campaign.prepared_revision) != int(campaign.revision):
            raise StalePreparation(
                f"the audience or the message of campaign {campaign_id} changed after prepare; run prepare again"
            )
        current = (
            (campaigns.state == S.PREPARED.value)
            & (campaigns.revision == int(campaign.revision))
            & store.no_import_running(now)
        )
        if campaign.start_at is not None and campaign.start_at > now:
            actions = [campaigns.state.set(S.SCHEDULED.value), campaigns.approved_at.set(now), *store.due(campaign.start_at)]
            changed = store.change_campaign(campaign_id, actions, current)
        else:
            changed = self._start_run(campaign_id, current, [campaigns.approved_at.set(now)])
        if changed is None:
            self._explain_refusal(campaign_id, "approve", now)
        return changed

    def pause(self, campaign_id: str) -> CampaignRecord:
        """Stop dispatch and hold what is queued; the sender drops held messages, resume queues them again."""
        campaigns = self.store.t.campaigns
        return self._move(campaign_id, "pause", [campaigns.state.set(S.PAUSED.value), *self.store.due(None)])

    def resume(self, campaign_id: str) -> CampaignRecord:
        campaigns = self.store.t.campaigns
        actions = [
            campaigns.state.set(S.SENDING.value),
            campaigns.dispatch_cursor.remove(),
            campaigns.dispatch_done.remove(),
            *self.store.due(self.clock() + WATCHDOG),
        ]
        resumed = self._move(campaign_id, "resume", actions)
        # From the top: recipients queued before the pause were dropped unsent and are still `imported`.
        self._request_dispatch(resumed)
        return resumed

    def cancel(self, campaign_id: str) -> CampaignRecord:
        """Whatever is left is never sent: the dispatcher marks every recipient not yet sent `cancelled`."""
        campaigns = self.store.t.campaigns
        actions = [
            campaigns.state.set(S.CANCELLED.value),
            campaigns.finished_at.set(self.clock()),
            campaigns.dispatch_cursor.remove(),
            campaigns.preparation.remove(),
            *self.store.due(None),
        ]
        cancelled = self._move(campaign_id, "cancel", actions)
        self._request_dispatch(cancelled)
        return cancelled

    # ------------------------------------------------------------------ runs
    def start_scheduled(self, campaign: CampaignRecord) -> CampaignRecord | None:
        campaigns = self.store.t.campaigns
        return self._start_run(campaign.campaign_id, campaigns.state == S.SCHEDULED.value, [])

    def start_prepared_run(self, campaign: CampaignRecord) -> CampaignRecord | None:
        """A recurring run starts by itself once prepared: it was approved once, for every run."""
        campaigns = self.store.t.campaigns
        condition = (
            (campaigns.state == S.PREPARED.value)
            & (campaigns.prepared_revision == int(campaign.revision))
            & (campaigns.revision == int(campaign.revision))
            & self.store.no_import_running(self.clock())
        )
        return self._start_run(campaign.campaign_id, condition, [])

    def _start_run(self, campaign_id: str, condition, extra: list) -> CampaignRecord | None:
        campaigns, now = self.store.t.campaigns, self.clock()
        actions = [
            campaigns.state.set(S.SENDING.value),
            campaigns.run.add(1),
            campaigns.started_at.set(now),
            campaigns.dispatch_cursor.remove(),
            campaigns.dispatch_done.remove(),
            *self.store.due(now + WATCHDOG),
            *extra,
        ]
        started = self.store.change_campaign(campaign_id, actions, condition)
        if started is not None:
            self._request_dispatch(started)
        return started

    def watch(self, campaign: CampaignRecord) -> None:
        """The watchdog: re-send a dispatch that stalled, complete a run whose last message was missed, and
        queue again, from the top, a run that is dispatched but not done: a send message lost anywhere
        (a crashed consumer, a bug) is then sent after all, and the sender's claim admits one send."""
        if CampaignState(campaign.state) is not S.SENDING:
            return
        if campaign.dispatch_done is None or int(campaign.dispatch_done) != int(campaign.run):
            self._request_dispatch(campaign, cursor=campaign.dispatch_cursor)
        elif complete_if_done(self.store, campaign, self.clock()) is not None:
            return
        else:
            self._request_dispatch(campaign)
        self.store.change_campaign(
            campaign.campaign_id,
            self.store.due(self.clock() + WATCHDOG),
            self.store.t.campaigns.state == S.SENDING.value,
        )

    # ------------------------------------------------------------------ helpers
    def _move(self, campaign_id: str, action: str, actions: list) -> CampaignRecord:
        campaign = self.store.campaign(campaign_id)
        require(action, campaign_id, campaign.state)
        campaigns = self.store.t.campaigns
        changed = self.store.change_campaign(campaign_id, actions, campaigns.state == campaign.state)
        if changed is None:  # it moved meanwhile: say what it is now
            raise InvalidTransition(campaign_id, action, self.store.campaign(campaign_id).state)
        return changed

    def _explain_refusal(self, campaign_id: str, action: str, now: datetime) -> None:
        campaign = self.store.campaign(campaign_id)
        require(action, campaign_id, campaign.state)
        if campaign.prepared_revision is None or int(campaign.prepared_revision) != int(campaign.revision):
            raise StalePreparation(f"campaign {campaign_id} changed while it was approved; run prepare again")
        raise ImportRunning(f"an import into campaign {campaign_id} is running; when it has finished, prepare again")

    def _request_dispatch(self, campaign: CampaignRecord, cursor: str | None = None) -> None:
        self.dispatch_queue.send({"campaign_id": campaign.campaign_id, "run": int(campaign.run), "cursor": cursor})
