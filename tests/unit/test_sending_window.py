"""Quiet hours in the recipient's local time, and how long a send takes because of them."""

from datetime import UTC, datetime, time

import pytest

from smsinvite.errors import InvalidInput
from smsinvite.phones import zones_for
from smsinvite.sending_window import (
    DurationEstimate,
    NoSendingTime,
    SendingWindow,
    estimate_duration,
    human_duration,
)

HAWAII_MOBILE = "+18085551234"
GERMAN_MOBILE = "+4915112345678"
IDAHO_NUMBER = "+12085550100"  # area code 208 spans Mountain and Pacific time
DEFAULT = SendingWindow()


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


# --- the window ------------------------------------------------------------------------------------


def test_default_window_is_eight_in_the_morning_to_nine_at_night():
    assert DEFAULT.as_dict() == {"opens": "08:00", "closes": "21:00"}


def test_window_parses_hh_mm_strings():
    assert SendingWindow.parse("09:30", " 7:05 ") == SendingWindow(time(9, 30), time(7, 5))


def test_bad_window_lists_every_problem():
    with pytest.raises(InvalidInput) as invalid:
        SendingWindow.parse("25:00", "9pm")

    assert invalid.value.details == [
        "opens: '25:00' is not a time of day as HH:MM",
        "closes: '9pm' is not a time of day as HH:MM",
    ]


def test_window_that_opens_when_it_closes_is_refused():
    with pytest.raises(InvalidInput) as invalid:
        SendingWindow.parse("08:00", "08:00")

    assert invalid.value.details == ["opens and closes are both 08:00"]


def test_window_wrapping_midnight():
    night_shift = SendingWindow(time(22, 0), time(6, 0))

    assert night_shift.is_open(utc(2026, 12, 1, 23, 0), ["UTC"])
    assert night_shift.is_open(utc(2026, 12, 2, 5, 59), ["UTC"])
    assert not night_shift.is_open(utc(2026, 12, 2, 6, 0), ["UTC"])
    assert night_shift.next_open(utc(2026, 12, 2, 12, 0), ["UTC"]) == utc(2026, 12, 2, 22, 0)


# --- one recipient: open now, or when next -------------------------------------------------------


def test_hawaii_number_at_2055_local_is_still_open():
    at = utc(2026, 12, 2, 6, 55)  # 20:55 in Honolulu (UTC-10)

    assert DEFAULT.is_open(at, zones_for(HAWAII_MOBILE))
    assert DEFAULT.next_open(at, zones_for(HAWAII_MOBILE)) == at


def test_hawaii_number_at_2100_local_is_closed():
    assert not DEFAULT.is_open(utc(2026, 12, 2, 7, 0), zones_for(HAWAII_MOBILE))


def test_german_number_at_0759_local_waits_until_0800():
    at = utc(2026, 12, 1, 6, 59)  # 07:59 in Berlin (CET, UTC+1)

    assert not DEFAULT.is_open(at, zones_for(GERMAN_MOBILE))
    assert DEFAULT.next_open(at, zones_for(GERMAN_MOBILE)) == utc(2026, 12, 1, 7, 0)


def test_number_with_two_us_zones_uses_the_intersection():
    zones = zones_for(IDAHO_NUMBER)
    assert zones == ("America/Boise", "America/Los_Angeles")

    # 07:30 in Los Angeles is already 08:30 in Boise; 20:30 in Los Angeles is 21:30 in Boise.
    assert not DEFAULT.is_open(utc(2026, 12, 1, 15, 30), zones)
    assert DEFAULT.next_open(utc(2026, 12, 1, 15, 30), zones) == utc(2026, 12, 1, 16, 0)
    assert not DEFAULT.is_open(utc(2026, 12, 2, 4, 30), zones)


def test_number_without_a_known_zone_uses_the_fallback_zone():
    international_freephone = "+80012345678"
    at = utc(2026, 12, 1, 7, 30)  # 07:30 UTC, 16:30 in Tokyo

    assert zones_for(international_freephone) == ()
    assert not DEFAULT.is_open(at, zones_for(international_freephone))
    assert DEFAULT.is_open(at, zones_for(international_freephone), fallback_zone="Asia/Tokyo")


def test_naive_datetime_is_refused_rather_than_read_as_server_time():
    with pytest.raises(ValueError, match="no time zone"):
        DEFAULT.is_open(datetime(2026, 12, 1, 12, 0), ["UTC"])


# --- clock changes -------------------------------------------------------------------------------


def test_dst_change_in_europe():
    # Berlin opens at 07:00 UTC on Saturday 28 March 2026 (CET) and at 06:00 UTC on Sunday (CEST).
    assert DEFAULT.next_open(utc(2026, 3, 28, 6, 0), ["Europe/Berlin"]) == utc(2026, 3, 28, 7, 0)
    assert DEFAULT.next_open(utc(2026, 3, 28, 21, 0), ["Europe/Berlin"]) == utc(2026, 3, 29, 6, 0)


def test_window_opening_in_the_skipped_hour_opens_when_the_clocks_jump():
    # On 29 March 2026 Berlin jumps from 02:00 to 03:00 at 01:00 UTC: 02:30 never shows.
    early = SendingWindow(time(2, 30), time(21, 0))

    assert early.next_open(utc(2026, 3, 28, 23, 0), ["Europe/Berlin"]) == utc(2026, 3, 29, 1, 0)


def test_window_reopens_when_the_clocks_go_back_into_it():
    # On 25 October 2026 Berlin goes back from 03:00 to 02:00 at 01:00 UTC, so 02:00-02:30 shows twice.
    late = SendingWindow(time(22, 0), time(2, 30))

    assert not late.is_open(utc(2026, 10, 25, 0, 45), ["Europe/Berlin"])  # 02:45 CEST
    assert late.next_open(utc(2026, 10, 25, 0, 45), ["Europe/Berlin"]) == utc(2026, 10, 25, 1, 0)  # 02:00 CET


def test_zones_that_overlap_only_while_us_clocks_are_ahead_wait_for_the_us_dst_change():
    # 09:00-14:00 in London (UTC) and New York (UTC-5) never overlap, until New York moves to UTC-4 on
    # 8 March 2026: then 09:00 in New York is 13:00 in London.
    morning = SendingWindow(time(9, 0), time(14, 0))

    opening = morning.next_open(utc(2026, 3, 5, 12, 0), ["Europe/London", "America/New_York"])

    assert opening == utc(2026, 3, 8, 13, 0)


def test_no_common_window_raises():
    office_hours = SendingWindow(time(9, 0), time(17, 0))

    with pytest.raises(NoSendingTime) as never:
        office_hours.next_open(utc(2026, 12, 1, 12, 0), ["Europe/London", "Asia/Tokyo"])

    assert never.value.zones == ("Europe/London", "Asia/Tokyo")
    assert "within 8 days" in never.value.message
    assert isinstance(never.value, ValueError)


# --- how long a send takes -----------------------------------------------------------------------


def test_estimate_at_10_per_second_for_36000_messages_is_one_hour_when_open():
    start = utc(2026, 12, 1, 10, 0)

    estimate = estimate_duration({("Europe/London",): 36000}, rate_per_second=10, window=DEFAULT, start=start)

    assert estimate == DurationEstimate(
        messages=36000,
        starts_at=start,
        finishes_at=utc(2026, 12, 1, 11, 0),
        seconds=3600,
        sending_seconds=3600,
        waiting_seconds=0,
        days=1,
    )
    assert estimate.as_dict()["summary"] == "36,000 messages in 1 h 0 min (finishes 2026-12-01 11:00 UTC)"


def test_estimate_waits_for_the_window_to_open():
    start = utc(2026, 12, 1, 21, 0)  # London closes at 21:00 and opens at 08:00 (GMT in December)

    estimate = estimate_duration({("Europe/London",): 1200}, rate_per_second=1 / 6, window=DEFAULT, start=start)

    assert estimate.as_dict() == {
        "messages": 1200,
        "starts_at": "2026-12-01T21:00:00+00:00",
        "finishes_at": "2026-12-02T10:00:00+00:00",
        "seconds": 46800.0,
        "sending_seconds": 7200.0,
        "waiting_seconds": 39600.0,
        "days": 2,
        "summary": "1,200 messages, 2 h 0 min of sending over 13 h 0 min (finishes 2026-12-02 10:00 UTC, waits 11 h 0 min for quiet hours)",
    }


def test_estimate_shares_rate_between_open_zones():
    # At 19:00 UTC Berlin is open until 20:00 UTC and London until 21:00 UTC.
    audience = {("Europe/Berlin",): 1800, ("Europe/London",): 3600}

    estimate = estimate_duration(audience, rate_per_second=1, window=DEFAULT, start=utc(2026, 12, 1, 19, 0))

    assert estimate.finishes_at == utc(2026, 12, 1, 20, 30)
    assert estimate.waiting_seconds == 0


def test_estimate_sends_to_a_zone_before_its_window_closes():
    # Berlin has 1 h left and London 2 h; serving London first would strand Berlin's messages overnight.
    audience = {("Europe/London",): 3600, ("Europe/Berlin",): 3600}

    estimate = estimate_duration(audience, rate_per_second=1, window=DEFAULT, start=utc(2026, 12, 1, 19, 0))

    assert estimate.finishes_at == utc(2026, 12, 1, 21, 0)


def test_estimate_waits_only_when_no_open_zone_has_messages_left():
    # London is done at 20:30 UTC; Tokyo opens at 23:00 UTC (08:00 JST).
    audience = {("Europe/London",): 1800, ("Asia/Tokyo",): 3600}

    estimate = estimate_duration(audience, rate_per_second=1, window=DEFAULT, start=utc(2026, 12, 1, 20, 0))

    assert estimate.finishes_at == utc(2026, 12, 2, 0, 0)
    assert (estimate.sending_seconds, estimate.waiting_seconds) == (5400, 9000)
    assert estimate.days == 1  # finishing at midnight does not touch the next day


def test_estimate_for_no_messages_takes_no_time():
    start = utc(2026, 12, 1, 23, 0)

    estimate = estimate_duration({("Europe/London",): 0}, rate_per_second=5, window=DEFAULT, start=start)

    assert (estimate.finishes_at, estimate.seconds, estimate.days) == (start, 0, 0)


def test_estimate_names_the_zones_that_can_never_be_sent():
    office_hours = SendingWindow(time(9, 0), time(17, 0))
    audience = {("Europe/London",): 10, ("Europe/London", "Asia/Tokyo"): 5}

    with pytest.raises(NoSendingTime) as never:
        estimate_duration(audience, rate_per_second=1, window=office_hours, start=utc(2026, 12, 1, 12, 0))

    assert never.value.zones == ("Europe/London", "Asia/Tokyo")


def test_estimate_refuses_a_rate_that_is_not_positive():
    with pytest.raises(InvalidInput):
        estimate_duration({("UTC",): 10}, rate_per_second=0, window=DEFAULT, start=utc(2026, 12, 1, 12, 0))


def test_estimate_for_a_million_messages_across_fifty_zone_groups_sends_at_the_full_rate():
    zones = [
        "Pacific/Honolulu", "America/Anchorage", "America/Los_Angeles", "America/Denver", "America/Chicago",
        "America/New_York", "America/Halifax", "America/St_Johns", "America/Sao_Paulo", "Atlantic/Azores",
        "Europe/London", "Europe/Berlin", "Europe/Athens", "Europe/Moscow", "Asia/Tehran", "Asia/Dubai",
        "Asia/Karachi", "Asia/Kolkata", "Asia/Kathmandu", "Asia/Dhaka", "Asia/Bangkok", "Asia/Shanghai",
        "Asia/Tokyo", "Australia/Sydney", "Pacific/Auckland",
    ]  # fmt: skip
    audience = {(zone,): 20000 for zone in zones} | {pair: 20000 for pair in zip(zones, zones[1:] + zones[:1])}

    estimate = estimate_duration(audience, rate_per_second=50, window=DEFAULT, start=utc(2026, 3, 27, 12, 0))

    assert len(audience) == 50
    assert estimate.messages == 1_000_000
    assert estimate.sending_seconds == pytest.approx(1_000_000 / 50)
    assert estimate.seconds == pytest.approx(estimate.sending_seconds + estimate.waiting_seconds)


# --- durations people read -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s"),
        (45, "45 s"),
        (59.6, "1 min"),
        (12 * 60 + 20, "12 min"),
        (3599.9, "1 h 0 min"),
        (2 * 3600 + 5 * 60, "2 h 5 min"),
        (3 * 86400 + 4 * 3600, "3 d 4 h"),
    ],
)
def test_durations_read_in_their_two_largest_units(seconds, text):
    assert human_duration(seconds) == text


def test_an_open_window_says_when_it_first_closes_in_any_of_the_numbers_zones():
    # 20:55 in Honolulu is open until 21:00 there
    at = datetime(2026, 12, 2, 6, 55, tzinfo=UTC)
    assert DEFAULT.closes_at(at, ("Pacific/Honolulu",)) == datetime(2026, 12, 2, 7, 0, tzinfo=UTC)
    # a shut window has no closing time
    assert DEFAULT.closes_at(datetime(2026, 12, 2, 6, 59, tzinfo=UTC), ("Europe/Berlin",)) is None


def test_a_window_from_0000_to_2400_never_shuts():
    all_day = SendingWindow.parse("00:00", "24:00")
    assert all_day.all_day and all_day.as_dict() == {"opens": "00:00", "closes": "24:00"}
    assert all_day.is_open(datetime(2026, 12, 2, 23, 59, 59, tzinfo=UTC), ("Europe/Berlin",))
    assert not SendingWindow().all_day
