"""Leases on claimed messages: kept alive while a run sends, given back when it ends, and
settled when their holder died (the transitions are :mod:`nurture.store.sending`'s)."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from nurture import clock, logs
from nurture.engine.context import Context
from nurture.retry import is_transient
from nurture.store import sending
from nurture.store.counters import prune
from nurture.store.database import session_scope

#: Cap counters are kept this many days back (a lead's day may be a day behind UTC's).
COUNTERS_KEPT = timedelta(days=3)


def settle_abandoned(ctx: Context, now: datetime, *, all_in_flight: bool = False) -> int:
    """Messages of a delivery loop that died: their lease ran out, or (*all_in_flight*:
    the caller knows no other worker is alive, as a worker that holds a SQLite database
    does) every one held by another worker than this process. This process's own loops
    (the fast lane, the bulk run) are alive: what they hold is theirs. Also forgets the
    cap counters of days long gone. Return how many were uncertain."""
    resend = ctx.config.settings.delivery.on_uncertain == "resend"
    with session_scope(ctx.engine) as session:
        uncertain = sending.settle_abandoned(
            session, now, resend=resend, not_of_worker=ctx.worker_id if all_in_flight else None
        )
        prune(session.connection(), (now - COUNTERS_KEPT).date().isoformat())
        return uncertain


def extend_leases(ctx: Context, now: datetime) -> int:
    """Push back the lease of every message this worker holds (its heartbeat): a lease
    runs out only when its worker stopped beating."""
    until = now + timedelta(seconds=ctx.config.settings.delivery.lease)
    with session_scope(ctx.engine) as session:
        return sending.extend_leases(session, ctx.worker_id, until)


async def keep_leases(ctx: Context, finished: asyncio.Event) -> None:
    """Extend this worker's leases three times per lease until *finished*."""
    period = ctx.config.settings.delivery.lease / 3
    while True:
        try:
            await asyncio.wait_for(finished.wait(), timeout=period)
            return
        except TimeoutError:
            pass
        try:
            await asyncio.to_thread(extend_leases, ctx, clock.now())
        except Exception as exc:
            if not is_transient(exc):
                raise
            logs.action("lease not extended: database unavailable", level=logging.WARNING)


def release_leases(ctx: Context, batch: list[sending.Claimed]) -> None:
    """Give back the messages of *batch* that were leased and not started (the run is
    stopping, or a sender failed): only while this claim still holds them."""
    if not batch:
        return
    with session_scope(ctx.engine) as session:
        sending.release(session, [item.id for item in batch], batch[0].token)
