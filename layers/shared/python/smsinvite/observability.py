"""The one observability module: Logger, Tracer and Metrics, and the decorator stack every handler uses.

Events, responses and the errors of other systems carry phone numbers, message bodies and codes, so:
- events are never logged whole and the tracer never captures responses;
- numbers are logged through `mask_phone`;
- an exception's text is told through `describe_error`: the Logger formats every traceback that way, and
  `instrumented` lets no exception leave a handler with more (Lambda logs `str()` of what a handler raised
  as its errorMessage, and Tracer records it in X-Ray).
"""

from __future__ import annotations

import functools
import os
import re
import traceback
import warnings
from collections.abc import Callable

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.utilities.batch.exceptions import BaseBatchProcessingError
from pydantic import ValidationError

SERVICE = "smsinvite"
NAMESPACE = "SmsInvite"

# A command or a webhook that counted nothing is normal, not worth a warning on every call.
warnings.filterwarnings("ignore", message="No application metrics to publish", category=UserWarning)

__all__ = [
    "logger", "tracer", "metrics", "MetricUnit", "instrumented", "mask_phone", "scrub", "describe_error",
    "told_traceback", "ScrubbedError", "publish_funnel",
]

# ------------------------------------------------------------------------------------- private text
_QUERY = re.compile(r"(?<=[\w/.%-])\?[^\s'\"<>()]*=[^\s'\"<>()]*")  # a URL's or a path's query string
_QUOTED = re.compile(r"'([^'\n]{4,})'|\"([^\"\n]{4,})\"")
_DATA_LIKE = re.compile(r"\d|^[A-Z0-9_-]+$")  # a quoted value holding a digit, or in capitals like a code
_KEY_LIKE = re.compile(r"\b(?=[A-Za-z0-9]*\d)(?=[A-Za-z0-9]*[A-Za-z])[A-Za-z0-9]{20,}\b")
_DIGIT_RUN = re.compile(r"\+?\d[\d \t\u00a0.()/-]*\d")
PHONE_DIGITS = 7  # a run of this many digits may be a phone number, in whatever format it is written


def mask_phone(phone: str | None) -> str:
    """+4915112345678 -> +49*******678: enough to tell numbers apart in a log, not enough to text one."""
    if not phone:
        return ""
    text = str(phone)
    if len(text) <= 6:
        return "*" * len(text)
    return text[:3] + "*" * (len(text) - 6) + text[-3:]


def _mask(value: str) -> str:
    return value[:2] + "*" * (len(value) - 4) + value[-2:] if len(value) >= 10 else "*" * len(value)


def _mask_digits(run: str) -> str:
    digits = sum(ch.isdigit() for ch in run)
    if digits < PHONE_DIGITS:
        return run
    return mask_phone(run) if digits >= 10 else re.sub(r"\d", "*", run[:-2]) + run[-2:]


def _mask_quoted(found: re.Match) -> str:
    quote = found.group()[0]
    value = found.group(1) or found.group(2)
    return f"{quote}{_mask(value)}{quote}" if _DATA_LIKE.search(value) else found.group()


def scrub(text: str) -> str:
    """Text from elsewhere (an error message, a URL) with what may be private masked.

    Query strings are removed (Twilio's list URLs carry numbers in theirs); quoted values that hold a digit
    or are in capitals (how codes look, and how Python quotes a value it complains about), 20 or more letters
    and digits together (tokens and keys), and every run of 7 or more digits, with or without spaces, dots,
    dashes, slashes or brackets between them (a phone number in any format), are masked.
    """
    text = _QUERY.sub("?[query removed]", text)
    text = _QUOTED.sub(_mask_quoted, text)
    text = _KEY_LIKE.sub(lambda found: _mask(found.group()), text)
    return _DIGIT_RUN.sub(lambda found: _mask_digits(found.group()), text)


def describe_error(exc: BaseException) -> str:
    """`Type: what went wrong`, with nothing private: for a log, an errorMessage or X-Ray.

    - pydantic's ValidationError: where and what kind each error is, never the input it echoes;
    - an AWS SDK error (botocore's ClientError, or a PynamoDB error caused by one): its error code and the
      operation, never its message, which may echo an item's values;
    - Powertools' BatchProcessingError: its message and each failed record's exception, told this way
      (its `str()` holds every failed record's whole traceback);
    - anything else: its text, through `scrub`.
    """
    name = type(exc).__name__
    if isinstance(exc, ValidationError):
        errors = exc.errors(include_input=False)
        problems = ", ".join(f"{'.'.join(map(str, e['loc'])) or '(root)'} ({e['type']})" for e in errors[:10])
        plural = "s" if len(errors) != 1 else ""
        return scrub(f"{name}: {len(errors)} validation error{plural} for {exc.title}: {problems}")
    if isinstance(exc, BaseBatchProcessingError):
        failures = "; ".join(describe_error(child) for _, child, _ in exc.child_exceptions if child is not None)
        return f"{name}: {scrub(exc.msg)} [{failures}]"
    aws = next((e for e in (exc, getattr(exc, "cause", None)) if _is_aws_error(e)), None)
    if aws is not None:
        status = aws.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = scrub(str(aws.response["Error"].get("Code", "Unknown")))
        return f"{name}: {code} when calling {aws.operation_name}" + (f" (HTTP {status})" if status else "")
    text = scrub(str(exc))
    return f"{name}: {text}" if text else name


def _is_aws_error(exc: object) -> bool:
    response = getattr(exc, "response", None)
    return isinstance(response, dict) and isinstance(response.get("Error"), dict) and hasattr(exc, "operation_name")


def told_traceback(exc: BaseException) -> str:
    """A traceback as Python prints one, chained exceptions included, with each exception `describe_error`d."""
    blocks, seen, current = [], set(), exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        frames = traceback.format_list(traceback.extract_tb(current.__traceback__))
        head = "Traceback (most recent call last):\n" + "".join(frames) if frames else ""
        blocks.append(head + describe_error(current))
        if current.__cause__ is not None:
            blocks.append("The above exception was the direct cause of the following exception:")
            current = current.__cause__
        elif current.__context__ is not None and not current.__suppress_context__:
            blocks.append("During handling of the above exception, another exception occurred:")
            current = current.__context__
        else:
            current = None
    return "\n\n".join(reversed(blocks))


class _TellingFormatter(LambdaPowertoolsFormatter):
    """Powertools' JSON, with every logged exception told by `told_traceback` (not by `str()`)."""

    def formatException(self, ei) -> str:  # noqa: N802 - logging.Formatter's name
        return told_traceback(ei[1]) if ei and ei[1] is not None else super().formatException(ei)


# `serialize_stacktrace` would add the exception object itself, as `str()`.
logger = Logger(service=SERVICE, logger_formatter=_TellingFormatter(serialize_stacktrace=False))
tracer = Tracer(service=SERVICE)
metrics = Metrics(service=SERVICE, namespace=NAMESPACE)


# ---------------------------------------------------------------------------------------- handlers
class ScrubbedError(Exception):
    """Left a handler in place of an exception whose text could hold personal data.

    Its message is `describe_error` of that exception, which starts with its type's name; its traceback is
    that exception's frames; nothing is chained to it.
    """


def instrumented(handler: Callable) -> Callable:
    """Logger context, tracing without captured responses, and metrics flushed at the end - in that order.

    Innermost, the guard: what the handler raises leaves with nothing private in its text or its chain, so
    neither Tracer, nor Lambda's errorMessage, nor an OnFailure destination gets more than `describe_error`.
    """

    @logger.inject_lambda_context(log_event=False, clear_state=True)
    @tracer.capture_lambda_handler(capture_response=False)
    @metrics.log_metrics(capture_cold_start_metric=True)
    @functools.wraps(handler)
    def wrapper(event, context):
        try:
            return handler(event, context)
        except Exception as exc:  # noqa: BLE001 - each is raised again, told safely
            told, text = describe_error(exc), str(exc)
            exc.__cause__ = exc.__context__ = None
            if told == (f"{type(exc).__name__}: {text}" if text else type(exc).__name__):
                raise  # its own text is safe: it leaves as it is, without the chain
            failure = ScrubbedError(told).with_traceback(exc.__traceback__)
        raise failure  # outside the except: Python chains nothing to it

    return wrapper


def publish_funnel(campaign_id: str, funnel: dict[str, int]) -> None:
    """Each stage of a campaign's funnel as a CloudWatch metric (EMF), with the campaign as dimension."""
    if os.environ.get("POWERTOOLS_METRICS_DISABLED", "").lower() == "true":  # single_metric ignores it
        return
    for stage, count in funnel.items():
        with single_metric(name=f"Funnel_{stage}", unit=MetricUnit.Count, value=count, namespace=NAMESPACE) as metric:
            metric.add_dimension(name="campaign_id", value=campaign_id)
