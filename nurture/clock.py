"""The one clock of nurture.

Every part of the package asks :func:`now` for the current moment. It is always
timezone-aware UTC. Tests move it with freezegun; the global ``nurture --now`` (or
``NURTURE_NOW``) pins it for a whole command with :func:`pinned` (``process=True``: every
thread of the process reads it, the server's and the daemon's alike).

One rule reads the moments people type (:func:`parse_moment`): ISO 8601, and a moment
without an offset is wall-clock time in the project's default timezone.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from nurture.errors import InvalidValueError


@dataclass(frozen=True)
class _Pin:
    #: The moment the clock was set to (UTC).
    moment: datetime
    #: ``time.monotonic()`` when it was set, if the clock runs on from there; else frozen.
    since: float | None


_pinned: ContextVar[_Pin | None] = ContextVar("nurture_pinned_now", default=None)
#: The pin of the whole process (``nurture --now``): read by every thread that has no
#: pin of its own in its context.
_process_pin: _Pin | None = None


def _pin() -> _Pin | None:
    return _pinned.get() or _process_pin


def now() -> datetime:
    """Return the current moment as an aware UTC datetime."""
    pin = _pin()
    if pin is None:
        return datetime.now(UTC)
    if pin.since is None:
        return pin.moment
    return pin.moment + timedelta(seconds=time.monotonic() - pin.since)


def wall() -> datetime:
    """The real moment, whatever :func:`pinned` says (freezegun still moves it): what a
    row written by an unpinned command gets."""
    return datetime.now(UTC)


def carried() -> _Pin | None:
    """The pin in force in this thread (``None``: the real time), to hand to a child
    process with :func:`carry` so that both read one clock."""
    return _pin()


def carry(pin: _Pin | None) -> None:
    """In a child process: read the clock as the parent does (*pin* from its
    :func:`carried`). A running pin keeps running: ``time.monotonic`` is one clock for
    every process of the machine."""
    global _process_pin
    _process_pin = pin


def is_pinned() -> bool:
    """Whether :func:`now` answers a moment set by :func:`pinned` rather than the real time."""
    return _pin() is not None


#: Moments from outside must fall in these years: earlier or later ones are typing
#: mistakes or probes, and the far ends overflow date arithmetic.
FIRST_YEAR, LAST_YEAR = 1970, 2100


def check_sane(moment: datetime, what: str) -> datetime:
    """Return *moment* if it lies in the years :data:`FIRST_YEAR` to :data:`LAST_YEAR`;
    raise :class:`InvalidValueError` naming *what*."""
    from nurture.errors import InvalidValueError

    if not FIRST_YEAR <= moment.year <= LAST_YEAR:
        raise InvalidValueError(
            f"{what}: {moment.isoformat()} is outside the years {FIRST_YEAR} to {LAST_YEAR}"
        )
    return moment


def as_utc(moment: datetime) -> datetime:
    """Return *moment* in UTC; a naive datetime is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


@contextmanager
def pinned(moment: datetime, *, running: bool = False, process: bool = False) -> Iterator[datetime]:
    """Make :func:`now` answer *moment* (converted to UTC) inside the block.

    Frozen there by default (one command, one moment); with *running* the clock starts at
    *moment* and goes on at the real pace (a daemon or a server rehearsing a date).

    The pin holds for this thread and what it starts in its context (tasks, threads of
    ``asyncio.to_thread``); with *process*, for every thread of the process until the
    block ends (a command: its server and its daemon's threads read one clock). A pin
    of a thread's own context wins over the process's.
    """
    global _process_pin
    pin = _Pin(as_utc(moment), time.monotonic() if running else None)
    if process:
        previous, _process_pin = _process_pin, pin
        try:
            yield pin.moment
        finally:
            _process_pin = previous
        return
    token = _pinned.set(pin)
    try:
        yield pin.moment
    finally:
        _pinned.reset(token)


def parse_moment(text: str, timezone: str, *, what: str = "moment") -> datetime:
    """Read an ISO 8601 moment a person typed (``2026-11-20T15:30``, ``...Z``,
    ``...+02:00``, or a date for its midnight) and return it in UTC.

    The one rule for moments without an offset: they are wall-clock time in *timezone*
    (the project's default timezone). Raises :class:`InvalidValueError` naming *what*.
    """
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidValueError(
            f"{what} {text!r}: not an ISO 8601 moment like 2026-11-20T15:30 "
            "(or 2026-11-20T15:30+01:00)"
        ) from None
    check_sane(moment, what)
    if moment.tzinfo is None:
        try:
            moment = moment.replace(tzinfo=ZoneInfo(timezone))
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidValueError(f"{what} {text!r}: unknown timezone {timezone!r}") from None
    return as_utc(moment)
