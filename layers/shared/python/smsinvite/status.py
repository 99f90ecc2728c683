"""A recipient's delivery status, and the rule that it only ever moves forward.

Ranks order the statuses. A transition is applied only when it raises the rank, so callbacks that
arrive late, out of order or twice cannot move a message backwards or count it twice.
"""

from __future__ import annotations

from enum import Enum


class Status(str, Enum):
    IMPORTED = "imported"  # in the audience, not yet claimed by the sender
    CLAIMED = "claimed"  # the sender owns it: Twilio is being called
    UNKNOWN = "unknown"  # Twilio may or may not have it; reconciled, never resent blindly
    QUEUED = "queued"  # Twilio accepted it (queued or accepted)
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    FAILED = "failed"
    SKIPPED_OPTED_OUT = "skipped_opted_out"
    EXCLUDED = "excluded"  # left out by the preparation (missing field, rules); failure_reason says why
    CANCELLED = "cancelled"  # the campaign was cancelled before this invitation was sent

    @property
    def rank(self) -> int:
        return _RANK[self]

    @property
    def is_terminal(self) -> bool:
        return self.rank == TERMINAL_RANK


TERMINAL_RANK = 6

_RANK = {
    Status.IMPORTED: 0,
    Status.CLAIMED: 1,
    Status.UNKNOWN: 2,
    Status.QUEUED: 3,
    Status.SENDING: 4,
    Status.SENT: 5,
    Status.DELIVERED: TERMINAL_RANK,
    Status.UNDELIVERED: TERMINAL_RANK,
    Status.FAILED: TERMINAL_RANK,
    Status.SKIPPED_OPTED_OUT: TERMINAL_RANK,
    Status.EXCLUDED: TERMINAL_RANK,
    Status.CANCELLED: TERMINAL_RANK,
}

# Twilio's message statuses (REST resource and status callbacks) in our terms.
_FROM_TWILIO = {
    "accepted": Status.QUEUED,
    "scheduled": Status.QUEUED,
    "queued": Status.QUEUED,
    "sending": Status.SENDING,
    "sent": Status.SENT,
    "delivered": Status.DELIVERED,
    "read": Status.DELIVERED,
    "undelivered": Status.UNDELIVERED,
    "failed": Status.FAILED,
    "canceled": Status.FAILED,
}


def from_twilio(twilio_status: str) -> Status:
    try:
        return _FROM_TWILIO[twilio_status.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown Twilio message status {twilio_status!r}") from None


def moves_forward(current: Status, new: Status) -> bool:
    return new.rank > current.rank


COUNTED_STATUSES = tuple(Status)
