"""Small values the whole installation shares: the generated signing key, and the marks
that say how far each incremental job of the pass has looked."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import String
from sqlmodel import Field, Session, SQLModel


class Meta(SQLModel, table=True):
    """One named value."""

    __tablename__ = "meta"

    key: str = Field(primary_key=True, max_length=64)
    value: str = Field(sa_type=String(1024))


def read_mark(session: Session, key: str, overlap: timedelta) -> datetime | None:
    """Where the job behind mark *key* should look from: the last mark minus *overlap*
    (so a transaction that committed late is not missed), or ``None`` the first time
    (look at everything)."""
    mark = session.get(Meta, key)
    return datetime.fromisoformat(mark.value) - overlap if mark is not None else None


def advance_mark(session: Session, key: str, now: datetime, overlap: timedelta) -> datetime | None:
    """Move the mark *key* to *now*; return :func:`read_mark` from before the move."""
    since = read_mark(session, key, overlap)
    session.merge(Meta(key=key, value=now.isoformat()))  # updates the mark in place
    return since
