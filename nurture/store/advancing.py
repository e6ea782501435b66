"""What the advance stage reads and writes, a batch at a time, in a few statements.

The due enrollments are claimed with their lead in one statement, as plain frozen rows
(:class:`DueEnrollment`), not ORM objects; the facts their advance needs (events, unsent
emails, the tasks they wait for) are read for the whole batch at once
(:func:`facts_by_lead`); their new positions are written by one ``executemany`` whose
``WHERE`` holds the optimistic version check (:func:`write_enrollments`), which raises
:class:`~sqlalchemy.orm.exc.StaleDataError` when any enrollment changed since it was
claimed."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, select, update
from sqlalchemy.orm.exc import StaleDataError
from sqlmodel import Session

from nurture.store.bulk import unindexed, update_rows
from nurture.store.enrollments import Enrollment, EnrollmentStatus
from nurture.store.events import EventFact, events_by_lead
from nurture.store.leads import Lead, lead_dict
from nurture.store.outbox import NOT_LEFT, MessageKind, OutboxMessage
from nurture.store.tasks import Task, TaskStatus

_ENROLLMENTS = Enrollment.__table__  # type: ignore[attr-defined]
_LEADS = Lead.__table__  # type: ignore[attr-defined]
_OUTBOX = OutboxMessage.__table__  # type: ignore[attr-defined]
_TASKS = Task.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class DueLead:
    """The lead of a due enrollment, as read with it: what its advance, its templates
    and its sender need (every column but the scoring bookkeeping)."""

    id: int
    email: str
    first_name: str | None
    last_name: str | None
    company: str | None
    title: str | None
    phone: str | None
    timezone: str | None
    owner: str | None
    source: str | None
    stage: str
    status: str
    consent: dict[str, Any] | None
    attributes: dict[str, Any]
    created_at: datetime | None
    updated_at: datetime | None
    engagement: float
    fit: float
    scored_at: datetime | None

    @property
    def full_name(self) -> str:
        """First and last name, or empty when neither is known."""
        return " ".join(part for part in (self.first_name, self.last_name) if part)

    def to_dict(self) -> dict[str, Any]:
        """The shape of :meth:`Lead.to_dict <nurture.store.leads.Lead.to_dict>`."""
        return lead_dict(self)


_LEAD_COLUMNS = tuple(DueLead.__dataclass_fields__)
_LEADS_BY_ID = select(*(_LEADS.c[name] for name in _LEAD_COLUMNS)).where(
    _LEADS.c.id.in_(bindparam("ids", expanding=True))
)


def leads_by_id(session: Session, ids: Iterable[int]) -> dict[int, DueLead]:
    """The leads *ids* (a batch's few hundred) as :class:`DueLead` rows, by id, in one
    statement (the claim of their emails checks them)."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    rows = session.connection().execute(_LEADS_BY_ID, {"ids": wanted})
    return {row[0]: DueLead(*row) for row in rows}


#: The enrollment columns a claim reads (each a field of :class:`DueEnrollment`).
_ENROLLMENT_COLUMNS = ("id", "lead_id", "sequence", "version", "next_step", "base_at",
                       "waiting_task_id", "done_steps", "reason", "enrolled_at",
                       "ended_at")  # fmt: skip


@dataclass(frozen=True, slots=True)
class DueEnrollment:
    """An active enrollment due now, as claimed: its position, the version its write
    must still find, and its lead."""

    id: int
    lead_id: int
    sequence: str
    version: int
    next_step: str | None
    base_at: datetime
    waiting_task_id: int | None
    done_steps: tuple[str, ...]
    reason: str | None
    enrolled_at: datetime
    ended_at: datetime | None
    lead: DueLead


def claim_query(
    names: list[str], now: datetime, limit: int, lead_ids: list[int] | None = None
) -> Select[Any]:
    """The statement of :func:`claim_due`: it reads its batch in the order of
    ``ix_enrollments_due`` (status, due moment, id), never sorting every due one."""
    e, lead = _ENROLLMENTS.c, _LEADS.c
    columns = [e[name] for name in _ENROLLMENT_COLUMNS]
    columns += [lead[name].label(f"lead_{name}") for name in _LEAD_COLUMNS]
    query = (
        select(*columns)
        .join_from(_ENROLLMENTS, _LEADS, lead.id == e.lead_id)
        .where(e.status == EnrollmentStatus.active.value)
        .where(e.due_at <= now)
        .where(e.sequence.in_(names))
        .order_by(e.due_at, e.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=_ENROLLMENTS)
    )
    if lead_ids is not None:
        query = query.where(e.lead_id.in_(lead_ids))
    return query


def claim_due(
    session: Session,
    names: list[str],
    now: datetime,
    limit: int,
    lead_ids: list[int] | None = None,
) -> list[DueEnrollment]:
    """The active enrollments due by *now* (of *lead_ids* only, if given), oldest due
    first, with their leads, in one statement; on PostgreSQL their rows (not their
    leads') are locked for this worker, and others skip them."""
    if not names:
        return []
    width = len(_ENROLLMENT_COLUMNS)
    due = []
    for row in session.connection().execute(claim_query(names, now, limit, lead_ids)):
        values = dict(zip(_ENROLLMENT_COLUMNS, row[:width], strict=True))
        values["done_steps"] = tuple(values["done_steps"] or ())
        due.append(DueEnrollment(**values, lead=DueLead(*row[width:])))
    return due


@dataclass(frozen=True, slots=True)
class WaitedTask:
    """The task an enrollment waits for, as its advance sees it."""

    id: int
    open: bool
    timeout_at: datetime | None


@dataclass
class Facts:
    """What the advance of a batch needs besides the enrollments and their leads."""

    #: Each lead's events (a lead without any has none here).
    events: dict[int, list[EventFact]] = field(default_factory=dict)
    #: The enrollments with an email that has not left yet.
    unsent: set[int] = field(default_factory=set)
    #: The tasks the enrollments wait for, by id.
    tasks: dict[int, WaitedTask] = field(default_factory=dict)


def facts_by_lead(
    session: Session,
    due: Iterable[DueEnrollment],
    reading: Callable[[DueEnrollment], bool] | None = None,
) -> Facts:
    """The facts of the whole batch *due*, one query per kind (events, unsent emails,
    and the tasks waited for, when any is). *reading*: whether an enrollment's advance
    reads its lead's events (the others' leads' events are not read); by default all."""
    due = list(due)
    lead_ids = sorted({d.lead_id for d in due})
    if not lead_ids:
        return Facts()
    connection = session.connection()
    readers = sorted({d.lead_id for d in due if reading is None or reading(d)})
    events = events_by_lead(session, readers) if readers else {}
    o = _OUTBOX.c
    unsent = connection.execute(
        select(o.enrollment_id)
        .where(o.lead_id.in_(lead_ids))
        .where(o.sent_at.is_(None))
        .where(o.kind == MessageKind.email.value)
        .where(unindexed(o.status).in_(NOT_LEFT))  # by lead, not every email queued
    )
    facts = Facts(events=dict(events), unsent={e for (e,) in unsent if e is not None})
    waited = sorted({d.waiting_task_id for d in due if d.waiting_task_id is not None})
    if waited:
        t = _TASKS.c
        for task_id, status, timeout_at in connection.execute(
            select(t.id, t.status, t.timeout_at).where(t.id.in_(waited))
        ):
            facts.tasks[task_id] = WaitedTask(task_id, status == TaskStatus.open, timeout_at)
    return facts


#: Every column :func:`write_enrollments` sets (each row gives them all).
WRITTEN = ("status", "next_step", "base_at", "due_at", "waiting_task_id", "done_steps",
           "reason", "updated_at", "ended_at")  # fmt: skip


def write_enrollments(session: Session, rows: list[dict[str, Any]]) -> None:
    """Write the enrollments' new positions, in one statement
    (:func:`~nurture.store.bulk.update_rows`): each row gives ``_id``, ``_version`` (the
    version claimed) and every column of :data:`WRITTEN`. Raises
    :class:`StaleDataError` if any of them changed since it was claimed (the caller's
    transaction must not commit then)."""
    if not rows:
        return
    matched = update_rows(
        session.connection(), _ENROLLMENTS,
        [{"id": row["_id"], "version": row["_version"], **{n: row[n] for n in WRITTEN}}
         for row in rows],
        version="version",
    )  # fmt: skip
    if matched != len(rows):
        raise StaleDataError(
            f"{len(rows) - matched} of {len(rows)} enrollments changed since they were claimed"
        )


def insert_messages(session: Session, rows: list[dict[str, Any]]) -> None:
    """Store the outbox rows *rows* (see :func:`~nurture.store.outbox.message_row`),
    one ``executemany``."""
    if rows:
        session.connection().execute(_OUTBOX.insert(), rows)


def insert_task(session: Session, row: dict[str, Any]) -> int:
    """Store one task (every column but ``id``); its id."""
    return int(session.connection().execute(_TASKS.insert().returning(_TASKS.c.id), row)
               .scalar_one())  # fmt: skip


def expire_tasks(session: Session, task_ids: list[int]) -> None:
    """Mark the tasks *task_ids* expired: the sequence went on without them."""
    if task_ids:
        session.connection().execute(
            update(_TASKS).where(_TASKS.c.id.in_(task_ids))
            .values(status=TaskStatus.expired.value)
        )  # fmt: skip


def cancel_tasks(session: Session, enrollment_ids: list[int]) -> None:
    """Cancel the open tasks of the enrollments *enrollment_ids* (they left)."""
    if enrollment_ids:
        session.connection().execute(
            update(_TASKS)
            .where(_TASKS.c.enrollment_id.in_(enrollment_ids))
            .where(_TASKS.c.status == TaskStatus.open.value)
            .values(status=TaskStatus.cancelled.value)
        )


def update_lead(session: Session, lead_id: int, values: dict[str, Any]) -> None:
    """Set the columns *values* of the lead *lead_id*."""
    session.connection().execute(update(_LEADS).where(_LEADS.c.id == lead_id).values(values))
