"""Speed to lead: a lead that arrives by a form or the API is announced to the daemon,
which enrolls it and sends what is due for it at once, not at the next pass.

The announcement is a row of ``arrivals`` written in the transaction that stores the
lead, so none is lost; the daemon is then woken (in the same process through a
callback; between processes on PostgreSQL by ``NOTIFY``; on SQLite it looks at the
table a few times a second, a cheap query on an empty table). The regular pass remains
the safety net: a lead whose announcement was missed is enrolled by the next pass.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Index, delete, text
from sqlmodel import Field, Session, SQLModel, col, select

from nurture import clock
from nurture.sqltypes import UTCDateTime

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
    session.add_all(Arrival(lead_id=lead_id, created_at=now) for lead_id in ids)
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


def waiting(session: Session) -> bool:
    """Whether any arrival waits (the cheap look of the SQLite poll)."""
    return session.exec(select(Arrival.id).limit(1)).first() is not None
