"""A campaign's lifecycle rules, audience rules and recurrence: plain Python, no AWS."""

from datetime import datetime, timedelta, timezone

import pytest

from smsinvite.campaigns import (
    ALLOWED_FROM,
    Audience,
    CampaignState,
    InvalidTransition,
    PanelSource,
    Recurrence,
    Rule,
    matches_all,
    require,
)

S = CampaignState
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)

REFUSED = [
    (action, state)
    for action, allowed in ALLOWED_FROM.items()
    for state in CampaignState
    if state not in allowed
]


@pytest.mark.parametrize(("action", "state"), REFUSED, ids=[f"{a}-from-{s.value}" for a, s in REFUSED])
def test_every_transition_not_allowed_is_refused_with_the_state_it_is_in(action, state):
    with pytest.raises(InvalidTransition) as refused:
        require(action, "spring", state.value)
    assert f"cannot {action} campaign spring: it is {state.value}" in refused.value.message
    assert refused.value.code == "invalid_transition"


def test_approve_of_a_draft_says_to_prepare_it_first():
    with pytest.raises(InvalidTransition) as refused:
        require("approve", "spring", "draft")
    assert "prepare it first" in refused.value.message


def test_update_is_allowed_only_before_sending():
    assert ALLOWED_FROM["update"] == {S.DRAFT, S.PREPARED}
    for state in (S.SCHEDULED, S.SENDING, S.PAUSED, S.WAITING, S.COMPLETED, S.CANCELLED):
        with pytest.raises(InvalidTransition):
            require("update", "spring", state.value)


def test_a_finished_campaign_can_be_neither_cancelled_nor_resumed():
    for state in (S.COMPLETED, S.CANCELLED):
        for action in ("cancel", "resume", "pause", "prepare", "approve"):
            with pytest.raises(InvalidTransition):
                require(action, "spring", state.value)


@pytest.mark.parametrize(
    ("rule", "fields", "expected"),
    [
        (Rule("tier", "equals", "Gold"), {"tier": " gold "}, True),
        (Rule("tier", "equals", "gold"), {"tier": "silver"}, False),
        (Rule("tier", "not_equals", "gold"), {}, True),
        (Rule("tier", "in", ["gold", "silver"]), {"tier": "SILVER"}, True),
        (Rule("tier", "not_in", ["gold"]), {"tier": "bronze"}, True),
        (Rule("city", "contains", "berlin"), {"city": "Berlin-Mitte"}, True),
        (Rule("email", "exists"), {"email": ""}, False),
        (Rule("email", "missing"), {"email": ""}, True),
        (Rule("age", "gte", 18), {"age": "18"}, True),
        (Rule("age", "lt", 18), {"age": "17,5"}, True),
        (Rule("age", "gt", 18), {"age": "unknown"}, False),
        (Rule("age", "gt", 18), {}, False),
    ],
)
def test_audience_rules_compare_attributes(rule, fields, expected):
    assert rule.matches(fields) is expected


def test_every_rule_must_match():
    rules = (Rule("tier", "equals", "gold"), Rule("age", "gte", 18))
    assert matches_all(rules, {"tier": "gold", "age": "30"})
    assert not matches_all(rules, {"tier": "gold", "age": "12"})


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        (Rule("a", "like", "x"), "is not one of"),
        (Rule("a", "in", "gold"), "needs a list"),
        (Rule("a", "gt", "many"), "needs a number"),
        (Rule("a", "equals"), "needs a value"),
    ],
)
def test_a_rule_that_cannot_be_evaluated_says_why(rule, problem):
    assert problem in " ".join(rule.problems())


def test_a_panel_sources_rules_apply_on_top_of_the_audience_rules():
    audience = Audience(
        panels=(PanelSource("club", (Rule("tier", "equals", "gold"),)),), rules=(Rule("consent", "not_equals", "no"),)
    )
    assert Audience.from_json(audience.as_json()) == audience
    assert len(audience.rules_for("club")) == 2
    assert audience.rules_for(None) == audience.rules


def test_a_recurrence_runs_every_interval_until_its_end():
    weekly = Recurrence("1w", until=NOW + timedelta(weeks=2))
    assert weekly.next_run_at(NOW, runs_done=1, now=NOW) == NOW + timedelta(weeks=1)
    assert weekly.next_run_at(NOW + timedelta(weeks=1), runs_done=2, now=NOW) == NOW + timedelta(weeks=2)
    assert weekly.next_run_at(NOW + timedelta(weeks=2), runs_done=3, now=NOW) is None


def test_a_recurrence_stops_after_its_number_of_runs_and_a_missed_run_starts_now():
    daily = Recurrence("1d", max_runs=2)
    late = NOW + timedelta(days=5)
    assert daily.next_run_at(NOW, runs_done=1, now=late) == late
    assert daily.next_run_at(NOW, runs_done=2, now=late) is None
    assert Recurrence.from_json(daily.as_json()) == daily


@pytest.mark.parametrize("every", ["0d", "1y", "d", "1.5h", ""])
def test_a_recurrence_interval_must_be_hours_days_or_weeks(every):
    with pytest.raises(ValueError):
        Recurrence(every)
