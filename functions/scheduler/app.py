"""Every minute -> reconcile unresolved sends, release recipients whose sending window opened, act on due
campaigns, lapse subscriptions never confirmed, and send the reminder rounds that are due."""

from datetime import timedelta

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
from smsinvite.twilio_gateway import TwilioGateway

# Room to save a prepare's page and return before the invocation is cut off.
MARGIN_SECONDS = 20.0


@instrumented
def lambda_handler(event: dict, context) -> dict:
    settings = Settings.from_env()
    store = Store(settings)
    reconciler = Reconciler(store, TwilioGateway.from_settings(settings), Queue(settings.send_queue_url))
    reconciled = reconciler.run(now=utcnow(), grace=timedelta(seconds=settings.reconcile_grace_seconds))
    due = DueCampaigns(
        store,
        CampaignLifecycle(store, Queue(settings.dispatch_queue_url)),
        Preparer(store, settings, ImportRunner.continuing_on_queue(store, settings)),
    )
    time_left = lambda: context.get_remaining_time_in_millis() / 1000  # noqa: E731
    released = release_deferred(store, Queue(settings.send_queue_url), utcnow(), time_left=time_left, margin=MARGIN_SECONDS)
    campaigns = due.run(utcnow(), time_left=time_left, margin=MARGIN_SECONDS)
    lapsed = SubscriptionLists(store, settings, Queue(settings.send_queue_url)).lapse_due(utcnow())
    reminded = Reminders(store, Queue(settings.send_queue_url)).run_due(utcnow(), time_left=time_left, margin=MARGIN_SECONDS)
    tick = {"reconciled": dict(reconciled), "released": released, "campaigns": dict(campaigns), "lapsed": lapsed,
            "reminders_queued": reminded}
    logger.info("scheduler tick", extra=tick)
    return tick
