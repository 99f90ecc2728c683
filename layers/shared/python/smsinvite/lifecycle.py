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
from smsinvite.status import UNSETTLED, WAITING_TO_SEND, Status
from smsinvite.store import Store, utcnow
from smsinvite.tables import CampaignRecord

S = CampaignState
# How long a sending campaign may go unattended before the scheduler checks on it.
WATCHDOG = timedelta(minutes=5)


class StalePreparation(Conflict):
    code = "stale_preparation"


class ImportRunning(Conflict):
    code = "import_running"


# How soon the scheduler looks again at a run whose last messages are on their way.
DRAIN_CHECK = timedelta(minutes=1)


def run_progress(counts: dict[Status, int]) -> str:
    """Where a dispatched run stands: `waiting_to_send`, `in_flight` (Twilio has the rest, final statuses to
    come) or `settled` (every recipient final, or visibly unresolved or awaiting its final status)."""
    if any(counts[status] for status in WAITING_TO_SEND):
        return "waiting_to_send"
    if any(counts[status] for status in UNSETTLED):
        return "in_flight"
    return "settled"


def complete_if_done(
    store: Store, campaign: CampaignRecord, now: datetime | None = None, *, counts: dict[Status, int] | None = None,
    settle_queue: Queue | None = None,
) -> CampaignRecord | None:
    """End the campaign's run once its dispatch is done and every recipient in it is settled.

    One conditional write, so the last sender, the scheduler and the reconciler can all try: one wins.
    A recurring campaign then waits for its next run; any other is completed. A run whose last
    messages are still on their way is looked at again by the scheduler within DRAIN_CHECK and, when
    `settle_queue` (the dispatch queue) is given, by a chain of settle checks (`settle_check`) that
    completes it within seconds of its last final status.

    The counts are read first, shard by shard. Once a run's dispatch is done nothing enters the
    unsettled states from a settled one except by an operator's resend, so shards read at zero one
    after another mean the run was settled when the last was read.
    """
    now = now or utcnow()
    if int(campaign.dispatch_done or -1) != int(campaign.run) or campaign.state != S.SENDING.value:
        return None
    progress = run_progress(counts if counts is not None else store.counts(campaign.campaign_id))
    if progress == "in_flight" and _look_again_within(store, campaign, now + DRAIN_CHECK) and settle_queue:
        # The first to see the run on its way (its next look brought forward) starts the one chain.
        _queue_settle_check(settle_queue, campaign.campaign_id, int(campaign.run), 1)
    if progress != "settled":
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


def _look_again_within(store: Store, campaign: CampaignRecord, at: datetime) -> bool:
    """Bring the scheduler's next look at a sending campaign forward to `at` (never push it back); True
    when this call brought it forward."""
    campaigns = store.t.campaigns
    if campaign.due_at is not None and campaign.due_at <= at.isoformat():
        return False
    sooner = campaigns.due_at.does_not_exist() | (campaigns.due_at > at.isoformat())
    return store.change_campaign(campaign.campaign_id, store.due(at), (campaigns.state == S.SENDING.value) & sooner) is not None


# A run's last final statuses come within seconds of its last send, or much later (a lost callback, a
# carrier that never confirms). Checks every few seconds for a minute; then the scheduler's watchdog
# (every DRAIN_CHECK) carries on alone.
SETTLE_CHECK_SECONDS = 2
SETTLE_MAX_CHECKS = 30


def _queue_settle_check(dispatch_queue: Queue, campaign_id: str, run: int, check: int) -> None:
    dispatch_queue.send({"campaign_id": campaign_id, "run": run, "settle": check}, delay_seconds=SETTLE_CHECK_SECONDS)


def settle_check(store: Store, dispatch_queue: Queue, campaign_id: str, run: int, check: int) -> str:
    """One check of a run whose last messages were on their way: complete it, or check again later."""
    campaign = store.campaign(campaign_id)
    if campaign.state != S.SENDING.value or int(campaign.run) != run:
        return "over"
    counts = store.counts(campaign_id)
    if complete_if_done(store, campaign, counts=counts) is not None:
        return "completed"
    progress = run_progress(counts)
    if progress != "in_flight":
        return progress  # waiting to send again (an operator's resend): the watchdog's job
    if check < SETTLE_MAX_CHECKS:
        _queue_settle_check(dispatch_queue, campaign_id, run, check + 1)
    return "in_flight"


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

    def resend_unresolved(self, campaign_id: str, send_queue: Queue) -> dict:
        """Send again, on the operator's word, the recipients whose earlier send ended `unresolved` (Twilio
        may or may not have delivered it). A completed campaign reopens for them; a paused one sends them
        on resume. Each is claimed afresh, so this command, however often repeated, sends each once more."""
        store, campaigns = self.store, self.store.t.campaigns
        campaign = store.campaign(campaign_id)
        state = require("resend_unresolved", campaign_id, campaign.state)
        if store.counts(campaign_id)[Status.UNRESOLVED] == 0:
            return {"campaign_id": campaign_id, "state": campaign.state, "resent": 0}
        if state is S.COMPLETED:
            reopen = [
                campaigns.state.set(S.SENDING.value),
                campaigns.finished_at.remove(),
                campaigns.runs_completed.add(-1),
                *store.due(self.clock() + WATCHDOG),
            ]
            condition = (campaigns.state == S.COMPLETED.value) & (campaigns.run == int(campaign.run))
            if store.change_campaign(campaign_id, reopen, condition) is None:
                raise InvalidTransition(campaign_id, "resend_unresolved", store.campaign(campaign_id).state)
        resent = 0
        for recipient in store.recipients_in(campaign_id, Status.UNRESOLVED):
            reset = store.transition(
                recipient, Status.IMPORTED, backward_from=(Status.UNRESOLVED,), attempt_id=None, claimed_at=None,
                valid_until=None, list_empty_at=None, twilio_status=None, failure_reason=None,
            )
            if reset is None:
                continue
            resent += 1
            if state is not S.PAUSED:  # resume dispatches the paused campaign's imported recipients
                send_queue.send({"campaign_id": campaign_id, "recipient_id": recipient.recipient_id})
        return {"campaign_id": campaign_id, "state": S.PAUSED.value if state is S.PAUSED else S.SENDING.value,
                "resent": resent}

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
        look_again = WATCHDOG
        if campaign.dispatch_done is None or int(campaign.dispatch_done) != int(campaign.run):
            self._request_dispatch(campaign, cursor=campaign.dispatch_cursor)
        else:
            counts = self.store.counts(campaign.campaign_id)
            done = complete_if_done(self.store, campaign, self.clock(), counts=counts, settle_queue=self.dispatch_queue)
            if done is not None:
                return
            if run_progress(counts) == "waiting_to_send":
                self._request_dispatch(campaign)
            else:  # everything is at Twilio: look again soon, for the last final statuses
                look_again = DRAIN_CHECK
        self.store.change_campaign(
            campaign.campaign_id,
            self.store.due(self.clock() + look_again),
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
