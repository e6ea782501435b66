"""Daily cap counters: how many emails a sender mailbox, or a lead, got on one day.

A counter is taken in the transaction that starts a send, by one statement that adds
one only while the count stays within the cap (``INSERT … ON CONFLICT DO UPDATE …
WHERE n < cap``): two workers that start sends at the same moment can never pass a cap
between them, on SQLite or PostgreSQL. A send that turns out not to have gone gives its
counters back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, Index, delete, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Field, SQLModel, col

from nurture.store.senders import RESERVATION, give_back_reservations, prune_sends


class SendCount(SQLModel, table=True):
    """Emails counted against one cap on one day."""

    __tablename__ = "send_counts"
    __table_args__ = (Index("ix_send_counts_day", "day"),)

    #: ``sender:ADDRESS:DAY`` or ``lead:ID:DAY``.
    key: str = Field(primary_key=True, max_length=400)
    #: The local date the counter is for (``YYYY-MM-DD``), for pruning old ones.
    day: str = Field(max_length=10)
    n: int = 0


_TABLE = SendCount.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Cap:
    """One cap a send counts against."""

    #: The counter's key (``sender:ADDRESS:DAY``, ``lead:ID:DAY``).
    key: str
    #: Its local date, ``YYYY-MM-DD``.
    day: str
    #: The most sends the counter allows.
    limit: int
    #: When the next day begins for it: a refused send waits until then.
    resets_at: datetime
    #: Why a send waits when the cap is reached, in an operator's words.
    reason: str


def take(connection: Connection, cap: Cap) -> bool:
    """Count one send against *cap* if the count stays within its limit; return whether
    it did. One statement: atomic between workers."""
    if cap.limit < 1:
        return False
    insert = pg_insert if connection.dialect.name == "postgresql" else sqlite_insert
    statement = (
        insert(_TABLE)
        .values(key=cap.key, day=cap.day, n=1)
        .on_conflict_do_update(
            index_elements=["key"],
            set_={"n": _TABLE.c.n + 1},
            where=_TABLE.c.n < cap.limit,
        )
        .returning(_TABLE.c.n)
    )
    # The row comes back only if it was written: the rowcount of an upsert whose
    # condition held nothing back is not the same on every driver.
    return connection.execute(statement).first() is not None


def give_back(connection: Connection, keys: Iterable[str]) -> None:
    """A send counted against *keys* did not go: take it off their counts (a sender's
    reservation, ``p:ID``, leaves its rolling windows)."""
    chosen = [key for key in keys if key]
    give_back_reservations(connection, chosen)
    chosen = [key for key in chosen if not key.startswith(RESERVATION)]
    if chosen:
        connection.execute(
            update(_TABLE).where(_TABLE.c.key.in_(chosen)).where(_TABLE.c.n > 0)
            .values(n=_TABLE.c.n - 1)
        )  # fmt: skip


def prune(connection: Connection, before_day: str) -> int:
    """Forget the counters of days before *before_day* (``YYYY-MM-DD``), and the
    senders' sends from before it (past every rolling window)."""
    result = connection.execute(delete(_TABLE).where(col(SendCount.day) < before_day))
    prune_sends(connection, datetime.fromisoformat(before_day).replace(tzinfo=UTC))
    return int(result.rowcount or 0)
