"""Speed to lead: a lead that arrives by a form or the API is announced to the daemon,
which enrolls it and sends what is due for it at once, not at the next pass.

The announcement is a row of ``arrivals`` written in the transaction that stores the
lead, so none is lost; the daemon is then woken (in the same process through a
callback; between processes on PostgreSQL by ``NOTIFY``; on SQLite it looks at the
table a few times a second, a cheap query on an empty table). The regular pass remains
the safety net: a lead whose announcement was missed is enrolled by the next pass.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from sqlalchemy import Engine, Index, delete, insert, text
from sqlmodel import Field, Session, SQLModel, col, select

from nurture import clock, logs
from nurture.retry import backoff
from nurture.store.database import session_scope
from nurture.store.sqltypes import UTCDateTime

#: The PostgreSQL channel the server notifies and the daemons listen on.
CHANNEL = "nurture_arrivals"


class Arrival(SQLModel, table=True):
    """A lead that has just arrived and waits for the daemon's fast lane."""

    __tablename__ = "arrivals"
    __table_args__ = (Index("ix_arrivals_lead", "lead_id"),)

    id: int | None = Field(default=None, primary_key=True)
    lead_id: int = Field(foreign_key="leads.id", ondelete="CASCADE")
    created_at: datetime = Field(default_factory=clock.now, sa_type=UTCDateTime)


def announce(session: Session, lead_ids: Iterable[int]) -> None:
    """Record that *lead_ids* arrived (in the caller's transaction); on PostgreSQL the
    daemons hear of it when the transaction commits."""
    ids = list(dict.fromkeys(lead_ids))
    if not ids:
        return
    now = clock.now()
    session.execute(insert(Arrival), [{"lead_id": i, "created_at": now} for i in ids])
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"NOTIFY {CHANNEL}"))


def take(session: Session, limit: int) -> list[int]:
    """Claim up to *limit* arrivals (other workers skip them) and remove them; return
    their lead ids, oldest first."""
    rows = list(
        session.exec(
            select(Arrival).order_by(col(Arrival.id)).limit(limit).with_for_update(skip_locked=True)
        )
    )
    if not rows:
        return []
    session.execute(delete(Arrival).where(col(Arrival.id).in_([row.id for row in rows])))
    return list(dict.fromkeys(row.lead_id for row in rows))


def waiting(engine: Engine) -> bool:
    """Whether any lead waits for the fast lane (the cheap look of the SQLite poll; a
    read, so it never waits for a writer)."""
    with session_scope(engine) as session:
        return session.exec(select(Arrival.id).limit(1)).first() is not None


def drain(engine: Engine, limit: int = 500) -> list[int]:
    """Take up to *limit* waiting arrivals (see :func:`take`), in a transaction of its
    own."""
    with session_scope(engine) as session:
        return take(session, limit)


class Listener:
    """``LISTEN`` on PostgreSQL in a thread of its own, calling *wake* for each
    notification; a lost connection is logged and made again with backoff (the poll
    catches what arrives meanwhile)."""

    def __init__(self, engine: Engine, wake: Callable[[], None]) -> None:
        self.conninfo = engine.url.set(drivername="postgresql").render_as_string(
            hide_password=False
        )
        self.wake = wake
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="nurture-listen", daemon=True)

    def start(self) -> Listener:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(5)

    def _run(self) -> None:
        import psycopg

        attempt = 0
        while not self.stopped.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True) as connection:
                    connection.execute(f"LISTEN {CHANNEL}")
                    attempt = 0
                    while not self.stopped.is_set():
                        for _ in connection.notifies(timeout=1.0, stop_after=1):
                            self.wake()
            except psycopg.Error as exc:
                attempt += 1
                wait = backoff(attempt, timedelta(seconds=1), timedelta(seconds=30))
                logs.action("arrivals listener lost its connection: retrying",
                            level=logging.WARNING, error=type(exc).__name__,
                            wait=round(wait.total_seconds(), 1))  # fmt: skip
                self.stopped.wait(wait.total_seconds())
