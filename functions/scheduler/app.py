"""Every minute -> reconcile sends whose outcome is unresolved against Twilio's message list."""

from datetime import timedelta

from smsinvite.observability import instrumented, logger
from smsinvite.queues import Queue
from smsinvite.reconcile import Reconciler
from smsinvite.settings import Settings
from smsinvite.store import Store, utcnow
from smsinvite.twilio_gateway import TwilioGateway


@instrumented
def lambda_handler(event: dict, context) -> dict:
    settings = Settings.from_env()
    reconciler = Reconciler(Store(settings), TwilioGateway.from_settings(settings), Queue(settings.send_queue_url))
    outcomes = reconciler.run(now=utcnow(), grace=timedelta(seconds=settings.reconcile_grace_seconds))
    logger.info("reconciliation run", extra={"outcomes": dict(outcomes)})
    return {"reconciled": dict(outcomes)}
