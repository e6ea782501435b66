"""The advance stage: claim the due enrollments and carry each forward.

The decisions are :func:`nurture.engine.advance.advance`'s; this module reads what it
needs, and writes what it decided in the same transaction: the emails into the outbox,
the tasks, the lead updates and the enrollment's new position (each touch is written by
:mod:`nurture.stages.touches`). A pass costs in proportion to the work that is due:
enrollments are found by their indexed due moment."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm.exc import StaleDataError
from sqlmodel import Session

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
from nurture.stages.touches import (
    Plan,
    failed_row,
    held_row,
    lead_values,
    outcome_row,
    prepare_touch,
    write_plan,
)
from nurture.store.advancing import (
    DueEnrollment,
    DueLead,
    Facts,
    claim_due,
    facts_by_lead,
    insert_messages,
    write_enrollments,
)
from nurture.store.database import holds_write_turn, refresh_statistics, session_scope
from nurture.store.enrollments import HELD, EnrollmentStatus
from nurture.store.events import LeadEvents

#: The size of a pass's first batch (the next ones grow to ``[daemon] batch_size``).
FIRST_BATCH = 25


def advance_due(
    ctx: Context,
    catalog: Catalog,
    now: datetime,
    stop: Callable[[], bool] | None = None,
    lead_ids: list[int] | None = None,
    *,
    rules: ScoringRules | None = None,
    between: Callable[[], bool] | None = None,
    queued: Callable[[int], None] | None = None,
) -> PassReport:
    """Carry every due enrollment (of *lead_ids* only, if given) forward, a batch at a
    time; *stop* is asked between batches, and *between* (by default *stop*) between
    enrollments while the batch has not written yet (it is where the pass waits while
    the fast lane serves new leads). *queued* is told how many emails a batch queued,
    after each full batch (a next one may follow; the pass process waits there while it
    is too far ahead of the senders)."""
    report = PassReport()
    seen: set[int] = set()
    # The first batch is small, so that delivery has its first emails at once; each
    # next one is larger, up to the batch size.
    size = min(FIRST_BATCH, ctx.batch_size)
    while stop is None or not stop():
        try:
            batch, ids = _advance_batch(ctx, catalog, rules, now, seen, isolated=False,
                                        only_leads=lead_ids, between=between or stop,
                                        size=size)  # fmt: skip
        except Exception as exc:
            if is_transient(exc):
                raise
            # A write that failed spoils the whole batch's transaction: do the batch
            # again with each enrollment in a savepoint of its own, so that only the
            # enrollment at fault fails.
            logs.action("a batch failed: its enrollments are done one by one",
                        level=logging.WARNING, error=f"{type(exc).__name__}: {exc}")  # fmt: skip
            batch, ids = _advance_batch(ctx, catalog, rules, now, seen, isolated=True,
                                        only_leads=lead_ids, size=size)  # fmt: skip
        if not ids:
            break
        seen.update(ids)
        full, size = len(ids) >= size, min(size * 4, ctx.batch_size)
        report.add(batch)
        if lead_ids is None:  # the first batches may fill an outbox that was empty
            refresh_statistics(ctx.engine)  # (not in the fast lane: a few leads)
        if queued is not None and batch.emails_queued and full:
            queued(batch.emails_queued)
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
    size: int | None = None,
) -> tuple[PassReport, list[int]]:
    """Claim the next batch of due enrollments (*size* of them, the batch size by
    default; skipping *seen*) and carry each forward, in one transaction; return what
    was done and the enrollments' ids. *between* is
    called between enrollments while nothing of the batch is written (on PostgreSQL
    the transaction holds the batch's rows only, which no one else may take).

    Everything is decided and rendered first, then written in a few statements: the
    outbox rows in one, the enrollments in one whose version check raises
    :class:`StaleDataError` if any changed since the claim (the caller does the batch
    again, *isolated*: each enrollment in a savepoint of its own, where one that
    changed is left for the next pass and one that fails fails alone)."""
    report = PassReport()
    # On SQLite the claim locks nothing: should the pass and the arrivals' fast lane take
    # the same enrollment, the second to commit meets the outbox's idempotency key (or
    # the version check) and does its batch again one by one, where that enrollment is
    # no longer due.
    with session_scope(ctx.engine) as session:
        limit = size or ctx.batch_size
        claimed = claim_due(session, list(catalog.sequences), now, limit, only_leads)
        due = [e for e in claimed if e.id not in seen]
        if not due:
            return report, []
        reads = {name: sequence.reads_events() for name, sequence in catalog.sequences.items()}
        facts = facts_by_lead(session, due, lambda enrollment: reads[enrollment.sequence])
        book = SenderBook(session, ctx.config.settings, {e.lead_id for e in due}, now)
        leads: dict[int, DueLead] = {}  # as this batch's updates leave them
        plans: list[Plan] = []
        for enrollment in due:
            if between is not None and not holds_write_turn(session):
                between()  # a moment for the fast lane: nothing of this batch is written
            lead = leads.setdefault(enrollment.lead_id, enrollment.lead)
            plan = _plan(ctx, catalog.sequences[enrollment.sequence], enrollment, lead,
                         facts, now, report, scores=scores_now(rules, lead, now),
                         book=book)  # fmt: skip
            if plan.lead_values is not None:
                leads[lead.id] = replace(lead, **plan.lead_values)
            plans.append(plan)
        # Everything is decided and nothing written (on SQLite, the write turn is free).
        hooks.reach("advance.before_write", session, due)
        if isolated:
            for plan in plans:
                _write_alone(ctx, session, plan, report, now)
        else:
            outbox: list[dict[str, Any]] = []
            for plan in plans:
                outbox += write_plan(session, ctx, plan, report, now)
            insert_messages(session, outbox)
            write_enrollments(session, [plan.row for plan in plans])
    return report, [e.id for e in due]


def _write_alone(
    ctx: Context, session: Session, plan: Plan, report: PassReport, now: datetime
) -> None:
    """Write one enrollment's plan in a savepoint of its own: if it fails, the
    enrollment fails alone; if the enrollment changed since the claim, it is left as it
    is now (the next pass looks at it again)."""
    done = PassReport()  # counted only if the savepoint holds
    try:
        with session.begin_nested():
            outbox = write_plan(session, ctx, plan, done, now)
            insert_messages(session, outbox)
            write_enrollments(session, [plan.row])
    except StaleDataError:
        if plan.outcome is None:  # a hold or a failure, counted as it was decided
            if plan.row["status"] == EnrollmentStatus.failed:
                report.failed -= 1
            else:
                report.held -= 1
        _changed(plan)
        return
    except Exception as exc:
        failed = _fail_because(plan.due, exc, now, report)
        try:
            with session.begin_nested():
                write_enrollments(session, [failed])
        except StaleDataError:
            report.failed -= 1
            _changed(plan)
        return
    report.add(done)


def _changed(plan: Plan) -> None:
    logs.action("enrollment changed while it was advanced: the next pass looks again",
                level=logging.WARNING, lead=plan.due.lead.email,
                sequence=plan.due.sequence)  # fmt: skip


def _plan(
    ctx: Context,
    sequence: Sequence,
    enrollment: DueEnrollment,
    lead: DueLead,
    facts: Facts,
    now: datetime,
    report: PassReport,
    *,
    scores: Scores,
    book: SenderBook | None = None,
) -> Plan:
    """Decide and render what one enrollment does (nothing is written). What can fail
    for this lead (rendering its touches) fails the enrollment alone: its plan is then
    the failure."""
    tz_name = ctx.timezone_for(sequence, lead)
    task = facts.tasks.get(enrollment.waiting_task_id or -1)
    position = Position(
        next_step=enrollment.next_step,
        base_at=enrollment.base_at,
        done=enrollment.done_steps,
        waiting_for_task=task is not None and task.open,
        task_timeout_at=task.timeout_at if task is not None else None,
        waiting_for_email=enrollment.id in facts.unsent,
    )
    view = LeadView.of(lead)
    events = facts.events.get(lead.id, ())
    try:
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
            return _hold_for_templates(sequence, enrollment, missing, now, report)
        touches = [
            prepare_touch(ctx, sequence, enrollment, lead, view, touch, tz_name, now, book)
            for touch in outcome.touches
        ]
    except Exception as exc:
        return Plan(enrollment, sequence, _fail_because(enrollment, exc, now, report))
    return Plan(
        enrollment,
        sequence,
        outcome_row(enrollment, outcome, now),
        outcome,
        touches,
        lead_values(lead, outcome.lead_changes, now) if outcome.lead_changes else None,
        task.id if outcome.task_expired and task is not None else None,
    )


#: How often an enrollment held for a missing template looks again.
TEMPLATE_RECHECK = timedelta(minutes=15)


def _hold_for_templates(
    sequence: Sequence,
    enrollment: DueEnrollment,
    missing: list[str],
    now: datetime,
    report: PassReport,
) -> Plan:
    """Keep the enrollment where it is, active, until the templates its next touch needs
    are back (looked at again every :data:`TEMPLATE_RECHECK`); nothing else is written."""
    names = ", ".join(repr(name) for name in missing)
    reason = f"{HELD}template {names} is missing (templates/{missing[0]}.html.j2)"
    report.held += 1
    return Plan(enrollment, sequence, held_row(enrollment, reason, now + TEMPLATE_RECHECK, now))


def _fail_because(
    enrollment: DueEnrollment, exc: Exception, now: datetime, report: PassReport
) -> dict[str, Any]:
    """The row that fails the enrollment for *exc*; a lost database is not its fault,
    and propagates."""
    if is_transient(exc):
        raise exc
    if isinstance(exc, NurtureError):
        return _fail(enrollment, str(exc), now, report)
    logs.logger.exception("unexpected error advancing %s", enrollment.lead.email, exc_info=exc)
    return _fail(enrollment, f"internal error: {type(exc).__name__}: {exc}", now, report)


def _fail(
    enrollment: DueEnrollment, error: str, now: datetime, report: PassReport
) -> dict[str, Any]:
    report.failed += 1
    logs.action(
        "enrollment failed",
        level=logging.ERROR,
        lead=enrollment.lead.email,
        sequence=enrollment.sequence,
        step=enrollment.next_step,
        error=error,
    )
    return failed_row(enrollment, error, now)
