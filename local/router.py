"""Deliver template.yaml's events to the function handlers, in-process, with the event shapes AWS uses.

The router is the Lambda service of the embedded local stack. It reads every function's `Events` from
the template (through `LocalStackTemplate`) and drives the handlers the way AWS would:

- **S3** (`S3Notifier`): the buckets' notification configuration sends to an internal SQS queue in moto,
  with the same event names and prefix/suffix filters as the template. The notifier polls that queue,
  skips `s3:TestEvent`, rebuilds each record in AWS's shape (moto's records lack several fields and encode
  `/` in keys) and invokes the function asynchronously: a failed event is retried `MaximumRetryAttempts`
  times (EventInvokeConfig, default 2), then sent to the `OnFailure` SQS destination.
- **SQS** (`SqsPoller`): an event source mapping. Up to `ScalingConfig.MaximumConcurrency` pollers, batches
  of `BatchSize` within `MaximumBatchingWindowInSeconds`, `ReportBatchItemFailures` honoured. Failed
  records come back after `sqs_retry_delay` seconds (instead of the visibility timeout; whole seconds, as
  ChangeMessageVisibility counts them); the queue's own RedrivePolicy moves them to the DLQ after
  `maxReceiveCount` receives.
- **HTTP API** (`HttpApiServer`): payload format 2.0 on 127.0.0.1, every route of every function.
- **Schedule** (`ScheduleTimer`): EventBridge scheduled events from `rate()`/`cron()` expressions.
- **Logs** (`FunctionLogs`, `router.logs`): what the functions' log streams would hold, including the
  runtime's `[ERROR]` record (`lambda_error`) of an exception a handler raised; tests scan it.

Every handler file is imported once, lazily, as its own module (`smsinvite_fn_<LogicalId>`), and gets a
Lambda-like context. `start()` applies the functions' environment, on top of what the Lambda runtime would
provide (region, dummy credentials, `AWS_ENDPOINT_URL` = the local AWS), and `stop()` restores `os.environ`.

Local limitations, by design:
- All functions run in one process, so their environment variables are merged into one `os.environ`.
  Two functions that set the same variable to different values are refused at `start()`.
- A function's Timeout is reported by the context (`get_remaining_time_in_millis`) but not enforced:
  a Python thread cannot be killed.
- One HTTP server serves every HttpApi of the template; only payload format 2.0 is supported.
- `cron()` schedules fire at a fixed interval that approximates the expression.

The router never logs events or request bodies: they hold phone numbers.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import ipaddress
import json
import logging
import math
import os
import re
import secrets
import sys
import threading
import time
import traceback
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType
from typing import Any, Callable
from urllib.parse import parse_qsl, quote_plus, unquote, unquote_plus

import boto3
from botocore.config import Config

from local.template import LOCAL_ACCOUNT_ID, LOCAL_REGION, EventSpec, FunctionSpec, LocalStackTemplate

# Not under the "smsinvite" logger: Powertools formats that one with the current invocation's context.
LOG = logging.getLogger(__name__)

DEFAULT_SQS_CONCURRENCY = 2
DEFAULT_ASYNC_RETRIES = 2  # Lambda's default MaximumRetryAttempts for asynchronous invocations
SQS_WAIT_SECONDS = 1
STOP_JOIN_SECONDS = 2.5
# Content types an HTTP API delivers as text; every other body (form posts included) arrives base64.
TEXT_MEDIA_TYPES = frozenset({"application/json", "application/xml", "application/javascript"})


class RouterConfigError(Exception):
    """The template (or the local environment) asks for something the router cannot deliver."""


# ---------------------------------------------------------------------------------------------- records
@dataclass(frozen=True)
class Invocation:
    """One call of a handler, as the demo and the tests read it. No event content is kept."""

    function: str  # logical id
    event_type: str  # "S3", "SQS", "HttpApi", "Schedule" or "Direct"
    source: str  # the event's logical id, or "direct"
    request_id: str
    started_at: float  # epoch seconds
    duration: float  # seconds
    error: str | None = None  # "ErrorType: message" when the handler raised
    records: int = 1  # records in the event (SQS batches)

    @property
    def ok(self) -> bool:
        return self.error is None


class LambdaContext:
    """The context object Lambda's Python runtime passes to a handler."""

    function_version = "$LATEST"
    identity = None
    client_context = None

    def __init__(self, spec: FunctionSpec, timeout: float, log_group_name: str) -> None:
        self.function_name = spec.name
        self.invoked_function_arn = _function_arn(spec.name)
        self.memory_limit_in_mb = spec.memory_mb
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = log_group_name
        today = datetime.now(timezone.utc).strftime("%Y/%m/%d")
        self.log_stream_name = f"{today}/[$LATEST]{uuid.uuid4().hex}"
        self._deadline = time.monotonic() + timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def _function_arn(name: str) -> str:
    return f"arn:aws:lambda:{LOCAL_REGION}:{LOCAL_ACCOUNT_ID}:function:{name}"


# ------------------------------------------------------------------------------------------------ logs
def lambda_error(exc: BaseException, request_id: str = "") -> dict[str, Any]:
    """The error document Lambda's Python runtime makes of an exception that a handler raised.

    As awslambdaric's bootstrap builds it: `str()` of the exception, its type's name, and the stack trace
    as `traceback.format_list` of the raised exception's own frames (not the exceptions chained to it).
    Lambda logs it, returns it to a synchronous caller and hands it to an asynchronous OnFailure destination.
    """
    return {
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "requestId": request_id,
        "stackTrace": traceback.format_list(traceback.extract_tb(exc.__traceback__)),
    }


def lambda_error_log(error: dict[str, Any]) -> str:
    """The runtime's text log record of that document: `[ERROR] Type: message`, then the stack trace."""
    lines = [f"[ERROR] {error['errorType']}: {error['errorMessage']}", "Traceback (most recent call last):"]
    for frame in error["stackTrace"]:
        lines += frame.splitlines()
    return "\r".join(lines)


@dataclass(frozen=True)
class LogLine:
    """One record of a function's log stream."""

    seq: int  # position in the router's log, from 0
    function: str | None  # logical id; None when written by a thread the router did not start for an invocation
    request_id: str | None
    text: str


class FunctionLogs(logging.Handler):
    """What CloudWatch Logs would hold for the functions: every record their code writes, in order.

    Lambda's runtime gives the root logger a handler that writes to the function's log stream, at the root's
    default level (WARNING), and Powertools' Logger writes its JSON to the same stream. So, on the root logger:
    - a record of a Powertools Logger, at the level that logger lets through, as the JSON Powertools writes;
    - a record of any other logger from WARNING up, in the runtime's text format (with its traceback);
    - the runtime's own `[ERROR]` record when a handler raises (`Router._run` writes it).
    The local stack's own loggers (`local.*`: the router, the simulator, the services) are not the functions'.
    Holds the last `max_lines`; `since(mark)` says when some were dropped.
    """

    RUNTIME_LEVEL = logging.WARNING
    _LAMBDA_TEXT = logging.Formatter("[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s")

    def __init__(self, max_lines: int = 200_000) -> None:
        super().__init__()
        self._lines: deque[LogLine] = deque(maxlen=max_lines)
        self._next = 0
        self._invocation = threading.local()

    # -- what the router tells it
    def invocation(self, function: str, request_id: str) -> _InvocationScope:
        """The thread's records belong to this invocation while the scope is open."""
        return _InvocationScope(self._invocation, function, request_id)

    def write(self, function: str | None, request_id: str | None, text: str) -> None:
        with self.lock:
            self._lines.append(LogLine(self._next, function, request_id, text))
            self._next += 1

    # -- what a reader asks
    def mark(self) -> int:
        with self.lock:
            return self._next

    def since(self, mark: int) -> tuple[list[LogLine], bool]:
        """The lines written from `mark` on, and whether some of them were already dropped."""
        with self.lock:
            lines = [line for line in self._lines if line.seq >= mark]
            first = self._lines[0].seq if self._lines else self._next
        return lines, first > mark

    # -- logging.Handler
    def filter(self, record: logging.LogRecord) -> bool:
        """Every record is let in; `emit` decides. (Powertools' Logger adds a filter to the root's handlers
        that drops its own records, which its own handler writes: here is where that writing is kept.)"""
        return True

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "local" or record.name.startswith("local."):
            return
        formatter = _powertools_formatter(record.name)
        if formatter is None and record.levelno < self.RUNTIME_LEVEL:
            return
        function = getattr(self._invocation, "function", None)
        request_id = getattr(self._invocation, "request_id", None)
        try:
            if formatter is not None:
                text = formatter.format(record)
            else:
                record.aws_request_id = request_id or ""
                text = self._LAMBDA_TEXT.format(record)
        except Exception:  # noqa: BLE001 - logging never breaks the code that logs
            self.handleError(record)
            return
        self.write(function, request_id, text)


class _InvocationScope:
    def __init__(self, local: threading.local, function: str, request_id: str) -> None:
        self.local, self.function, self.request_id = local, function, request_id

    def __enter__(self) -> None:
        self.saved = (getattr(self.local, "function", None), getattr(self.local, "request_id", None))
        self.local.function, self.local.request_id = self.function, self.request_id

    def __exit__(self, *exc_info: Any) -> None:
        self.local.function, self.local.request_id = self.saved


def _powertools_formatter(name: str) -> logging.Formatter | None:
    """The formatter of the Powertools Logger that owns logger `name` (its own or a parent's), if any."""
    logger: logging.Logger | None = logging.getLogger(name)
    while logger is not None:
        handler = getattr(logger, "powertools_handler", None)
        if handler is not None:
            return handler.formatter
        logger = logger.parent if logger.propagate else None
    return None


def _queue_name(arn: str) -> str:
    return arn.rsplit(":", 1)[-1]


def _iso_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _stable_hex(seed: str, length: int) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()[:length].upper()


# ------------------------------------------------------------------------------------------------ S3
def encode_s3_event_key(key: str) -> str:
    """Encode an object key the way S3 event notifications do.

    Form (query-string) encoding, as the S3 docs say ("red flower.jpg" becomes "red+flower.jpg"), except that
    `/` is left as is, which is what S3 sends in practice: space is `+`, `+` is `%2B`, non-ASCII characters
    are percent-encoded UTF-8. `unquote_plus` reverses it.
    """
    return quote_plus(key, safe="/")


class S3Notifier:
    """S3 event notifications for every `Type: S3` event, delivered as asynchronous invocations."""

    def __init__(self, router: Router, subscriptions: list[tuple[FunctionSpec, EventSpec]]) -> None:
        self.router = router
        self.queue_name = router.s3_events_queue
        self.queue_url: str | None = None
        # configurationId (the event's logical id) -> the function and event it belongs to
        self.by_configuration: dict[str, tuple[FunctionSpec, EventSpec]] = {}
        self.by_bucket: dict[str, list[EventSpec]] = {}
        for spec, event in subscriptions:
            bucket = event.properties["Bucket"]
            if event.logical_id in self.by_configuration:
                raise RouterConfigError(
                    f"S3 event id {event.logical_id} is used twice; the local router needs unique ids"
                )
            self.by_configuration[event.logical_id] = (spec, event)
            self.by_bucket.setdefault(bucket, []).append(event)
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        sqs, s3 = self.router.sqs, self.router.s3
        longest = max(spec.timeout for spec, _ in self.by_configuration.values())
        self.queue_url = sqs.create_queue(QueueName=self.queue_name)["QueueUrl"]
        sqs.set_queue_attributes(
            QueueUrl=self.queue_url, Attributes={"VisibilityTimeout": str(min(43200, longest + 30))}
        )
        queue_arn = sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        for bucket, events in self.by_bucket.items():
            self._configure_bucket(s3, bucket, events, queue_arn)
        self.threads = []
        for index in range(self.router.s3_concurrency):
            thread = threading.Thread(target=self._run, name=f"router-s3-{index}", daemon=True)
            thread.start()
            self.threads.append(thread)

    @staticmethod
    def _configure_bucket(s3: Any, bucket: str, events: list[EventSpec], queue_arn: str) -> None:
        try:
            current = s3.get_bucket_notification_configuration(Bucket=bucket)
        except s3.exceptions.NoSuchBucket as exc:
            raise RouterConfigError(f"bucket {bucket} does not exist; create the resources first") from exc
        current.pop("ResponseMetadata", None)
        # Keep whatever else is configured; replace what this router configured before.
        queues = [q for q in current.get("QueueConfigurations", []) if q["QueueArn"] != queue_arn]
        for event in events:
            names = event.properties.get("Events", [])
            config: dict[str, Any] = {
                "Id": event.logical_id,
                "QueueArn": queue_arn,
                "Events": [names] if isinstance(names, str) else list(names),
            }
            rules = event.properties.get("Filter", {}).get("S3Key", {}).get("Rules", [])
            if rules:
                # S3 accepts "Prefix"/"prefix"; moto only the lower-case form.
                config["Filter"] = {
                    "Key": {"FilterRules": [{"Name": r["Name"].lower(), "Value": r["Value"]} for r in rules]}
                }
            queues.append(config)
        current["QueueConfigurations"] = queues
        s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=current)

    def _run(self) -> None:
        _keep_polling(self.router, "S3 notifications", self._poll_once)

    def _poll_once(self) -> None:
        sqs = self.router.sqs
        response = sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=1,
            WaitTimeSeconds=SQS_WAIT_SECONDS,
            AttributeNames=["All"],
        )
        for message in response.get("Messages", []):
            if self.router.stopping:  # give it back rather than start work we cannot finish
                sqs.change_message_visibility(
                    QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
                )
                continue
            self._handle(message)

    def _handle(self, message: dict[str, Any]) -> None:
        sqs = self.router.sqs
        notification = json.loads(message["Body"])
        if notification.get("Event") == "s3:TestEvent" or "Records" not in notification:
            sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
            return
        target = self.by_configuration.get(notification["Records"][0]["s3"]["configurationId"])
        if target is None:  # a configuration this router no longer serves
            sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
            return
        spec, event_spec = target
        attempt = int(message["Attributes"].get("ApproximateReceiveCount", "1"))
        records = [self._aws_record(record, message["MessageId"]) for record in notification["Records"]]
        event = {"Records": records}
        try:
            self.router._run(spec, event, "S3", event_spec.logical_id)
        except Exception as exc:  # noqa: BLE001 - an asynchronous invocation failed; retry or give up
            retries = self.router.async_retries(spec)
            if attempt <= retries:
                sqs.change_message_visibility(
                    QueueUrl=self.queue_url,
                    ReceiptHandle=message["ReceiptHandle"],
                    VisibilityTimeout=int(math.ceil(self.router.async_retry_delay)),
                )
                return
            self.router.send_to_failure_destination(spec, event, exc, attempts=attempt)
        sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])

    def _aws_record(self, record: dict[str, Any], message_id: str) -> dict[str, Any]:
        """Rebuild moto's record with every field AWS sends, and the key encoded as AWS encodes it."""
        s3_part = record["s3"]
        bucket = s3_part["bucket"]["name"]
        # moto encodes with quote_plus(safe=""), so unquote_plus gives the key back exactly.
        key = unquote_plus(s3_part["object"]["key"])
        etag = s3_part["object"].get("eTag", "")
        obj: dict[str, Any] = {
            "key": encode_s3_event_key(key),
            "size": s3_part["object"].get("size", 0),
            "eTag": etag,
        }
        version_id = self._version_id(bucket, key, etag)
        if version_id is not None:  # S3 only sends versionId for versioning-enabled buckets
            obj["versionId"] = version_id
        millis = _event_millis(record.get("eventTime"))
        obj["sequencer"] = f"{millis:012X}{_stable_hex(message_id, 6)}"
        return {
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": record.get("awsRegion", LOCAL_REGION),
            "eventTime": record.get("eventTime") or _iso_now(),
            "eventName": record["eventName"],
            "userIdentity": {"principalId": "AWS:AIDALOCALSTACKEXAMPLE"},
            "requestParameters": {"sourceIPAddress": "127.0.0.1"},
            "responseElements": {
                "x-amz-request-id": _stable_hex(message_id + "req", 16),
                "x-amz-id-2": base64.b64encode(hashlib.sha256(message_id.encode()).digest()).decode(),
            },
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": s3_part["configurationId"],
                "bucket": {
                    "name": bucket,
                    "ownerIdentity": {"principalId": "A1LOCALSTACKOWNER"},
                    "arn": f"arn:aws:s3:::{bucket}",
                },
                "object": obj,
            },
        }

    def _version_id(self, bucket: str, key: str, etag: str) -> str | None:
        listing = self.router.s3.list_object_versions(Bucket=bucket, Prefix=key)
        versions = [
            v for v in listing.get("Versions", []) if v["Key"] == key and v["ETag"].strip('"') == etag
        ]
        if not versions:
            return None
        newest = max(versions, key=lambda v: (v.get("IsLatest", False), v["LastModified"]))
        return None if newest["VersionId"] == "null" else newest["VersionId"]

    def pending(self) -> int:
        return self.router.queue_depth(self.queue_url) if self.queue_url else 0


def _keep_polling(router: Router, what: str, poll_once: Callable[[], None]) -> None:
    """Run `poll_once` until the router stops; a failed poll (moto restarting...) is logged and retried."""
    while not router.stopping:
        try:
            poll_once()
        except Exception:  # noqa: BLE001 - a poller must outlive a transient error
            if router.stopping:
                return
            LOG.warning("%s: polling failed; retrying in 1 s", what, exc_info=True)
            router.stop_event.wait(1)


def _event_millis(event_time: str | None) -> int:
    if not event_time:
        return int(time.time() * 1000)
    parsed = datetime.fromisoformat(event_time.replace("Z", "+00:00"))
    return int(parsed.timestamp() * 1000)


# ----------------------------------------------------------------------------------------------- SQS
class SqsPoller:
    """An SQS event source mapping: pollers that receive batches and invoke the function."""

    def __init__(self, router: Router, spec: FunctionSpec, event: EventSpec) -> None:
        props = event.properties
        self.router = router
        self.spec = spec
        self.event = event
        self.queue_arn: str = props["Queue"]
        self.batch_size = int(props.get("BatchSize", 10))
        self.window = float(props.get("MaximumBatchingWindowInSeconds", 0))
        self.report_item_failures = "ReportBatchItemFailures" in (props.get("FunctionResponseTypes") or [])
        scaling = props.get("ScalingConfig") or {}
        self.concurrency = int(scaling.get("MaximumConcurrency", router.default_sqs_concurrency))
        self.enabled = props.get("Enabled", True) not in (False, "false", "False")
        self.queue_url: str | None = None
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        name = _queue_name(self.queue_arn)
        try:
            self.queue_url = self.router.sqs.get_queue_url(QueueName=name)["QueueUrl"]
        except self.router.sqs.exceptions.QueueDoesNotExist as exc:
            raise RouterConfigError(f"queue {name} does not exist; create the resources first") from exc
        self.threads = []
        if not self.enabled:
            return
        for index in range(self.concurrency):
            thread = threading.Thread(
                target=self._run, name=f"router-sqs-{self.event.logical_id}-{index}", daemon=True
            )
            thread.start()
            self.threads.append(thread)

    def _run(self) -> None:
        _keep_polling(self.router, f"SQS source {self.event.logical_id}", self._poll_once)

    def _poll_once(self) -> None:
        messages = self._collect_batch()
        if not messages:
            return
        if self.router.stopping:  # give them back rather than start work we cannot finish
            self._retry_later([m["ReceiptHandle"] for m in messages], delay=0)
            return
        self.deliver(messages)

    def _receive(self, count: int, wait: int) -> list[dict[str, Any]]:
        response = self.router.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=count,
            WaitTimeSeconds=wait,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        return response.get("Messages", [])

    def _collect_batch(self) -> list[dict[str, Any]]:
        messages = self._receive(min(self.batch_size, 10), SQS_WAIT_SECONDS)
        if not messages:
            return []
        deadline = time.monotonic() + self.window
        while len(messages) < self.batch_size and not self.router.stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            wanted = min(self.batch_size - len(messages), 10)
            more = self._receive(wanted, min(SQS_WAIT_SECONDS, int(remaining)))
            if not more and remaining < 0.1:
                break
            if not more:
                time.sleep(min(0.1, remaining))
            messages.extend(more)
        return messages

    def deliver(self, messages: list[dict[str, Any]]) -> None:
        event = {"Records": [self._record(m) for m in messages]}
        handles = {m["MessageId"]: m["ReceiptHandle"] for m in messages}
        try:
            result = self.router._run(self.spec, event, "SQS", self.event.logical_id, records=len(messages))
        except Exception:  # noqa: BLE001 - the whole batch failed; every record comes back
            failed = set(handles)
        else:
            failed = self._failed_ids(result, set(handles)) if self.report_item_failures else set()
        succeeded = [handles[mid] for mid in handles if mid not in failed]
        self._delete(succeeded)
        self._retry_later([handles[mid] for mid in failed], delay=self.router.sqs_retry_delay)

    @staticmethod
    def _failed_ids(result: Any, batch: set[str]) -> set[str]:
        """Read `batchItemFailures` as Lambda does; a malformed answer fails the whole batch."""
        if result is None or result == {}:
            return set()
        if not isinstance(result, dict):
            return set(batch)
        failures = result.get("batchItemFailures")
        if failures is None:
            return set()
        if not isinstance(failures, list):
            return set(batch)
        failed = set()
        for item in failures:
            identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
            if not identifier or identifier not in batch:
                return set(batch)
            failed.add(identifier)
        return failed

    def _delete(self, handles: list[str]) -> None:
        for start in range(0, len(handles), 10):
            chunk = handles[start : start + 10]
            self.router.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(chunk)],
            )

    def _retry_later(self, handles: list[str], delay: float) -> None:
        for start in range(0, len(handles), 10):
            chunk = handles[start : start + 10]
            self.router.sqs.change_message_visibility_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": int(math.ceil(delay))}
                    for i, h in enumerate(chunk)
                ],
            )

    def _record(self, message: dict[str, Any]) -> dict[str, Any]:
        attributes = message.get("Attributes", {})
        ordered = ("ApproximateReceiveCount", "SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp")
        record_attributes = {name: attributes[name] for name in ordered if name in attributes}
        record_attributes.update({k: v for k, v in attributes.items() if k not in record_attributes})
        record: dict[str, Any] = {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": record_attributes,
            "messageAttributes": {
                name: _lambda_message_attribute(value)
                for name, value in message.get("MessageAttributes", {}).items()
            },
        }
        if message.get("MD5OfMessageAttributes"):
            record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
        record.update(
            {
                "md5OfBody": message["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": self.queue_arn,
                "awsRegion": self.queue_arn.split(":")[3],
            }
        )
        return record

    def pending(self) -> int:
        return self.router.queue_depth(self.queue_url) if self.queue_url and self.enabled else 0


def _lambda_message_attribute(value: dict[str, Any]) -> dict[str, Any]:
    """boto3's MessageAttributeValue -> the camel-cased shape of a Lambda SQS record."""

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    shaped: dict[str, Any] = {}
    if "StringValue" in value:
        shaped["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        shaped["binaryValue"] = b64(value["BinaryValue"])
    shaped["stringListValues"] = list(value.get("StringListValues", []))
    shaped["binaryListValues"] = [b64(v) for v in value.get("BinaryListValues", [])]
    shaped["dataType"] = value["DataType"]
    return shaped


# ------------------------------------------------------------------------------------------ HTTP API
@dataclass(frozen=True)
class HttpRoute:
    spec: FunctionSpec
    event_id: str
    method: str  # upper case, or "ANY"
    path: str  # as in the template, or "$default"
    api_id: str
    pattern: re.Pattern[str]
    param_names: tuple[str, ...]

    @property
    def route_key(self) -> str:
        return "$default" if self.path == "$default" else f"{self.method} {self.path}"

    @property
    def specificity(self) -> tuple[int, int, int]:
        """Sort key: exact routes first, then fewer parameters, greedy paths last (as API Gateway does)."""
        if self.path == "$default":
            return (2, 0, 0)
        greedy = 1 if self.path.endswith("+}") else 0
        return (greedy, len(self.param_names), -len(self.path))

    @classmethod
    def build(cls, spec: FunctionSpec, event: EventSpec) -> HttpRoute:
        props = event.properties
        version = str(props.get("PayloadFormatVersion", "2.0"))
        if version != "2.0":
            raise RouterConfigError(
                f"{spec.logical_id}.{event.logical_id}: only payload format 2.0 is served locally"
            )
        path = props.get("Path", "$default")
        method = str(props.get("Method", "ANY")).upper()
        if method == "X-AMAZON-APIGATEWAY-ANY-METHOD" or method == "*":
            method = "ANY"
        names: list[str] = []
        if path == "$default":
            regex = ".*"
        else:
            parts = []
            for segment in path.strip("/").split("/"):
                greedy = re.fullmatch(r"\{(.+)\+\}", segment)
                param = re.fullmatch(r"\{(.+)\}", segment)
                if greedy:
                    names.append(greedy.group(1))
                    parts.append("(.+)")
                elif param:
                    names.append(param.group(1))
                    parts.append("([^/]+)")
                else:
                    parts.append(re.escape(segment))
            regex = "/" + "/".join(parts)
        api_id = _api_id(str(props.get("ApiId", "ServerlessHttpApi")))
        return cls(spec, event.logical_id, method, path, api_id, re.compile(regex), tuple(names))

    def match(self, method: str, raw_path: str) -> dict[str, str] | None:
        if self.method not in ("ANY", method):
            return None
        found = self.pattern.fullmatch(raw_path)
        if found is None:
            return None
        return {name: unquote(value) for name, value in zip(self.param_names, found.groups())}


def _api_id(reference: str) -> str:
    """A stable 10-character API id, like API Gateway's, from the template's ApiId."""
    digest = int(hashlib.sha256(reference.encode()).hexdigest(), 16)
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
    return "".join(alphabet[(digest >> (6 * i)) % 36] for i in range(10))


def is_text_content_type(content_type: str | None) -> bool:
    """Whether an HTTP API (payload 2.0) passes a body of this type as text rather than base64."""
    if not content_type:
        return False
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type.startswith("text/") or media_type in TEXT_MEDIA_TYPES


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _request_time(now: datetime) -> str:
    return f"{now:%d}/{_MONTHS[now.month - 1]}/{now:%Y:%H:%M:%S} +0000"


def build_http_event(
    route: HttpRoute,
    *,
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes,
    source_ip: str,
    protocol: str,
    path_parameters: dict[str, str],
) -> dict[str, Any]:
    """The API Gateway HTTP API payload format 2.0 event for one request."""
    raw_path, _, raw_query = target.partition("?")
    joined: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in headers:
        name = name.lower()
        if name == "cookie":
            cookies.extend(part.strip() for part in value.split(";") if part.strip())
            continue
        joined[name] = f"{joined[name]},{value}" if name in joined else value
    joined["x-forwarded-for"] = (
        f"{joined['x-forwarded-for']}, {source_ip}" if "x-forwarded-for" in joined else source_ip
    )
    joined.setdefault("x-forwarded-proto", "http")
    host = joined.get("host", "127.0.0.1")
    joined.setdefault("x-forwarded-port", host.rpartition(":")[2] if ":" in host else "80")
    joined.setdefault("x-amzn-trace-id", f"Root=1-{int(time.time()):08x}-{secrets.token_hex(12)}")

    now = datetime.now(timezone.utc)
    request_id = base64.b64encode(secrets.token_bytes(11)).decode("ascii")
    domain = host
    hostname = host.rpartition(":")[0] if host.count(":") == 1 else host
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route.route_key,
        "rawPath": raw_path,
        "rawQueryString": raw_query,
    }
    if cookies:
        event["cookies"] = cookies
    event["headers"] = joined
    if raw_query:
        query: dict[str, str] = {}
        for name, value in parse_qsl(raw_query, keep_blank_values=True):
            query[name] = f"{query[name]},{value}" if name in query else value
        event["queryStringParameters"] = query
    event["requestContext"] = {
        "accountId": LOCAL_ACCOUNT_ID,
        "apiId": route.api_id,
        "domainName": domain,
        "domainPrefix": route.api_id if _is_ip(hostname) else hostname.split(".")[0],
        "http": {
            "method": method,
            "path": raw_path,
            "protocol": protocol,
            "sourceIp": source_ip,
            "userAgent": joined.get("user-agent", ""),
        },
        "requestId": request_id,
        "routeKey": route.route_key,
        "stage": "$default",
        "time": _request_time(now),
        "timeEpoch": int(now.timestamp() * 1000),
    }
    if body:
        if is_text_content_type(joined.get("content-type")):
            try:
                event["body"] = body.decode("utf-8")
                encoded = False
            except UnicodeDecodeError:
                event["body"], encoded = base64.b64encode(body).decode("ascii"), True
        else:
            event["body"], encoded = base64.b64encode(body).decode("ascii"), True
    else:
        encoded = False
    if path_parameters:
        event["pathParameters"] = path_parameters
    event["isBase64Encoded"] = encoded
    return event


def _is_ip(hostname: str) -> bool:
    try:
        ipaddress.ip_address(hostname.strip("[]"))
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def map_http_response(result: Any) -> HttpResponse:
    """Turn a handler's return value into the HTTP response, as an HTTP API (payload 2.0) does."""
    if isinstance(result, dict) and "statusCode" in result:
        status = int(result["statusCode"])
        headers: list[tuple[str, str]] = []
        for name, value in (result.get("headers") or {}).items():
            value = ",".join(map(str, value)) if isinstance(value, list) else str(value)
            headers.append((str(name), value))
        headers.extend(("Set-Cookie", str(cookie)) for cookie in result.get("cookies") or [])
        body = result.get("body")
        if body is None:
            payload = b""
        elif result.get("isBase64Encoded"):
            payload = base64.b64decode(body)
        else:
            payload = (body if isinstance(body, str) else json.dumps(body)).encode("utf-8")
        return HttpResponse(status, headers, payload)
    payload = result if isinstance(result, str) else json.dumps(result)
    return HttpResponse(200, [("Content-Type", "application/json")], payload.encode("utf-8"))


_NOT_FOUND = HttpResponse(404, [("Content-Type", "application/json")], b'{"message":"Not Found"}')
_SERVER_ERROR = HttpResponse(
    500, [("Content-Type", "application/json")], b'{"message":"Internal Server Error"}'
)


class HttpApiServer:
    """A ThreadingHTTPServer on 127.0.0.1 serving every HttpApi route of the template."""

    def __init__(self, router: Router, routes: list[HttpRoute], host: str, port: int) -> None:
        seen: dict[tuple[str, str], HttpRoute] = {}
        for route in routes:
            key = (route.method, route.path)
            if key in seen:
                raise RouterConfigError(
                    f"route {route.route_key} is served by both {seen[key].spec.logical_id} "
                    f"and {route.spec.logical_id}"
                )
            seen[key] = route
        self.router = router
        self.routes = sorted(routes, key=lambda r: r.specificity)
        self.server = ThreadingHTTPServer((host, port), self._handler_class())
        self.server.daemon_threads = True
        self.thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> None:
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.2}, name="router-http", daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        if self.thread is not None:
            self.server.shutdown()
            self.thread.join(timeout=STOP_JOIN_SECONDS)
        self.server.server_close()

    def find(self, method: str, raw_path: str) -> tuple[HttpRoute, dict[str, str]] | None:
        for route in self.routes:
            params = route.match(method, raw_path)
            if params is not None:
                return route, params
        return None

    def respond(self, request: BaseHTTPRequestHandler) -> HttpResponse:
        target = request.path
        if "://" in target.split("?", 1)[0]:  # absolute-form request target
            target = "/" + target.split("://", 1)[1].partition("/")[2]
        body = _read_body(request)
        raw_path = target.partition("?")[0]
        found = self.find(request.command, raw_path)
        if found is None:
            return _NOT_FOUND
        route, params = found
        event = build_http_event(
            route,
            method=request.command,
            target=target,
            headers=list(request.headers.items()),
            body=body,
            source_ip=request.client_address[0],
            protocol=request.request_version,
            path_parameters=params,
        )
        try:
            result = self.router._run(route.spec, event, "HttpApi", route.event_id)
            response = map_http_response(result)
        except Exception:  # noqa: BLE001 - API Gateway answers 500 whatever went wrong
            return _SERVER_ERROR
        request_id = event["requestContext"]["requestId"]
        headers = [*response.headers, ("apigw-requestid", request_id)]
        return HttpResponse(response.status, headers, response.body)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "smsinvite-local-httpapi"

            def _serve(self) -> None:
                try:
                    response = api.respond(self)
                except Exception:  # noqa: BLE001 - a broken request must not kill the server
                    LOG.exception("HTTP API request failed before reaching a handler")
                    response = _SERVER_ERROR
                self.send_response(response.status)
                for name, value in response.headers:
                    if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(response.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(response.body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                # The request line can carry codes and numbers in its query string: log the method only.
                LOG.debug("HTTP API %s answered", self.command)

        return Handler


def _read_body(request: BaseHTTPRequestHandler) -> bytes:
    if request.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(request.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while request.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(request.rfile.read(size))
            request.rfile.readline()
    length = int(request.headers.get("Content-Length") or 0)
    return request.rfile.read(length) if length else b""


# ------------------------------------------------------------------------------------------ Schedule
_RATE = re.compile(r"rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


def schedule_interval_seconds(expression: str) -> float:
    """Seconds between firings of an EventBridge schedule expression.

    `rate()` is exact. `cron()` is approximated locally by a fixed interval: every N minutes when the minute
    field is `*`, `*/N` or `0/N`, hourly when only the hour field repeats, daily otherwise. Good enough for
    periodic jobs; it does not honour specific days or times.
    """
    expression = expression.strip()
    rate = _RATE.fullmatch(expression)
    if rate:
        value, unit = int(rate.group(1)), rate.group(2).rstrip("s")
        if value < 1:
            raise RouterConfigError(f"invalid schedule {expression}")
        return float(value * _UNIT_SECONDS[unit])
    if expression.startswith("cron(") and expression.endswith(")"):
        fields = expression[5:-1].split()
        if len(fields) != 6:
            raise RouterConfigError(f"invalid schedule {expression}: cron takes six fields")
        minutes, hours = fields[0], fields[1]
        step = re.fullmatch(r"(?:\*|\d+)/(\d+)", minutes)
        if minutes == "*":
            return 60.0
        if step:
            return 60.0 * int(step.group(1))
        if hours in ("*", "?") or re.fullmatch(r"(?:\*|\d+)/\d+", hours):
            hour_step = re.fullmatch(r"(?:\*|\d+)/(\d+)", hours)
            return 3600.0 * (int(hour_step.group(1)) if hour_step else 1)
        return 86400.0
    raise RouterConfigError(f"unsupported schedule expression {expression}")


class ScheduleTimer:
    """An EventBridge schedule rule targeting the function."""

    def __init__(self, router: Router, spec: FunctionSpec, event: EventSpec) -> None:
        props = event.properties
        self.router = router
        self.spec = spec
        self.event = event
        self.expression = str(props["Schedule"])
        self.interval = router.schedule_interval_override or schedule_interval_seconds(self.expression)
        self.enabled = props.get("Enabled", True) not in (False, "false", "False") and props.get(
            "State", "ENABLED"
        ) != "DISABLED"
        rule_name = props.get("Name") or f"{router.template.stack_name}-{spec.logical_id}{event.logical_id}"
        self.rule_arn = f"arn:aws:events:{LOCAL_REGION}:{LOCAL_ACCOUNT_ID}:rule/{rule_name}"
        self.input = props.get("Input")
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        if not self.enabled:
            return
        self.thread = threading.Thread(
            target=self._run, name=f"router-schedule-{self.event.logical_id}", daemon=True
        )
        self.thread.start()

    def _run(self) -> None:
        while not self.router.stop_event.wait(self.interval):
            try:
                self.fire()
            except Exception:  # noqa: BLE001 - recorded by the router; the schedule keeps going
                pass

    def scheduled_event(self) -> Any:
        if self.input is not None:  # a rule with Input passes that JSON instead of the event
            return json.loads(self.input)
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": LOCAL_ACCOUNT_ID,
            "time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": LOCAL_REGION,
            "resources": [self.rule_arn],
            "detail": {},
        }

    def fire(self) -> Any:
        return self.router._run(self.spec, self.scheduled_event(), "Schedule", self.event.logical_id)


# -------------------------------------------------------------------------------------------- Router
class Router:
    """The local Lambda service: delivers every event of the template to its handler, in this process.

    Use it as a context manager, or call `start()` and `stop()`. The resources (buckets, queues) must exist
    before `start()`.
    """

    def __init__(
        self,
        template: LocalStackTemplate,
        *,
        aws_endpoint: str,
        http_port: int = 0,
        http_host: str = "127.0.0.1",
        sqs_retry_delay: float = 1.0,
        async_retry_delay: float = 1.0,
        schedule_interval_override: float | None = None,
        default_sqs_concurrency: int = DEFAULT_SQS_CONCURRENCY,
        s3_concurrency: int = 2,
        s3_events_queue: str | None = None,
        extra_environment: dict[str, str] | None = None,
        public_url_variable: str | None = "PUBLIC_WEBHOOK_BASE_URL",
    ) -> None:
        self.template = template
        self.aws_endpoint = aws_endpoint
        self.http_port = http_port
        self.http_host = http_host
        self.sqs_retry_delay = sqs_retry_delay
        self.async_retry_delay = async_retry_delay
        self.schedule_interval_override = schedule_interval_override
        self.default_sqs_concurrency = default_sqs_concurrency
        self.s3_concurrency = s3_concurrency
        self.s3_events_queue = (s3_events_queue or f"{template.stack_name}-router-s3-events")[:80]
        self.extra_environment = dict(extra_environment or {})
        self.public_url_variable = public_url_variable

        self.functions: dict[str, FunctionSpec] = {spec.logical_id: spec for spec in template.functions()}
        self.timeout_override: dict[str, float] = {}
        self.base_url: str | None = None
        self.stop_event = threading.Event()

        session = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=LOCAL_REGION
        )
        config = Config(max_pool_connections=64, retries={"max_attempts": 3, "mode": "standard"})
        self.sqs = session.client("sqs", endpoint_url=aws_endpoint, config=config)
        self.s3 = session.client("s3", endpoint_url=aws_endpoint, config=config)

        self._invocations: list[Invocation] = []
        self._records_lock = threading.Lock()
        self._in_flight = 0
        self._handlers: dict[str, Callable[..., Any]] = {}
        self._load_locks = {logical_id: threading.Lock() for logical_id in self.functions}
        self._saved_environment: dict[str, str | None] | None = None
        self._started = False
        self.logs = FunctionLogs()

        self.s3_notifier: S3Notifier | None = None
        self.sqs_pollers: list[SqsPoller] = []
        self.http_api: HttpApiServer | None = None
        self.schedules: list[ScheduleTimer] = []
        self._plan()

    # ------------------------------------------------------------------ wiring
    def _plan(self) -> None:
        s3_subscriptions: list[tuple[FunctionSpec, EventSpec]] = []
        routes: list[HttpRoute] = []
        for spec in self.functions.values():
            for event in spec.events:
                if event.type == "S3":
                    s3_subscriptions.append((spec, event))
                elif event.type == "SQS":
                    self.sqs_pollers.append(SqsPoller(self, spec, event))
                elif event.type == "HttpApi":
                    routes.append(HttpRoute.build(spec, event))
                elif event.type == "Schedule":
                    self.schedules.append(ScheduleTimer(self, spec, event))
                else:
                    raise RouterConfigError(
                        f"{spec.logical_id}.{event.logical_id}: event type {event.type} is not served locally"
                    )
        if s3_subscriptions:
            self.s3_notifier = S3Notifier(self, s3_subscriptions)
        self._routes = routes

    @property
    def stopping(self) -> bool:
        return self.stop_event.is_set()

    def merged_environment(self) -> dict[str, str]:
        """Every function's environment in one mapping; a variable set two different ways is an error."""
        merged: dict[str, str] = {}
        owner: dict[str, str] = {}
        conflicts: list[str] = []
        for spec in self.functions.values():
            for name, value in spec.environment.items():
                if name in merged and merged[name] != value:
                    conflicts.append(f"{name} ({owner[name]} and {spec.logical_id})")
                    continue
                merged.setdefault(name, value)
                owner.setdefault(name, spec.logical_id)
        if conflicts:
            raise RouterConfigError(
                "functions set the same environment variable to different values: "
                + ", ".join(conflicts)
                + ". Locally every function runs in one process with one os.environ; "
                "give the variables distinct names."
            )
        return {**self.runtime_environment(), **merged, **self.extra_environment}

    def runtime_environment(self) -> dict[str, str]:
        """What the Lambda runtime gives every function, pointed at the local AWS.

        The region, credentials (dummy ones: Lambda supplies the execution role's, never the developer's)
        and `AWS_ENDPOINT_URL`, so that the handlers' boto3 clients reach the same moto server as the
        router. A template variable or `extra_environment` wins over these (e.g. `AWS_ENDPOINT_URL_DYNAMODB`
        for DynamoDB Local). `AWS_LAMBDA_FUNCTION_NAME` is not set: it differs per function, and without it
        Powertools' Tracer stays off, as it should without an X-Ray daemon.
        """
        return {
            "AWS_REGION": LOCAL_REGION,
            "AWS_DEFAULT_REGION": LOCAL_REGION,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_ENDPOINT_URL": self.aws_endpoint,
        }

    def start(self) -> Router:
        if self._started:
            raise RuntimeError("the router is already started")
        environment = self.merged_environment()
        self.stop_event.clear()
        self._started = True
        try:
            if self._routes:
                self.http_api = HttpApiServer(self, self._routes, self.http_host, self.http_port)
                self.base_url = self.http_api.base_url
                self.http_port = self.http_api.server.server_address[1]
                if self.public_url_variable and environment.get(self.public_url_variable, None) == "":
                    environment[self.public_url_variable] = self.base_url
            self._apply_environment(environment)
            logging.getLogger().addHandler(self.logs)
            if self.s3_notifier is not None:
                self.s3_notifier.start()
            for poller in self.sqs_pollers:
                poller.start()
            for timer in self.schedules:
                timer.start()
            if self.http_api is not None:
                self.http_api.start()
        except BaseException:
            self.stop()
            raise
        LOG.info(
            "router started: %d functions, %d SQS sources, %d HTTP routes at %s, %d schedules",
            len(self.functions),
            len(self.sqs_pollers),
            len(self._routes),
            self.base_url,
            len(self.schedules),
        )
        return self

    def stop(self) -> None:
        if not self._started:
            return
        self.stop_event.set()
        if self.http_api is not None:
            self.http_api.stop()
            self.http_api = None
        threads = [t for p in self.sqs_pollers for t in p.threads]
        threads += self.s3_notifier.threads if self.s3_notifier else []
        threads += [t.thread for t in self.schedules if t.thread is not None]
        deadline = time.monotonic() + STOP_JOIN_SECONDS
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        still_running = [t.name for t in threads if t.is_alive()]
        if still_running:
            LOG.warning("router stopped; still finishing an invocation: %s", ", ".join(still_running))
        logging.getLogger().removeHandler(self.logs)
        self._restore_environment()
        self._started = False

    def __enter__(self) -> Router:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def _apply_environment(self, environment: dict[str, str]) -> None:
        self._saved_environment = {name: os.environ.get(name) for name in environment}
        os.environ.update(environment)

    def _restore_environment(self) -> None:
        for name, value in (self._saved_environment or {}).items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_environment = None

    # ------------------------------------------------------------------ invocation
    def _handler(self, spec: FunctionSpec) -> Callable[..., Any]:
        handler = self._handlers.get(spec.logical_id)
        if handler is not None:
            return handler
        with self._load_locks[spec.logical_id]:
            handler = self._handlers.get(spec.logical_id)
            if handler is None:
                module = _load_module(f"smsinvite_fn_{spec.logical_id}", spec)
                handler = getattr(module, spec.handler_attr)
                self._handlers[spec.logical_id] = handler
        return handler

    def _log_group(self, spec: FunctionSpec) -> str:
        props = self.template.resources.get(spec.logical_id, {}).get("Properties", {})
        configured = props.get("LoggingConfig", {}).get("LogGroup")
        return str(self.template.resolve(configured)) if configured else f"/aws/lambda/{spec.name}"

    def _run(self, spec: FunctionSpec, event: Any, event_type: str, source: str, *, records: int = 1) -> Any:
        """Invoke a handler once, recording the invocation. Raises what the handler raised."""
        timeout = self.timeout_override.get(spec.logical_id, spec.timeout)
        with self._records_lock:
            self._in_flight += 1
        started_at, started = time.time(), time.monotonic()
        context = LambdaContext(spec, timeout, self._log_group(spec))
        error: str | None = None
        try:
            with self.logs.invocation(spec.logical_id, context.aws_request_id):
                return self._handler(spec)(event, context)
        except Exception as exc:
            document = lambda_error(exc, context.aws_request_id)
            self.logs.write(spec.logical_id, context.aws_request_id, lambda_error_log(document))
            error = f"{document['errorType']}: {document['errorMessage']}"
            LOG.warning("%s (%s from %s) raised %s", spec.logical_id, event_type, source, type(exc).__name__)
            LOG.debug("handler traceback", exc_info=True)
            raise
        finally:
            duration = time.monotonic() - started
            if duration > timeout:
                LOG.warning("%s ran %.1f s, over its %.1f s timeout", spec.logical_id, duration, timeout)
            invocation = Invocation(
                function=spec.logical_id,
                event_type=event_type,
                source=source,
                request_id=context.aws_request_id,
                started_at=started_at,
                duration=duration,
                error=error,
                records=records,
            )
            with self._records_lock:
                self._invocations.append(invocation)
                self._in_flight -= 1

    def invoke(self, logical_id: str, event: Any) -> Any:
        """Invoke a function directly (RequestResponse), as the console or the CLI does."""
        spec = self._spec(logical_id)
        return self._run(spec, event, "Direct", "direct")

    def fire_schedule(self, logical_id: str) -> Any:
        """Fire a schedule now; `logical_id` names the Schedule event, or a function with one schedule."""
        matches = [t for t in self.schedules if logical_id in (t.event.logical_id, t.spec.logical_id)]
        if len(matches) != 1:
            raise KeyError(f"{logical_id} names {len(matches)} schedules; name the Schedule event instead")
        return matches[0].fire()

    def _spec(self, logical_id: str) -> FunctionSpec:
        try:
            return self.functions[logical_id]
        except KeyError:
            raise KeyError(f"no function {logical_id} in the template") from None

    # ------------------------------------------------------------------ what happened
    @property
    def invocations(self) -> list[Invocation]:
        with self._records_lock:
            return list(self._invocations)

    def invocations_of(self, logical_id: str, event_type: str | None = None) -> list[Invocation]:
        return [
            i
            for i in self.invocations
            if i.function == logical_id and (event_type is None or i.event_type == event_type)
        ]

    def wait_for_invocations(
        self, logical_id: str, count: int = 1, timeout: float = 10.0
    ) -> list[Invocation]:
        """Block until `logical_id` has been invoked `count` times; raise TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.invocations_of(logical_id)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"{logical_id} was invoked {len(found)} times, expected {count}")
            time.sleep(0.02)

    def queue_depth(self, queue_url: str) -> int:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        return sum(int(value) for value in attributes.values())

    def drain(self, timeout: float = 30.0, *, include_sqs: bool = True) -> None:
        """Wait until every pending S3 event (and, by default, SQS message) is delivered and handled.

        "Handled" includes retries: a record that keeps failing is done once it reaches its DLQ or the
        S3 OnFailure destination. Raises TimeoutError when work is still pending after `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        quiet_checks = 0
        while quiet_checks < 2:
            sources: list[Any] = [self.s3_notifier] if self.s3_notifier else []
            if include_sqs:
                sources += self.sqs_pollers
            with self._records_lock:
                busy = self._in_flight > 0
            busy = busy or any(source.pending() for source in sources)
            quiet_checks = 0 if busy else quiet_checks + 1
            if busy and time.monotonic() > deadline:
                raise TimeoutError(f"events still pending after {timeout} s")
            time.sleep(0.05)

    # ------------------------------------------------------------------ asynchronous invocation settings
    def _event_invoke_config(self, spec: FunctionSpec) -> dict[str, Any]:
        props = self.template.resources.get(spec.logical_id, {}).get("Properties", {})
        return self.template.resolve(props.get("EventInvokeConfig", {})) or {}

    def async_retries(self, spec: FunctionSpec) -> int:
        return int(self._event_invoke_config(spec).get("MaximumRetryAttempts", DEFAULT_ASYNC_RETRIES))

    def send_to_failure_destination(
        self, spec: FunctionSpec, event: Any, exc: Exception, *, attempts: int
    ) -> None:
        """Send Lambda's invocation record for a failed asynchronous event to the OnFailure destination."""
        on_failure = self._event_invoke_config(spec).get("DestinationConfig", {}).get("OnFailure", {})
        destination = on_failure.get("Destination")
        if not destination:
            LOG.warning(
                "%s: an asynchronous event failed %d times and was dropped", spec.logical_id, attempts
            )
            return
        if on_failure.get("Type", "SQS") != "SQS" or ":sqs:" not in destination:
            LOG.warning("%s: OnFailure destination %s is not served locally", spec.logical_id, destination)
            return
        request_id = str(uuid.uuid4())
        record = {
            "version": "1.0",
            "timestamp": _iso_now(),
            "requestContext": {
                "requestId": request_id,
                "functionArn": f"{_function_arn(spec.name)}:$LATEST",
                "condition": "RetriesExhausted",
                "approximateInvokeCount": attempts,
            },
            "requestPayload": event,
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": "Unhandled",
            },
            "responsePayload": lambda_error(exc, request_id),
        }
        queue_url = self.sqs.get_queue_url(QueueName=_queue_name(destination))["QueueUrl"]
        self.sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(record))


def _load_module(module_name: str, spec: FunctionSpec) -> ModuleType:
    """Import a function's handler file by path, as its own module (once per function)."""
    path = spec.handler_file
    if not path.is_file():
        raise FileNotFoundError(f"{spec.logical_id}: handler file {path} does not exist")
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:
        raise ImportError(f"{spec.logical_id}: cannot load {path}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module  # dataclasses and pickling look modules up here
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module
