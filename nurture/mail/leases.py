"""Leases on claimed messages: kept alive while a run sends, given back when it ends, and
settled when their holder died (a message that may have reached the server is held as
``uncertain``, or queued again with ``[delivery] on_uncertain = resend``)."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlmodel import col, select

from nurture import clock, logs
from nurture.engine.context import Context
from nurture.retry import is_transient
from nurture.store.database import session_scope
from nurture.store.enrollments import email_left
from nurture.store.outbox import (
    MessageKind,
    OutboxMessage,
    OutboxStatus,
)


def settle_abandoned(ctx: Context, now: datetime, *, all_in_flight: bool = False) -> int:
    """Messages of a delivery loop that died (their lease ran out, or *all_in_flight*:
    the caller knows no other loop is alive, as a worker that holds a SQLite database
    does). Those it had not started are queued again. Those it was handing to the server
    may have gone: held as ``uncertain`` for review, or queued again with the same
    Message-ID when ``[delivery] on_uncertain = "resend"``. Return how many were
    uncertain."""
    resend = ctx.config.settings.delivery.on_uncertain == "resend"
    expired = (
        col(OutboxMessage.lease_until).is_not(None)
        if all_in_flight
        else col(OutboxMessage.lease_until) < now
    )
    with session_scope(ctx.engine) as session:
        session.execute(
            update(OutboxMessage)
            .where(col(OutboxMessage.status) == OutboxStatus.leased.value)
            .where(expired)
            .values(status=OutboxStatus.queued.value, lease_until=None)
        )
        rows = list(
            session.exec(
                select(OutboxMessage)
                .where(OutboxMessage.status == OutboxStatus.sending.value)
                .where(expired)
                .with_for_update(skip_locked=True)
            )
        )
        for row in rows:
            row.lease_until = None
            if resend:
                row.status = OutboxStatus.queued.value
            else:
                row.status, row.next_attempt_at = OutboxStatus.uncertain.value, now
                if row.kind == MessageKind.email:
                    email_left(session, row.enrollment_id, now)
                row.last_error = (
                    "the sending process stopped mid-send: it may have been delivered; held "
                    f"(`nurture outbox resend {row.id}` sends it again)"
                )
            session.add(row)
            logs.action(
                "uncertain send",
                level=logging.WARNING,
                lead=row.recipient,
                sequence=row.sequence,
                step=row.step,
                message_id=row.message_id,
                action="resent" if resend else "held",
            )
        return len(rows)


def extend_leases(ctx: Context, now: datetime) -> int:
    """Push back the lease of every message this worker holds (its heartbeat): a lease
    runs out only when its worker stopped beating."""
    with session_scope(ctx.engine) as session:
        result = session.execute(
            update(OutboxMessage)
            .where(col(OutboxMessage.worker) == ctx.worker_id)
            .where(
                col(OutboxMessage.status).in_(
                    [OutboxStatus.leased.value, OutboxStatus.sending.value]
                )
            )
            .values(lease_until=now + timedelta(seconds=ctx.config.settings.delivery.lease))
        )
        return int(getattr(result, "rowcount", 0) or 0)


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


def release_leases(ctx: Context, ids: list[int]) -> None:
    """Give back leased messages that were not started (the loop is stopping)."""
    with session_scope(ctx.engine) as session:
        session.execute(
            update(OutboxMessage)
            .where(col(OutboxMessage.id).in_(ids))
            .where(col(OutboxMessage.status) == OutboxStatus.leased.value)
            .values(status=OutboxStatus.queued.value, lease_until=None)
        )
