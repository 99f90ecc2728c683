"""The throttle's arithmetic: send slots on lanes shared by every sender instance.

Time-slot reservation, not a token bucket: each lane (a sender's ceiling, a campaign's rate) keeps
the earliest time its next message may go, `next_at`. A batch reserves consecutive slots from
max(now, next_at) on, spaced by the slowest lane's interval, and moves every lane's `next_at` past
its last slot in one conditional write. Why slots: a token bucket lets a full bucket go out at
once, which a carrier's sliding one-second window counts against the ceiling; slots never bunch,
so no one-second window ever holds more than the ceiling, across any number of instances.

A sender lane is spaced 2.5% wider than its ceiling: R + 1 sends then need 1.025 s, so network and
scheduling jitter of up to 25 ms cannot put R + 1 into one second. A send that would go out later
than LATE_BUDGET after its slot takes a fresh slot instead (smsinvite.sending).

Pure: the lanes' storage is smsinvite.lanes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

CEILING_MARGIN = 0.975
# How late after its slot a send may still go out; later, it takes a new slot (half the margin's slack).
LATE_BUDGET = 0.012


@dataclass(frozen=True)
class Lane:
    key: str
    per_second: float

    @property
    def interval(self) -> float:
        return 1.0 / self.per_second


def sender_lane(sender: str, ceiling_per_second: float) -> Lane:
    return Lane(f"sender#{sender}", ceiling_per_second * CEILING_MARGIN)


def lanes_for(campaign_id: str, rate_per_second: float, sender: str, ceiling_per_second: float) -> tuple[Lane, ...]:
    """The sender's lane, and the campaign's own when its rate is below what the sender allows."""
    sender_limit = sender_lane(sender, ceiling_per_second)
    if rate_per_second >= sender_limit.per_second:
        return (sender_limit,)
    return (sender_limit, Lane(f"campaign#{campaign_id}", rate_per_second))


@dataclass(frozen=True)
class Slots:
    start: float  # epoch seconds
    spacing: float
    count: int

    def at(self, index: int) -> float:
        return self.start + index * self.spacing


@dataclass(frozen=True)
class Reservation:
    slots: Slots
    next_at: Mapping[str, float]  # each lane's new next_at


@dataclass(frozen=True)
class Busy:
    """The lanes are taken until `until`: longer than the caller may wait."""

    until: float


def plan(
    lanes: Sequence[Lane], next_at: Mapping[str, float | None], *, count: int, now: float, max_wait: float
) -> Reservation | Busy:
    """Up to `count` slots that all start within `max_wait` of now, or Busy when even the first cannot."""
    if count < 1:
        raise ValueError("count must be at least 1")
    spacing = max(lane.interval for lane in lanes)
    start = max([now, *(t for t in (next_at.get(lane.key) for lane in lanes) if t is not None)])
    waiting = start - now
    if waiting > max_wait:
        return Busy(until=start)
    fits = 1 + math.floor((max_wait - waiting) / spacing + 1e-9)
    taken = min(count, fits)
    last = start + (taken - 1) * spacing
    return Reservation(
        slots=Slots(start=start, spacing=spacing, count=taken),
        next_at={lane.key: last + lane.interval for lane in lanes},
    )
