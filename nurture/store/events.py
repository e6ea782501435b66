"""Events: what happened to a lead (an email sent, opened, clicked, replied, a call made).

Every way in (the CLI, the HTTP API, the tracking links, the reply mailbox, the engine
itself) goes through :func:`record_event`, which stores each event once, applies what it
means at once (an unsubscribe, a complaint or a bounce stops all email to the lead), and
wakes the lead's active enrollments so an ``exit_when`` event acts on the next pass.

Conditions and ``exit_when`` read events through :class:`LeadEvents`. Machine
engagement (scanners, privacy proxies) is stored with ``machine`` set and never read as
the lead's own doing.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import (
    Column,
    Index,
    Select,
    UniqueConstraint,
    case,
    null,
    text,
    type_coerce,
    update,
)
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, col, or_, select

from nurture import clock
from nurture.errors import InvalidValueError
from nurture.language.accounts import account_reply_words
from nurture.language.sequences import TASK_DONE
from nurture.store.bulk import insert_rows, one_of
from nurture.store.enrollments import WAKES_ON_ANY, DeployedSequence, Enrollment, EnrollmentStatus
from nurture.store.outbound import note
from nurture.store.sqltypes import JSONType, UTCDateTime
from nurture.suggest import close_match

#: Events that change whether the lead may be emailed, and to what.
STATUS_EVENTS = {
    "unsubscribed": "unsubscribed",
    "complained": "complained",
    "email_bounced": "bounced",
}
#: The types nurture itself knows; any other name like these is a custom event.
KNOWN_TYPES = (
    "email_sent", "email_opened", "email_clicked", "email_replied", "email_bounced",
    "auto_reply", "unsubscribed", "complained", "form_submitted", "page_visited",
    "meeting_booked", "call_completed", "linkedin_completed", "task_completed",
    "out_of_office", "account_replied",
)  # fmt: skip
#: Types only nurture records, from its own evidence (its sends, links, mailbox, scores,
#: hand-offs, leads and opt-in links): the events API refuses them.
ENGINE_TYPES = frozenset(
    {
        "email_sent", "email_opened", "email_clicked", "auto_reply", "stage_changed",
        "lead_created", "lead_updated", "opt_in_confirmed", "out_of_office", "account_replied",
    }
)  # fmt: skip
ENGINE_PREFIXES = ("handoff_",)
TYPE_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}")


#: The predicate of the events not scored yet, as each database's index states it (and
#: as ``Event.scored.is_(False)`` renders it: SQLite uses a partial index only for a
#: query that states its very predicate).
UNSCORED_SQLITE, UNSCORED_POSTGRESQL = "scored IS 0", "scored IS false"


class Event(SQLModel, table=True):
    """One thing that happened to one lead."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_lead", "lead_id", "occurred_at"),
        Index("ix_events_occurred", "occurred_at"),
        # A deployment that renames a step renames what names it.
        Index("ix_events_sequence_step", "sequence", "step"),
        # The events not scored yet, oldest first: a partial index, so it holds only
        # them (and a scored event leaves it), with the very predicate scoring asks by.
        Index(
            "ix_events_unscored",
            "id",
            sqlite_where=text(UNSCORED_SQLITE),
            postgresql_where=text(UNSCORED_POSTGRESQL),
        ),
        UniqueConstraint("source", "source_id", "lead_id", name="uq_events_lead_source_id"),
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, primary_key=True)
    lead_id: int = Field(foreign_key="leads.id", ondelete="CASCADE")
    #: ``email_sent``, ``email_opened``, ``email_clicked``, ``email_replied``,
    #: ``email_bounced``, ``call_completed``, ``unsubscribed``, ...
    type: str = Field(max_length=64, index=True)
    sequence: str | None = Field(default=None, max_length=200)
    step: str | None = Field(default=None, max_length=200)
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONType, nullable=False))
    occurred_at: datetime = Field(default_factory=clock.now, sa_type=UTCDateTime)
    #: Where it came from: ``engine``, ``cli``, ``api``, ``pixel``, ``click``,
    #: ``unsubscribe``, ``imap``, ``tasks``.
    source: str = Field(default="engine", max_length=32)
    #: The sender's own id for it: a second delivery with the same id for the same lead
    #: is the same event (ids are per lead: one lead's id never names another's event).
    source_id: str | None = Field(default=None, max_length=300)
    #: A scanner or proxy did it, not the lead: stored, never counted.
    machine: bool = False
    #: The name (never the value) of the API key that sent it (``[api.keys]``).
    via_key: str | None = Field(default=None, max_length=64)
    #: Engagement points it earned when scored (before decay); ``None`` until scored.
    points: float | None = None
    scored: bool = False


_EVENTS = Event.__table__  # type: ignore[attr-defined]
_DEPLOYED = DeployedSequence.__table__  # type: ignore[attr-defined]
#: What scoring reads of an event.
_SCORED_COLUMNS = ("id", "lead_id", "type", "occurred_at", "machine", "source")


def unscored_events(limit: int, lead_ids: list[int] | None = None) -> Select[Any]:
    """The first *limit* events not scored yet (of *lead_ids* only, if given), oldest
    first, as rows of the columns scoring reads; read through ``ix_events_unscored``."""
    query = sa_select(*(_EVENTS.c[name] for name in _SCORED_COLUMNS)).where(
        _EVENTS.c.scored.is_(False)
    )
    if lead_ids is not None:
        query = query.where(_EVENTS.c.lead_id.in_(lead_ids))
    return query.order_by(_EVENTS.c.id).limit(limit)


def check_type(name: str) -> str:
    """*name* if it is a valid event type (a known one or a custom ``snake_case`` name)."""
    if not TYPE_PATTERN.fullmatch(name):
        raise InvalidValueError(
            f"event type {name!r}: use lower-case letters, digits and _ (like form_submitted)"
        )
    return name


def likely_typo(name: str) -> str | None:
    """The known type a custom event name is most likely a typo of (``email_click`` ->
    ``email_clicked``, ``clicked`` -> ``email_clicked``), or ``None``."""
    known = (*KNOWN_TYPES, *ENGINE_TYPES)
    if name in known or name.startswith(ENGINE_PREFIXES):
        return None
    return close_match(name, known, cutoff=0.7)


def ever_recorded(session: Session, names: Iterable[str]) -> set[str]:
    """Which of *names* any event of the installation has (one indexed query)."""
    wanted = sorted(set(names))
    if not wanted:
        return set()
    query = select(Event.type).where(col(Event.type).in_(wanted)).distinct()
    return set(session.exec(query))


def check_external_type(name: str) -> str:
    """*name* if a system outside nurture may report it (see :data:`ENGINE_TYPES`)."""
    check_type(name)
    if name in ENGINE_TYPES or name.startswith(ENGINE_PREFIXES):
        raise InvalidValueError(
            f"type {name!r} is recorded by nurture itself (from its own emails, links, "
            "mailbox and scores); other systems report what they saw, like "
            "form_submitted, meeting_booked, page_visited or email_replied"
        )
    return name


class EventFact(NamedTuple):
    """What conditions read of one event, as :func:`events_by_lead` reads it (these
    columns alone, not an :class:`Event` object; ``data`` only for :data:`DATA_READ`)."""

    type: str
    sequence: str | None
    step: str | None
    data: dict[str, Any]
    occurred_at: datetime
    machine: bool


@dataclass(frozen=True)
class LeadEvents:
    """The :class:`~nurture.language.expressions.Engagement` of one lead in one sequence.

    ``opened('welcome')`` means an open of the ``welcome`` email of *this* sequence;
    ``occurred('call_completed')`` without a step means any such event of the lead.
    For an enrollment, only what happened since it began counts: a reply to last
    year's sequence does not end this one. Machine events are left out.
    """

    pairs: frozenset[tuple[str, str | None]]
    types: frozenset[str]
    #: Step id → the outcome of the task done there (the latest), in this sequence.
    outcomes: Mapping[str, str] = field(default_factory=dict)
    #: Event type → what its latest says in words (``account_replied``: who replied).
    words: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(
        cls, events: Iterable[Event | EventFact], sequence: str, since: datetime | None = None
    ) -> LeadEvents:
        """The lead's own events (of this enrollment: those *since* it began)."""
        human = [e for e in events if not e.machine and (since is None or e.occurred_at >= since)]
        pairs = {(e.type, e.step) for e in human if e.sequence == sequence}
        outcomes = {
            e.step: str(e.data.get("outcome"))
            for e in sorted(human, key=lambda e: e.occurred_at)
            if e.sequence == sequence and e.step and e.type in TASK_DONE and e.data.get("outcome")
        }
        words = {
            e.type: account_reply_words(e.data)
            for e in sorted(human, key=lambda e: e.occurred_at)
            if e.type == "account_replied"
        }
        return cls(frozenset(pairs), frozenset(e.type for e in human), outcomes, words)

    def occurred(self, event: str, step: str | None = None) -> bool:
        if step is None:
            return event in self.types
        return (event, step) in self.pairs

    def outcome(self, step: str) -> str | None:
        return self.outcomes.get(step)

    def said(self, event: str) -> str | None:
        return self.words.get(event)


#: The types whose ``data`` :class:`LeadEvents` reads (a task's outcome, who replied):
#: the ``data`` of any other event is not read from the database (decoding it was most
#: of the cost of reading a lead's events).
DATA_READ = frozenset({*TASK_DONE, "account_replied"})
_E = Event.__table__.c  # type: ignore[attr-defined]
#: An event's :class:`EventFact` columns, with its lead.
_FACTS = sa_select(
    _E.lead_id, _E.type, _E.sequence, _E.step,
    type_coerce(case((_E.type.in_(sorted(DATA_READ)), _E.data), else_=null()), JSONType),
    _E.occurred_at, _E.machine,
)  # fmt: skip


def events_by_lead(session: Session, lead_ids: Iterable[int]) -> dict[int, list[EventFact]]:
    """What each of *lead_ids* did, as :class:`EventFact` rows read column by column
    (no ORM object per event), 1,000 leads to a query; a lead without events has an
    empty list. ``data`` is read for the types of :data:`DATA_READ` only (``{}`` for
    the others)."""
    grouped: dict[int, list[EventFact]] = defaultdict(list)
    ids = sorted(set(lead_ids))
    connection = session.connection()
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        for lead_id, type_, sequence, step, data, occurred_at, machine in connection.execute(
            _FACTS.where(one_of(connection.dialect, _E.lead_id, chunk))
        ):
            grouped[lead_id].append(
                EventFact(type_, sequence, step, data or {}, occurred_at, machine)
            )
    return grouped


def events_of(session: Session, lead_id: int) -> list[Event]:
    """Every event of a lead, oldest first."""
    query = select(Event).where(Event.lead_id == lead_id).order_by(col(Event.occurred_at))
    return list(session.exec(query))


@dataclass(slots=True)
class NewEvent:
    """An event for :func:`record_events` to store: the columns of :class:`Event`
    without an ORM object (a batch of thousands is built and written in a few
    milliseconds); *id* is set once it is stored."""

    lead_id: int
    type: str
    occurred_at: datetime
    data: dict[str, Any] = field(default_factory=dict)
    source: str = "engine"
    sequence: str | None = None
    step: str | None = None
    source_id: str | None = None
    machine: bool = False
    via_key: str | None = None
    id: int | None = None


@dataclass(frozen=True)
class Recorded:
    #: The stored event (a :class:`NewEvent` from :func:`record_events`, with its id).
    event: Event | NewEvent
    #: ``False`` when the same event was recorded before (and this one was not stored).
    new: bool


def record_event(
    session: Session,
    lead_id: int,
    type: str,
    *,
    sequence: str | None = None,
    step: str | None = None,
    data: dict[str, Any] | None = None,
    at: datetime | None = None,
    source: str = "engine",
    source_id: str | None = None,
    machine: bool = False,
    dedupe_within: timedelta | None = None,
    via_key: str | None = None,
) -> Recorded:
    """Store an event once, apply it, and wake the lead's enrollments (in the caller's
    transaction).

    The same event is not stored twice: one with the *source_id* of an earlier one, or
    (with *dedupe_within*) one of the same lead, type and touch that soon after another.
    """
    moment = at or clock.now()
    earlier = _earlier(session, lead_id, type, sequence, step, moment, source, source_id,
                       dedupe_within, machine)  # fmt: skip
    if earlier is not None:
        return Recorded(earlier, new=False)
    event = Event(
        lead_id=lead_id, type=type, sequence=sequence, step=step, data=data or {},
        occurred_at=moment, source=source, source_id=source_id, machine=machine,
        via_key=via_key,
    )  # fmt: skip
    try:
        with session.begin_nested():
            session.add(event)
    except IntegrityError:  # another process stored the same source id just now
        again = _earlier(
            session, lead_id, type, sequence, step, moment, source, source_id, None, machine
        )
        assert again is not None
        return Recorded(again, new=False)
    if machine:
        return Recorded(event, new=True)
    note(session, [event])
    status = STATUS_EVENTS.get(type)
    if status is not None:
        _set_status(session, lead_id, status, moment)
    wake(session, [lead_id], moment, Sleepers(session).of(type))
    return Recorded(event, new=True)


#: The columns :func:`record_events` writes (every row has each: one multi-row INSERT).
_WRITTEN = ("lead_id", "type", "sequence", "step", "data", "occurred_at", "source",
            "source_id", "machine", "via_key")  # fmt: skip
_INSERT = _EVENTS.insert()
_NEXT_IDS = text(
    "SELECT nextval(pg_get_serial_sequence('events', 'id')) FROM generate_series(1, :n)"
)


def _insert(session: Session, rows: list[dict[str, Any]]) -> list[int]:
    """Insert *rows* into ``events``; return their ids, in order.

    PostgreSQL: the ids are taken from the table's sequence first, in one query, and
    the rows inserted by one statement (:func:`~nurture.store.bulk.insert_rows`).
    SQLite: rows are numbered one after the other (AUTOINCREMENT) and no other writer
    can insert between them (the transaction holds the write lock from its first
    write), so the last id gives them all. (A multi-row ``INSERT … RETURNING`` in
    order costs an INSERT per row on SQLite, and on PostgreSQL a statement that the
    driver parses again for every batch.)
    """
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        ids = list(connection.execute(_NEXT_IDS, {"n": len(rows)}).scalars())
        numbered = [{**row, "id": i} for row, i in zip(rows, ids, strict=True)]
        insert_rows(connection, _EVENTS, numbered)
        return ids
    connection.execute(_INSERT, rows)
    last = int(connection.execute(text("SELECT last_insert_rowid()")).scalar_one())
    return list(range(last - len(rows) + 1, last + 1))


def _with_source_ids(session: Session, source: str, ids: list[str]) -> Select[Any]:
    """The events of *source* with one of the source *ids*.

    On PostgreSQL the statement is planned for these very ids: once the driver has
    prepared it (after five runs), a generic plan would test every event of *source*
    against each id in turn when the table grew faster than its statistics (as after a
    burst of events): 0.1 to 0.5 s a batch instead of a few milliseconds."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
    among = one_of(session.get_bind().dialect, col(Event.source_id), ids)
    return select(Event).where(Event.source == source).where(among)


def record_events(session: Session, events: Sequence[Event | NewEvent]) -> list[Recorded]:
    """Store many new events at once, as :func:`record_event` stores one: each once (an
    event whose source id was recorded before, or earlier in *events*, is not stored
    again), applied, and waking their leads' enrollments; in the caller's transaction.
    The new ones are written by one multi-row INSERT (not through the session: each
    gets its ``id`` set, and is not an object of the session).

    Raises :class:`~sqlalchemy.exc.IntegrityError` when another process stored one of
    the same source ids meanwhile: the caller then records them one by one.
    """
    keyed = [e for e in events if e.source_id is not None]
    earlier: dict[tuple[int, str, str], Event | NewEvent] = {}
    for source in {e.source for e in keyed}:
        ids = sorted({e.source_id or "" for e in keyed if e.source == source})
        for start in range(0, len(ids), 500):
            for row in session.scalars(_with_source_ids(session, source, ids[start : start + 500])):
                earlier[(row.lead_id, row.source, row.source_id or "")] = row
    results: list[Recorded] = []
    new: list[Event | NewEvent] = []
    for event in events:
        key = (event.lead_id, event.source, event.source_id or "")
        if event.source_id is not None and key in earlier:
            results.append(Recorded(earlier[key], new=False))
            continue
        if event.source_id is not None:
            earlier[key] = event
        new.append(event)
        results.append(Recorded(event, new=True))
    if new:
        session.flush()  # what the session holds first (the leads of these events)
        rows = [{name: getattr(item, name) for name in _WRITTEN} for item in new]
        for item, new_id in zip(new, _insert(session, rows), strict=True):
            item.id = new_id
    note(session, [event for event in new if not event.machine])
    # The leads to wake, by moment and by the sequences their events leave asleep.
    woken: dict[tuple[datetime, frozenset[str]], set[int]] = {}
    sleepers = Sleepers(session)
    for event in new:
        if event.machine:
            continue
        status = STATUS_EVENTS.get(event.type)
        if status is not None:
            _set_status(session, event.lead_id, status, event.occurred_at)
        woken.setdefault((event.occurred_at, sleepers.of(event.type)), set()).add(event.lead_id)
    for (moment, asleep), lead_ids in woken.items():
        ordered = sorted(lead_ids)
        for start in range(0, len(ordered), 500):
            wake(session, ordered[start : start + 500], moment, asleep)
    return results


def _earlier(
    session: Session,
    lead_id: int,
    type: str,
    sequence: str | None,
    step: str | None,
    moment: datetime,
    source: str,
    source_id: str | None,
    within: timedelta | None,
    machine: bool,
) -> Event | None:
    if source_id is not None:
        query = (
            select(Event)
            .where(Event.lead_id == lead_id)
            .where(Event.source == source)
            .where(Event.source_id == source_id)
        )
        return session.exec(query).first()
    if within is None:
        return None
    query = (
        select(Event)
        .where(Event.lead_id == lead_id)
        .where(Event.type == type)
        .where(col(Event.sequence) == sequence)
        .where(col(Event.step) == step)
        .where(col(Event.occurred_at) >= moment - within)
        .where(col(Event.occurred_at) <= moment)
        .where(col(Event.machine) == machine)
    )
    return session.exec(query).first()


def _set_status(session: Session, lead_id: int, status: str, moment: datetime) -> None:
    from nurture.language.fields import merge_status
    from nurture.store.leads import Lead

    lead = session.get(Lead, lead_id)
    if lead is None:
        return
    new = merge_status(lead.status, status)
    if new != lead.status:
        lead.status = new
        lead.updated_at = moment
        session.add(lead)


def wake(
    session: Session,
    lead_ids: list[int] | Select[Any],
    moment: datetime,
    skip: Collection[str] = (),
) -> None:
    """Make the active enrollments of *lead_ids* (ids, or a query of ids) due at *moment*
    at the latest, but those of the sequences *skip* names (see :class:`Sleepers`)."""
    if isinstance(lead_ids, list) and not lead_ids:
        return
    dialect = session.get_bind().dialect
    leads = (
        one_of(dialect, col(Enrollment.lead_id), lead_ids)
        if isinstance(lead_ids, list)
        else col(Enrollment.lead_id).in_(lead_ids)
    )
    query = (
        update(Enrollment)
        .where(leads)
        .where(col(Enrollment.status) == EnrollmentStatus.active.value)
        .where(or_(col(Enrollment.due_at).is_(None), col(Enrollment.due_at) > moment))
    )
    if skip:
        query = query.where(~one_of(dialect, col(Enrollment.sequence), sorted(skip)))
    session.execute(query.values(due_at=moment, version=col(Enrollment.version) + 1))


class Sleepers:
    """Which deployed sequences an event of each type leaves asleep: those whose
    ``exit_when`` and steps no event of that type can move before their next step is
    due (:attr:`DeployedSequence.wakes_on`). Read in the transaction that records the
    events, once, at its first wake-up: a deployment that changes a sequence wakes all
    its enrollments in its own transaction. An event that changes the lead
    (:data:`STATUS_EVENTS`) wakes every sequence."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._wakes_on: dict[str, frozenset[str]] | None = None  # read when first asked
        self._by_type: dict[str, frozenset[str]] = {}

    def of(self, event_type: str) -> frozenset[str]:
        """The sequences an event of *event_type* does not wake."""
        if self._wakes_on is None:
            rows = self._session.execute(sa_select(_DEPLOYED.c.name, _DEPLOYED.c.wakes_on))
            known = {name: on for name, on in rows if on is not None and WAKES_ON_ANY not in on}
            self._wakes_on = {name: frozenset(on) for name, on in known.items()}
        if event_type not in self._by_type:
            self._by_type[event_type] = frozenset(
                () if event_type in STATUS_EVENTS
                else (name for name, on in self._wakes_on.items() if event_type not in on)
            )  # fmt: skip
        return self._by_type[event_type]


def wake_changed(session: Session, since: datetime | None, moment: datetime) -> None:
    """Wake the enrollments of every lead changed after *since* (all leads if ``None``)."""
    from nurture.store.leads import Lead

    if since is None:
        wake(session, select(Lead.id), moment)
        return
    # The few changed leads first (the updated_at index), then their enrollments: a
    # subquery would let the database walk every active enrollment instead.
    changed = list(session.exec(select(Lead.id).where(col(Lead.updated_at) > since)))
    for start in range(0, len(changed), 500):
        wake(session, [i for i in changed[start : start + 500] if i is not None], moment)
