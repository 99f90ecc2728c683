"""When reminder rounds fall: after N days, every N days (up to the maximum or an end date), or on dates."""

from datetime import datetime, timedelta, timezone

import pytest

from smsinvite.errors import InvalidInput
from smsinvite.reminders import ReminderPlan, plan_rounds

START = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)


def days(*ns):
    return tuple(START + timedelta(days=n) for n in ns)


def test_after_n_days_is_one_round():
    assert plan_rounds(START, START, after_days=3, max_per_invitee=2) == days(3)


def test_every_n_days_until_answered_stops_at_the_maximum_per_invitee():
    assert plan_rounds(START, START, every_days=2, max_per_invitee=3) == days(2, 4, 6)


def test_every_n_days_until_an_end_date():
    assert plan_rounds(START, START, every_days=2, until=START + timedelta(days=7), max_per_invitee=1) == days(2, 4, 6)


def test_one_off_dates_in_order_and_past_rounds_are_dropped_not_sent_late():
    dates = days(5, 1, -1)
    assert plan_rounds(START, START, dates=dates, max_per_invitee=2) == days(1, 5)


def test_a_schedule_is_required():
    with pytest.raises(InvalidInput):
        plan_rounds(START, START, max_per_invitee=1)


def test_a_plan_survives_its_json_and_knows_its_next_round():
    plan = ReminderPlan("Reminder {link}", tuple(d.isoformat() for d in days(1, 2)), 2)
    again = ReminderPlan.from_json(plan.as_json())
    assert again == plan and again.next_round() == days(1)[0].isoformat()
    assert ReminderPlan(plan.template, plan.rounds, 2, sent_rounds=2).next_round() is None
