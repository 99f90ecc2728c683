"""A Twilio simulator on 127.0.0.1: the Messages API, status callbacks and inbound replies.

It speaks the subset of Twilio's 2010-04-01 REST API that smsinvite uses, closely enough that the
real `twilio` SDK works against it once its HTTP client rewrites https://api.twilio.com to
`base_url`. Beyond answering like Twilio, it enforces per-sender MPS limits, honours Twilio's test
magic numbers, posts signed status callbacks (optionally out of order or twice), posts signed
inbound replies, retries a webhook only as its URL's connection overrides say, and injects faults
(latency, 429, 5xx, a dropped connection after the message was accepted, a hang). Everything it
does is recorded so tests and benchmarks can read it back.

    with TwilioSimulator(mps_limit=10) as sim:
        ...  # point the SDK at sim.base_url with sim.account_sid / sim.auth_token

Run `python -m local.twilio_sim` to keep one in the foreground.
"""

from __future__ import annotations

import argparse
import base64
import copy
import hmac
import heapq
import itertools
import json
import logging
import random
import re
import socket
import threading
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from email.utils import format_datetime
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs, parse_qsl, urldefrag, urlencode, urlsplit

import requests
from twilio.request_validator import RequestValidator
from urllib3.exceptions import NewConnectionError

logger = logging.getLogger(__name__)

# Fixed, valid-looking test credentials, so the local stack can store the token as a secret.
DEFAULT_ACCOUNT_SID = "AC7f3c1e0b9d2a4c6e8f0a1b3c5d7e9f21"
DEFAULT_AUTH_TOKEN = "5e1d0c9b8a7f6e5d4c3b2a1908f7e6d5"
# The number a Messaging Service "picks" when a message was sent with MessagingServiceSid only.
DEFAULT_SERVICE_NUMBER = "+15005550006"
TWILIO_API_BASE = "https://api.twilio.com"
API_VERSION = "2010-04-01"
LOOPBACK = "127.0.0.1"

# Twilio's test magic numbers: https://www.twilio.com/docs/iam/test-credentials
MAGIC_TO_ERRORS: dict[str, tuple[int, str]] = {
    "+15005550001": (21211, "The 'To' number +15005550001 is not a valid phone number."),
    "+15005550002": (21612, "The 'To' phone number is not currently reachable via SMS."),
    "+15005550003": (21408, "Permission to send an SMS has not been enabled for the region "
                            "indicated by the 'To' number: +15005550003."),
    "+15005550004": (21610, "Attempt to send to unsubscribed recipient"),
    "+15005550009": (21614, "'To' number is not a valid mobile number"),
}
MAGIC_FROM_ERRORS: dict[str, tuple[int, str]] = {
    "+15005550001": (21212, "The 'From' number +15005550001 is not a valid phone number, "
                            "shortcode, or alphanumeric sender ID."),
    "+15005550007": (21606, "The 'From' phone number provided is not a valid, message-capable "
                            "Twilio phone number for this destination/account."),
    "+15005550008": (21611, "This 'From' number has exceeded the maximum number of queued "
                            "messages."),
}

DELIVERY_ERROR_MESSAGES = {
    30003: "Unreachable destination handset",
    30005: "Unknown destination handset",
    30006: "Landline or unreachable carrier",
    30007: "Message filtered",
    30008: "Unknown error",
}
# A final outcome and the error code it carries when none is given.
OUTCOME_DEFAULT_ERRORS: dict[str, int | None] = {
    "delivered": None,
    "sent": None,  # the carrier never confirmed delivery
    "undelivered": 30003,
    "failed": 30007,
}
FAULT_KINDS = ("ok", "429", "5xx", "500", "503", "5xx_after_create", "drop", "timeout")
FINAL_STATUSES = ("delivered", "undelivered", "failed")

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_SHORT_CODE = re.compile(r"^\d{3,8}$")
_ALPHANUMERIC_SENDER = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}$")
_MESSAGING_SERVICE_SID = re.compile(r"^MG[0-9a-f]{32}$")
_MESSAGES_PATH = re.compile(rf"^/{API_VERSION}/Accounts/(?P<account>AC\w+)/Messages\.json$")
_MESSAGE_PATH = re.compile(
    rf"^/{API_VERSION}/Accounts/(?P<account>AC\w+)/Messages/(?P<sid>[SM]M\w+)\.json$"
)
_MAX_BODY_CHARS = 1600
_MAX_PAGE_SIZE = 1000
_DEFAULT_PAGE_SIZE = 50


def mask_number(number: str | None) -> str:
    """Keep a phone number recognisable in a log without writing it whole."""
    if not number:
        return "-"
    if len(number) <= 6:
        return "***"
    return number[:3] + "*" * (len(number) - 5) + number[-2:]


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _rfc2822(moment: datetime | None) -> str | None:
    """Twilio's date format: 'Thu, 30 Jul 2015 20:12:31 +0000'."""
    return format_datetime(moment) if moment else None


def _new_sid(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


# --- segments -----------------------------------------------------------------------------------

_GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# Extension-table characters are sent as ESC + char, so each costs two septets.
_GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")


def count_segments(body: str) -> tuple[str, int]:
    """Return (encoding, segments) the way a carrier splits `body`: GSM-7 or UCS-2.

    A single GSM-7 SMS holds 160 septets and each part of a long one 153; UCS-2 holds 70 and 67
    UTF-16 units. An escape pair or a surrogate pair is never split across two parts.
    """
    if all(ch in _GSM7_BASIC or ch in _GSM7_EXTENSION for ch in body):
        encoding, single, per_part = "GSM-7", 160, 153
        units = [2 if ch in _GSM7_EXTENSION else 1 for ch in body]
    else:
        encoding, single, per_part = "UCS-2", 70, 67
        units = [len(ch.encode("utf-16-le")) // 2 for ch in body]
    if sum(units) <= single:
        return encoding, 1
    segments, used = 1, 0
    for unit in units:
        if used + unit > per_part:
            segments, used = segments + 1, 0
        used += unit
    return encoding, segments


# --- records ------------------------------------------------------------------------------------


def _validity_period(raw: str) -> int | None:
    """Twilio takes a whole number of seconds from 1 to 36,000 (10 hours); anything else is 21624."""
    if not raw:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= 36_000:
        raise TwilioApiError(400, 21624, "Invalid validity period value")
    return int(raw)


@dataclass
class SimMessage:
    """One message resource, outbound or inbound, as the simulator holds it."""

    sid: str
    account_sid: str
    to: str
    from_: str | None
    messaging_service_sid: str | None
    body: str
    status: str
    direction: str
    num_segments: int
    num_media: int
    status_callback: str | None
    date_created: datetime
    date_updated: datetime
    date_sent: datetime | None = None
    error_code: int | None = None
    error_message: str | None = None
    price: str | None = None
    seq: int = 0
    validity_period: int | None = None  # seconds Twilio may keep it queued (ValidityPeriod)

    @property
    def uri(self) -> str:
        return f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{self.sid}.json"

    @property
    def sent_or_created(self) -> datetime:
        """What the DateSent filters compare: a message still queued has no date_sent yet, and
        a reconciler looking for it must still find it."""
        return self.date_sent or self.date_created

    def to_resource(self) -> dict[str, Any]:
        """The JSON Twilio returns for a message."""
        base = self.uri[: -len(".json")]
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": self.body,
            "date_created": _rfc2822(self.date_created),
            "date_sent": _rfc2822(self.date_sent),
            "date_updated": _rfc2822(self.date_updated),
            "direction": self.direction,
            "error_code": self.error_code,
            "error_message": self.error_message,
            "from": self.from_,
            "messaging_service_sid": self.messaging_service_sid,
            "num_media": str(self.num_media),
            "num_segments": str(self.num_segments),
            "price": self.price,
            "price_unit": "USD",
            "sid": self.sid,
            "status": self.status,
            "subresource_uris": {
                "media": f"{base}/Media.json",
                "feedback": f"{base}/Feedback.json",
            },
            "to": self.to,
            "uri": self.uri,
        }


@dataclass(frozen=True)
class LedgerEntry:
    """One create attempt: who sent to whom, when, and what became of it."""

    seq: int
    monotonic: float
    wall: datetime
    sender: str | None
    to: str | None
    sid: str | None  # set when a message was created, even if the client never saw the reply
    status: int | None  # the HTTP status the client got; None when the connection was dropped
    error_code: int | None
    fault: str | None  # the injected fault, if any

    @property
    def created(self) -> bool:
        return self.sid is not None


@dataclass(frozen=True)
class CallbackRecord:
    """One webhook post attempt (a status callback or an inbound reply)."""

    kind: str  # "status" or "inbound"
    url: str
    params: dict[str, str]
    signature: str
    idempotency_token: str
    attempt: int
    status: int | None  # the receiver's HTTP status; None if it could not be reached
    error: str | None
    wall: datetime
    message_sid: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class TwilioApiError(Exception):
    """An error the API answers with Twilio's error JSON."""

    def __init__(self, status: int, code: int, message: str, **extra: Any):
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra

    def payload(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "more_info": f"https://www.twilio.com/docs/errors/{self.code}",
            "status": self.status,
            **self.extra,
        }


# --- state --------------------------------------------------------------------------------------


class MessageStore:
    """Every message the simulator knows, newest last, guarded by one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_sid: dict[str, SimMessage] = {}
        self._seq = itertools.count(1)

    def add(self, message: SimMessage) -> SimMessage:
        with self._lock:
            message.seq = next(self._seq)
            self._by_sid[message.sid] = message
            return copy.copy(message)

    def get(self, sid: str) -> SimMessage | None:
        with self._lock:
            message = self._by_sid.get(sid)
            return copy.copy(message) if message else None

    def advance(self, sid: str, status: str, error_code: int | None,
                service_number: str) -> SimMessage | None:
        """Move a message to its next delivery status and return a snapshot of it."""
        with self._lock:
            message = self._by_sid.get(sid)
            if message is None:
                return None
            now = _now()
            message.status, message.date_updated = status, now
            if status == "queued" and message.from_ is None:
                message.from_ = service_number  # the service picked a sender from its pool
            if status == "sending":
                message.date_sent = now
            if status == "sent":
                message.price = f"-{0.0079 * message.num_segments:.5f}"
            if error_code is not None:
                message.error_code = error_code
                message.error_message = DELIVERY_ERROR_MESSAGES.get(error_code, "Unknown error")
            return copy.copy(message)

    def all(self) -> list[SimMessage]:
        """Oldest first."""
        with self._lock:
            return [copy.copy(m) for m in sorted(self._by_sid.values(), key=lambda m: m.seq)]

    def clear(self) -> None:
        with self._lock:
            self._by_sid.clear()


class SenderLimiter:
    """Messages-per-second ceiling per sender over a sliding one-second window.

    Real Twilio queues traffic above a sender's MPS; here the excess is rejected with 429 so that
    a caller exceeding its ceiling is visible, and counted in `excess`.
    """

    def __init__(self, default_limit: float | None) -> None:
        self._lock = threading.Lock()
        self.default_limit = default_limit
        self._limits: dict[str, float | None] = {}
        self._recent: dict[str, deque[float]] = defaultdict(deque)
        self._excess: dict[str, int] = defaultdict(int)

    def set_limit(self, limit: float | None, sender: str | None = None) -> None:
        with self._lock:
            if sender is None:
                self.default_limit = limit
            else:
                self._limits[sender] = limit

    def try_acquire(self, sender: str, now: float) -> bool:
        with self._lock:
            limit = self._limits.get(sender, self.default_limit)
            if limit is None:
                return True
            recent = self._recent[sender]
            while recent and recent[0] <= now - 1.0:
                recent.popleft()
            if len(recent) >= limit:
                self._excess[sender] += 1
                return False
            recent.append(now)
            return True

    def excess(self) -> dict[str, int]:
        with self._lock:
            return dict(self._excess)

    def clear(self, default_limit: float | None) -> None:
        with self._lock:
            self.default_limit = default_limit
            self._limits.clear()
            self._recent.clear()
            self._excess.clear()


class Ledger:
    """Append-only record of every create attempt."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[LedgerEntry] = []

    def record(self, *, monotonic: float, sender: str | None, to: str | None,
               sid: str | None, status: int | None, error_code: int | None,
               fault: str | None) -> LedgerEntry:
        with self._lock:
            entry = LedgerEntry(len(self._entries) + 1, monotonic, _now(), sender, to, sid,
                                status, error_code, fault)
            self._entries.append(entry)
            return entry

    def entries(self) -> list[LedgerEntry]:
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


class Faults:
    """Faults to inject into the API, settable at any time from any thread.

    Rates are probabilities drawn from a seeded random, so a run can be repeated. `next()` queues
    exact outcomes for the next create calls, which makes tests deterministic; the queue wins over
    the rates. Latency and `unavailable` apply to every API response, `list_lag` to list and fetch;
    the other faults apply to message creates. Refused connections are the simulator's own
    `refuse_connections()`: nothing listens then.
    """

    def __init__(self, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._seed = seed
        self.clear()

    def clear(self) -> None:
        with self._lock:
            self._random = random.Random(self._seed)
            self._queue: deque[str] = deque()
            self.latency = 0.0  # seconds added to every API response
            self.rate_429 = 0.0  # rejected, nothing created
            self.rate_5xx = 0.0  # 500 or 503, nothing created
            self.rate_5xx_after_create = 0.0  # created, then 500
            self.drop_after_accept = 0.0  # created, then the connection closes with no reply
            self.rate_timeout = 0.0  # created, then no reply for `hang_seconds`, then closed
            self.hang_seconds = 2.0
            # Twilio's list and fetch lag behind creates: a message is invisible to them this many seconds.
            self.list_lag = 0.0
            # An outage: every API request (create, list, fetch) answers 503 and nothing is created.
            self.unavailable = False

    def next(self, kinds: Iterable[str]) -> None:
        """Queue the outcomes of the next create calls, e.g. ["429", "drop", "ok"]."""
        kinds = list(kinds)
        unknown = [k for k in kinds if k not in FAULT_KINDS]
        if unknown:
            raise ValueError(f"unknown fault kinds {unknown}; expected some of {FAULT_KINDS}")
        with self._lock:
            self._queue.extend(kinds)

    def decide(self) -> str:
        """The fault for one create call, "ok" for none."""
        with self._lock:
            if self._queue:
                kind = self._queue.popleft()
            else:
                kind = self._draw()
            if kind == "5xx":
                kind = self._random.choice(("500", "503"))
            return kind

    def _draw(self) -> str:
        roll = self._random.random()
        for kind, rate in (("429", self.rate_429), ("5xx", self.rate_5xx),
                           ("5xx_after_create", self.rate_5xx_after_create),
                           ("drop", self.drop_after_accept), ("timeout", self.rate_timeout)):
            if roll < rate:
                return kind
            roll -= rate
        return "ok"


# --- callbacks ----------------------------------------------------------------------------------


class _TaskScheduler:
    """Runs callables at a due time on a small pool of daemon threads."""

    def __init__(self, workers: int) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._busy = 0
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._work, name=f"twilio-sim-callbacks-{i}", daemon=True)
            for i in range(workers)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def submit(self, delay: float, task: Callable[[], None]) -> None:
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._order), task))
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            self._heap.clear()
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: not self._heap and not self._busy, timeout)

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopping = True
            self._heap.clear()
            self._cond.notify_all()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout)

    def _work(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopping:
                        return
                    if self._heap and self._heap[0][0] <= time.monotonic():
                        task = heapq.heappop(self._heap)[2]
                        self._busy += 1
                        break
                    wait = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(wait)
            try:
                task()
            except Exception:  # a broken task must never take a worker down
                logger.exception("twilio simulator: background task failed")
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()


@dataclass(frozen=True)
class ConnectionOverrides:
    """How Twilio posts to one webhook URL, and when it tries again, from the URL's fragment.

    https://www.twilio.com/docs/usage/webhooks/webhooks-connection-overrides: `#rc=3&rp=ct,5xx`
    asks for up to 3 retries when the connection fails or the answer is a 5xx. Without a fragment
    Twilio's defaults hold: one retry, of a failed connection only. A 4xx or 5xx is never retried
    unless `rp` names it, and all attempts together get `tt` (15 s at most). Twilio posts to the
    URL without its fragment and leaves the fragment out of the signature. Values out of Twilio's
    ranges are refused; so are keys Twilio does not document, so a typo shows in a test (what
    Twilio does with one is not documented).
    """

    retry_count: int = 1  # rc
    retry_on: frozenset[str] = frozenset({"ct"})  # rp: of "4xx", "5xx", "ct", "rt"
    connect_timeout: float = 5.0  # ct, in seconds here (milliseconds in the URL)
    read_timeout: float = 15.0  # rt
    total_time: float = 15.0  # tt

    _MILLISECONDS = {"ct": ("connect_timeout", 10_000), "rt": ("read_timeout", 15_000),
                     "tt": ("total_time", 15_000)}
    _POLICIES = ("4xx", "5xx", "ct", "rt")
    _IGNORED = ("e", "sni")  # the egress edge and SNI change nothing on 127.0.0.1

    @classmethod
    def parse(cls, fragment: str) -> "ConnectionOverrides":
        values: dict[str, Any] = {}
        for key, value in parse_qsl(fragment, keep_blank_values=True):
            if key == "rc":
                if not value.isdigit() or int(value) > 5:
                    raise ValueError("rc must be 0 to 5")
                values["retry_count"] = int(value)
            elif key == "rp":
                policies = set(value.split(","))
                if "all" in policies:
                    policies = (policies - {"all"}) | set(cls._POLICIES)
                if not policies or not policies <= set(cls._POLICIES):
                    raise ValueError("rp must list 4xx, 5xx, ct, rt or all (Twilio error 11243)")
                values["retry_on"] = frozenset(policies)
            elif key in cls._MILLISECONDS:
                name, most = cls._MILLISECONDS[key]
                if not value.isdigit() or not 100 <= int(value) <= most:
                    raise ValueError(f"{key} must be 100 to {most} milliseconds")
                values[name] = int(value) / 1000
            elif key not in cls._IGNORED:
                raise ValueError(f"{key} is not a connection override")
        return cls(**values)

    def retries(self, failure: str | None, attempt: int) -> bool:
        return failure in self.retry_on and attempt <= self.retry_count


def _failure(response: requests.Response | None, error: Exception | None) -> str | None:
    """What kind of failure an attempt was, in rp's terms; None for an answer not worth retrying."""
    if response is not None:
        return {4: "4xx", 5: "5xx"}.get(response.status_code // 100)
    if isinstance(error, (requests.ConnectTimeout, requests.exceptions.SSLError)):
        return "ct"
    if isinstance(error, requests.ReadTimeout):
        return "rt"
    cause = error.args[0] if isinstance(error, requests.ConnectionError) and error.args else None
    if isinstance(getattr(cause, "reason", cause), NewConnectionError):
        return "ct"  # refused: never connected
    return "partial"  # the connection broke after the request went out: Twilio does not retry


class CallbackPoster:
    """Posts signed, form-encoded webhooks the way Twilio does, and logs every attempt."""

    def __init__(self, auth_token: str, stop_event: threading.Event, *,
                 backoff: float = 0.05) -> None:
        self._validator = RequestValidator(auth_token)
        self._stop_event = stop_event
        self.backoff = backoff  # Twilio does not say how it spaces retries; here 50 ms, doubling
        self._lock = threading.Lock()
        self._log: list[CallbackRecord] = []

    def sign(self, url: str, params: dict[str, str]) -> str:
        # RequestValidator is what receivers check with, so computing with it guarantees equality.
        return self._validator.compute_signature(url, params)

    def deliver(self, kind: str, url: str, params: dict[str, str], token: str,
                message_sid: str | None = None) -> tuple[CallbackRecord, requests.Response | None]:
        """Post to `url` as Twilio does, retrying as its connection overrides say; never raises.

        Returns the last attempt's record and the receiver's response (None if none came).
        """
        target, fragment = urldefrag(url)
        try:
            overrides = ConnectionOverrides.parse(fragment)
        except ValueError as exc:
            record = self._record(kind, target, params, "", token, 1, None,
                                  f"invalid connection overrides: {exc}", message_sid)
            logger.warning("twilio simulator: %s callback for %s not posted: %s", kind,
                           message_sid, record.error)
            return record, None
        deadline = time.monotonic() + overrides.total_time
        attempt = 0
        while True:
            attempt += 1
            left = max(deadline - time.monotonic(), 0.001)
            timeout = (min(overrides.connect_timeout, left), min(overrides.read_timeout, left))
            record, response, failure = self._attempt(kind, target, params, token, attempt,
                                                      message_sid, timeout)
            if not overrides.retries(failure, attempt):
                break
            pause = self.backoff * 2 ** (attempt - 1)
            if time.monotonic() + pause >= deadline or self._stop_event.wait(pause):
                break  # the total time (tt) is spent, or the simulator is stopping
        if not record.ok:
            logger.warning("twilio simulator: %s callback for %s failed after %d attempt(s): %s",
                           kind, message_sid, record.attempt, record.error or record.status)
        return record, response

    def _attempt(self, kind, url, params, token, attempt, message_sid, timeout):
        signature = self.sign(url, params)
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": signature,
            "I-Twilio-Idempotency-Token": token,
            "User-Agent": "TwilioProxy/1.1",
            "X-Home-Region": "us1",
        }
        response, error = None, None
        try:
            with requests.Session() as session:
                session.trust_env = False  # never route 127.0.0.1 through an environment proxy
                response = session.post(url, data=urlencode(params), headers=headers,
                                        timeout=timeout, allow_redirects=False)
        except requests.RequestException as exc:
            error = exc
        record = self._record(kind, url, params, signature, token, attempt,
                              response.status_code if response is not None else None,
                              f"{type(error).__name__}: {error}" if error else None, message_sid)
        return record, response, _failure(response, error)

    def _record(self, kind, url, params, signature, token, attempt, status, error, message_sid):
        record = CallbackRecord(kind, url, dict(params), signature, token, attempt, status, error,
                                _now(), message_sid)
        with self._lock:
            self._log.append(record)
        return record

    def log(self) -> list[CallbackRecord]:
        with self._lock:
            return list(self._log)

    def clear(self) -> None:
        with self._lock:
            self._log.clear()


class DeliveryLifecycle:
    """Moves each outbound message along its delivery path and posts a status callback per step.

    The path is queued (only after "accepted") -> sending -> sent -> delivered, or ends in
    undelivered or failed with an error code. The stored status always moves forward in order;
    only the callbacks may be reordered or duplicated, as carriers and Twilio sometimes do.
    """

    def __init__(self, store: MessageStore, poster: CallbackPoster, scheduler: _TaskScheduler,
                 *, delay: float, out_of_order: bool, duplicate: bool,
                 extra_params: dict[str, str] | None, service_number: str) -> None:
        self._store, self._poster, self._scheduler = store, poster, scheduler
        self.delay, self.out_of_order, self.duplicate = delay, out_of_order, duplicate
        self.extra_params = dict(extra_params or {})
        self.service_number = service_number
        self._lock = threading.Lock()
        self._outcomes: dict[str, tuple[str, int | None]] = {}
        self.default_outcome: tuple[str, int | None] = ("delivered", None)
        self._generation = 0  # bumped by clear(), so queued steps of old messages do nothing
        self.lose_final = False  # final callbacks are never posted (the message still ends final)

    @staticmethod
    def outcome(status: str, error_code: int | None = None) -> tuple[str, int | None]:
        if status not in OUTCOME_DEFAULT_ERRORS:
            raise ValueError(f"outcome must be one of {sorted(OUTCOME_DEFAULT_ERRORS)}")
        if status in ("delivered", "sent") and error_code is not None:
            raise ValueError(f"a {status} message carries no error code")
        return status, error_code if error_code is not None else OUTCOME_DEFAULT_ERRORS[status]

    def set_outcome(self, to: str, status: str, error_code: int | None = None) -> None:
        with self._lock:
            self._outcomes[to] = self.outcome(status, error_code)

    def clear(self) -> None:
        with self._lock:
            self._outcomes.clear()
            self._generation += 1
        self.default_outcome = ("delivered", None)
        self.lose_final = False

    def begin(self, message: SimMessage) -> None:
        with self._lock:
            final, error_code = self._outcomes.get(message.to, self.default_outcome)
            generation = self._generation
        path: list[tuple[str, int | None]] = []
        if message.status == "accepted":
            path.append(("queued", None))  # the service has picked a sender
        path.append(("sending", None))
        if final in ("delivered", "undelivered"):
            path.append(("sent", None))
        path.append((final, error_code))
        if self.out_of_order:
            task = partial(self._advance_all_then_post_reversed, message.sid, path, generation)
        else:
            task = partial(self._advance_in_order, message.sid, path, generation)
        self._scheduler.submit(self.delay, task)

    def _stale(self, generation: int) -> bool:
        return generation != self._generation

    def _advance_in_order(self, sid, path, generation) -> None:
        if self._stale(generation):
            return
        snapshot = self._store.advance(sid, *path[0], self.service_number)
        if snapshot is None:
            return
        self._post_status(snapshot)
        if len(path) > 1:
            self._scheduler.submit(
                self.delay, partial(self._advance_in_order, sid, path[1:], generation))

    def _advance_all_then_post_reversed(self, sid, path, generation) -> None:
        if self._stale(generation):
            return
        snapshots = [self._store.advance(sid, *step, self.service_number) for step in path]
        self._post_chain([s for s in reversed(snapshots) if s is not None], generation)

    def _post_chain(self, snapshots, generation) -> None:
        if self._stale(generation) or not snapshots:
            return
        self._post_status(snapshots[0])
        if len(snapshots) > 1:
            self._scheduler.submit(
                self.delay, partial(self._post_chain, snapshots[1:], generation))

    def _post_status(self, message: SimMessage) -> None:
        if not message.status_callback:
            return
        if self.lose_final and message.status in FINAL_STATUSES:
            return  # the final callback is lost on its way: only a fetch by SID can tell

        params = self.status_params(message)
        token = uuid.uuid4().hex  # one per callback; a duplicate of it carries the same token
        for _ in range(2 if self.duplicate else 1):
            self._poster.deliver("status", message.status_callback, params, token, message.sid)

    def status_params(self, message: SimMessage) -> dict[str, str]:
        params = {
            "AccountSid": message.account_sid,
            "ApiVersion": API_VERSION,
            "From": message.from_ or "",
            "MessageSid": message.sid,
            "MessageStatus": message.status,
            "SmsSid": message.sid,
            "SmsStatus": message.status,
            "To": message.to,
        }
        if message.messaging_service_sid:
            params["MessagingServiceSid"] = message.messaging_service_sid
        if message.status in ("failed", "undelivered") and message.error_code is not None:
            params["ErrorCode"] = str(message.error_code)
        if message.status in ("delivered", "undelivered"):
            params["RawDlrDoneDate"] = message.date_updated.strftime("%y%m%d%H%M")
        params.update(self.extra_params)
        return params


# --- the API ------------------------------------------------------------------------------------


@dataclass
class _Reply:
    status: int
    payload: dict[str, Any] | None
    headers: dict[str, str] = field(default_factory=dict)
    # After the work is done: "drop" closes the connection unanswered, "hang" waits first.
    then: str | None = None

    @classmethod
    def error(cls, exc: TwilioApiError) -> "_Reply":
        headers = {"WWW-Authenticate": 'Basic realm="Twilio API"'} if exc.status == 401 else {}
        return cls(exc.status, exc.payload(), headers)


def _first(form: dict[str, list[str]], name: str) -> str:
    values = form.get(name)
    return values[0].strip() if values else ""


def _parse_date_filter(name: str, value: str) -> tuple[datetime, bool]:
    """Parse a DateSent filter value; the flag says whether it named a whole day."""
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), datetime.min.time(),
                                    timezone.utc), True
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)), False
    except ValueError:
        raise TwilioApiError(400, 20001, f"Invalid {name}: {value}") from None


class MessagesApi:
    """Turns one API request into a reply: auth, routing, create, fetch and list."""

    def __init__(self, sim: "TwilioSimulator") -> None:
        self._sim = sim

    def handle(self, method: str, path: str, headers: Any, body: bytes) -> _Reply:
        parts = urlsplit(path)
        query = parse_qs(parts.query, keep_blank_values=True)
        form = parse_qs(body.decode("utf-8"), keep_blank_values=True) if body else {}
        collection = _MESSAGES_PATH.match(parts.path)
        self._sim._count_call(method, collection is not None)
        try:
            self._authenticate(headers.get("Authorization"))
        except TwilioApiError as exc:
            if method == "POST" and collection:
                self._sim._ledger_failure(form, exc)
            return _Reply.error(exc)
        if self._sim.faults.unavailable:
            exc = TwilioApiError(503, 20503, "Service Unavailable")
            if method == "POST" and collection:
                self._sim._ledger.record(monotonic=time.monotonic(), sender=_first(form, "From") or
                                         _first(form, "MessagingServiceSid") or None, to=_first(form, "To") or None,
                                         sid=None, status=503, error_code=20503, fault="unavailable")
            return _Reply.error(exc)
        try:
            if collection and method == "POST":
                self._check_account(collection["account"], parts.path)
                return self._create(form)
            if collection and method == "GET":
                self._check_account(collection["account"], parts.path)
                return self._list(parts.path, query)
            single = _MESSAGE_PATH.match(parts.path)
            if single and method == "GET":
                self._check_account(single["account"], parts.path)
                return self._fetch(single["sid"], parts.path)
            if collection or single:
                raise TwilioApiError(405, 20004, "Method not allowed")
            raise self._not_found(parts.path)
        except TwilioApiError as exc:
            return _Reply.error(exc)

    def _authenticate(self, header: str | None) -> None:
        failure = TwilioApiError(401, 20003, "Authenticate",
                                 detail="Your AccountSid or AuthToken was incorrect.")
        if not header or not header.startswith("Basic "):
            raise failure
        try:
            user, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            raise failure from None
        good_user = hmac.compare_digest(user.encode(), self._sim.account_sid.encode())
        good_password = hmac.compare_digest(password.encode(), self._sim.auth_token.encode())
        if not (good_user and good_password):
            raise failure

    def _check_account(self, account_sid: str, path: str) -> None:
        if account_sid != self._sim.account_sid:
            raise self._not_found(path)

    @staticmethod
    def _not_found(path: str) -> TwilioApiError:
        return TwilioApiError(404, 20404, f"The requested resource {path} was not found")

    def _create(self, form: dict[str, list[str]]) -> _Reply:
        sim = self._sim
        to, from_ = _first(form, "To"), _first(form, "From")
        service_sid, body = _first(form, "MessagingServiceSid"), form.get("Body", [""])[0]
        media = [url for url in form.get("MediaUrl", []) if url]
        sender = from_ or service_sid or None
        attempted_at = time.monotonic()

        fault = sim.faults.decide()
        if fault in ("429", "500", "503"):
            exc = {
                "429": TwilioApiError(429, 20429, "Too Many Requests"),
                "500": TwilioApiError(500, 20500, "An internal server error has occurred"),
                "503": TwilioApiError(503, 20503, "Service Unavailable"),
            }[fault]
            sim._ledger.record(monotonic=attempted_at, sender=sender, to=to or None, sid=None,
                               status=exc.status, error_code=exc.code, fault=fault)
            return _Reply.error(exc)

        try:
            self._validate_create(to, from_, service_sid, body, media)
            validity = _validity_period(_first(form, "ValidityPeriod"))
            if not sim._limiter.try_acquire(sender, attempted_at):
                raise TwilioApiError(429, 20429, "Too Many Requests")
        except TwilioApiError as exc:
            sim._ledger.record(monotonic=attempted_at, sender=sender, to=to or None, sid=None,
                               status=exc.status, error_code=exc.code,
                               fault=None if fault == "ok" else fault)
            return _Reply.error(exc)

        now = _now()
        message = sim._store.add(SimMessage(
            sid=_new_sid("MM" if media else "SM"),
            account_sid=sim.account_sid,
            to=to,
            from_=from_ or None,
            messaging_service_sid=service_sid or None,
            body=body,
            status="queued" if from_ else "accepted",
            direction="outbound-api",
            num_segments=count_segments(body)[1],
            num_media=len(media),
            status_callback=_first(form, "StatusCallback") or None,
            date_created=now,
            date_updated=now,
            validity_period=validity,
        ))
        sim._lifecycle.begin(message)
        status = {"5xx_after_create": 500, "drop": None, "timeout": None}.get(fault, 201)
        sim._ledger.record(monotonic=attempted_at, sender=sender, to=to, sid=message.sid,
                           status=status, error_code=20500 if status == 500 else None,
                           fault=None if fault == "ok" else fault)
        logger.debug("twilio simulator: created %s to %s (%s)", message.sid,
                     mask_number(to), fault)
        if fault == "5xx_after_create":
            return _Reply.error(TwilioApiError(500, 20500, "An internal server error has occurred"))
        if fault in ("drop", "timeout"):
            return _Reply(0, None, then="drop" if fault == "drop" else "hang")
        return _Reply(201, message.to_resource())

    @staticmethod
    def _validate_create(to: str, from_: str, service_sid: str, body: str,
                         media: list[str]) -> None:
        if not to:
            raise TwilioApiError(400, 21604, "A 'To' phone number is required.")
        if not from_ and not service_sid:
            raise TwilioApiError(400, 21603, "A 'From' phone number is required.")
        if not body and not media:
            raise TwilioApiError(400, 21602, "Message body is required.")
        if len(body) > _MAX_BODY_CHARS:
            raise TwilioApiError(400, 21617, "The concatenated message body exceeds the "
                                             "1600 character limit.")
        if from_ in MAGIC_FROM_ERRORS:
            raise TwilioApiError(400, *MAGIC_FROM_ERRORS[from_])
        if from_ and not (_E164.match(from_) or _SHORT_CODE.match(from_)
                          or _ALPHANUMERIC_SENDER.match(from_)):
            raise TwilioApiError(400, 21212, f"The 'From' number {from_} is not a valid phone "
                                             "number, shortcode, or alphanumeric sender ID.")
        if service_sid and not _MESSAGING_SERVICE_SID.match(service_sid):
            raise TwilioApiError(400, 21701, f"The Messaging Service Sid {service_sid} is invalid.")
        if to in MAGIC_TO_ERRORS:
            raise TwilioApiError(400, *MAGIC_TO_ERRORS[to])
        if not _E164.match(to):
            raise TwilioApiError(400, 21211, f"The 'To' number {to} is not a valid phone number.")

    def _visible(self, message: SimMessage) -> bool:
        """Whether list and fetch show it yet (Twilio's read side may lag behind its creates)."""
        lag = self._sim.faults.list_lag
        return lag <= 0 or (_now() - message.date_created).total_seconds() >= lag

    def _fetch(self, sid: str, path: str) -> _Reply:
        message = self._sim._store.get(sid)
        if message is None or not self._visible(message):
            raise self._not_found(path)
        return _Reply(200, message.to_resource())

    def _list(self, path: str, query: dict[str, list[str]]) -> _Reply:
        filters = {name: _first(query, name)
                   for name in ("To", "From", "DateSent", "DateSent<", "DateSent>")
                   if _first(query, name)}
        try:
            page_size = min(max(int(_first(query, "PageSize") or _DEFAULT_PAGE_SIZE), 1),
                            _MAX_PAGE_SIZE)
            page = max(int(_first(query, "Page") or 0), 0)
        except ValueError:
            raise TwilioApiError(400, 20001, "Invalid PageSize or Page") from None
        date_filters = [(name, *_parse_date_filter(name, value))
                        for name, value in filters.items() if name.startswith("DateSent")]
        # DateSent names a day; the SDK sends even a date as midnight, "YYYY-MM-DDT00:00:00Z".
        date_filters = [(name, moment.replace(hour=0, minute=0, second=0), True)
                        if name == "DateSent" else (name, moment, whole_day)
                        for name, moment, whole_day in date_filters]
        matches = [m for m in reversed(self._sim._store.all())
                   if self._visible(m) and self._matches(m, filters, date_filters)]
        start = self._page_start(matches, _first(query, "PageToken"), page, page_size)
        items = matches[start:start + page_size]

        def page_uri(number: int, token: str | None = None) -> str:
            params = {**filters, "PageSize": page_size, "Page": number}
            if token:
                params["PageToken"] = token
            return f"{path}?{urlencode(params)}"

        has_next = start + len(items) < len(matches)
        return _Reply(200, {
            "end": start + max(len(items) - 1, 0),
            "first_page_uri": page_uri(0),
            "messages": [m.to_resource() for m in items],
            "next_page_uri": page_uri(page + 1, f"PA{items[-1].sid}") if has_next else None,
            "page": page,
            "page_size": page_size,
            "previous_page_uri": (page_uri(page - 1, f"PB{items[0].sid}")
                                  if page > 0 and items else None),
            "start": start,
            "uri": page_uri(page, _first(query, "PageToken") or None),
        })

    @staticmethod
    def _matches(message: SimMessage, filters: dict[str, str],
                 date_filters: list[tuple[str, datetime, bool]]) -> bool:
        if "To" in filters and message.to != filters["To"]:
            return False
        if "From" in filters and message.from_ != filters["From"]:
            return False
        # Compare at whole seconds, the precision the client sees and sends. Twilio's
        # "DateSent>" and "DateSent<" are inclusive; a bare date names the whole day.
        sent = message.sent_or_created.replace(microsecond=0)
        for name, moment, whole_day in date_filters:
            end = moment + timedelta(days=1) if whole_day else moment + timedelta(seconds=1)
            if name == "DateSent>" and sent < moment:
                return False
            if name == "DateSent<" and sent >= end:
                return False
            if name == "DateSent" and not moment <= sent < end:
                return False
        return True

    def _page_start(self, matches: list[SimMessage], token: str, page: int,
                    page_size: int) -> int:
        """Where a page starts. A token names the sid the page follows (PA) or precedes (PB),
        which keeps paging stable while new messages arrive; without one, Page counts."""
        anchor = self._sim._store.get(token[2:]) if len(token) > 2 else None
        if anchor is None:
            return min(page * page_size, len(matches))
        if token.startswith("PA"):
            return next((i for i, m in enumerate(matches) if m.seq < anchor.seq), len(matches))
        before = next((i for i, m in enumerate(matches) if m.seq <= anchor.seq), len(matches))
        return max(before - page_size, 0)


class _ApiRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real API
    server_version = "TwilioSimulator/1.0"
    sys_version = ""
    timeout = 30  # idle keep-alive connections end on their own
    disable_nagle_algorithm = True  # headers and body go out in two writes; don't stall on ACKs

    server: "_ApiServer"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._serve("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._serve("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        sim = self.server.sim
        reply = sim._api.handle(method, self.path, self.headers, body)
        if sim.faults.latency > 0 and sim._stop_event.wait(sim.faults.latency):
            reply = _Reply(0, None, then="drop")  # stopping: don't hold the connection
        if reply.then == "hang":
            sim._stop_event.wait(sim.faults.hang_seconds)
        if reply.then in ("drop", "hang"):
            self.close_connection = True  # nothing written: the client sees the socket close
            return
        data = json.dumps(reply.payload).encode("utf-8")
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Twilio-Request-Id", _new_sid("RQ"))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # request lines carry phone numbers in their query strings


class _ApiServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that names its threads and can close open connections on stop."""

    daemon_threads = True
    request_queue_size = 128  # benchmarks open many connections at once

    def __init__(self, address: tuple[str, int], sim: "TwilioSimulator") -> None:
        self.sim = sim
        self._conn_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._handler_threads: list[threading.Thread] = []
        super().__init__(address, _ApiRequestHandler)

    def process_request(self, request, client_address) -> None:
        thread = threading.Thread(target=self.process_request_thread,
                                  args=(request, client_address),
                                  name="twilio-sim-http", daemon=True)
        with self._conn_lock:
            self._connections.add(request)
            self._handler_threads = [t for t in self._handler_threads if t.is_alive()]
            self._handler_threads.append(thread)
        thread.start()

    def shutdown_request(self, request) -> None:
        with self._conn_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self, timeout: float) -> None:
        with self._conn_lock:
            connections, threads = list(self._connections), list(self._handler_threads)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in threads:
            thread.join(timeout)


# --- the simulator ------------------------------------------------------------------------------


class TwilioSimulator:
    """A Twilio Messages API on 127.0.0.1, with callbacks, inbound replies and fault injection."""

    def __init__(self, host: str = LOOPBACK, port: int = 0, *,
                 account_sid: str = DEFAULT_ACCOUNT_SID,
                 auth_token: str = DEFAULT_AUTH_TOKEN,
                 mps_limit: float | None = None,
                 callback_delay: float = 0.01,
                 callbacks_out_of_order: bool = False,
                 duplicate_callbacks: bool = False,
                 callback_extra_params: dict[str, str] | None = None,
                 service_number: str = DEFAULT_SERVICE_NUMBER,
                 fault_seed: int = 0,
                 callback_workers: int = 8) -> None:
        if host not in (LOOPBACK, "localhost"):
            raise ValueError("the Twilio simulator binds to 127.0.0.1 only")
        self.account_sid, self.auth_token = account_sid, auth_token
        self._address = (LOOPBACK, port)
        self._defaults = dict(mps_limit=mps_limit, callback_delay=callback_delay,
                              callbacks_out_of_order=callbacks_out_of_order,
                              duplicate_callbacks=duplicate_callbacks,
                              callback_extra_params=dict(callback_extra_params or {}))
        self._stop_event = threading.Event()
        self._store = MessageStore()
        self._ledger = Ledger()
        self._limiter = SenderLimiter(mps_limit)
        self.faults = Faults(fault_seed)
        self._scheduler = _TaskScheduler(callback_workers)
        self._poster = CallbackPoster(auth_token, self._stop_event)
        self._lifecycle = DeliveryLifecycle(
            self._store, self._poster, self._scheduler, delay=callback_delay,
            out_of_order=callbacks_out_of_order, duplicate=duplicate_callbacks,
            extra_params=callback_extra_params, service_number=service_number)
        self._api = MessagesApi(self)
        self._server: _ApiServer | None = None
        self._thread: threading.Thread | None = None
        self._running = False
        self._calls_lock = threading.Lock()
        self._api_calls: defaultdict[str, int] = defaultdict(int)

    # lifecycle

    def start(self) -> "TwilioSimulator":
        if not self._running:
            self._running = True
            self._listen()
            self._scheduler.start()
        return self

    def stop(self) -> None:
        if not self._running:
            return
        self._stop_event.set()
        self._close()
        self._scheduler.stop()
        self._running = False

    def refuse_connections(self) -> None:
        """An outage at the network's edge: nothing listens on the port, so every connection is refused
        (and open ones are closed). Callbacks already scheduled still go out."""
        if self._server is not None:
            self._close()

    def accept_connections(self) -> None:
        """The outage is over: listen again on the same port."""
        if self._running and self._server is None:
            self._listen()

    def _listen(self) -> None:
        self._server = _ApiServer(self._address, self)
        self._address = (LOOPBACK, self._server.server_address[1])  # the same port after an outage
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="twilio-sim-server", daemon=True)
        self._thread.start()

    def _close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.close_connections(timeout=2.0)
        server.server_close()
        if self._thread:
            self._thread.join(2.0)

    def __enter__(self) -> "TwilioSimulator":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if not self._running:
            raise RuntimeError("the simulator is not running; call start() first")
        return f"http://{LOOPBACK}:{self._address[1]}"

    def reset(self) -> None:
        """Forget messages, ledger, callbacks, outcomes and faults; restore constructor options."""
        self._scheduler.clear()
        self._lifecycle.clear()
        self._scheduler.wait_idle(2.0)  # let a post in flight land before the log is cleared
        self._store.clear()
        self._ledger.clear()
        self._poster.clear()
        with self._calls_lock:
            self._api_calls.clear()
        self._limiter.clear(self._defaults["mps_limit"])
        self.faults.clear()
        self.accept_connections()
        self.callback_delay = self._defaults["callback_delay"]
        self.callbacks_out_of_order = self._defaults["callbacks_out_of_order"]
        self.duplicate_callbacks = self._defaults["duplicate_callbacks"]
        self.callback_extra_params = dict(self._defaults["callback_extra_params"])

    def wait_until_idle(self, timeout: float = 5.0) -> bool:
        """Wait until every scheduled delivery step and callback has run."""
        return self._scheduler.wait_idle(timeout)

    # configuration

    def set_mps_limit(self, limit: float | None, sender: str | None = None) -> None:
        """Set the messages-per-second ceiling for one sender, or the default for all."""
        self._limiter.set_limit(limit, sender)

    def set_outcome(self, to: str, status: str, error_code: int | None = None) -> None:
        """Decide how messages to `to` end: delivered, sent, undelivered or failed."""
        self._lifecycle.set_outcome(to, status, error_code)

    def set_default_outcome(self, status: str, error_code: int | None = None) -> None:
        self._lifecycle.default_outcome = DeliveryLifecycle.outcome(status, error_code)

    callback_delay = property(lambda self: self._lifecycle.delay,
                              lambda self, v: setattr(self._lifecycle, "delay", v),
                              doc="Seconds between delivery steps (and their callbacks).")
    callbacks_out_of_order = property(lambda self: self._lifecycle.out_of_order,
                                      lambda self, v: setattr(self._lifecycle, "out_of_order", v),
                                      doc="Post each message's callbacks in reverse order.")
    duplicate_callbacks = property(lambda self: self._lifecycle.duplicate,
                                   lambda self, v: setattr(self._lifecycle, "duplicate", v),
                                   doc="Post each callback twice with the same idempotency token.")
    lose_final_callbacks = property(lambda self: self._lifecycle.lose_final,
                                    lambda self, v: setattr(self._lifecycle, "lose_final", v),
                                    doc="Never post final callbacks (delivered, undelivered, failed).")
    callback_extra_params = property(lambda self: self._lifecycle.extra_params,
                                     lambda self, v: setattr(self._lifecycle, "extra_params", v),
                                     doc="Extra form params added to every status callback.")

    # what happened

    @property
    def ledger(self) -> list[LedgerEntry]:
        return self._ledger.entries()

    @property
    def callback_log(self) -> list[CallbackRecord]:
        return self._poster.log()

    @property
    def excess(self) -> dict[str, int]:
        """Creates rejected per sender for exceeding its MPS limit."""
        return self._limiter.excess()

    def message(self, sid: str) -> SimMessage | None:
        return self._store.get(sid)

    def messages(self) -> list[SimMessage]:
        """Every message, outbound and inbound, oldest first."""
        return self._store.all()

    def created(self, to: str | None = None, sender: str | None = None) -> list[SimMessage]:
        """Outbound messages actually created (whether or not the client saw the reply)."""
        return [m for m in self._store.all()
                if m.direction == "outbound-api"
                and (to is None or m.to == to)
                and (sender is None or sender in (m.from_, m.messaging_service_sid))]

    def callbacks(self, sid: str | None = None, kind: str = "status") -> list[CallbackRecord]:
        return [r for r in self._poster.log()
                if r.kind == kind and (sid is None or r.message_sid == sid)]

    def max_per_second(self, sender: str) -> int:
        """The most creates accepted for `sender` within any one-second window."""
        times = [e.monotonic for e in self._ledger.entries() if e.created and e.sender == sender]
        best, first = 0, 0
        for last, moment in enumerate(times):
            while moment - times[first] >= 1.0:
                first += 1
            best = max(best, last - first + 1)
        return best

    def _count_call(self, method: str, collection: bool) -> None:
        kind = ("create" if method == "POST" else "list") if collection else "fetch"
        with self._calls_lock:
            self._api_calls[kind] += 1

    @property
    def api_calls(self) -> dict[str, int]:
        """API requests received so far, by kind: create, list, fetch (answered or not)."""
        with self._calls_lock:
            return dict(self._api_calls)

    def _ledger_failure(self, form: dict[str, list[str]], exc: TwilioApiError) -> None:
        self._ledger.record(monotonic=time.monotonic(),
                            sender=_first(form, "From") or _first(form, "MessagingServiceSid")
                            or None,
                            to=_first(form, "To") or None, sid=None, status=exc.status,
                            error_code=exc.code, fault=None)

    # inbound

    def send_inbound(self, url: str, from_: str, to: str, body: str, *, token: str | None = None,
                     message_sid: str | None = None, **extra: str) -> tuple[int, dict[str, str], str]:
        """Post a signed inbound SMS webhook to `url`, as Twilio does when someone replies.

        `url` is the inbound webhook as registered, with any connection overrides: Twilio retries
        as they say, with the same I-Twilio-Idempotency-Token. Returns the last answer's (status,
        headers, body), so the caller can read its TwiML; raises if no attempt got an answer.
        Extra keyword params are added to (or override) the form, e.g. FromCountry="CA" or
        FromCity="". A redelivery (Twilio posting the message again) repeats the message_sid and
        the token.
        """
        sid = message_sid or _new_sid("SM")
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": API_VERSION,
            "Body": body,
            "From": from_,
            "FromCity": "",
            "FromCountry": _country(from_),
            "FromState": "",
            "FromZip": "",
            "MessageSid": sid,
            "NumMedia": "0",
            "NumSegments": str(count_segments(body)[1]),
            "SmsMessageSid": sid,
            "SmsSid": sid,
            "SmsStatus": "received",
            "To": to,
            "ToCity": "",
            "ToCountry": _country(to),
            "ToState": "",
            "ToZip": "",
            **{name: str(value) for name, value in extra.items()},
        }
        now = _now()
        self._store.add(SimMessage(
            sid=sid, account_sid=self.account_sid, to=to, from_=from_,
            messaging_service_sid=params.get("MessagingServiceSid"), body=body,
            status="received", direction="inbound", num_segments=int(params["NumSegments"]),
            num_media=int(params["NumMedia"] or 0), status_callback=None, date_created=now,
            date_updated=now, date_sent=now))
        record, response = self._poster.deliver("inbound", url, params, token or uuid.uuid4().hex,
                                                sid)
        if response is None:
            raise requests.ConnectionError(record.error)
        return response.status_code, dict(response.headers), response.text


_COUNTRY_PREFIXES = (("+1", "US"), ("+44", "GB"), ("+61", "AU"), ("+33", "FR"), ("+49", "DE"),
                     ("+34", "ES"), ("+39", "IT"), ("+31", "NL"), ("+353", "IE"), ("+64", "NZ"))


def _country(number: str) -> str:
    matches = [country for prefix, country in _COUNTRY_PREFIXES if number.startswith(prefix)]
    return matches[0] if matches else ""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m local.twilio_sim",
                                     description="Run the Twilio simulator on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--mps", type=float, default=None, help="per-sender MPS limit")
    parser.add_argument("--callback-delay", type=float, default=0.5)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    with TwilioSimulator(port=args.port, mps_limit=args.mps,
                         callback_delay=args.callback_delay) as sim:
        print(f"Twilio simulator at {sim.base_url}", flush=True)
        print(f"account SID {sim.account_sid}; auth token: local.twilio_sim.DEFAULT_AUTH_TOKEN",
              flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("stopping", flush=True)


if __name__ == "__main__":
    main()
