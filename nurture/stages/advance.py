"""The advance stage: claim the due enrollments and carry each forward.

The decisions are :func:`nurture.engine.advance.advance`'s; this module reads what it
needs, and writes what it decided in the same transaction: the emails into the outbox,
the tasks, the lead updates and the enrollment's new position (each touch is written by
:mod:`nurture.stages.touches`). A pass costs in proportion to the work that is due:
enrollments are found by their indexed due moment."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from nurture import hooks, logs
from nurture.engine.advance import Position, advance
from nurture.engine.catalog import Catalog
from nurture.engine.context import Context
from nurture.errors import NurtureError
from nurture.language.expressions import LeadView, Scores
from nurture.language.scoring import ScoringRules, scores_now
from nurture.language.sequences import Sequence
from nurture.language.timing import zone
from nurture.mail.senders import SenderBook
from nurture.retry import is_transient
from nurture.stages.report import PassReport
from nurture.stages.touches import prepare_touch, write_outcome
from nurture.store.database import holds_write_turn, session_scope
from nurture.store.enrollments import HELD, Enrollment, EnrollmentStatus
from nurture.store.events import Event, LeadEvents, events_by_lead
from nurture.store.leads import Lead
from nurture.store.outbox import emails_not_left
from nurture.store.tasks import Task, TaskStatus


def claim_due(
    session: Session,
    names: list[str],
    now: datetime,
    limit: int,
    lead_ids: list[int] | None = None,
) -> list[Enrollment]:
    """The active enrollments due by *now* (of *lead_ids* only, if given), locked for
    this worker (others skip them)."""
    if not names:
        return []
    query = (
        select(Enrollment)
        .where(Enrollment.status == EnrollmentStatus.active.value)
        .where(col(Enrollment.due_at) <= now)
        .where(col(Enrollment.sequence).in_(names))
        .order_by(col(Enrollment.due_at), col(Enrollment.id))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    if lead_ids is not None:
        query = query.where(col(Enrollment.lead_id).in_(lead_ids))
    return list(session.exec(query))


def advance_due(
    ctx: Context,
    catalog: Catalog,
    now: datetime,
    stop: Callable[[], bool] | None = None,
    lead_ids: list[int] | None = None,
    *,
    rules: ScoringRules | None = None,
) -> PassReport:
    """Carry every due enrollment (of *lead_ids* only, if given) forward, a batch at a
    time; *stop* is asked between batches, and between enrollments while the batch has
    not written yet (it is where the pass waits while the fast lane serves new leads)."""
    report = PassReport()
    seen: set[int] = set()
    while stop is None or not stop():
        try:
            batch, ids = _advance_batch(ctx, catalog, rules, now, seen, isolated=False,
                                        only_leads=lead_ids, between=stop)  # fmt: skip
        except Exception as exc:
            if is_transient(exc):
                raise
            # A write that failed spoils the whole batch's transaction: do the batch
            # again with each enrollment in a savepoint of its own, so that only the
            # enrollment at fault fails.
            logs.action("a batch failed: its enrollments are done one by one",
                        level=logging.WARNING, error=f"{type(exc).__name__}: {exc}")  # fmt: skip
            batch, ids = _advance_batch(ctx, catalog, rules, now, seen, isolated=True,
                                        only_leads=lead_ids)  # fmt: skip
        if not ids:
            break
        seen.update(ids)
        report.add(batch)
    return report


def _advance_batch(
    ctx: Context,
    catalog: Catalog,
    rules: ScoringRules | None,
    now: datetime,
    seen: set[int],
    *,
    isolated: bool,
    only_leads: list[int] | None = None,
    between: Callable[[], bool] | None = None,
) -> tuple[PassReport, list[int]]:
    """Claim the next batch of due enrollments (skipping *seen*) and carry each forward,
    in one transaction; return what was done and the enrollments' ids. *between* is
    called between enrollments while the transaction holds no SQLite write turn (on
    PostgreSQL it holds the batch's rows only, which no one else may take)."""
    report = PassReport()
    # On SQLite the claim locks nothing: should the pass and the arrivals' fast lane take
    # the same enrollment, the second to commit meets the outbox's idempotency key and
    # does its batch again one by one, where that enrollment is no longer due.
    with session_scope(ctx.engine) as session:
        claimed = claim_due(session, list(catalog.sequences), now, ctx.batch_size, only_leads)
        due = [e for e in claimed if e.id not in seen]
        if not due:
            return report, []
        lead_ids = {e.lead_id for e in due}
        leads = {
            lead.id: lead for lead in session.exec(select(Lead).where(col(Lead.id).in_(lead_ids)))
        }
        events = events_by_lead(session, lead_ids)
        waiting = [e.waiting_task_id for e in due if e.waiting_task_id is not None]
        tasks = {
            task.id: task for task in session.exec(select(Task).where(col(Task.id).in_(waiting)))
        }
        unsent = emails_not_left(session, lead_ids)
        book = SenderBook(session, ctx.config.settings, lead_ids, now)
        for enrollment in due:
            if between is not None and not holds_write_turn(session):
                between()  # a moment for the fast lane: nothing of this batch is written
            sequence = catalog.sequences[enrollment.sequence]
            lead = leads.get(enrollment.lead_id)
            if lead is None:  # erased while this batch was read: its rows go with it
                continue
            task = tasks.get(enrollment.waiting_task_id or -1)
            _process(ctx, session, sequence, enrollment, lead, events[lead.id or 0], task, now,
                     report, isolated=isolated, scores=scores_now(rules, lead, now),
                     waiting_for_email=enrollment.id in unsent, book=book)  # fmt: skip
        hooks.reach("advance.before_commit", session)
    return report, [e.id for e in due if e.id is not None]


def _process(
    ctx: Context,
    session: Session,
    sequence: Sequence,
    enrollment: Enrollment,
    lead: Lead,
    events: list[Event],
    task: Task | None,
    now: datetime,
    report: PassReport,
    *,
    isolated: bool,
    scores: Scores,
    waiting_for_email: bool = False,
    book: SenderBook | None = None,
) -> None:
    """Carry one enrollment forward. What can fail for this lead (rendering its touches)
    happens before anything is written, and fails the enrollment alone; a write that
    fails is left to the caller unless *isolated* (a savepoint around the writes)."""
    tz_name = ctx.timezone_for(sequence, lead)
    position = Position(
        next_step=enrollment.next_step,
        base_at=enrollment.base_at,
        done=tuple(enrollment.done_steps or ()),
        waiting_for_task=task is not None and task.status == TaskStatus.open,
        task_timeout_at=task.timeout_at if task is not None else None,
        waiting_for_email=waiting_for_email,
    )
    view = LeadView.of(lead)
    try:  # nothing is written yet: a failure here is this enrollment's alone
        outcome = advance(
            sequence,
            position,
            lead=view.as_dict(),
            engagement=LeadEvents.of(events, sequence.name, since=enrollment.enrolled_at),
            now=now,
            tz=zone(tz_name),
            scores=scores,
        )
        needed = {t.template for t in outcome.touches if t.template}
        missing = sorted(name for name in needed if not ctx.templates.exists(name))
        if missing:
            _hold_for_templates(session, enrollment, missing, now, report)
            return
        if enrollment.reason and enrollment.reason.startswith(HELD):
            enrollment.reason = None  # its templates are back
        writes = [
            prepare_touch(ctx, sequence, enrollment, lead, view, touch, tz_name, now, book)
            for touch in outcome.touches
        ]
    except Exception as exc:
        _fail_because(session, enrollment, lead, exc, now, report)
        return
    if not isolated:  # a write that fails spoils the batch: the caller does it again
        write_outcome(session, sequence, enrollment, lead, task, outcome, writes, report, now)
        return
    done = PassReport()  # counted only if the savepoint holds
    try:
        with session.begin_nested():
            write_outcome(session, sequence, enrollment, lead, task, outcome, writes, done, now)
    except Exception as exc:
        _fail_because(session, enrollment, lead, exc, now, report)
        return
    report.add(done)


#: How often an enrollment held for a missing template looks again.
TEMPLATE_RECHECK = timedelta(minutes=15)


def _hold_for_templates(
    session: Session, enrollment: Enrollment, missing: list[str], now: datetime, report: PassReport
) -> None:
    """Keep the enrollment where it is, active, until the templates its next touch needs
    are back (looked at again every :data:`TEMPLATE_RECHECK`); nothing is written."""
    names = ", ".join(repr(name) for name in missing)
    enrollment.reason = f"{HELD}template {names} is missing (templates/{missing[0]}.html.j2)"
    enrollment.due_at = now + TEMPLATE_RECHECK
    enrollment.updated_at = now
    session.add(enrollment)
    report.held += 1


def _fail_because(
    session: Session,
    enrollment: Enrollment,
    lead: Lead,
    exc: Exception,
    now: datetime,
    report: PassReport,
) -> None:
    """Fail the enrollment for *exc*; a lost database is not its fault, and propagates."""
    if is_transient(exc):
        raise exc
    if isinstance(exc, NurtureError):
        _fail(session, enrollment, lead, str(exc), now, report)
        return
    logs.logger.exception("unexpected error advancing %s", lead.email, exc_info=exc)
    _fail(session, enrollment, lead, f"internal error: {type(exc).__name__}: {exc}", now, report)


def _fail(
    session: Session,
    enrollment: Enrollment,
    lead: Lead,
    error: str,
    now: datetime,
    report: PassReport,
) -> None:
    enrollment.status = EnrollmentStatus.failed.value
    enrollment.reason = error
    enrollment.due_at = None
    enrollment.updated_at = enrollment.ended_at = now
    session.add(enrollment)
    report.failed += 1
    logs.action(
        "enrollment failed",
        level=logging.ERROR,
        lead=lead.email,
        sequence=enrollment.sequence,
        step=enrollment.next_step,
        error=error,
    )


#: Writes a prepared touch into the session; returns the task it created, if any.
