"""When a step is due: pure functions of the previous moment, the step's timing and the
schedule, in the lead's own timezone. The daemon and ``nurture simulate`` both use these.

Every moment in and out is an aware UTC datetime; local wall time is only used inside.
Calendar waits (days, weeks, business days) keep the local time of day across DST
changes; clock waits (minutes, hours) are exact elapsed time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from typing import Any, Literal
from zoneinfo import ZoneInfo

from nurture.errors import InvalidValueError

Unit = Literal["minutes", "hours", "days", "weeks", "business_days"]

_UNITS: dict[str, Unit] = {
    "minute": "minutes", "minutes": "minutes", "min": "minutes", "mins": "minutes",
    "hour": "hours", "hours": "hours", "h": "hours",
    "day": "days", "days": "days", "d": "days",
    "week": "weeks", "weeks": "weeks", "w": "weeks",
    "business day": "business_days", "business days": "business_days",
    "workday": "business_days", "workdays": "business_days",
}  # fmt: skip
_DURATION = re.compile(r"^\s*(\d+)\s*([a-z]+(?:\s+days?)?)\s*$")

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_ALIASES = {
    **{name: i for i, name in enumerate(DAY_NAMES)},
    **{
        full: i
        for i, full in enumerate(
            ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
        )
    },
}
MINUTES_PER_DAY = 24 * 60


@dataclass(frozen=True)
class Duration:
    """A wait such as ``2 days`` or ``3 business days``."""

    amount: int
    unit: Unit

    @property
    def is_calendar(self) -> bool:
        """Whether the wait counts days on the calendar rather than elapsed time."""
        return self.unit in ("days", "weeks", "business_days")

    def __str__(self) -> str:
        unit = self.unit.replace("_", " ")
        return f"{self.amount} {unit[:-1] if self.amount == 1 else unit}"


def parse_duration(text: Any) -> Duration:
    """``"30 minutes"``, ``"4 hours"``, ``"2 days"``, ``"1 week"``, ``"3 business days"``."""
    match = _DURATION.match(str(text).lower())
    unit = _UNITS.get(re.sub(r"\s+", " ", match.group(2))) if match else None
    if match is None or unit is None:
        raise InvalidValueError(
            f"bad duration {text!r}: write a number and a unit, like '30 minutes', "
            "'4 hours', '2 days', '1 week' or '3 business days'"
        )
    return Duration(int(match.group(1)), unit)


def parse_time_of_day(text: Any) -> time:
    """``"10:30"`` -> 10:30. Hours 0-23, minutes 0-59."""
    match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*", str(text))
    if match and int(match.group(1)) < 24 and int(match.group(2)) < 60:
        return time(int(match.group(1)), int(match.group(2)))
    raise InvalidValueError(f"bad time of day {text!r}: write HH:MM, like '10:30'")


def parse_hours(text: Any) -> tuple[int, int]:
    """``"09:00-17:00"`` -> minutes from midnight (start, end); the end may be ``24:00``."""
    match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*", str(text))
    if not match:
        raise InvalidValueError(f"bad hours {text!r}: write 'HH:MM-HH:MM', like '09:00-17:00'")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    for hour, minute, is_end in ((h1, m1, False), (h2, m2, True)):
        if minute > 59:
            raise InvalidValueError(f"bad hours {text!r}: minute {minute} is not a minute (00-59)")
        if hour > 24 or (hour == 24 and (minute or not is_end)):
            shown = f"{hour:02d}:{minute:02d}"
            raise InvalidValueError(
                f"bad hours {text!r}: hour {hour} in {shown} is not an hour "
                "(00-23; the end may be 24:00)"
            )
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if start >= end:
        raise InvalidValueError(f"hours {text!r} must end after they start, on the same day")
    return start, end


def parse_day(text: Any) -> int:
    """``"mon"`` or ``"Monday"`` -> 0."""
    day = _DAY_ALIASES.get(str(text).strip().lower())
    if day is None:
        raise InvalidValueError(f"unknown day {text!r}: use mon, tue, wed, thu, fri, sat, sun")
    return day


@cache
def holiday_calendar(code: str) -> Any:
    """The public holidays of a country (``US``) or a subdivision (``US-CA``, ``DE-BY``)."""
    import holidays

    country, _, subdivision = code.strip().partition("-")
    try:
        return holidays.country_holidays(country.upper(), subdiv=subdivision.upper() or None)
    except (NotImplementedError, KeyError):
        raise InvalidValueError(
            f"unknown holiday calendar {code!r}: use a country code like 'US' or 'PL', "
            "optionally with a subdivision like 'US-CA'"
        ) from None


@dataclass(frozen=True)
class Window:
    """When touches may happen: days of the week, hours of the day, minus holidays."""

    days: frozenset[int] = frozenset(range(7))
    #: Minutes from local midnight, start inclusive, end exclusive.
    start: int = 0
    end: int = MINUTES_PER_DAY
    #: Country code of a holiday calendar, or ``None``.
    holidays: str | None = None

    def holiday(self, day: date) -> str | None:
        """The name of the holiday on *day*, if the calendar has one."""
        if self.holidays is None:
            return None
        name = holiday_calendar(self.holidays).get(day)
        return str(name) if name else None

    def is_business_day(self, day: date) -> bool:
        return day.weekday() < 5 and self.holiday(day) is None


@dataclass(frozen=True)
class Placement:
    """A moment chosen for a step, and why it moved from the one first computed."""

    moment: datetime
    #: ``None`` when the step goes at the computed moment.
    moved_because: str | None = None


def localize(day: date, minutes: int, tz: ZoneInfo) -> datetime:
    """The UTC moment of local wall time *minutes* after midnight of *day* in *tz*.

    A wall time that does not exist (skipped by a DST change) falls after the gap; an
    ambiguous one (repeated) takes its first occurrence.
    """
    extra_days, minutes = divmod(minutes, MINUTES_PER_DAY)
    day = day + timedelta(days=extra_days)
    naive = datetime.combine(day, time(minutes // 60, minutes % 60))
    return naive.replace(tzinfo=tz).astimezone(UTC)


def day_start(moment: datetime, tz: ZoneInfo, days_on: int = 0) -> datetime:
    """The UTC moment the local day of *moment* in *tz* begins (*days_on* days later);
    a midnight skipped by a DST change is the first moment after the gap."""
    return localize(moment.astimezone(tz).date() + timedelta(days=days_on), 0, tz)


@dataclass(frozen=True)
class LocalDay:
    """A local day in one timezone: when it begins and ends (UTC), and its date."""

    begins: datetime
    ends: datetime
    iso: str


#: The last local day asked for, per timezone name (see :func:`local_day`).
_last_days: dict[str, LocalDay] = {}


def local_day(moment: datetime, tz_name: str) -> LocalDay:
    """The local day of *moment* in the timezone *tz_name*: computed once a day per
    timezone, not once a call (the caps of every email sent ask for it)."""
    day = _last_days.get(tz_name)
    if day is None or not day.begins <= moment < day.ends:
        tz = zone(tz_name)
        day = LocalDay(day_start(moment, tz), day_start(moment, tz, days_on=1),
                       moment.astimezone(tz).date().isoformat())  # fmt: skip
        _last_days[tz_name] = day
    return day


def next_business_day(day: date, window: Window | None = None) -> date:
    """The first business day after *day* (Monday to Friday, minus *window*'s holidays)."""
    calendar = window or Window()
    day += timedelta(days=1)
    while not calendar.is_business_day(day):
        day += timedelta(days=1)
    return day


def add_wait(base: datetime, wait: Duration, tz: ZoneInfo, window: Window) -> datetime:
    """The moment *wait* after *base*: elapsed time for minutes and hours; for days, weeks
    and business days the same local time of day, that many days (or working days) on."""
    if wait.unit == "minutes":
        return base + timedelta(minutes=wait.amount)
    if wait.unit == "hours":
        return base + timedelta(hours=wait.amount)
    local = base.astimezone(tz)
    minutes = local.hour * 60 + local.minute
    day = local.date()
    if wait.unit == "business_days":
        remaining = wait.amount
        while remaining > 0:
            day += timedelta(days=1)
            if window.is_business_day(day):
                remaining -= 1
    else:
        day += timedelta(days=wait.amount * (7 if wait.unit == "weeks" else 1))
    return localize(day, minutes, tz) + timedelta(
        seconds=local.second, microseconds=local.microsecond
    )


def apply_at(target: datetime, at: time, wait: Duration | None, tz: ZoneInfo) -> datetime:
    """Put *target* at local time *at*: on the same local day after a calendar wait, else
    at the first *at* that is not before *target* (on the night clocks go back, that may
    be the second of the two moments the wall clock reads *at*)."""
    local_day = target.astimezone(tz).date()
    minutes = at.hour * 60 + at.minute
    candidate = localize(local_day, minutes, tz)
    if candidate < target and not (wait and wait.is_calendar):
        second = repeated(local_day, minutes, tz)
        if second is not None and second >= target:
            return second
        candidate = localize(local_day + timedelta(days=1), minutes, tz)
    return candidate


def repeated(day: date, minutes: int, tz: ZoneInfo) -> datetime | None:
    """The second UTC moment of local wall time *minutes* on *day*, when a DST change
    repeats it; ``None`` when it happens once."""
    naive = datetime.combine(day, time(minutes // 60, minutes % 60))
    first = naive.replace(tzinfo=tz).astimezone(UTC)
    second = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
    return second if second > first else None


def next_allowed(
    moment: datetime, window: Window, tz: ZoneInfo, preferred: time | None = None
) -> Placement:
    """The first moment at or after *moment* inside *window*, in local time of *tz*.

    When the step has to move to another day it goes at the window's opening, or at
    *preferred* (the step's ``at``) if that falls inside the window.
    """
    local = moment.astimezone(tz)
    first_day = local.date()
    reason: str | None = None
    for offset in range(0, 400):
        day = first_day + timedelta(days=offset)
        holiday = window.holiday(day)
        if day.weekday() not in window.days:
            reason = reason or f"{day:%A} is not a sending day"
            continue
        if holiday:
            reason = reason or f"{day:%A %Y-%m-%d} is a holiday ({holiday})"
            continue
        opening = localize(day, window.start, tz)
        closing = localize(day, window.end, tz)
        if offset == 0 and moment >= closing:
            reason = reason or f"{local:%H:%M} is after the sending hours"
            continue
        if offset == 0 and moment >= opening:
            return Placement(moment, None)
        if preferred is not None:
            at = localize(day, preferred.hour * 60 + preferred.minute, tz)
            if opening <= at < closing and at >= moment:
                return Placement(at, reason or f"{local:%H:%M} is before the sending hours")
        return Placement(opening, reason or f"{local:%H:%M} is before the sending hours")
    raise InvalidValueError("the schedule allows no moment in the coming year")


def due_moment(
    base: datetime,
    wait: Duration | None,
    at: time | None,
    window: Window,
    tz: ZoneInfo,
) -> Placement:
    """When a step whose previous step happened at *base* is due."""
    target = base if wait is None else add_wait(base, wait, tz, window)
    if at is not None:
        target = max(apply_at(target, at, wait, tz), base)
    return next_allowed(target, window, tz, preferred=at)


def zone(name: str) -> ZoneInfo:
    """The :class:`ZoneInfo` for an IANA name (already validated)."""
    return ZoneInfo(name)
