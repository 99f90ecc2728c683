"""The one observability module: Logger, Tracer and Metrics, and the decorator stack every handler uses.

Events and responses carry phone numbers and message bodies, so events are never logged whole and
the tracer never captures responses. Log phone numbers through `mask_phone`.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric

SERVICE = "smsinvite"
NAMESPACE = "SmsInvite"

logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE)
metrics = Metrics(service=SERVICE, namespace=NAMESPACE)

# A command or a webhook that counted nothing is normal, not worth a warning on every call.
warnings.filterwarnings("ignore", message="No application metrics to publish", category=UserWarning)

__all__ = ["logger", "tracer", "metrics", "MetricUnit", "instrumented", "mask_phone", "publish_funnel"]


def instrumented(handler: Callable) -> Callable:
    """Logger context, tracing without captured responses, and metrics flushed at the end - in that order."""

    @logger.inject_lambda_context(log_event=False, clear_state=True)
    @tracer.capture_lambda_handler(capture_response=False)
    @metrics.log_metrics(capture_cold_start_metric=True)
    @functools.wraps(handler)
    def wrapper(event, context):
        return handler(event, context)

    return wrapper


def mask_phone(phone: str | None) -> str:
    """+4915112345678 -> +49*******678: enough to tell numbers apart in a log, not enough to text one."""
    if not phone:
        return ""
    text = str(phone)
    if len(text) <= 6:
        return "*" * len(text)
    return text[:3] + "*" * (len(text) - 6) + text[-3:]


def publish_funnel(campaign_id: str, funnel: dict[str, int]) -> None:
    """Each stage of a campaign's funnel as a CloudWatch metric (EMF), with the campaign as dimension."""
    if os.environ.get("POWERTOOLS_METRICS_DISABLED", "").lower() == "true":  # single_metric ignores it
        return
    for stage, count in funnel.items():
        with single_metric(name=f"Funnel_{stage}", unit=MetricUnit.Count, value=count, namespace=NAMESPACE) as metric:
            metric.add_dimension(name="campaign_id", value=campaign_id)
