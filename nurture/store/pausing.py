"""Pausing and resuming enrollments, with the emails they queued: a paused
enrollment's queued emails are held, and released when it resumes. One transaction
moves both, so a paused lead is never emailed.

A person pauses and resumes by hand (:func:`set_paused`). An out-of-office answer
pauses the lead's enrollments until a moment (:func:`pause_while_away`, ``resume_at``)
and the pass resumes them then by itself (:func:`resume_returned`); a pause by hand
takes over such a pause, and is never undone by it. Resuming a whole sequence by hand
leaves such a pause alone; resuming one lead by hand ends it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, and_, not_, or_, update
from sqlmodel import Session, col, select

from nurture.language.fields import normalize_email
from nurture.store.enrollments import RUNNING, Enrollment, EnrollmentStatus
from nurture.store.leads import Lead
from nurture.store.outbox import hold_for_pause

#: An enrollment paused until its lead is back (it resumes by itself).
PAUSED_WHILE_AWAY = and_(
    col(Enrollment.status) == EnrollmentStatus.paused.value,
    col(Enrollment.resume_at).is_not(None),
)


def pause_while_away(
    session: Session,
    lead_id: int,
    *,
    until: datetime,
    reason: str,
    now: datetime,
    firm: bool = True,
) -> int:
    """Pause the lead's active enrollments until *until* (the lead is out of office),
    saying *reason*, with their queued emails; one already paused for an earlier
    absence waits for this one instead, unless this one is not *firm* (it names no
    date: it may make the wait longer, never shorter). One paused by a person stays as
    it is. Return how many it paused."""
    earlier = PAUSED_WHILE_AWAY if firm else and_(PAUSED_WHILE_AWAY,
                                                  col(Enrollment.resume_at) < until)  # fmt: skip
    running = or_(col(Enrollment.status) == EnrollmentStatus.active.value, earlier)
    chosen = select(Enrollment.id).where(col(Enrollment.lead_id) == lead_id).where(running)
    ids = list(session.exec(chosen))
    if not ids:
        return 0
    result = session.execute(
        update(Enrollment)
        .where(col(Enrollment.id).in_(ids))
        .where(running)
        .values(status=EnrollmentStatus.paused.value, reason=reason, resume_at=until,
                updated_at=now, version=col(Enrollment.version) + 1)
    )  # fmt: skip
    hold_for_pause(session, ids, pause=True, now=now)
    return int(getattr(result, "rowcount", 0) or 0)


def back_now(session: Session, lead_id: int, now: datetime) -> int:
    """The lead wrote back themselves: their enrollments paused while away resume at the
    next pass, which looks at them as at any other (a reply ends those that exit on it)."""
    result = session.execute(
        update(Enrollment)
        .where(col(Enrollment.lead_id) == lead_id)
        .where(PAUSED_WHILE_AWAY)
        .where(col(Enrollment.resume_at) > now)
        .values(resume_at=now, updated_at=now, version=col(Enrollment.version) + 1)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def resume_returned(session: Session, now: datetime) -> list[int]:
    """Resume the enrollments paused until a lead's return whose moment has come (due at
    once, their held emails queued again); return the leads they belong to."""
    due = select(Enrollment.id).where(PAUSED_WHILE_AWAY).where(col(Enrollment.resume_at) <= now)
    if session.exec(due.limit(1)).first() is None:
        return []  # the usual case: a read, no write lock taken
    resumed = session.execute(
        update(Enrollment)
        .where(PAUSED_WHILE_AWAY)
        .where(col(Enrollment.resume_at) <= now)
        .values(status=EnrollmentStatus.active.value, reason=None, resume_at=None,
                due_at=now, updated_at=now, version=col(Enrollment.version) + 1)
        .returning(col(Enrollment.id), col(Enrollment.lead_id))
    ).all()  # fmt: skip
    if resumed:
        hold_for_pause(session, [row[0] for row in resumed], pause=False, now=now)
    return sorted({row[1] for row in resumed})


def set_paused(
    session: Session, sequence: str, lead: str | None, *, pause: bool, now: datetime
) -> int:
    """Pause the active enrollments of *sequence* (or one lead's), or resume the paused
    and failed ones; return how many changed. A resumed enrollment is due at once. A
    paused enrollment's queued emails are held, and released when it resumes.

    Resuming a whole sequence leaves alone the enrollments paused while their lead is
    out of office (they resume by themselves when the lead is back); resuming one
    *lead* by hand ends its absence's pause too (the person asked for that lead)."""
    query = update(Enrollment).where(col(Enrollment.sequence) == sequence)
    chosen = select(Enrollment.id).where(col(Enrollment.sequence) == sequence)
    if lead is not None:
        lead_id = select(Lead.id).where(col(Lead.email) == normalize_email(lead))
        query = query.where(col(Enrollment.lead_id).in_(lead_id.scalar_subquery()))
        chosen = chosen.where(col(Enrollment.lead_id).in_(lead_id.scalar_subquery()))
    if pause:  # also one paused until its lead is back: it stays paused now
        running = or_(col(Enrollment.status) == EnrollmentStatus.active.value, PAUSED_WHILE_AWAY)
        query = query.where(running).values(
            status=EnrollmentStatus.paused.value,
            reason="paused by hand",
            resume_at=None,
            updated_at=now,
            version=col(Enrollment.version) + 1,
        )
    else:
        stopped: ColumnElement[bool] = col(Enrollment.status).in_(
            [EnrollmentStatus.paused.value, EnrollmentStatus.failed.value]
        )
        if lead is None:  # not those waiting for their lead's return
            stopped = and_(stopped, not_(PAUSED_WHILE_AWAY))
        # Their held emails go back to the queue (window and caps are checked again).
        hold_for_pause(session, chosen.where(stopped), pause=False, now=now)
        query = query.where(stopped).values(
            status=EnrollmentStatus.active.value,
            reason=None,
            resume_at=None,
            due_at=now,
            ended_at=None,
            updated_at=now,
            version=col(Enrollment.version) + 1,
        )
    result = session.execute(query)
    if pause:  # their emails already queued wait too
        paused = chosen.where(col(Enrollment.status) == EnrollmentStatus.paused.value)
        hold_for_pause(session, paused, pause=True, now=now)
    return int(getattr(result, "rowcount", 0) or 0)


#: Why an enrollment cancelled by hand ended, and why its emails will never go.
CANCELLED_BY_HAND = "cancelled by hand"


def cancel_enrollments(
    session: Session, sequence: str, lead_ids: list[int], *, now: datetime
) -> tuple[int, int]:
    """End the active and paused enrollments of *sequence* for the leads *lead_ids*
    (``exited``, "cancelled by hand") and cancel the emails they queued that have not
    gone (queued or held), in one transaction; return (enrollments, emails)."""
    from nurture.store.outbox import OutboxMessage, OutboxStatus

    chosen = (
        select(Enrollment.id)
        .where(col(Enrollment.sequence) == sequence)
        .where(col(Enrollment.lead_id).in_(lead_ids))
        .where(col(Enrollment.status).in_(RUNNING))
    )
    ids = list(session.exec(chosen))
    if not ids:
        return 0, 0
    waiting = [OutboxStatus.queued.value, OutboxStatus.held.value]
    emails = session.execute(
        update(OutboxMessage)
        .where(col(OutboxMessage.enrollment_id).in_(ids))
        .where(col(OutboxMessage.status).in_(waiting))
        .values(
            status=OutboxStatus.cancelled.value,
            last_error=f"its enrollment was {CANCELLED_BY_HAND}",
        )
    )
    session.execute(
        update(Enrollment)
        .where(col(Enrollment.id).in_(ids))
        .values(status=EnrollmentStatus.exited.value, reason=CANCELLED_BY_HAND,
                due_at=None, ended_at=now, updated_at=now,
                version=col(Enrollment.version) + 1)
    )  # fmt: skip
    return len(ids), int(getattr(emails, "rowcount", 0) or 0)
