"""A sender's health: its hard bounces over its last sends, its complaints in a day, a
policy refusal from its server; the pause that holds its emails, and the resume that
releases them. The state is :mod:`nurture.store.senders`' ``sender_state`` row, shared
by every worker."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, exists, func, or_, select, update
from sqlmodel import Session

from nurture import logs
from nurture.store.events import Event
from nurture.store.outbox import HELD_SENDER, MessageKind, OutboxMessage, OutboxStatus
from nurture.store.senders import (
    DAY,
    HOUR,
    SenderPace,
    SenderState,
    count_sends,
    ensure_state,
    warmup_level,
)

#: The sends a sender's health is read over, and the complaints that pause it in a day.
HEALTH_WINDOW = 100
MAX_COMPLAINTS = 3
#: A policy refusal (5.7.x) from the sender's own server.
_POLICY = re.compile(r"\b5\.7\.\d{1,3}\b")
_STATE = SenderState.__table__  # type: ignore[attr-defined]
_OUTBOX = OutboxMessage.__table__  # type: ignore[attr-defined]
_EVENTS = Event.__table__  # type: ignore[attr-defined]


def bounces(connection: Connection, email: str, since: datetime | None) -> tuple[int, int]:
    """Hard bounces among the sender's last :data:`HEALTH_WINDOW` sends (from *since*,
    its last resume, on), and how many sends that is.

    A send is a message it handed over (``sent_at``; a bounce report may come later)
    or one its server refused at once (``bounced``, timed by its ``email_bounced``
    event). Both are read through a time index, newest first and no older than the
    sends that fill the window: never the sender's whole history."""
    email_only = _OUTBOX.c.kind == MessageKind.email.value
    reported = (  # a handed send that bounced later (a bounce report)
        exists().where(_EVENTS.c.lead_id == _OUTBOX.c.lead_id)
        .where(_EVENTS.c.sequence == _OUTBOX.c.sequence).where(_EVENTS.c.step == _OUTBOX.c.step)
        .where(_EVENTS.c.type == "email_bounced")
    )  # fmt: skip
    handed = connection.execute(
        select(_OUTBOX.c.sent_at, reported)
        .where(_OUTBOX.c.sender == email).where(email_only)
        .where(_OUTBOX.c.sent_at >= since if since is not None
               else _OUTBOX.c.sent_at.is_not(None))
        .order_by(_OUTBOX.c.sent_at.desc()).limit(HEALTH_WINDOW)
    ).all()  # fmt: skip
    # A refusal older than a full window of handed sends is out of the window.
    bound = handed[-1][0] if len(handed) == HEALTH_WINDOW else None
    if since is not None and (bound is None or since > bound):
        bound = since
    refused = (
        select(_EVENTS.c.occurred_at)
        .join(_OUTBOX, (_EVENTS.c.lead_id == _OUTBOX.c.lead_id)
              & (_EVENTS.c.sequence == _OUTBOX.c.sequence) & (_EVENTS.c.step == _OUTBOX.c.step))
        .where(_EVENTS.c.type == "email_bounced")
        .where(_OUTBOX.c.sender == email).where(email_only)
        .where(_OUTBOX.c.sent_at.is_(None))
        .where(_OUTBOX.c.status == OutboxStatus.bounced.value)
        .order_by(_EVENTS.c.occurred_at.desc()).limit(HEALTH_WINDOW)
    )  # fmt: skip
    if bound is not None:
        refused = refused.where(_EVENTS.c.occurred_at >= bound)
    # The window: the newest HEALTH_WINDOW of both, by time; a refusal is a hard bounce.
    window = sorted([(at, bool(bounced)) for at, bounced in handed]
                    + [(at, True) for at in connection.execute(refused).scalars()],
                    key=lambda pair: pair[0], reverse=True)[:HEALTH_WINDOW]  # fmt: skip
    hard = sum(1 for _, bounced in window if bounced)
    return hard, len(window)


def complaints(
    connection: Connection, email: str, since: datetime | None, now: datetime
) -> int:
    """Complaints about emails the sender sent, in the last 24 hours (and since *since*,
    its last resume): read through the events' time index."""
    start = now - DAY if since is None else max(now - DAY, since)
    return int(connection.execute(
        select(func.count()).select_from(_EVENTS)
        .where(_EVENTS.c.type == "complained").where(_EVENTS.c.occurred_at >= start)
        .where(exists().where(_OUTBOX.c.lead_id == _EVENTS.c.lead_id)
               .where(_OUTBOX.c.sequence == _EVENTS.c.sequence)
               .where(_OUTBOX.c.step == _EVENTS.c.step)
               .where(_OUTBOX.c.sender == email))
    ).scalar_one())  # fmt: skip


def unhealthy(
    connection: Connection, pace: SenderPace, now: datetime, refusal: str = ""
) -> str | None:
    """Why *pace*'s sender must pause now (a bounce burst, complaints, a policy refusal
    *refusal* from its server), else ``None``."""
    if refusal and _POLICY.search(refusal):
        return f"its server refused to send for it: {refusal}"
    ensure_state(connection, pace.name)
    since = connection.execute(
        select(_STATE.c.health_since).where(_STATE.c.name == pace.name)
    ).scalar_one()  # fmt: skip
    hard, sends = bounces(connection, pace.email, since)
    if hard > pace.max_bounce_rate * HEALTH_WINDOW:
        return f"{hard} hard bounces in the last {sends}"
    complained = complaints(connection, pace.email, since, now)
    if complained >= MAX_COMPLAINTS:
        return f"{complained} complaints in 24 hours"
    return None


def pause(connection: Connection, name: str, reason: str, now: datetime) -> bool:
    """Pause the sender *name* (its emails wait, held, until it resumes); ``False`` if
    it already was."""
    ensure_state(connection, name)
    done = connection.execute(
        update(_STATE).where(_STATE.c.name == name).where(_STATE.c.paused_at.is_(None))
        .values(paused_at=now, pause_reason=reason, told_at=None)
    ).rowcount  # fmt: skip
    if done:
        logs.action("sender paused: its emails wait", level=logging.ERROR, sender=name,
                    reason=reason, resume=f"nurture senders resume {name}")  # fmt: skip
    return bool(done)


def check_health(
    connection: Connection, pace: SenderPace, now: datetime, refusal: str = ""
) -> str | None:
    """Pause *pace*'s sender if it is unhealthy; return why (``None``: healthy, or
    paused already)."""
    reason = unhealthy(connection, pace, now, refusal)
    if reason is not None and pause(connection, pace.name, reason, now):
        return reason
    return None


def resume(session: Session, name: str, email: str, now: datetime) -> tuple[bool, int]:
    """Resume the sender *name*: its held emails are queued again, due now, and its
    health counts from now (the sends and complaints before stay behind; the released
    emails, sent from now, count). Return whether it was paused, and how many were
    released."""
    connection = session.connection()
    ensure_state(connection, name)
    was = connection.execute(
        update(_STATE).where(_STATE.c.name == name).where(_STATE.c.paused_at.is_not(None))
        .values(paused_at=None, pause_reason=None, told_at=None, health_since=now)
    ).rowcount  # fmt: skip
    released = connection.execute(
        update(_OUTBOX).where(_OUTBOX.c.status == OutboxStatus.held.value)
        .where(_OUTBOX.c.sender == email)
        .where(_OUTBOX.c.last_error.startswith(f"{HELD_SENDER}{name} paused", autoescape=True))
        .values(status=OutboxStatus.queued.value, next_attempt_at=now, last_error=None)
    ).rowcount  # fmt: skip
    if was:
        logs.action("sender resumed", sender=name, released=int(released or 0))
    return bool(was), int(released or 0)


def hold_for_sender(session: Session, message_id: int, reason: str, name: str) -> bool:
    """A ``queued`` message of the paused sender *name* waits, ``held``, saying why; if
    the sender is still paused as it is held (a resume may have come since it was read:
    the message stays queued)."""
    still_paused = exists().where(_STATE.c.name == name).where(_STATE.c.paused_at.is_not(None))
    return bool(session.connection().execute(
        update(_OUTBOX).where(_OUTBOX.c.id == message_id)
        .where(_OUTBOX.c.status == OutboxStatus.queued.value).where(still_paused)
        .values(status=OutboxStatus.held.value, last_error=reason)
    ).rowcount)  # fmt: skip


def release_unpaused(session: Session, now: datetime) -> int:
    """Emails held for a sender that is no longer paused (held as a resume crossed the
    claim) go back to the queue, due *now*. Return how many."""
    connection = session.connection()
    held_for_sender = (
        (_OUTBOX.c.status == OutboxStatus.held.value)
        & _OUTBOX.c.last_error.startswith(HELD_SENDER, autoescape=True)
    )
    if connection.execute(select(_OUTBOX.c.id).where(held_for_sender).limit(1)).first() is None:
        return 0  # the usual case: a read, no write lock taken
    still = [_OUTBOX.c.last_error.startswith(f"{HELD_SENDER}{name} paused", autoescape=True)
             for name in paused(connection)]  # fmt: skip
    query = update(_OUTBOX).where(held_for_sender)
    if still:
        query = query.where(~or_(*still))
    released = int(connection.execute(
        query.values(status=OutboxStatus.queued.value, next_attempt_at=now, last_error=None)
    ).rowcount or 0)  # fmt: skip
    if released:
        logs.action("held emails of resumed senders released", released=released)
    return released


def paused(connection: Connection) -> dict[str, SenderState]:
    """Every paused sender's state, by name."""
    return {
        row.name: SenderState(**row._mapping)
        for row in connection.execute(select(_STATE).where(_STATE.c.paused_at.is_not(None)))
    }


def untold(connection: Connection) -> list[SenderState]:
    """Paused senders whose operator and owner were not told yet."""
    return [SenderState(**row._mapping) for row in connection.execute(
        select(_STATE).where(_STATE.c.paused_at.is_not(None)).where(_STATE.c.told_at.is_(None))
    )]  # fmt: skip


def mark_told(connection: Connection, name: str, now: datetime) -> bool:
    """Record that the pause of *name* was told (``False``: another worker did)."""
    return bool(connection.execute(
        update(_STATE).where(_STATE.c.name == name).where(_STATE.c.paused_at.is_not(None))
        .where(_STATE.c.told_at.is_(None)).values(told_at=now)
    ).rowcount)  # fmt: skip



@dataclass(frozen=True)
class SenderFigures:
    """One sender now: its sends, its caps, its warm-up and its health."""

    name: str
    email: str
    last_24h: int
    last_hour: int
    daily: int | None
    hourly: int | None
    #: Today's warm-up cap; ``None``: not warming up.
    warmup: int | None
    #: The cap of its rolling 24 hours today (the warm-up's, else ``daily``).
    cap: int | None
    bounces: int
    sends: int
    complaints: int
    paused_at: datetime | None
    pause_reason: str | None

    @property
    def room(self) -> int | None:
        """Sends left in its rolling 24 hours (``None``: no cap of its own)."""
        return None if self.cap is None else max(0, self.cap - self.last_24h)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "address": self.email, "sent_last_24h": self.last_24h,
            "sent_last_hour": self.last_hour, "daily": self.daily, "hourly": self.hourly,
            "warmup_level": self.warmup, "room": self.room,
            "health": {"hard_bounces": self.bounces, "of_sends": self.sends,
                       "complaints_24h": self.complaints},
            "paused": self.paused_at is not None,
            "paused_at": self.paused_at.isoformat() if self.paused_at else None,
            "pause_reason": self.pause_reason,
        }  # fmt: skip


def figures(connection: Connection, pace: SenderPace, now: datetime) -> SenderFigures:
    """What :class:`SenderFigures` says of *pace*'s sender now (reads only)."""
    row = connection.execute(select(_STATE).where(_STATE.c.name == pace.name)).first()
    state = SenderState(**row._mapping) if row is not None else SenderState(name=pace.name)
    level = warmup_level(pace, state.first_sent_at, now)
    hard, sends = bounces(connection, pace.email, state.health_since)
    return SenderFigures(
        pace.name, pace.email, count_sends(connection, pace.name, now - DAY),
        count_sends(connection, pace.name, now - HOUR), pace.daily, pace.hourly, level,
        level if level is not None else pace.daily, hard, sends,
        complaints(connection, pace.email, state.health_since, now), state.paused_at,
        state.pause_reason,
    )  # fmt: skip
