"""Retries as policy: one backoff function for every retry (SMTP, webhooks, the
database), and the rule that says which database errors are worth retrying.

A lost connection (PostgreSQL restarted, a backend terminated, SQLite busy) is
*transient*: the work is tried again after a pause and nothing is lost, because every
unit of work commits in one transaction or not at all.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from nurture import logs

T = TypeVar("T")

#: Waits between attempts to reach the database again: first, cap.
DATABASE_FIRST = timedelta(seconds=1)
DATABASE_CAP = timedelta(seconds=30)


def backoff(
    attempts: int, first: timedelta, cap: timedelta, rng: random.Random | None = None
) -> timedelta:
    """The wait before attempt *attempts* + 1: *first* doubling each time up to *cap*,
    with jitter (a random half to all of it), so that workers do not retry in step."""
    ceiling = min(cap, first * (2 ** min(max(attempts - 1, 0), 30)))
    return ceiling * (rng or random).uniform(0.5, 1.0)


def is_transient(exc: BaseException) -> bool:
    """Whether *exc* is the database being out of reach for a while (a lost or refused
    connection, a busy SQLite file) rather than a fault in the work."""
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


async def retry_transient(
    call: Callable[[], Awaitable[T]],
    what: str,
    *,
    stopping: asyncio.Event | None = None,
    attempts_when_stopping: int = 3,
) -> T:
    """Await *call* until it succeeds, pausing with :func:`backoff` after each
    transient database error; any other error propagates. Once *stopping* is set, a
    few more attempts are made and the last error propagates."""
    attempt = 0
    while True:
        try:
            return await call()
        except Exception as exc:
            if not is_transient(exc):
                raise
            attempt += 1
            if stopping is not None and stopping.is_set() and attempt >= attempts_when_stopping:
                raise
            wait = backoff(attempt, DATABASE_FIRST, DATABASE_CAP).total_seconds()
            logs.action(
                "database unavailable: retrying",
                level=logging.WARNING,
                job=what,
                attempt=attempt,
                wait=round(wait, 1),
                error=_one_line(exc),
            )
            await asyncio.sleep(wait)


def _one_line(exc: BaseException) -> str:
    detail = getattr(exc, "orig", None) or exc
    lines = str(detail).strip().splitlines()
    return f"{type(detail).__name__}: {lines[0] if lines else ''}"
