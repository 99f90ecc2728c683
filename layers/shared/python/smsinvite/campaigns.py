"""A campaign's lifecycle and settings: which command may run in which state, audience rules, recurrence.

Pure domain code. The store applies a transition with a condition on the state it was decided in,
so two operators (or an operator and the scheduler) can never both win.

    draft -> preparing -> prepared -> (scheduled) -> sending <-> paused
                                                        |-> completed
                                                        '-> waiting -> preparing (next run of a recurrence)
    cancelled from any state before completed
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from smsinvite.errors import Conflict


class CampaignState(str, Enum):
    DRAFT = "draft"
    PREPARING = "preparing"
    PREPARED = "prepared"
    SCHEDULED = "scheduled"  # approved; starts at start_at
    SENDING = "sending"
    PAUSED = "paused"
    WAITING = "waiting"  # a recurring campaign between runs
    COMPLETED = "completed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (CampaignState.COMPLETED, CampaignState.CANCELLED)


S = CampaignState

# The states each operator action may start from.
ALLOWED_FROM: dict[str, frozenset[CampaignState]] = {
    "update": frozenset({S.DRAFT, S.PREPARED}),
    "prepare": frozenset({S.DRAFT, S.PREPARED, S.PREPARING}),
    "approve": frozenset({S.PREPARED}),
    "pause": frozenset({S.SENDING}),
    "resume": frozenset({S.PAUSED}),
    "cancel": frozenset({S.DRAFT, S.PREPARING, S.PREPARED, S.SCHEDULED, S.SENDING, S.PAUSED, S.WAITING}),
    # Recipients whose send could not be settled: the operator sends them again, on purpose.
    "resend_unresolved": frozenset({S.SENDING, S.PAUSED, S.COMPLETED}),
}

# Imports may add recipients only while no send is under way or planned on the audience as prepared.
OPEN_FOR_IMPORTS = frozenset({S.DRAFT, S.PREPARED, S.WAITING})

_HINTS = {
    ("approve", S.DRAFT): "prepare it first",
    ("approve", S.PREPARING): "wait for prepare to finish",
    ("update", S.SENDING): "it has started sending; pause or cancel it instead",
    ("update", S.PREPARING): "wait for prepare to finish",
    ("prepare", S.SENDING): "it is already sending",
    ("resume", S.SENDING): "it is already sending",
}


class InvalidTransition(Conflict):
    code = "invalid_transition"

    def __init__(self, campaign_id: str, action: str, state: CampaignState | str, hint: str | None = None) -> None:
        state = CampaignState(state)
        allowed = ", ".join(sorted(s.value for s in ALLOWED_FROM.get(action, ())))
        hint = hint or _HINTS.get((action, state)) or (f"{action} needs a campaign that is {allowed}" if allowed else "")
        super().__init__(f"cannot {action} campaign {campaign_id}: it is {state.value}" + (f"; {hint}" if hint else ""))
        self.state = state


def require(action: str, campaign_id: str, state: str) -> CampaignState:
    current = CampaignState(state)
    if current not in ALLOWED_FROM[action]:
        raise InvalidTransition(campaign_id, action, current)
    return current


# --------------------------------------------------------------------------------------- audience rules
_OPERATORS = ("equals", "not_equals", "in", "not_in", "contains", "exists", "missing", "gt", "gte", "lt", "lte")


@dataclass(frozen=True)
class Rule:
    """A test of one attribute. Text compares without case; gt/gte/lt/lte compare numbers."""

    field: str
    op: str
    value: Any = None

    def matches(self, fields: dict[str, Any]) -> bool:
        raw = fields.get(self.field)
        present = raw not in (None, "")
        if self.op == "exists":
            return present
        if self.op == "missing":
            return not present
        if not present:
            return self.op in ("not_equals", "not_in")
        text = str(raw).strip().casefold()
        if self.op in ("equals", "not_equals"):
            return (text == str(self.value).strip().casefold()) == (self.op == "equals")
        if self.op in ("in", "not_in"):
            return (text in {str(v).strip().casefold() for v in self.value}) == (self.op == "in")
        if self.op == "contains":
            return str(self.value).strip().casefold() in text
        number = _number(raw)
        if number is None:
            return False
        limit = float(self.value)
        return {"gt": number > limit, "gte": number >= limit, "lt": number < limit, "lte": number <= limit}[self.op]

    def problems(self) -> list[str]:
        if self.op not in _OPERATORS:
            return [f"op {self.op!r} is not one of {', '.join(_OPERATORS)}"]
        if self.op in ("in", "not_in") and not isinstance(self.value, list):
            return [f"{self.op} needs a list value"]
        if self.op in ("gt", "gte", "lt", "lte") and _number(self.value) is None:
            return [f"{self.op} needs a number value"]
        if self.op in ("equals", "not_equals", "contains") and self.value is None:
            return [f"{self.op} needs a value"]
        return []


def _number(value: Any) -> float | None:
    try:
        return float(str(value).strip().replace(",", "."))
    except (TypeError, ValueError):
        return None


def matches_all(rules: tuple[Rule, ...], fields: dict[str, Any]) -> bool:
    return all(rule.matches(fields) for rule in rules)


@dataclass(frozen=True)
class PanelSource:
    """A panel, or a subscription list's active subscribers (kind "list"), with rules on their fields."""

    panel_id: str
    rules: tuple[Rule, ...] = ()
    kind: str = "panel"


@dataclass(frozen=True)
class Audience:
    """Beyond the campaign's own recipients (files, lists, add_panel): panels pulled in at every prepare."""

    panels: tuple[PanelSource, ...] = ()
    rules: tuple[Rule, ...] = ()  # for every recipient, whatever its source

    def rules_for(self, panel_id: str | None) -> tuple[Rule, ...]:
        own = next((p.rules for p in self.panels if p.panel_id == panel_id), ()) if panel_id else ()
        return self.rules + own

    def as_json(self) -> str:
        return json.dumps(
            {
                "panels": [
                    {"panel_id": p.panel_id, "rules": [vars(r) for r in p.rules]} for p in self.panels if p.kind == "panel"
                ],
                "lists": [
                    {"list_id": p.panel_id, "rules": [vars(r) for r in p.rules]} for p in self.panels if p.kind == "list"
                ],
                "rules": [vars(r) for r in self.rules],
            }
        )

    @classmethod
    def from_json(cls, text: str | None) -> "Audience":
        if not text:
            return cls()
        data = json.loads(text)
        return cls(
            panels=tuple(
                PanelSource(p["panel_id"], tuple(Rule(**r) for r in p.get("rules", []))) for p in data.get("panels", [])
            )
            + tuple(
                PanelSource(p["list_id"], tuple(Rule(**r) for r in p.get("rules", [])), kind="list")
                for p in data.get("lists", [])
            ),
            rules=tuple(Rule(**r) for r in data.get("rules", [])),
        )


# --------------------------------------------------------------------------------------- recurrence
_EVERY = re.compile(r"^(?P<n>[1-9]\d{0,3})(?P<unit>[hdw])$")
_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}


def parse_every(text: str) -> timedelta:
    match = _EVERY.match(text.strip().lower())
    if not match:
        raise ValueError("every is a number and a unit: h (hours), d (days) or w (weeks), e.g. 1d or 12h")
    return int(match["n"]) * _UNITS[match["unit"]]


@dataclass(frozen=True)
class Recurrence:
    """Adobe's recurring delivery: each run re-prepares and invites only people new to the audience."""

    every: str
    until: datetime | None = None
    max_runs: int | None = None
    interval: timedelta = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "interval", parse_every(self.every))

    def next_run_at(self, run_started_at: datetime, runs_done: int, now: datetime) -> datetime | None:
        """When the next run starts, or None when the recurrence is over. A missed run starts now."""
        if self.max_runs is not None and runs_done >= self.max_runs:
            return None
        due = max(run_started_at + self.interval, now)
        if self.until is not None and due > self.until:
            return None
        return due

    def as_json(self) -> str:
        return json.dumps(
            {"every": self.every, "until": self.until.isoformat() if self.until else None, "max_runs": self.max_runs}
        )

    @classmethod
    def from_json(cls, text: str | None) -> "Recurrence | None":
        if not text:
            return None
        data = json.loads(text)
        until = datetime.fromisoformat(data["until"]) if data.get("until") else None
        return cls(every=data["every"], until=until, max_runs=data.get("max_runs"))
