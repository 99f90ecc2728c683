"""Quiet hours: when a recipient may be texted, when that next happens, and how long a send will take.

Pure domain code: no AWS, no I/O. A recipient's local time comes from the time zones phonenumbers gives
their number; a number that spans several zones may only be texted when the window is open in all of them.
Every instant is an aware datetime; results are in UTC.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from smsinvite.errors import InvalidInput, SmsInviteError

END_OF_DAY = "24:00"
DEFAULT_OPENS = time(8, 0)
DEFAULT_CLOSES = time(21, 0)
# How far ahead to look for an open instant before declaring there is none.
SEARCH_DAYS = 8

_ONE_DAY = timedelta(days=1)
# No time zone changes its clocks twice within this, so comparing offsets this far apart finds every change.
_CLOCK_CHANGE_PROBE = timedelta(hours=6)
_HH_MM = re.compile(r"(\d{1,2}):(\d{2})")


class NoSendingTime(SmsInviteError, ValueError):
    """The window is shut in some zone at every instant for SEARCH_DAYS: waiting for it would never end."""

    code = "no_sending_time"

    def __init__(self, zones: Sequence[str], window: SendingWindow, searched_from: datetime) -> None:
        super().__init__(
            f"no time between {window.opens:%H:%M} and {window.closes:%H:%M} local is inside the sending window"
            f" in every one of {', '.join(zones)} within {SEARCH_DAYS} days of"
            f" {searched_from.astimezone(UTC):%Y-%m-%d %H:%M} UTC",
            details=list(zones),
        )
        self.zones = tuple(zones)


@dataclass(frozen=True)
class SendingWindow:
    """Local times of day when texting is allowed: [opens, closes), wrapping midnight when opens > closes."""

    opens: time = DEFAULT_OPENS
    closes: time = DEFAULT_CLOSES

    def __post_init__(self) -> None:
        if self.opens == self.closes:
            raise InvalidInput(
                "the sending window must open and close at different times",
                details=[f"opens and closes are both {self.opens:%H:%M}"],
            )

    @classmethod
    def parse(cls, opens: str, closes: str) -> SendingWindow:
        """A window from "HH:MM" strings, as a command carries them; every problem is reported at once."""
        problems = []
        times = {}
        for name, text in (("opens", opens), ("closes", closes)):
            # "24:00" closes at the end of the day: with "00:00" it is a window that never shuts.
            parsed = time.max if name == "closes" and text == END_OF_DAY else _time_of_day(text)
            if parsed is None:
                problems.append(f"{name}: {text!r} is not a time of day as HH:MM")
            times[name] = parsed
        if problems:
            raise InvalidInput("the sending window is invalid", details=problems)
        return cls(**times)

    def as_dict(self) -> dict[str, str]:
        closes = END_OF_DAY if self.closes == time.max else f"{self.closes:%H:%M}"
        return {"opens": f"{self.opens:%H:%M}", "closes": closes}

    @property
    def all_day(self) -> bool:
        """No quiet hours at all (00:00-24:00)."""
        return self.opens == time(0, 0) and self.closes == time.max

    def is_open(self, at: datetime, zones: Sequence[str], *, fallback_zone: str = "UTC") -> bool:
        """Whether `at` is inside the window in every zone; no zones means unknown, so fallback_zone decides."""
        return self._open_everywhere(_utc(at), _zone_infos(zones, fallback_zone))

    def next_open(self, at: datetime, zones: Sequence[str], *, fallback_zone: str = "UTC") -> datetime:
        """`at` (in UTC) if the window is open in every zone, else the earliest later instant when it is."""
        return self._opening_from(_utc(at), _zone_infos(zones, fallback_zone))

    def closes_at(self, at: datetime, zones: Sequence[str], *, fallback_zone: str = "UTC") -> datetime | None:
        """When the window, open at `at` in every zone, first shuts in one of them; None if it is shut now."""
        infos = _zone_infos(zones, fallback_zone)
        at = _utc(at)
        if not self._open_everywhere(at, infos):
            return None
        return self._first_instant(at, infos, opened=False)

    def _contains(self, local: time) -> bool:
        if self.opens < self.closes:
            return self.opens <= local < self.closes
        return local >= self.opens or local < self.closes

    def _open_everywhere(self, at: datetime, zones: tuple[ZoneInfo, ...]) -> bool:
        return all(self._contains(at.astimezone(zone).time()) for zone in zones)

    def _first_instant(self, at: datetime, zones: tuple[ZoneInfo, ...], *, opened: bool) -> datetime | None:
        """The earliest instant >= at, within SEARCH_DAYS, when the window is open in every zone (or, with
        opened=False, shut in some zone); None if there is none.

        Being open everywhere can only begin when some zone reaches its opening time or changes its clocks,
        and can only end when some zone reaches its closing time or changes its clocks. So only those
        instants are checked, a day at a time, rather than every minute.
        """
        edge = self.opens if opened else self.closes
        scan_from = at
        for _ in range(SEARCH_DAYS):
            scan_to = scan_from + _ONE_DAY
            candidates = {scan_from}
            for zone in zones:
                candidates.update(_local_time_or_clock_change(edge, zone, scan_from, scan_to))
            for candidate in sorted(candidates):
                if self._open_everywhere(candidate, zones) == opened:
                    return candidate
            scan_from = scan_to
        return None

    def _opening_from(self, at: datetime, zones: tuple[ZoneInfo, ...]) -> datetime:
        opening = self._first_instant(at, zones, opened=True)
        if opening is None:
            raise NoSendingTime([zone.key for zone in zones], self, at)
        return opening

    def _open_spans(self, zones: tuple[ZoneInfo, ...], start: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Successive [opening, closing) stretches, from `start` on, when the window is open in every zone.

        Raises NoSendingTime once the window stays shut for SEARCH_DAYS.
        """
        opening = self._opening_from(start, zones)
        while True:
            closing = self._first_instant(opening, zones, opened=False)
            assert closing is not None, "every zone's window closes at least once a local day"
            yield opening, closing
            opening = self._opening_from(closing, zones)


@dataclass(frozen=True)
class DurationEstimate:
    """How long a send takes: time spent sending plus time spent waiting for quiet hours to end."""

    messages: int
    starts_at: datetime
    finishes_at: datetime
    seconds: float
    sending_seconds: float
    waiting_seconds: float
    # UTC calendar days from start to finish; a send that ends exactly at midnight does not touch the next day.
    days: int

    @property
    def summary(self) -> str:
        finishes = f"finishes {self.finishes_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
        if self.waiting_seconds <= 0:
            return f"{self.messages:,} messages in {human_duration(self.seconds)} ({finishes})"
        return (
            f"{self.messages:,} messages, {human_duration(self.sending_seconds)} of sending over"
            f" {human_duration(self.seconds)} ({finishes}, waits {human_duration(self.waiting_seconds)} for quiet hours)"
        )

    def as_dict(self) -> dict:
        return {
            "messages": self.messages,
            "starts_at": self.starts_at.isoformat(),
            "finishes_at": self.finishes_at.isoformat(),
            "seconds": round(self.seconds, 3),
            "sending_seconds": round(self.sending_seconds, 3),
            "waiting_seconds": round(self.waiting_seconds, 3),
            "days": self.days,
            "summary": self.summary,
        }


def estimate_duration(
    audience: Mapping[tuple[str, ...], int],
    *,
    rate_per_second: float,
    window: SendingWindow,
    start: datetime,
    fallback_zone: str = "UTC",
) -> DurationEstimate:
    """Simulate the send: one rate shared by the zone groups whose window is open, waiting when none is.

    Event-driven: time jumps from one window opening, window closing or group finishing to the next. The
    rate goes to the open group whose window closes soonest, so capacity is never idle while any open group
    has messages left, and short windows are used before they shut.
    """
    if not (math.isfinite(rate_per_second) and rate_per_second > 0):
        raise InvalidInput("the sending rate must be a number of messages per second greater than 0")
    negative = [", ".join(zones) or fallback_zone for zones, count in audience.items() if count < 0]
    if negative:
        raise InvalidInput("message counts cannot be negative", details=negative)
    starts_at = _utc(start)
    groups = [
        _Group(count, window._open_spans(_zone_infos(zones, fallback_zone), starts_at), starts_at)
        for zones, count in audience.items()
        if count > 0
    ]
    now = sending = waiting = 0.0
    while groups:
        for group in groups:
            group.skip_spans_closed_by(now)
        open_groups = [group for group in groups if group.opening <= now]
        if not open_groups:
            next_opening = min(group.opening for group in groups)
            waiting += next_opening - now
            now = next_opening
            continue
        serving = min(open_groups, key=lambda group: group.closing)
        next_event = min([serving.closing] + [group.opening for group in groups if group.opening > now])
        finish = now + serving.remaining / rate_per_second
        if finish <= next_event:
            groups.remove(serving)
            next_event = finish
        else:
            serving.remaining -= (next_event - now) * rate_per_second
        sending += next_event - now
        now = next_event
    finishes_at = starts_at + timedelta(seconds=now)
    return DurationEstimate(
        messages=sum(audience.values()),
        starts_at=starts_at,
        finishes_at=finishes_at,
        seconds=now,
        sending_seconds=sending,
        waiting_seconds=waiting,
        days=_utc_days_touched(starts_at, finishes_at),
    )


def human_duration(seconds: float) -> str:
    """A duration as a person reads it, to its two largest units: "45 s", "12 min", "2 h 5 min", "3 d 4 h"."""
    whole_seconds = round(seconds)
    if whole_seconds < 60:
        return f"{whole_seconds} s"
    minutes = round(whole_seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min"
    days, hours = divmod(round(whole_seconds / 3600), 24)
    return f"{days} d {hours} h"


@dataclass
class _Group:
    """Simulation state of the recipients who share a set of zones: messages left, and their current span."""

    remaining: float
    spans: Iterator[tuple[datetime, datetime]]
    origin: datetime
    # Seconds after origin.
    opening: float = field(init=False)
    closing: float = field(init=False)

    def __post_init__(self) -> None:
        self._next_span()

    def skip_spans_closed_by(self, now: float) -> None:
        while self.closing <= now:
            self._next_span()

    def _next_span(self) -> None:
        opening, closing = next(self.spans)
        self.opening = (opening - self.origin).total_seconds()
        self.closing = (closing - self.origin).total_seconds()


def _local_time_or_clock_change(edge: time, zone: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """Instants in [start, end) when the zone's clocks show `edge`, or jump (a jump can carry them past it).

    Both folds are taken, so a time shown twice when the clocks go back is found both times.
    """
    instants = _clock_changes(zone, start, end)
    day = start.astimezone(zone).date() - _ONE_DAY
    while day <= end.astimezone(zone).date():
        local = datetime.combine(day, edge, tzinfo=zone)
        instants += [local.astimezone(UTC), local.replace(fold=1).astimezone(UTC)]
        day += _ONE_DAY
    return [instant for instant in instants if start <= instant < end]


def _clock_changes(zone: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """Instants from start to end where the zone's UTC offset changes, found to the second.

    zoneinfo does not list its transitions, so offsets are compared every few hours and a change is then
    bisected; the tz database puts transitions on whole seconds.
    """
    changes = []
    probe = start
    while probe < end:
        next_probe = min(probe + _CLOCK_CHANGE_PROBE, end)
        old_offset = probe.astimezone(zone).utcoffset()
        if next_probe.astimezone(zone).utcoffset() != old_offset:
            before, after = math.floor(probe.timestamp()), math.ceil(next_probe.timestamp())
            while after - before > 1:
                middle = (before + after) // 2
                if datetime.fromtimestamp(middle, zone).utcoffset() == old_offset:
                    before = middle
                else:
                    after = middle
            changes.append(datetime.fromtimestamp(after, UTC))
        probe = next_probe
    return changes


def _utc_days_touched(start: datetime, finish: datetime) -> int:
    if finish == start:
        return 0
    last_day = (finish - timedelta(microseconds=1)).date()
    return (last_day - start.date()).days + 1


def _time_of_day(text: object) -> time | None:
    match = _HH_MM.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        return None
    hour, minute = int(match.group(1)), int(match.group(2))
    if hour > 23 or minute > 59:
        return None
    return time(hour, minute)


def _zone_infos(zones: Sequence[str], fallback_zone: str) -> tuple[ZoneInfo, ...]:
    return tuple(ZoneInfo(zone) for zone in (zones or (fallback_zone,)))


def _utc(at: datetime) -> datetime:
    """`at` in UTC; a naive datetime is refused, since it would silently mean the server's local time."""
    if at.utcoffset() is None:
        raise ValueError(f"{at.isoformat()} has no time zone; quiet hours need an aware datetime")
    return at.astimezone(UTC)
