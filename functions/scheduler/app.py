"""Every minute -> settle open sends against Twilio, release recipients whose sending window opened, act on
due campaigns, lapse subscriptions never confirmed, and send the reminder rounds that are due.

Each sweep is guarded: one that fails outright leaves the others to run, and within a sweep one bad item
fails alone (smsinvite.sweeps). The tick's result says what each sweep did, failures included.
"""

from smsinvite.importing import ImportRunner
from smsinvite.lifecycle import CampaignLifecycle
from smsinvite.observability import instrumented, logger
from smsinvite.preparation import Preparer
from smsinvite.queues import Queue
from smsinvite.reconcile import Reconciler
from smsinvite.reminders import Reminders
from smsinvite.scheduling import DueCampaigns, release_deferred
from smsinvite.settings import Settings
from smsinvite.store import Store, utcnow
from smsinvite.subscriptions import SubscriptionLists
from smsinvite.sweeps import guarded
from smsinvite.twilio_gateway import TwilioGateway

# Room to save a prepare's page and return before the invocation is cut off.
MARGIN_SECONDS = 20.0
# Reconciling calls Twilio: it may use this share of the tick, so the other sweeps always get their turn.
RECONCILE_SHARE = 0.4


@instrumented
def lambda_handler(event: dict, context) -> dict:
    settings = Settings.from_env()
    store = Store(settings)
    send_queue = Queue(settings.send_queue_url)
    time_left = lambda: context.get_remaining_time_in_millis() / 1000  # noqa: E731
    reconcile_until = time_left() * (1 - RECONCILE_SHARE)

    def reconcile() -> dict:
        reconciler = Reconciler(store, TwilioGateway.from_settings(settings), send_queue, settings)
        return dict(reconciler.run(time_left=time_left, margin=max(MARGIN_SECONDS, reconcile_until)))

    def campaigns() -> dict:
        due = DueCampaigns(
            store,
            CampaignLifecycle(store, Queue(settings.dispatch_queue_url)),
            Preparer(store, settings, ImportRunner.continuing_on_queue(store, settings)),
        )
        return dict(due.run(utcnow(), time_left=time_left, margin=MARGIN_SECONDS))

    tick = {
        "reconciled": guarded("reconcile", reconcile),
        "released": guarded("release_deferred", lambda: dict(
            release_deferred(store, send_queue, utcnow(), time_left=time_left, margin=MARGIN_SECONDS))),
        "campaigns": guarded("due_campaigns", campaigns),
        "lapsed": guarded("lapse", lambda: dict(
            SubscriptionLists(store, settings, send_queue).lapse_due(utcnow(), time_left=time_left, margin=MARGIN_SECONDS))),
        "reminders": guarded("reminders", lambda: dict(
            Reminders(store, send_queue).run_due(utcnow(), time_left=time_left, margin=MARGIN_SECONDS))),
    }
    logger.info("scheduler tick", extra=tick)
    return tick
