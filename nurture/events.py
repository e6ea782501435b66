"""Events: what happened to a lead (an email sent, opened, clicked, replied, a call made).

Conditions and ``exit_when`` read them through :class:`LeadEvents`. Recording an event
wakes the lead's active enrollments, so an exit happens on the next pass, not when the
next step would have been due.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Index, Select, update
from sqlmodel import Field, Session, SQLModel, col, or_, select

from nurture import clock
from nurture.enrollments import Enrollment, EnrollmentStatus
from nurture.sqltypes import JSONType, UTCDateTime


class Event(SQLModel, table=True):
    """One thing that happened to one lead."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_lead", "lead_id", "occurred_at"),
        Index("ix_events_occurred", "occurred_at"),
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


@dataclass(frozen=True)
class LeadEvents:
    """The :class:`~nurture.expressions.Engagement` of one lead in one sequence.

    ``opened('welcome')`` means an open of the ``welcome`` email of *this* sequence;
    ``occurred('call_completed')`` without a step means any such event of the lead.
    """

    pairs: frozenset[tuple[str, str | None]]
    types: frozenset[str]

    @classmethod
    def of(cls, events: Iterable[Event], sequence: str) -> LeadEvents:
        pairs = {(e.type, e.step) for e in events if e.sequence == sequence}
        return cls(frozenset(pairs), frozenset(e.type for e in events))

    def occurred(self, event: str, step: str | None = None) -> bool:
        if step is None:
            return event in self.types
        return (event, step) in self.pairs


def events_of(session: Session, lead_id: int) -> list[Event]:
    """Every event of a lead, oldest first."""
    query = select(Event).where(Event.lead_id == lead_id).order_by(col(Event.occurred_at))
    return list(session.exec(query))


def record_event(
    session: Session,
    lead_id: int,
    type: str,
    *,
    sequence: str | None = None,
    step: str | None = None,
    data: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> Event:
    """Store an event and wake the lead's active enrollments (in the caller's transaction)."""
    moment = at or clock.now()
    event = Event(
        lead_id=lead_id,
        type=type,
        sequence=sequence,
        step=step,
        data=data or {},
        occurred_at=moment,
    )
    session.add(event)
    wake(session, [lead_id], moment)
    return event


def wake(session: Session, lead_ids: list[int] | Select[Any], moment: datetime) -> None:
    """Make the active enrollments of *lead_ids* (ids, or a query of ids) due at *moment*
    at the latest."""
    if isinstance(lead_ids, list) and not lead_ids:
        return
    session.execute(
        update(Enrollment)
        .where(col(Enrollment.lead_id).in_(lead_ids))
        .where(col(Enrollment.status) == EnrollmentStatus.active.value)
        .where(or_(col(Enrollment.due_at).is_(None), col(Enrollment.due_at) > moment))
        .values(due_at=moment)
    )


def wake_changed(session: Session, since: datetime | None, moment: datetime) -> None:
    """Wake the enrollments of every lead changed after *since* (all leads if ``None``)."""
    from nurture.leads import Lead

    changed = select(Lead.id)
    if since is not None:
        changed = changed.where(col(Lead.updated_at) > since)
    wake(session, changed, moment)
