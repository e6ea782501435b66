"""Enrollments: one lead's run through one sequence, and the sequence versions in force.

An enrollment is a small state machine: ``active`` → ``completed`` | ``exited`` (with the
reason) | ``paused`` | ``failed`` (with the error). An active enrollment stores the step
it waits at and the moment it is next due, indexed, so that a pass reads only the
enrollments that have work.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    bindparam,
    update,
)
from sqlalchemy import select as sa_select
from sqlmodel import Field, Session, SQLModel, col, select

from nurture import clock
from nurture.errors import InvalidValueError
from nurture.store.bulk import unindexed
from nurture.store.sqltypes import JSONType, UTCDateTime


class EnrollmentStatus(enum.StrEnum):
    active = "active"
    completed = "completed"
    exited = "exited"
    paused = "paused"
    failed = "failed"


#: The statuses of an enrollment still under way: a lead in one is not enrolled in the
#: sequence again, and its email's leaving moves it on.
RUNNING = (EnrollmentStatus.active.value, EnrollmentStatus.paused.value)


#: Bumped by every write of an enrollment: a pass that read an enrollment before the
#: delivery woke it (an email left) finds its write refused, and reads it again, instead
#: of putting the wake-up back.
_VERSION = Column("version", Integer, nullable=False, default=0, server_default="0")


class Enrollment(SQLModel, table=True):
    """One lead in one sequence."""

    __tablename__ = "enrollments"
    __table_args__ = (
        UniqueConstraint("lead_id", "sequence", "cycle", name="uq_enrollments_lead_sequence"),
        # The claim's order (oldest due first, then by id), so that a batch is read
        # from the index, not sorted out of every due enrollment.
        Index("ix_enrollments_due", "status", "due_at", "id"),
        Index("ix_enrollments_sequence_status", "sequence", "status"),
        Index("ix_enrollments_lead", "lead_id"),
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, primary_key=True)
    lead_id: int = Field(foreign_key="leads.id", ondelete="CASCADE")
    sequence: str = Field(max_length=200)
    #: 1 for the first run; ``reenroll: true`` sequences count up.
    cycle: int = 1
    status: str = Field(default=EnrollmentStatus.active.value, sa_type=String(16))
    #: The step the lead waits at; ``None`` once no step is left.
    next_step: str | None = Field(default=None, max_length=200)
    #: When the previous step happened (or the enrollment began): waits count from here.
    base_at: datetime = Field(default_factory=clock.now, sa_type=UTCDateTime)
    #: When the enrollment next needs a pass; ``None`` while it waits for a task only.
    due_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    #: The open task the next step waits for.
    waiting_task_id: int | None = None
    #: Step ids already done or skipped, in order: no step is ever done twice.
    done_steps: list[str] = Field(default_factory=list, sa_column=Column(JSONType, nullable=False))
    #: Why it exited, or the error that failed it, or why it is paused.
    reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    #: ``auto`` (audience) or who enrolled by hand.
    enrolled_by: str = Field(default="auto", max_length=320)
    enrolled_at: datetime = Field(default_factory=clock.now, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=clock.now, sa_type=UTCDateTime)
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    #: A paused enrollment that resumes by itself at this moment (the lead is out of
    #: office); ``None`` for one paused by a person, which stays paused until resumed.
    resume_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    version: int = Field(default=0, sa_column=_VERSION)

    __mapper_args__ = {"version_id_col": _VERSION}

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "lead_id": self.lead_id,
            "sequence": self.sequence,
            "cycle": self.cycle,
            "status": self.status,
            "next_step": self.next_step,
            "due_at": self.due_at.isoformat() if self.due_at else None,
            "done_steps": list(self.done_steps or []),
            "reason": self.reason,
            "enrolled_at": self.enrolled_at.isoformat(),
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
        }


class DeployedSequence(SQLModel, table=True):
    """The version of a sequence file the engine runs: the last one that passed ``check``.

    Every worker reads the same row, so an invalid edit keeps the last good version
    running everywhere, even in a process that never saw that version's file.
    """

    __tablename__ = "deployed_sequences"

    name: str = Field(primary_key=True, max_length=200)
    path: str = Field(max_length=1000)
    #: The file's text, as it was when it last passed the checks.
    source: str = Field(sa_column=Column(Text, nullable=False))
    digest: str = Field(max_length=64)
    #: ``[[step id, step digest], ...]`` in order, to tell which steps an edit touched.
    steps: list[list[str]] = Field(default_factory=list, sa_column=Column(JSONType, nullable=False))
    #: Leads updated after this moment have not been checked against the audience yet.
    audience_checked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    deployed_at: datetime = Field(default_factory=clock.now, sa_type=UTCDateTime)
    #: When the file it was deployed from was last modified (seconds since the epoch):
    #: a worker deploys its own copy only if that copy is newer.
    file_mtime: float | None = None
    #: The event types that wake its enrollments (:meth:`Sequence.woken_by`; ``["*"]``:
    #: any); ``None``: not known yet, so any.
    wakes_on: list[str] | None = Field(default=None, sa_column=Column(JSONType, nullable=True))


#: :attr:`DeployedSequence.wakes_on` of a sequence any event wakes.
WAKES_ON_ANY = "*"


#: How the reason of an active enrollment held at a step (a missing template) begins.
HELD = "held: "


def parse_status(value: str) -> EnrollmentStatus:
    """The :class:`EnrollmentStatus` named by *value*, or :class:`InvalidValueError`."""
    try:
        return EnrollmentStatus(value.strip().lower())
    except ValueError:
        choices = ", ".join(status.value for status in EnrollmentStatus)
        raise InvalidValueError(
            f"unknown enrollment status {value!r} (one of: {choices})"
        ) from None


def list_enrollments(
    session: Session,
    *,
    sequence: str | None = None,
    lead: str | None = None,
    status: EnrollmentStatus | None = None,
) -> list[tuple[Enrollment, str]]:
    """Enrollments with their lead's email, newest first."""
    from nurture.language.fields import normalize_email
    from nurture.store.leads import Lead

    query = select(Enrollment, Lead.email).join(Lead, col(Lead.id) == col(Enrollment.lead_id))
    if sequence is not None:
        query = query.where(col(Enrollment.sequence) == sequence)
    if lead is not None:
        query = query.where(col(Lead.email) == normalize_email(lead))
    if status is not None:
        query = query.where(col(Enrollment.status) == status.value)
    rows = session.exec(query.order_by(col(Enrollment.id).desc()))
    return [(enrollment, email) for enrollment, email in rows]


_ENROLLMENTS = Enrollment.__table__  # type: ignore[attr-defined]


def telling_email_left(which: Any, now: Any) -> Any:
    """The UPDATE that tells the enrollments *which* selects (by their ids) that their
    email left at *now* (as :func:`email_left`), for statements that compose it."""
    return (
        update(_ENROLLMENTS)
        .where(which)
        # Paused too: the wait after the email counts from when it left, resumed or not.
        # Found by id, not by walking every running enrollment (SQLite's planner).
        .where(unindexed(_ENROLLMENTS.c.status).in_(RUNNING))
        .values(base_at=now, due_at=now, version=_ENROLLMENTS.c.version + 1)
    )


#: Built once: it runs beside the sends, the commonest write of a delivery run.
_EMAIL_LEFT = telling_email_left(
    _ENROLLMENTS.c.id.in_(bindparam("enrollments", expanding=True)), bindparam("now")
)


def email_left(connection: Connection | Session, enrollment_id: int | None, now: datetime) -> None:
    """The email an enrollment waited for left (or was given up) at *now*: its next
    step's wait counts from now, and it is looked at in the next pass."""
    if enrollment_id is not None:
        emails_left(connection, [enrollment_id], now)


def emails_left(connection: Connection | Session, enrollment_ids: list[int], now: datetime) -> None:
    """:func:`email_left` for each of *enrollment_ids*, in one statement."""
    if enrollment_ids:
        connection.execute(_EMAIL_LEFT, {"enrollments": enrollment_ids, "now": now})


@dataclass(frozen=True, slots=True)
class Standing:
    """Where an enrollment stands, as the claim of its email checks it (a plain row)."""

    id: int
    status: str
    reason: str | None
    enrolled_at: datetime


_STANDING = sa_select(*(_ENROLLMENTS.c[name] for name in Standing.__dataclass_fields__)).where(
    _ENROLLMENTS.c.id.in_(bindparam("ids", expanding=True))
)


def standings(connection: Connection | Session, ids: Iterable[int]) -> dict[int, Standing]:
    """The :class:`Standing` of each of the enrollments *ids* (a batch's few hundred), by
    id, in one statement."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    rows = connection.execute(_STANDING, {"ids": wanted})
    return {row[0]: Standing(*row) for row in rows}
