"""The one clock of nurture.

Every part of the package asks :func:`now` for the current moment. It is always
timezone-aware UTC. Tests move it with freezegun; ``nurture tick --now`` pins it with
:func:`pinned`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

_pinned: ContextVar[datetime | None] = ContextVar("nurture_pinned_now", default=None)


def now() -> datetime:
    """Return the current moment as an aware UTC datetime."""
    moment = _pinned.get()
    if moment is not None:
        return moment
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """Return *moment* in UTC; a naive datetime is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


@contextmanager
def pinned(moment: datetime) -> Iterator[datetime]:
    """Make :func:`now` answer *moment* (converted to UTC) inside the block."""
    token = _pinned.set(as_utc(moment))
    try:
        yield as_utc(moment)
    finally:
        _pinned.reset(token)
