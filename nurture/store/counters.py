"""Daily cap counters: how many emails a sender mailbox, or a lead, got on one day, and
how many different leads of one recipient domain were emailed on one day.

A counter is taken in the transaction that starts a send, by one statement that adds
one only while the count stays within the cap (``INSERT … ON CONFLICT DO UPDATE …
WHERE n < cap``): two workers that start sends at the same moment can never pass a cap
between them, on SQLite or PostgreSQL. A send that turns out not to have gone gives its
counters back.

A counter of *different* things (leads of a domain) is taken through a key
``member:MEMBER:KEY`` (:func:`member_key`): the member's own row counts its sends on
KEY, and only its first send of the day counts on KEY itself, by the same conditional
statement. Giving back its last send gives back its place on KEY.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache, lru_cache
from typing import Any

from sqlalchemy import Connection, Dialect, Index, Integer, String, bindparam, case, delete, update
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


class SendCountMember(SQLModel, table=True):
    """The sends of one member (a lead) counted on a counter of different members."""

    __tablename__ = "send_count_members"
    __table_args__ = (Index("ix_send_count_members_day", "day"),)

    #: The counter's key (``domain:DOMAIN:DAY``).
    key: str = Field(primary_key=True, max_length=400)
    #: Who is counted once on it (``lead id``).
    member: str = Field(primary_key=True, max_length=64)
    day: str = Field(max_length=10)
    #: Its sends today: it leaves the counter when the last is given back.
    n: int = 0


_TABLE = SendCount.__table__  # type: ignore[attr-defined]
_MEMBERS = SendCountMember.__table__  # type: ignore[attr-defined]
_MEMBER = "member:"


def member_key(member: str, key: str) -> str:
    """The key by which a send of *member* counts on the counter *key* of different
    members: once a day, however many sends it has."""
    return f"{_MEMBER}{member}:{key}"


def _split(key: str) -> tuple[str | None, str]:
    """``(member, counter key)`` of a key; the member is ``None`` for a plain counter."""
    if not key.startswith(_MEMBER):
        return None, key
    member, _, counter = key[len(_MEMBER) :].partition(":")
    return member, counter


@dataclass(frozen=True)
class Cap:
    """One cap a send counts against."""

    #: The counter's key (``sender:ADDRESS:DAY``, ``lead:ID:DAY``), or
    #: ``member:LEAD:domain:DOMAIN:DAY`` for a counter of different leads.
    key: str
    #: Its local date, ``YYYY-MM-DD``.
    day: str
    #: The most sends the counter allows.
    limit: int
    #: When the next day begins for it: a refused send waits until then.
    resets_at: datetime
    #: Why a send waits when the cap is reached, in an operator's words.
    reason: str


@cache
def _statements(dialect: str) -> tuple[Any, Any]:
    """The counting upsert and the member upsert, built once per dialect with bound
    parameters (a statement built with its values each time is compiled each time)."""
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    count = (
        insert(_TABLE)
        .values(key=bindparam("key"), day=bindparam("day"), n=1)
        .on_conflict_do_update(
            index_elements=["key"],
            set_={"n": _TABLE.c.n + 1},
            where=_TABLE.c.n < bindparam("limit"),
        )
        .returning(_TABLE.c.n)
    )
    member = (
        insert(_MEMBERS)
        .values(key=bindparam("key"), member=bindparam("member"), day=bindparam("day"), n=1)
        .on_conflict_do_update(index_elements=["key", "member"], set_={"n": _MEMBERS.c.n + 1})
        .returning(_MEMBERS.c.n)
    )
    return count, member


def _count(connection: Connection, key: str, day: str, limit: int) -> bool:
    """Add one to the counter *key* if it stays within *limit*; one statement."""
    statement = _statements(connection.dialect.name)[0]
    # The row comes back only if it was written: the rowcount of an upsert whose
    # condition held nothing back is not the same on every driver.
    found = connection.execute(statement, {"key": key, "day": day, "limit": limit}).first()
    return found is not None


def take(connection: Connection, cap: Cap) -> bool:
    """Count one send against *cap* if the count stays within its limit; return whether
    it did. One statement (two for a member's first send of the day, in the caller's
    transaction: the member's row is locked until it ends): atomic between workers."""
    if cap.limit < 1:
        return False
    member, key = _split(cap.key)
    if member is None:
        return _count(connection, key, cap.day, cap.limit)
    sends = connection.execute(
        _statements(connection.dialect.name)[1],
        {"key": key, "member": member, "day": cap.day},
    ).scalar_one()
    if sends > 1 or _count(connection, key, cap.day, cap.limit):
        return True  # counted already today, or its first send and room for it
    connection.execute(
        delete(_MEMBERS).where(_MEMBERS.c.key == key).where(_MEMBERS.c.member == member)
    )
    return False


def is_plain(cap: object) -> bool:
    """Whether *cap* is a plain counter (not a sender's pacing, nor a member's place on
    a counter of different members): the kind :func:`take_together` takes."""
    return isinstance(cap, Cap) and not cap.key.startswith(_MEMBER)


def take_together(connection: Connection, caps: Sequence[Cap]) -> bool:
    """Count one send against each of *caps* (plain counters, a key as often as sends
    count on it), all or none: one statement however many sends and limits, each
    counter raised by its sends only if they fit within its own limit. Return whether
    they did; if not, nothing is counted, and the caller takes the caps one by one
    (:func:`take`) to learn which send must wait. Atomic between workers, like
    :func:`take`: the rows are locked in the order a start on its own takes them (the
    counters of the first cap, the sender's, first), each cap's in the order of their
    keys."""
    plan = counting(connection.dialect, caps)
    if isinstance(plan, bool):
        return plan
    return plan.settle(connection, connection.exec_driver_sql(plan.sql, plan.parameters).scalars())


@dataclass(frozen=True)
class Counting:
    """The statement of :func:`take_together` for some caps (:func:`counting`), to run
    on its own or beside another in one round trip; :meth:`settle` reads its answer."""

    sql: str
    #: As the driver takes them (by name, or by position).
    parameters: Any
    #: Each counter's key, with the sends it adds, in the order they are locked.
    sends: dict[str, int]

    def settle(self, connection: Connection, fitted_keys: Iterable[str]) -> bool:
        """Whether every counter fitted (*fitted_keys*: those the statement raised); if
        not, give back those it raised, so that nothing is counted."""
        fitted = set(fitted_keys)
        if len(fitted) == len(self.sends):
            return True
        self.undo(connection, fitted)
        return False

    def undo(self, connection: Connection, keys: Iterable[str]) -> None:
        """Give back what the statement added to the counters *keys*."""
        rows = [{"counter": key, "sends": self.sends[key]} for key in keys]
        if rows:
            connection.execute(
                update(_TABLE).where(_TABLE.c.key == bindparam("counter"))
                .values(n=_TABLE.c.n - bindparam("sends")),
                rows,
            )  # fmt: skip


def counting(dialect: Dialect, caps: Sequence[Cap]) -> Counting | bool:
    """The statement that takes *caps* together (:func:`take_together`), or, without
    running one, ``True`` when there is nothing to count and ``False`` when a counter
    has fewer places than sends (or is named with two limits: then each is taken on its
    own). Its rows are locked in the order a start on its own takes its caps: every
    counter of the first kind (``sender:``) before any of the next (``lead:``), in the
    order of their keys within a kind, whatever the limits."""
    sends: Counter[str] = Counter(cap.key for cap in caps)
    if not sends:
        return True
    of: dict[str, tuple[str, int]] = {}
    kinds: dict[str, int] = {}
    for cap in caps:
        if of.setdefault(cap.key, (cap.day, cap.limit)) != (cap.day, cap.limit):
            return False
        kinds.setdefault(cap.key.split(":", 1)[0], len(kinds))
    if any(n > of[key][1] for key, n in sends.items()):
        return False
    params: dict[str, Any] = {}
    ordered: dict[str, int] = {}
    # Two workers lock shared rows in one order: the kind first, as a start on its own.
    for i, key in enumerate(sorted(sends, key=lambda key: (kinds[key.split(":", 1)[0]], key))):
        day, limit = of[key]
        params.update({f"key_{i}": key, f"day_{i}": day, f"n_{i}": sends[key], f"limit_{i}": limit})
        ordered[key] = sends[key]
    sql, order = _count_group(dialect, len(ordered))
    return Counting(sql, tuple(params[name] for name in order) if order else params, ordered)


@lru_cache(maxsize=64)
def _count_group(dialect: Dialect, size: int) -> tuple[str, tuple[str, ...] | None]:
    """Raise *size* counters (``:key_0`` by ``:n_0`` …) only if each stays within its
    own limit (``:limit_0`` …); return the keys raised. Compiled once per size, with the
    names of its parameters in order where the driver takes them by position:
    SQLAlchemy does not cache a multi-row INSERT, and compiling it took more than
    running it."""
    insert = pg_insert if dialect.name == "postgresql" else sqlite_insert
    values = insert(_TABLE).values(
        [{"key": bindparam(f"key_{i}"), "day": bindparam(f"day_{i}"), "n": bindparam(f"n_{i}")}
         for i in range(size)]
    )  # fmt: skip
    raised = _TABLE.c.n + values.excluded.n
    limit = case(
        {bindparam(f"key_{i}", type_=String()): bindparam(f"limit_{i}", type_=Integer())
         for i in range(size)},
        value=values.excluded.key,
    )  # fmt: skip
    compiled = values.on_conflict_do_update(
        index_elements=["key"], set_={"n": raised}, where=raised <= limit
    ).returning(_TABLE.c.key).compile(dialect=dialect)
    order = tuple(compiled.positiontup or ()) if compiled.positional else None
    return str(compiled), order


def give_back(connection: Connection, keys: Iterable[str]) -> None:
    """A send counted against *keys* did not go: take it off their counts (a member's
    last send of the day gives back its place on the counter; a sender's reservation,
    ``p:ID``, leaves its rolling windows)."""
    keys = [key for key in keys if key]
    give_back_reservations(connection, keys)
    chosen: list[str] = []
    for key in keys:
        if key.startswith(RESERVATION):
            continue
        member, counter = _split(key)
        if member is None:
            chosen.append(counter)
            continue
        left = connection.execute(
            update(_MEMBERS).where(_MEMBERS.c.key == counter).where(_MEMBERS.c.member == member)
            .where(_MEMBERS.c.n > 0).values(n=_MEMBERS.c.n - 1).returning(_MEMBERS.c.n)
        ).scalar()  # fmt: skip
        if left == 0:
            connection.execute(delete(_MEMBERS).where(_MEMBERS.c.key == counter)
                               .where(_MEMBERS.c.member == member))  # fmt: skip
            chosen.append(counter)
    if chosen:
        connection.execute(
            update(_TABLE).where(_TABLE.c.key.in_(chosen)).where(_TABLE.c.n > 0)
            .values(n=_TABLE.c.n - 1)
        )  # fmt: skip


def prune(connection: Connection, before_day: str) -> int:
    """Forget the counters of days before *before_day* (``YYYY-MM-DD``), and the
    senders' sends from before it (past every rolling window)."""
    connection.execute(delete(_MEMBERS).where(_MEMBERS.c.day < before_day))
    result = connection.execute(delete(_TABLE).where(col(SendCount.day) < before_day))
    prune_sends(connection, datetime.fromisoformat(before_day).replace(tzinfo=UTC))
    return int(result.rowcount or 0)
