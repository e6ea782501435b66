"""Sales tasks: calls, LinkedIn touches and to-dos that a sequence hands to a person.

The step after a task waits until the task is done, or until the task step's timeout.
Completing a task records an event (``call_completed`` for a call) that later
conditions can read.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Index, String, Text, UniqueConstraint, update
from sqlmodel import Field, Session, SQLModel, col, select

from nurture import clock
from nurture.errors import InvalidValueError
from nurture.language.sequences import TaskAction
from nurture.store.enrollments import Enrollment, EnrollmentStatus
from nurture.store.events import record_event
from nurture.store.sqltypes import JSONType, UTCDateTime
from nurture.suggest import did_you_mean


class TaskStatus(enum.StrEnum):
    open = "open"
    done = "done"
    #: The step's timeout passed and the sequence went on; it can still be done.
    expired = "expired"
    #: The lead left the sequence before anyone did it.
    cancelled = "cancelled"


class Task(SQLModel, table=True):
    """One task for one salesperson about one lead."""

    __tablename__ = "tasks"
    __table_args__ = (
        UniqueConstraint("enrollment_id", "step", name="uq_tasks_enrollment_step"),
        Index("ix_tasks_open", "status", "assignee", "due_at"),
        Index("ix_tasks_sequence_step", "sequence", "step"),
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, primary_key=True)
    lead_id: int = Field(foreign_key="leads.id", ondelete="CASCADE")
    enrollment_id: int | None = Field(
        default=None, foreign_key="enrollments.id", ondelete="CASCADE"
    )
    sequence: str = Field(max_length=200)
    step: str = Field(max_length=200)
    #: ``call``, ``linkedin`` or ``todo``.
    kind: str = Field(max_length=16)
    note: str = Field(default="", sa_column=Column(Text, nullable=False))
    #: The salesperson's email; ``None`` when the lead has no owner.
    assignee: str | None = Field(default=None, max_length=320)
    due_at: datetime = Field(default_factory=clock.now, sa_type=UTCDateTime)
    #: When the sequence stops waiting for it.
    timeout_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    status: str = Field(default=TaskStatus.open.value, sa_type=String(16))
    outcome: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    #: The outcomes its step declares (``outcomes: [qualified, not_now]``); empty: any.
    outcomes: list[str] = Field(default_factory=list, sa_column=Column(JSONType, nullable=False))
    #: Who did it (an address, or the system user of the command) and how (``cli``,
    #: ``app``).
    done_by: str | None = Field(default=None, max_length=320)
    done_via: str | None = Field(default=None, max_length=32)
    created_at: datetime = Field(default_factory=clock.now, sa_type=UTCDateTime)
    done_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "sequence": self.sequence,
            "step": self.step,
            "assignee": self.assignee,
            "note": self.note,
            "due_at": self.due_at.isoformat(),
            "timeout_at": self.timeout_at.isoformat() if self.timeout_at else None,
            "outcome": self.outcome,
            "outcomes": list(self.outcomes),
            "done_by": self.done_by,
            "done_at": self.done_at.isoformat() if self.done_at else None,
        }


def list_tasks(
    session: Session,
    *,
    owner: str | None = None,
    due_by: datetime | None = None,
    statuses: tuple[str, ...] = (TaskStatus.open.value,),
) -> Sequence[Task]:
    """Tasks in *statuses*, optionally for one assignee and due by a moment, soonest first."""
    query = select(Task).where(col(Task.status).in_(statuses))
    if owner is not None:
        query = query.where(Task.assignee == owner)
    if due_by is not None:
        query = query.where(Task.due_at <= due_by)
    return session.exec(query.order_by(col(Task.due_at), col(Task.id))).all()


def check_outcome(task: Task, outcome: str | None) -> str | None:
    """*outcome* cleaned, if the task's step allows it; raise saying what it allows."""
    cleaned = (outcome or "").strip() or None
    if not task.outcomes:
        return cleaned
    if cleaned in task.outcomes:
        return cleaned
    allowed = ", ".join(task.outcomes)
    where = f"task {task.id} ({task.kind} at {task.sequence}/{task.step})"
    if cleaned is None:
        raise InvalidValueError(f"{where} needs an outcome: one of {allowed}")
    hint = did_you_mean(cleaned, task.outcomes)
    raise InvalidValueError(f"{where}: outcome {cleaned!r} is not one of {allowed}{hint}")


def complete_task(
    session: Session,
    task_id: int,
    outcome: str | None,
    *,
    by: str | None = None,
    via: str = "cli",
) -> Task:
    """Mark a task done with its *outcome* (checked against the outcomes its step
    declares), record its event with who did it (*by*) and how (*via*), and let its
    enrollment go on from now."""
    task = session.get(Task, task_id, with_for_update=True)
    if task is None:
        raise InvalidValueError(f"no task {task_id}")
    if task.status == TaskStatus.done:
        raise InvalidValueError(f"task {task_id} was already done at {task.done_at:%Y-%m-%d %H:%M}")
    if task.status == TaskStatus.cancelled:
        raise InvalidValueError(f"task {task_id} was cancelled: the lead left {task.sequence}")
    outcome = check_outcome(task, outcome)
    moment = clock.now()
    task.status = TaskStatus.done.value
    task.done_at = moment
    task.outcome = outcome
    task.done_by = by
    task.done_via = via
    session.add(task)
    event = TaskAction(task.kind).completion_event
    data = {"task": task_id, "kind": task.kind, "outcome": outcome or "", "by": by or "",
            "via": via}  # fmt: skip
    if task.enrollment_id is not None:
        enrollment = session.get(Enrollment, task.enrollment_id, with_for_update=True)
        if (
            enrollment is not None
            and enrollment.waiting_task_id == task_id
            and enrollment.status == EnrollmentStatus.active
        ):
            # The next step's wait counts from now.
            enrollment.waiting_task_id = None
            enrollment.base_at = moment
            enrollment.due_at = moment
            enrollment.updated_at = moment
            session.add(enrollment)
    record_event(
        session, task.lead_id, event, sequence=task.sequence, step=task.step, data=data,
        at=moment, source="tasks", source_id=f"task:{task_id}",
    )  # fmt: skip
    return task


def snooze_task(session: Session, task_id: int, until: datetime) -> Task:
    """Put an open task off until *until* (its step's timeout still runs)."""
    task = session.get(Task, task_id, with_for_update=True)
    if task is None:
        raise InvalidValueError(f"no task {task_id}")
    if task.status not in (TaskStatus.open, TaskStatus.expired):
        raise InvalidValueError(f"task {task_id} is {task.status}: nothing to snooze")
    task.due_at = until
    session.add(task)
    return task


def take_task(session: Session, task_id: int, inbox: str, email: str) -> bool:
    """Give the sales inbox's open task *task_id* to *email*, once: whether this call did
    (a second taker finds it someone's already)."""
    done = session.execute(
        update(Task)
        .where(col(Task.id) == task_id)
        .where(col(Task.assignee) == inbox)
        .where(col(Task.status).in_([TaskStatus.open.value, TaskStatus.expired.value]))
        .values(assignee=email)
    )
    return bool(getattr(done, "rowcount", 0))
