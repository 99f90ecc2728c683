"""The one Twilio gateway: builds the client, sends, lists, classifies errors and checks signatures.

Error classes drive the at-most-once promise:
- definite: Twilio refused the message (most 4xx). Never retried.
- retryable: Twilio certainly did not take it (429, or the connection was never made). Retry later.
- ambiguous: Twilio may have taken it (5xx, a read timeout, a dropped connection). Never resent
  blindly; the recipient is marked unknown and reconciled against Twilio's message list.

Twilio's error text quotes numbers ("The 'To' number +1... is not a valid phone number.") and its
request URLs carry them in the query, so a failure leaves the gateway as a TwilioSendError that holds
only the kind, Twilio's code, the HTTP status and the exception's type; nothing is chained to it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from twilio.twiml.messaging_response import MessagingResponse

from smsinvite.aws_clients import secrets_provider
from smsinvite.settings import Settings

TWILIO_API_ORIGIN = "https://api.twilio.com"
AUTH_TOKEN_MAX_AGE_SECONDS = 300
# Twilio retries a webhook only as its URL's connection overrides (the fragment) say; by default it
# retries a failed connection once and a 5xx never. These ask for up to 5 retries of a failed
# connection or a 5xx, within Twilio's 15 s for all attempts. Twilio posts to the URL without the
# fragment and leaves it out of the signature, so the signature check is unchanged.
# https://www.twilio.com/docs/usage/webhooks/webhooks-connection-overrides
CONNECTION_OVERRIDES = "rc=5&rp=ct,5xx"

# The SDK logs request bodies (numbers, message text) at INFO; keep them out of the logs.
logging.getLogger("twilio.http_client").setLevel(logging.WARNING)


class ErrorKind(str, Enum):
    DEFINITE = "definite"
    RETRYABLE = "retryable"
    AMBIGUOUS = "ambiguous"


class TwilioSendError(Exception):
    def __init__(self, kind: ErrorKind, *, code: int | None, http_status: int | None, reason: str) -> None:
        super().__init__(f"{kind.value}: {reason}" + (f" (HTTP {http_status})" if http_status else ""))
        self.kind = kind
        self.code = code
        self.http_status = http_status
        self.reason = reason


@dataclass(frozen=True)
class AcceptedMessage:
    sid: str
    status: str
    num_segments: int | None


@dataclass(frozen=True)
class SentMessage:
    """A message as Twilio's list shows it, for reconciliation."""

    sid: str
    to: str
    status: str
    body: str | None
    date_created: datetime | None
    error_code: int | None


class _RedirectingHttpClient(TwilioHttpClient):
    """Sends the SDK's requests to another origin (the local Twilio simulator); the rest is the real SDK."""

    def __init__(self, api_base_url: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.api_base_url = api_base_url.rstrip("/")
        # A local endpoint is never reached through a proxy from the environment.
        self.session.trust_env = False

    def request(self, method, url, *args, **kwargs):
        if url.startswith(TWILIO_API_ORIGIN):
            url = self.api_base_url + url[len(TWILIO_API_ORIGIN):]
        return super().request(method, url, *args, **kwargs)


def auth_token(settings: Settings) -> str:
    """The auth token from Secrets Manager, cached per container for a few minutes."""
    return secrets_provider().get(settings.twilio_auth_token_secret, max_age=AUTH_TOKEN_MAX_AGE_SECONDS)


@functools.lru_cache(maxsize=4)
def _client(account_sid: str, token: str, api_base_url: str, timeout: float) -> Client:
    if api_base_url:
        http_client = _RedirectingHttpClient(api_base_url, timeout=timeout)
    else:
        http_client = TwilioHttpClient(timeout=timeout)
    return Client(account_sid, token, http_client=http_client)


def classify(exc: Exception) -> TwilioSendError:
    if isinstance(exc, TwilioRestException):
        status, code = exc.status, exc.code
        reason = f"twilio_{code}" if code else f"http_{status}"
        if status == 429 or code == 20429:
            return TwilioSendError(ErrorKind.RETRYABLE, code=code, http_status=status, reason=reason)
        if status and status >= 500:
            return TwilioSendError(ErrorKind.AMBIGUOUS, code=code, http_status=status, reason=reason)
        return TwilioSendError(ErrorKind.DEFINITE, code=code, http_status=status, reason=reason)
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return TwilioSendError(ErrorKind.RETRYABLE, code=None, http_status=None, reason="connect_timeout")
    if isinstance(exc, requests.exceptions.ConnectionError) and _never_connected(exc):
        return TwilioSendError(ErrorKind.RETRYABLE, code=None, http_status=None, reason="connection_refused")
    if isinstance(exc, (requests.exceptions.RequestException, TwilioException)):
        return TwilioSendError(ErrorKind.AMBIGUOUS, code=None, http_status=None, reason=type(exc).__name__)
    raise exc


def _never_connected(exc: requests.exceptions.ConnectionError) -> bool:
    """True when the request provably never left: the TCP connection itself failed."""
    from urllib3.exceptions import NewConnectionError

    cause = exc.args[0] if exc.args else None
    reason = getattr(cause, "reason", cause)
    return isinstance(reason, NewConnectionError)


class TwilioGateway:
    def __init__(self, client: Client) -> None:
        self._client = client

    @classmethod
    def from_settings(cls, settings: Settings) -> "TwilioGateway":
        token = auth_token(settings)
        return cls(
            _client(
                settings.twilio_account_sid,
                token,
                settings.twilio_api_base_url,
                settings.twilio_timeout_seconds,
            )
        )

    def send(
        self,
        *,
        to: str,
        body: str,
        sender: str,
        status_callback: str | None,
        validity_period: int | None = None,
    ) -> AcceptedMessage:
        params: dict = {"to": to, "body": body}
        if sender.startswith("MG"):
            params["messaging_service_sid"] = sender
        else:
            params["from_"] = sender
        if status_callback:
            params["status_callback"] = status_callback
        if validity_period:
            params["validity_period"] = validity_period
        try:
            message = self._client.messages.create(**params)
        except Exception as exc:  # noqa: BLE001 - every failure is classified, none escapes raw
            failure = classify(exc)
        else:
            segments = int(message.num_segments) if message.num_segments not in (None, "") else None
            return AcceptedMessage(sid=message.sid, status=message.status, num_segments=segments)
        raise failure  # outside the except: Python chains nothing of the SDK's exception to it

    def messages_to(self, to: str, *, since: datetime) -> list[SentMessage]:
        """Twilio's messages to a number created since a moment, newest first.

        No DateSent filter: a message still queued at Twilio has no date_sent yet, and missing it
        would make a sent invitation look unsent.
        """
        found = []
        try:
            for message in self._client.messages.stream(to=to, page_size=50, limit=500):
                created = message.date_created
                if created is not None and created < since:
                    break
                found.append(_sent_message(message))
        except Exception as exc:  # noqa: BLE001
            failure = classify(exc)
        else:
            return found
        raise failure  # outside the except: Python chains nothing of the SDK's exception to it

    def fetch(self, sid: str) -> SentMessage | None:
        """One message as Twilio has it now, or None when Twilio has no message with this SID."""
        try:
            message = self._client.messages(sid).fetch()
        except Exception as exc:  # noqa: BLE001 - every failure is classified, none escapes raw
            if isinstance(exc, TwilioRestException) and exc.status == 404:
                return None
            failure = classify(exc)
        else:
            return _sent_message(message)
        raise failure  # outside the except: nothing of the SDK's exception is chained to it


def _sent_message(message) -> SentMessage:
    return SentMessage(
        sid=message.sid,
        to=message.to,
        status=message.status,
        body=message.body,
        date_created=message.date_created,
        error_code=int(message.error_code) if message.error_code else None,
    )


class FormParams(dict):
    """A form body whose keys may repeat, in the shape RequestValidator reads (`getall`)."""

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__()
        for key, value in pairs:
            self.setdefault(key, []).append(value)

    def getall(self, key: str) -> list[str]:
        return list(self[key])

    def first(self, key: str, default: str = "") -> str:
        values = self.get(key)
        return values[0] if values else default

    def flat(self) -> Mapping[str, str]:
        return {key: values[0] for key, values in self.items()}


def signature_is_valid(token: str, url: str, params: FormParams, signature: str | None) -> bool:
    if not signature:
        return False
    return RequestValidator(token).validate(url, params, signature)


def twiml_reply(text: str | None) -> str:
    """A TwiML answer to an inbound message: one message back, or nothing."""
    response = MessagingResponse()
    if text:
        response.message(text)
    return response.to_xml()
