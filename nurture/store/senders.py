"""Senders: the mailboxes that send a sequence's emails, their pacing and their health.

Each ``[[senders]]`` entry has a row in ``sender_state`` (its pause, and the moment of
its first send, which its warm-up counts from) and one row in ``sender_sends`` per send
it started (the rolling 24 hours and hour, and the gap the next send waits).

:func:`take_pace` is the pacing's last check, in the start's transaction
(:func:`nurture.store.sending.start`): it locks the sender's ``sender_state`` row
first, so two workers starting sends of one sender take turns, and each reads the
sends the other committed before it counts. A send that did not go gives its row back
(:func:`nurture.store.counters.give_back`, key ``p:ID``). A sender's health, its pause
and its resume are :mod:`nurture.store.sender_health`'s.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Index, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Column, Field, Session, SQLModel, Text

from nurture.store.outbox import HELD_SENDER, MessageKind, OutboxMessage
from nurture.store.sqltypes import UTCDateTime

#: The key a start's reservation is counted under (then the message's id).
RESERVATION = "p:"
DAY, HOUR = timedelta(hours=24), timedelta(hours=1)


class SenderState(SQLModel, table=True):
    """One ``[[senders]]`` entry's state, shared by every worker."""

    __tablename__ = "sender_state"

    name: str = Field(primary_key=True, max_length=64)
    #: Its first send: the warm-up counts its days from here.
    first_sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    #: Paused (its emails are held) since, and why; ``None``: sending.
    paused_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    pause_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    #: When the operator and the sender's owner were told of the pause (once).
    told_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    #: Its health counts only sends (and complaints) from this moment on: its last
    #: resume; ``None``: its whole history (the last 100 sends).
    health_since: datetime | None = Field(default=None, sa_type=UTCDateTime)


class SenderSend(SQLModel, table=True):
    """One send a sender started: counted in its rolling windows."""

    __tablename__ = "sender_sends"
    __table_args__ = (
        Index("ix_sender_sends_sender_at", "sender", "at"),
        Index("ix_sender_sends_outbox", "outbox_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    sender: str = Field(max_length=64)
    #: The message (no foreign key: an erased lead's messages go, the send counted).
    outbox_id: int
    at: datetime = Field(sa_type=UTCDateTime)
    #: The next send of this sender waits until then (``min_gap`` and its jitter).
    not_before: datetime = Field(sa_type=UTCDateTime)


_STATE = SenderState.__table__  # type: ignore[attr-defined]
_SENDS = SenderSend.__table__  # type: ignore[attr-defined]
_OUTBOX = OutboxMessage.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class SenderPace:
    """A ``[[senders]]`` entry's pacing, as the start checks it (from the settings)."""

    name: str
    #: Its address alone: the envelope sender of its messages.
    email: str
    daily: int | None = None
    hourly: int | None = None
    #: Seconds between two sends; each gap is up to 50 % longer at random.
    min_gap: float = 0.0
    warmup_start: int | None = None
    warmup_increase: int = 0
    #: ``[limits] max_bounce_rate``.
    max_bounce_rate: float = 0.05
    #: The project's timezone: the times in reasons are written in it.
    timezone: str = "UTC"


@dataclass(frozen=True)
class Refusal:
    """Why a send of a sender may not start now."""

    reason: str
    #: When to look again (a deferred message's ``next_attempt_at``).
    until: datetime
    #: The sender is paused: the message is ``held`` until it resumes.
    held: bool = False
    #: Which check refused: ``paused``, ``min_gap``, ``hourly``, ``warmup`` or ``daily``.
    check: str = ""


# --- the pure policy ---------------------------------------------------------------------


def warmup_level(pace: SenderPace, first_sent_at: datetime | None, now: datetime) -> int | None:
    """The daily cap a warming-up sender has today (``start``, then ``increase`` more a
    day since its first send, up to ``daily``); ``None``: no warm-up, or it is over."""
    if pace.warmup_start is None:
        return None
    days = 0 if first_sent_at is None else max(0, (now - first_sent_at) // DAY)
    level = pace.warmup_start + pace.warmup_increase * days
    if pace.daily is not None and level >= pace.daily:
        return None
    return level


def next_level_at(first_sent_at: datetime | None, now: datetime) -> datetime:
    """When a warming-up sender's cap next grows (a day after its first send's hour)."""
    if first_sent_at is None:
        return now + DAY
    return first_sent_at + DAY * ((now - first_sent_at) // DAY + 1)


def jittered_gap(pace: SenderPace, draw: float) -> timedelta:
    """The gap after one send: ``min_gap`` and up to 50 % more (*draw* in [0, 1))."""
    return timedelta(seconds=pace.min_gap * (1 + 0.5 * draw))


def _clock(moment: datetime, pace: SenderPace) -> str:
    local = moment.astimezone(ZoneInfo(pace.timezone))
    return local.strftime("%H:%M:%S" if local.second else "%H:%M")


# --- the last check ----------------------------------------------------------------------


def ensure_state(connection: Connection, name: str) -> None:
    insert = pg_insert if connection.dialect.name == "postgresql" else sqlite_insert
    connection.execute(insert(_STATE).values(name=name).on_conflict_do_nothing())


def _lock(connection: Connection, name: str) -> Any:
    """The sender's state row, locked until the transaction ends (SQLite: the start's
    first write already holds the database's one write lock)."""
    ensure_state(connection, name)
    return connection.execute(
        select(_STATE).where(_STATE.c.name == name).with_for_update()
    ).one()


def count_sends(connection: Connection, name: str, since: datetime) -> int:
    return int(connection.execute(
        select(func.count()).select_from(_SENDS)
        .where(_SENDS.c.sender == name).where(_SENDS.c.at > since)
    ).scalar_one())  # fmt: skip


@dataclass(frozen=True)
class PaceView:
    """What the pacing of one sender is decided on, read at one moment."""

    #: Why it is paused (``None``: sending).
    paused: str | None
    first_sent_at: datetime | None
    #: When the gap after its latest send ends.
    ready_at: datetime | None
    #: Its sends in the longest window its caps look at, oldest first.
    times: tuple[datetime, ...]


def _window(pace: SenderPace) -> timedelta | None:
    if pace.daily is not None or pace.warmup_start is not None:
        return DAY
    return HOUR if pace.hourly is not None else None


def read_pace(connection: Connection, pace: SenderPace, now: datetime, state: Any = None
              ) -> PaceView:  # fmt: skip
    """The :class:`PaceView` of *pace*'s sender at *now* (*state*: its row, if read)."""
    if state is None:
        state = connection.execute(select(_STATE).where(_STATE.c.name == pace.name)).first()
    ready = connection.execute(
        select(_SENDS.c.not_before).where(_SENDS.c.sender == pace.name)
        .order_by(_SENDS.c.at.desc()).limit(1)
    ).scalar()  # fmt: skip
    window = _window(pace)
    times: tuple[datetime, ...] = ()
    if window is not None:
        times = tuple(connection.execute(
            select(_SENDS.c.at).where(_SENDS.c.sender == pace.name)
            .where(_SENDS.c.at > now - window).order_by(_SENDS.c.at)
        ).scalars())  # fmt: skip
    paused = None
    if state is not None and state.paused_at is not None:
        paused = state.pause_reason or "paused"
    return PaceView(paused, state.first_sent_at if state is not None else None, ready, times)


def _frees_at(times: list[datetime], now: datetime, window: timedelta, cap: int) -> datetime:
    """When enough of the sends in the last *window* (*times*, oldest first) have aged
    out of it for one more."""
    inside = [t for t in times if t > now - window]
    return inside[max(0, len(inside) - cap)] + window if inside else now + window


def verdict(
    pace: SenderPace, view: PaceView, now: datetime, pending: int = 0, behind: int = 0
) -> Refusal | None:
    """Whether one more send of *pace*'s sender may start at *now*, *pending* sends
    (allowed a moment ago, not counted yet) after what *view* saw, and *behind* others
    waiting for a gap before it; else why not and until when. The checks, in order:
    paused, ``min_gap``, ``hourly``, the warm-up, ``daily``."""
    name = pace.name
    if view.paused is not None:
        return Refusal(f"{HELD_SENDER}{name} paused: {view.paused}", now, True, "paused")
    ready = view.ready_at if view.ready_at is not None and view.ready_at > now else None
    if (pending or behind) and pace.min_gap:
        ready = max(ready or now, now) + timedelta(seconds=pace.min_gap) * (pending + behind)
    if ready is not None:
        return Refusal(f"sender {name}: min_gap {pace.min_gap:g} seconds, next at "
                       f"{_clock(ready, pace)}", ready, check="min_gap")  # fmt: skip
    times = sorted([*view.times, *([now] * pending)])
    if pace.hourly is not None and sum(1 for t in times if t > now - HOUR) >= pace.hourly:
        until = _frees_at(times, now, HOUR, pace.hourly)
        return Refusal(f"sender {name}: hourly cap {pace.hourly} reached, next at "
                       f"{_clock(until, pace)}", until, check="hourly")  # fmt: skip
    level = warmup_level(pace, view.first_sent_at, now)
    cap = level if level is not None else pace.daily
    day = sum(1 for t in times if t > now - DAY)
    if cap is not None and day >= cap:
        until = _frees_at(times, now, DAY, cap)
        if level is not None:
            until = min(until, next_level_at(view.first_sent_at, now))
            return Refusal(f"sender {name}: warming up: {day} of {level} today, next at "
                           f"{_clock(until, pace)}", until, check="warmup")  # fmt: skip
        return Refusal(f"sender {name}: daily cap {cap} reached, next at "
                       f"{_clock(until, pace)}", until, check="daily")  # fmt: skip
    return None


def take_pace(
    connection: Connection, pace: SenderPace, outbox_id: int, now: datetime,
    draw: float | None = None,
) -> Refusal | None:  # fmt: skip
    """Count one send of *pace*'s sender (message *outbox_id*) if its pacing allows it
    now (:func:`verdict`), else say why not. Call it in the start's transaction: the
    sender's row is locked first, so the sends it reads are every worker's."""
    state = _lock(connection, pace.name)
    refused = verdict(pace, read_pace(connection, pace, now, state), now)
    if refused is not None:
        return refused
    gap = jittered_gap(pace, random.random() if draw is None else draw)
    connection.execute(_SENDS.insert().values(sender=pace.name, outbox_id=outbox_id, at=now,
                                              not_before=now + gap))  # fmt: skip
    if state.first_sent_at is None:
        connection.execute(
            update(_STATE).where(_STATE.c.name == pace.name).values(first_sent_at=now)
        )
    return None


def reservation_key(outbox_id: int) -> str:
    return f"{RESERVATION}{outbox_id}"


def give_back_reservations(connection: Connection, keys: list[str]) -> None:
    """Sends counted under *keys* (``p:ID``) did not go: they leave the windows."""
    ids = [int(k[len(RESERVATION):]) for k in keys
           if k.startswith(RESERVATION) and k[len(RESERVATION):].isdigit()]  # fmt: skip
    if ids:
        connection.execute(delete(_SENDS).where(_SENDS.c.outbox_id.in_(ids)))


def prune_sends(connection: Connection, before: datetime) -> int:
    """Forget sends older than *before* (past every window)."""
    return int(connection.execute(delete(_SENDS).where(_SENDS.c.at < before)).rowcount or 0)


# --- what the pick reads ------------------------------------------------------------------


def room(connection: Connection, pace: SenderPace, now: datetime) -> int | None:
    """Sends *pace*'s sender has left in its rolling 24 hours now (its warm-up level,
    else ``daily``); ``None``: no cap of its own."""
    view = read_pace(connection, pace, now)
    level = warmup_level(pace, view.first_sent_at, now)
    cap = level if level is not None else pace.daily
    if cap is None:
        return None
    return max(0, cap - sum(1 for t in view.times if t > now - DAY))


def sent_by_leads(session: Session, lead_ids: Any) -> dict[int, str]:
    """The sender each of *lead_ids* got its latest email from (its address)."""
    rows = session.execute(
        select(_OUTBOX.c.lead_id, _OUTBOX.c.sender)
        .where(_OUTBOX.c.lead_id.in_(list(lead_ids)))
        .where(_OUTBOX.c.kind == MessageKind.email.value)
        .order_by(_OUTBOX.c.id)
    )  # fmt: skip
    return {lead_id: sender for lead_id, sender in rows if lead_id is not None}

