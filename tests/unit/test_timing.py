"""Timing: waits, windows, business days, holidays, ``at`` and DST, as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from nurture.errors import InvalidValueError
from nurture.language.timing import (
    Duration,
    Window,
    day_start,
    due_moment,
    local_day,
    next_allowed,
    parse_duration,
    parse_hours,
    parse_time_of_day,
)

NY = ZoneInfo("America/New_York")
WARSAW = ZoneInfo("Europe/Warsaw")
LA = ZoneInfo("America/Los_Angeles")
WEEKDAYS = Window(days=frozenset(range(5)), start=9 * 60, end=17 * 60)


def local(tz: ZoneInfo, *args: int) -> datetime:
    return datetime(*args, tzinfo=tz).astimezone(UTC)  # type: ignore[misc]


def at_local(moment: datetime, tz: ZoneInfo) -> str:
    return moment.astimezone(tz).strftime("%a %Y-%m-%d %H:%M %Z")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30 minutes", Duration(30, "minutes")),
        ("4 hours", Duration(4, "hours")),
        ("2 days", Duration(2, "days")),
        ("1 week", Duration(1, "weeks")),
        ("3 business days", Duration(3, "business_days")),
        ("1 business day", Duration(1, "business_days")),
    ],
)
def test_durations_parse(text: str, expected: Duration) -> None:
    assert parse_duration(text) == expected
    assert str(parse_duration(text)) == text


@pytest.mark.parametrize("bad", ["", "two days", "3 fortnights", "-1 days", "2.5 days", "days"])
def test_bad_durations_say_how_to_write_one(bad: str) -> None:
    with pytest.raises(InvalidValueError, match="bad duration"):
        parse_duration(bad)


def test_times_and_hours_parse_and_refuse_nonsense() -> None:
    assert parse_time_of_day("10:30") == time(10, 30)
    assert parse_hours("09:00-17:00") == (540, 1020)
    assert parse_hours("00:00-24:00") == (0, 1440)
    for bad in ("25:00", "10:60", "1030"):
        with pytest.raises(InvalidValueError):
            parse_time_of_day(bad)
    with pytest.raises(InvalidValueError, match="must end after"):
        parse_hours("17:00-09:00")


def test_calendar_days_keep_local_time_across_spring_forward_new_york() -> None:
    # Given Saturday 10:00 EST before the US change on Sunday 2026-03-08
    base = local(NY, 2026, 3, 7, 10, 0)
    # When waiting 2 days (any day, any hour)
    due = due_moment(base, parse_duration("2 days"), None, Window(), NY).moment
    # Then it is Monday 10:00 EDT: 47 hours later, not 48
    assert at_local(due, NY) == "Mon 2026-03-09 10:00 EDT"
    assert (due - base).total_seconds() == 47 * 3600


def test_hours_are_elapsed_time_across_fall_back_warsaw() -> None:
    # Warsaw leaves summer time on Sunday 2026-10-25 at 03:00 CEST -> 02:00 CET
    base = local(WARSAW, 2026, 10, 25, 0, 30)
    due = due_moment(base, parse_duration("4 hours"), None, Window(), WARSAW).moment
    assert at_local(due, WARSAW) == "Sun 2026-10-25 03:30 CET"


def test_calendar_days_across_fall_back_warsaw_keep_the_wall_clock() -> None:
    base = local(WARSAW, 2026, 10, 24, 9, 0)
    due = due_moment(base, parse_duration("1 day"), None, Window(), WARSAW).moment
    assert at_local(due, WARSAW) == "Sun 2026-10-25 09:00 CET"
    assert (due - base).total_seconds() == 25 * 3600


def test_window_opening_after_spring_forward_is_local_nine() -> None:
    # Sunday night before the change; the next weekday window opens Monday 09:00 EDT
    base = local(NY, 2026, 3, 7, 20, 0)
    placed = next_allowed(base, WEEKDAYS, NY)
    assert at_local(placed.moment, NY) == "Mon 2026-03-09 09:00 EDT"
    assert placed.moved_because == "Saturday is not a sending day"


def test_a_step_after_hours_moves_to_the_next_morning() -> None:
    placed = next_allowed(local(NY, 2026, 11, 17, 17, 0), WEEKDAYS, NY)
    assert at_local(placed.moment, NY) == "Wed 2026-11-18 09:00 EST"
    assert placed.moved_because == "17:00 is after the sending hours"


def test_before_hours_waits_for_the_opening_the_same_day() -> None:
    placed = next_allowed(local(NY, 2026, 11, 17, 7, 15), WEEKDAYS, NY)
    assert at_local(placed.moment, NY) == "Tue 2026-11-17 09:00 EST"


def test_inside_the_window_nothing_moves() -> None:
    moment = local(NY, 2026, 11, 17, 16, 59)
    assert next_allowed(moment, WEEKDAYS, NY).moment == moment


def test_business_days_skip_weekends_and_holidays() -> None:
    window = Window(days=frozenset(range(5)), start=540, end=1020, holidays="US")
    # Wednesday before Thanksgiving (Thu 2026-11-26): 1 business day -> Friday
    base = local(NY, 2026, 11, 25, 10, 0)
    due = due_moment(base, parse_duration("1 business day"), None, window, NY).moment
    assert at_local(due, NY) == "Fri 2026-11-27 10:00 EST"
    # Friday + 3 business days -> Wednesday
    due = due_moment(
        local(NY, 2026, 11, 20, 10, 0), parse_duration("3 business days"), None, window, NY
    )
    assert at_local(due.moment, NY) == "Wed 2026-11-25 10:00 EST"


def test_holiday_moves_a_step_to_the_next_working_day() -> None:
    window = Window(days=frozenset(range(5)), start=540, end=1020, holidays="PL")
    # 2026-11-11 is Polish Independence Day (a Wednesday)
    placed = next_allowed(local(WARSAW, 2026, 11, 11, 10, 0), window, WARSAW)
    assert at_local(placed.moment, WARSAW) == "Thu 2026-11-12 09:00 CET"
    assert "holiday" in (placed.moved_because or "")


def test_at_after_a_calendar_wait_is_that_day_at_that_time() -> None:
    base = local(LA, 2026, 11, 24, 14, 0)  # Tuesday
    due = due_moment(base, parse_duration("4 days"), time(10, 30), WEEKDAYS, LA)
    # Saturday 10:30 is outside the days: Monday at the same `at` time
    assert at_local(due.moment, LA) == "Mon 2026-11-30 10:30 PST"


def test_at_after_a_clock_wait_is_the_next_such_time() -> None:
    base = local(LA, 2026, 11, 24, 14, 0)
    due = due_moment(base, parse_duration("30 minutes"), time(10, 30), Window(), LA)
    assert at_local(due.moment, LA) == "Wed 2026-11-25 10:30 PST"


def test_window_ending_before_the_wait_does_rolls_to_the_next_day() -> None:
    # 16:30 + 4 hours = 20:30: past the window, so next morning
    base = local(NY, 2026, 11, 17, 16, 30)
    due = due_moment(base, parse_duration("4 hours"), None, WEEKDAYS, NY)
    assert at_local(due.moment, NY) == "Wed 2026-11-18 09:00 EST"


def test_an_at_inside_a_dst_gap_falls_after_it() -> None:
    base = local(NY, 2026, 3, 7, 12, 0)
    due = due_moment(base, parse_duration("1 day"), time(2, 30), Window(), NY)
    assert at_local(due.moment, NY) == "Sun 2026-03-08 03:30 EDT"


def test_an_at_on_the_night_clocks_go_back_takes_the_second_occurrence() -> None:
    # Given New York on Sunday 2026-11-01, when 01:00-01:59 happens twice: a step
    # happened at the second 01:20 (EST, 06:20 UTC)
    base = datetime(2026, 11, 1, 6, 20, tzinfo=UTC)
    assert at_local(base, NY) == "Sun 2026-11-01 01:20 EST"
    # When the next one waits 10 minutes and goes at 01:45
    due = due_moment(base, parse_duration("10 minutes"), time(1, 45), Window(), NY)
    # Then it is the second 01:45 that night (EST), not 01:45 the next day
    assert due.moment == datetime(2026, 11, 1, 6, 45, tzinfo=UTC)
    # And from the first 01:20 (EDT) the first 01:45 (EDT) is the one
    first = datetime(2026, 11, 1, 5, 20, tzinfo=UTC)
    assert due_moment(first, parse_duration("10 minutes"), time(1, 45), Window(), NY).moment == (
        datetime(2026, 11, 1, 5, 45, tzinfo=UTC)
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("9:60-10:00", "minute 60"),
        ("09:00-17:75", "minute 75"),
        ("25:00-26:00", "hour 25"),
        ("09:00-24:30", "24:30"),
    ],
)
def test_hours_with_an_impossible_time_say_which(text: str, message: str) -> None:
    with pytest.raises(InvalidValueError, match=message) as caught:
        parse_hours(text)
    assert "must end after" not in str(caught.value)


def test_a_local_day_is_the_same_for_every_moment_of_it_and_moves_on_at_midnight() -> None:
    # Given the day the clocks go back in New York (25 hours long)
    begins, ends = local(NY, 2026, 11, 1, 0, 0), local(NY, 2026, 11, 2, 0, 0)
    assert (ends - begins).total_seconds() == 25 * 3600
    # Then every moment of it, in any order, is that day
    for moment in (local(NY, 2026, 11, 1, 23, 59), begins, local(NY, 2026, 11, 1, 1, 30)):
        day = local_day(moment, "America/New_York")
        assert (day.begins, day.ends, day.iso) == (begins, ends, "2026-11-01")
    # And the first moment of the next day is the next day, and a moment before is the one
    # before: what was known of the last day is not used past its end
    assert local_day(ends, "America/New_York").iso == "2026-11-02"
    earlier = local_day(begins - timedelta(microseconds=1), "America/New_York")
    assert earlier.iso == "2026-10-31" and earlier.ends == day_start(begins, NY) == begins
    # And each timezone has its own day: the same moment is already the next in Warsaw
    late = local(NY, 2026, 11, 1, 20, 0)
    assert local_day(late, "America/New_York").iso == "2026-11-01"
    assert local_day(late, "Europe/Warsaw").iso == "2026-11-02"
