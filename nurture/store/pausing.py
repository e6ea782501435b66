"""Pausing and resuming enrollments by hand, with the emails they queued: a paused
enrollment's queued emails are held, and released when it resumes. One transaction
moves both, so a paused lead is never emailed."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlmodel import Session, col, select

from nurture.language.fields import normalize_email
from nurture.store.enrollments import Enrollment, EnrollmentStatus
from nurture.store.leads import Lead
from nurture.store.outbox import hold_for_pause


def set_paused(
    session: Session, sequence: str, lead: str | None, *, pause: bool, now: datetime
) -> int:
    """Pause the active enrollments of *sequence* (or one lead's), or resume the paused
    and failed ones; return how many changed. A resumed enrollment is due at once. A
    paused enrollment's queued emails are held, and released when it resumes."""
    query = update(Enrollment).where(col(Enrollment.sequence) == sequence)
    chosen = select(Enrollment.id).where(col(Enrollment.sequence) == sequence)
    if lead is not None:
        lead_id = select(Lead.id).where(col(Lead.email) == normalize_email(lead))
        query = query.where(col(Enrollment.lead_id).in_(lead_id.scalar_subquery()))
        chosen = chosen.where(col(Enrollment.lead_id).in_(lead_id.scalar_subquery()))
    if pause:
        query = query.where(col(Enrollment.status) == EnrollmentStatus.active.value).values(
            status=EnrollmentStatus.paused.value,
            reason="paused by hand",
            updated_at=now,
            version=col(Enrollment.version) + 1,
        )
    else:
        stopped = [EnrollmentStatus.paused.value, EnrollmentStatus.failed.value]
        # Their held emails go back to the queue (window and caps are checked again).
        hold_for_pause(session, chosen.where(col(Enrollment.status).in_(stopped)),
                       pause=False, now=now)  # fmt: skip
        query = query.where(col(Enrollment.status).in_(stopped)).values(
            status=EnrollmentStatus.active.value,
            reason=None,
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

    running = [EnrollmentStatus.active.value, EnrollmentStatus.paused.value]
    chosen = (
        select(Enrollment.id)
        .where(col(Enrollment.sequence) == sequence)
        .where(col(Enrollment.lead_id).in_(lead_ids))
        .where(col(Enrollment.status).in_(running))
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
