"""Typed domain errors. Each carries a stable code and a message safe to show a caller.

HTTP handlers map them to responses in one place (smsinvite.http_api); commands return them as
`{"ok": false, "error": {...}}`. Neither ever echoes `str()` of an unexpected exception.
"""

from __future__ import annotations


class SmsInviteError(Exception):
    code = "error"
    http_status = 400

    def __init__(self, message: str, *, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []

    def as_dict(self) -> dict:
        body = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class ConfigurationError(SmsInviteError):
    """The function's environment is wrong; an operator must fix the deployment."""

    code = "configuration_error"
    http_status = 500


class InvalidInput(SmsInviteError):
    code = "invalid_input"
    http_status = 400


class NotFound(SmsInviteError):
    code = "not_found"
    http_status = 404


class Conflict(SmsInviteError):
    code = "conflict"
    http_status = 409


class ForbiddenSignature(SmsInviteError):
    """A webhook whose X-Twilio-Signature does not match: forged, tampered or misrouted."""

    code = "invalid_signature"
    http_status = 403


class TemporarilyUnavailable(SmsInviteError):
    """A dependency throttled or failed; the caller should retry (Twilio retries on non-2xx)."""

    code = "temporarily_unavailable"
    http_status = 503


class Unauthorized(SmsInviteError):
    """A survey-platform call without the right API key."""

    code = "unauthorized"
    http_status = 401


class Gone(SmsInviteError):
    """The code existed but can no longer be used: it expired, or its campaign closed."""

    code = "gone"
    http_status = 410


class TooManyRequests(SmsInviteError):
    """Too many failed look-ups from one address (or from everyone): guessing codes is slowed down."""

    code = "too_many_requests"
    http_status = 429
