"""A recipient's delivery status, and the rule that it only ever moves forward.

Ranks order the statuses. A transition is applied only when it raises the rank, so callbacks that
arrive late, out of order or twice cannot move a message backwards or count it twice. The only
moves back are named pre-send resets (a released claim, an unknown that Twilio confirmed it never
received, an operator's resend of an unresolved one).
"""

from __future__ import annotations

from enum import Enum


class Status(str, Enum):
    IMPORTED = "imported"  # in the audience, not yet claimed by the sender
    CLAIMED = "claimed"  # the sender owns it: Twilio is being called
    UNKNOWN = "unknown"  # Twilio may or may not have it; reconciled, never resent blindly
    # Reconciliation could not tell in time whether Twilio has it: only an operator resends it.
    UNRESOLVED = "unresolved"
    QUEUED = "queued"  # Twilio accepted it (queued, accepted or scheduled)
    SENDING = "sending"
    SENT = "sent"
    # Twilio still had no final status for it long after the send (its final callback was lost, or the
    # carrier never confirms): visible, and a late callback still moves it on.
    AWAITING_FINAL_STATUS = "awaiting_final_status"
    DELIVERED = "delivered"
    # A message of several segments of which only some reached the handset: final, and flagged.
    PARTIALLY_DELIVERED = "partially_delivered"
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
        """Nothing moves it any more."""
        return self.rank == TERMINAL_RANK

    @property
    def is_settled(self) -> bool:
        """Its run need not wait for it: terminal, or visibly left for an operator or a late callback."""
        return self.is_terminal or self in (Status.UNRESOLVED, Status.AWAITING_FINAL_STATUS)

    @property
    def in_flight(self) -> bool:
        """Twilio has it and its final status is still to come."""
        return self in (Status.QUEUED, Status.SENDING, Status.SENT)


TERMINAL_RANK = 60

_RANK = {
    Status.IMPORTED: 0,
    Status.CLAIMED: 10,
    Status.UNKNOWN: 20,
    Status.UNRESOLVED: 25,
    Status.QUEUED: 30,
    Status.SENDING: 40,
    Status.SENT: 50,
    Status.AWAITING_FINAL_STATUS: 55,
    Status.DELIVERED: TERMINAL_RANK,
    Status.PARTIALLY_DELIVERED: TERMINAL_RANK,
    Status.UNDELIVERED: TERMINAL_RANK,
    Status.FAILED: TERMINAL_RANK,
    Status.SKIPPED_OPTED_OUT: TERMINAL_RANK,
    Status.EXCLUDED: TERMINAL_RANK,
    Status.CANCELLED: TERMINAL_RANK,
}

# Recipients of a run that still wait to be sent or to have their send settled.
WAITING_TO_SEND = (Status.IMPORTED, Status.CLAIMED, Status.UNKNOWN)
# Recipients a run waits for before it completes: unsent, unsettled, or on their way.
UNSETTLED = tuple(status for status in Status if not status.is_settled)

# Every status twilio-python's MessageInstance.Status names, in our terms, with what it means for an
# outbound invitation. None: it says nothing about an outbound message's delivery.
TWILIO_STATUSES: dict[str, tuple[Status | None, str]] = {
    "accepted": (Status.QUEUED, "a Messaging Service took it and is choosing a sender"),
    "scheduled": (Status.QUEUED, "Twilio holds it for a scheduled send"),
    "queued": (Status.QUEUED, "waiting in Twilio's queue to go to the carrier"),
    "sending": (Status.SENDING, "being handed to the carrier"),
    "sent": (Status.SENT, "the carrier took it; a delivery receipt may follow"),
    "delivered": (Status.DELIVERED, "the carrier confirmed delivery to the handset"),
    "read": (Status.DELIVERED, "delivered and read (channels with read receipts)"),
    "partially_delivered": (Status.PARTIALLY_DELIVERED, "only some segments of a multi-segment message arrived"),
    "undelivered": (Status.UNDELIVERED, "the carrier could not deliver it"),
    "failed": (Status.FAILED, "Twilio could not send it"),
    "canceled": (Status.FAILED, "a scheduled or queued message was cancelled before it was sent"),
    "receiving": (None, "an inbound message being received: not an outbound status"),
    "received": (None, "an inbound message: not an outbound status"),
}


def from_twilio(twilio_status: str | None) -> Status | None:
    """Our status for one of Twilio's, or None when Twilio's says nothing we can apply (the caller logs,
    counts and keeps what it has: an unknown status never raises inside a loop over many items)."""
    known = TWILIO_STATUSES.get((twilio_status or "").strip().lower())
    return known[0] if known else None


def moves_forward(current: Status, new: Status) -> bool:
    return new.rank > current.rank


COUNTED_STATUSES = tuple(Status)
