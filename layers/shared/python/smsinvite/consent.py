"""Consent: what a person agreed to, when and from where, kept as a ledger that is only appended to.

The suppression list is what the sender obeys; the ledger is why. Every change of one is written in
the same transaction as its ledger entry (smsinvite.store), so neither exists without the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum


class ConsentEvent(str, Enum):
    OPT_IN = "opt_in"  # asked to subscribe (double opt-in: not yet confirmed)
    CONFIRMATION = "confirmation"  # replied YES to a pending subscription
    OPT_OUT = "opt_out"  # STOP, an unsubscribe, a blocklist row, or the carrier says the person opted out
    RESUBSCRIBE = "resubscribe"  # START after an opt-out
    LAPSED = "lapsed"  # a pending subscription was never confirmed
    UNDELIVERABLE = "undeliverable"  # the carrier says the number is dead or unreachable for good


class ConsentSource(str, Enum):
    KEYWORD = "keyword"
    COMMAND = "command"
    IMPORT = "import"
    CARRIER_ERROR = "carrier_error"
    EXPIRY = "expiry"


class SuppressionReason(str, Enum):
    BLOCKLIST = "blocklist"
    OPTED_OUT = "opted_out"
    UNDELIVERABLE = "undeliverable"
    ERASED = "erased"


# Only a person's own opt-out is lifted by their START; a blocklist, a dead number or an erasure stays.
LIFTED_BY_START = frozenset({SuppressionReason.OPTED_OUT.value})


@dataclass(frozen=True)
class ConsentEntry:
    phone: str
    event: ConsentEvent
    source: ConsentSource
    at: datetime
    list_id: str | None = None
    scope: str | None = None
    message_sid: str | None = None
    text: str | None = None
    detail: str | None = None
    # Set when the same event may be recorded again (a callback retried): the entry is then written once.
    key: str | None = None


LEDGER_COLUMNS = ("at", "phone", "event", "source", "list_id", "scope", "message_sid", "text", "detail")
