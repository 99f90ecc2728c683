"""Send slots: consecutive, never bunched, spaced by the slower lane, never further off than a caller waits."""

import pytest

from smsinvite.throttle import CEILING_MARGIN, Busy, Reservation, lanes_for, plan, sender_lane


def test_an_idle_lane_gives_slots_from_now_spaced_a_little_wider_than_the_ceiling():
    lanes = (sender_lane("+15005550006", 10),)
    reserved = plan(lanes, {}, count=4, now=100.0, max_wait=5.0)
    assert isinstance(reserved, Reservation)
    spacing = 1 / (10 * CEILING_MARGIN)
    assert [reserved.slots.at(i) for i in range(4)] == pytest.approx([100.0 + i * spacing for i in range(4)])
    assert reserved.next_at["sender#+15005550006"] == pytest.approx(100.0 + 4 * spacing)


def test_a_busy_lane_starts_where_the_last_reservation_ended_not_now():
    lanes = (sender_lane("S", 10),)
    reserved = plan(lanes, {"sender#S": 102.0}, count=1, now=100.0, max_wait=5.0)
    assert reserved.slots.start == 102.0


def test_slots_further_off_than_the_caller_waits_are_not_taken():
    lanes = (sender_lane("S", 2),)
    partly = plan(lanes, {}, count=20, now=0.0, max_wait=5.0)
    assert partly.slots.count == 1 + int(5.0 / (1 / (2 * CEILING_MARGIN)))
    busy = plan(lanes, {"sender#S": 60.0}, count=1, now=0.0, max_wait=5.0)
    assert busy == Busy(until=60.0)


def test_a_campaign_slower_than_its_sender_paces_both_lanes_at_its_own_rate():
    lanes = lanes_for("spring", 2.0, "S", 10.0)
    reserved = plan(lanes, {"sender#S": 0.0, "campaign#spring": 10.0}, count=3, now=8.0, max_wait=5.0)
    assert reserved.slots.start == 10.0 and reserved.slots.spacing == 0.5
    # the sender is free again one of its own intervals after the last slot; the campaign one of its own
    assert reserved.next_at["sender#S"] == pytest.approx(11.0 + 1 / (10 * CEILING_MARGIN))
    assert reserved.next_at["campaign#spring"] == pytest.approx(11.5)


def test_a_campaign_as_fast_as_its_sender_needs_no_lane_of_its_own():
    assert [lane.key for lane in lanes_for("spring", 50.0, "S", 10.0)] == ["sender#S"]


def test_no_window_of_one_second_ever_holds_more_than_the_ceiling():
    # Given reservations of 7 slots after each other at a ceiling of 50, from an idle lane
    lanes, next_at, times = (sender_lane("S", 50),), {}, []
    now = 0.0
    for _ in range(30):
        reserved = plan(lanes, next_at, count=7, now=now, max_wait=5.0)
        times += [reserved.slots.at(i) for i in range(reserved.slots.count)]
        next_at.update(reserved.next_at)
        now += 0.05
    # Then any second (t-1, t] holds at most 50 of them
    assert max(sum(1 for u in times if t - 1 < u <= t) for t in times) <= 50
