"""The enroll stage: leads enter the sequences whose audience they match.

Only leads changed since the last pass are checked against the audiences, so an idle
pass costs nothing however many leads there are. Enrolling is idempotent (a unique
index decides between two workers)."""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Engine, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from nurture import logs
from nurture.engine.catalog import Catalog
from nurture.engine.context import Context
from nurture.errors import InvalidValueError
from nurture.language.expressions import Expression, LeadView, context, truth
from nurture.language.fields import ContactStatus
from nurture.language.scoring import ScoringRules, scores_now
from nurture.language.sequences import Sequence
from nurture.stages.report import PassReport
from nurture.store.database import refresh_statistics, session_scope
from nurture.store.enrollments import RUNNING, DeployedSequence, Enrollment
from nurture.store.events import Event, LeadEvents, events_by_lead, wake_changed
from nurture.store.leads import Lead, changed_lead_ids
from nurture.store.locks import exclusive
from nurture.store.meta import Meta, advance_mark, audience_failure_key, mark_for, since_mark

#: Leads changed this long before the last check are looked at again, so that a
#: transaction that committed late is not missed. Enrolling is idempotent.
OVERLAP = timedelta(minutes=1)
LEADS_CHECKED_KEY = "leads_checked_at"


def refusal(lead: Lead, sequence: Sequence, previous: list[Enrollment], by: str) -> str:
    """Why *lead* may not be enrolled in *sequence* now (given its *previous*
    enrollments there), or ``""`` when it may."""
    if lead.status != ContactStatus.subscribed:
        return f"{lead.email} is {lead.status}: never enrolled"
    if not sequence.steps:
        return f"{sequence.name} has no steps"
    running = [e for e in previous if e.status in RUNNING]
    if running:
        return f"{lead.email} is already in {sequence.name} ({running[0].status})"
    if previous:
        if not sequence.reenroll:
            return f"{lead.email} was in {sequence.name} already (reenroll is off)"
        ended = max((e.ended_at or e.updated_at) for e in previous)
        if by == "auto" and lead.updated_at <= ended:
            return f"{lead.email} has not changed since it left {sequence.name}"
    return ""


def previous_of(session: Session, lead: Lead, sequence: Sequence) -> list[Enrollment]:
    """Every enrollment *lead* has had in *sequence*."""
    return list(
        session.exec(
            select(Enrollment)
            .where(Enrollment.lead_id == lead.id)
            .where(Enrollment.sequence == sequence.name)
        )
    )


def enroll(
    session: Session,
    lead: Lead,
    sequence: Sequence,
    now: datetime,
    *,
    by: str = "auto",
    previous: list[Enrollment] | None = None,
) -> tuple[Enrollment | None, str]:
    """Enroll *lead* in *sequence* unless a rule forbids it; return it or why not."""
    assert lead.id is not None
    if previous is None:
        previous = previous_of(session, lead, sequence)
    why = refusal(lead, sequence, previous, by)
    if why:
        return None, why
    cycle = max((e.cycle for e in previous), default=0) + 1
    enrollment = Enrollment(
        lead_id=lead.id,
        sequence=sequence.name,
        cycle=cycle,
        next_step=sequence.steps[0].id,
        base_at=now,
        due_at=now,
        enrolled_by=by,
        enrolled_at=now,
        updated_at=now,
    )
    try:
        with session.begin_nested():
            session.add(enrollment)
    except IntegrityError:
        return None, f"{lead.email} was enrolled in {sequence.name} by another worker"
    logs.action("enrolled", lead=lead.email, sequence=sequence.name, cycle=cycle, by=by)
    return enrollment, ""


@dataclass
class EnrollReport:
    """What enrolling the leads that match an expression did."""

    enrolled: int = 0
    #: Why each matching lead was not enrolled.
    refused: list[str] = field(default_factory=list)
    #: Leads the expression could not be evaluated for, and the first error.
    errors: int = 0
    first_error: str = ""
    #: With ``dry_run``: the leads that would be enrolled, as expressions see them.
    chosen: list[LeadView] = field(default_factory=list)
    #: The ids of the leads in ``chosen``, in the same order.
    chosen_ids: list[int] = field(default_factory=list)


def enroll_audiences(
    ctx: Context, catalog: Catalog, now: datetime, rules: ScoringRules | None = None
) -> int:
    """Enroll the leads that match each sequence's audience and were not checked yet.

    Also wakes the enrollments of every lead changed since the last pass, so a change
    of stage or status (``exit_when: [hot]``, an unsubscribe) acts at once.
    """
    enrolled = 0
    with session_scope(ctx.engine) as session:
        wake_changed(session, advance_mark(session, LEADS_CHECKED_KEY, now, OVERLAP), now)
        rows = {row.name: row for row in session.exec(select(DeployedSequence))}
    for name, sequence in catalog.sequences.items():
        row = rows.get(name)
        if sequence.audience is None or row is None:
            continue
        checked = row.audience_checked_at
        report = enroll_matching(
            ctx.engine, sequence, sequence.audience, now,
            since=since_mark(checked, now, OVERLAP), chunk=ctx.batch_size * 5,
            rules=rules,
        )  # fmt: skip
        enrolled += report.enrolled
        with session_scope(ctx.engine) as session:
            new = note_audience_failure(session, name, row.digest, report, full=checked is None)
        if new:
            logs.action("audience could not be evaluated", level=logging.WARNING,
                        sequence=name, leads=report.errors, error=report.first_error)  # fmt: skip
        with session_scope(ctx.engine) as session:
            session.execute(
                update(DeployedSequence)
                .where(col(DeployedSequence.name) == name)
                .where(col(DeployedSequence.digest) == row.digest)
                .values(audience_checked_at=mark_for(now))
            )
    return enrolled


def note_audience_failure(
    session: Session, sequence: str, digest: str, report: EnrollReport, *, full: bool
) -> bool:
    """Keep the latest failure of *sequence*'s audience for ``nurture status``; forget
    it once the audience was edited, or a look at every lead found none. Return whether
    the failure is new (a different error, or another version of the file): only that
    is logged, not every pass."""
    key = audience_failure_key(sequence)
    stored = session.get(Meta, key)
    before = json.loads(stored.value) if stored is not None else None
    if not report.errors:
        if stored is not None and (full or (before or {}).get("digest") != digest):
            session.delete(stored)
        return False
    error = report.first_error
    same = before is not None and (before.get("digest"), before.get("error")) == (digest, error)
    seen = int(before["leads"]) if same and before else 0
    value = {"sequence": sequence, "digest": digest, "error": error[:600],
             "leads": max(report.errors, seen)}  # fmt: skip
    session.merge(Meta(key=key, value=json.dumps(value)))
    return not same


def _audience_candidates(
    engine: Engine, since: datetime | None, now: datetime, chunk: int
) -> Iterator[list[int]]:
    """The ids of the leads an audience is checked against, *chunk* at a time: every
    lead, or (after *since*) those changed or with an event of their own since, found
    through the indexes."""
    if since is None:
        yield from changed_lead_ids(engine, None, now, chunk)
        return
    with session_scope(engine) as session:
        acted = set(
            session.exec(
                select(Event.lead_id)
                .where(col(Event.occurred_at) > since)
                .where(col(Event.type) != "email_sent")  # our own doing, not the lead's
                .distinct()
            )
        )
    for ids in changed_lead_ids(engine, since, now, chunk):
        acted.difference_update(ids)
        yield ids
    ordered = sorted(acted)
    for start in range(0, len(ordered), chunk):
        yield ordered[start : start + chunk]


def enroll_matching(
    engine: Engine,
    sequence: Sequence,
    expression: Expression,
    now: datetime,
    *,
    by: str = "auto",
    since: datetime | None = None,
    chunk: int = 1000,
    lead_ids: list[int] | None = None,
    rules: ScoringRules | None = None,
    dry_run: bool = False,
) -> EnrollReport:
    """Enroll every lead for which *expression* holds, a chunk of leads at a time.

    Automatic enrollment (``by="auto"``) looks only at subscribed leads changed, or with
    events, after *since*; enrollment by hand looks at every lead and says why a
    matching one was not enrolled. *rules* decay the engagement expressions see. With
    *dry_run* nothing is written: the report counts, and lists in ``chosen``, the leads
    that would be enrolled.
    """
    report = EnrollReport()
    chunks = _audience_candidates(engine, since, now, chunk) if lead_ids is None else [lead_ids]
    for candidates in chunks:
        with session_scope(engine) as session:
            if by == "auto" and not dry_run and since is not None:
                # A lead in the sequence already is never enrolled again by the pass
                # (refusal): not read, not evaluated (a full check, after the audience
                # changed, evaluates every lead: its errors are all reported).
                running = set(
                    session.exec(
                        select(Enrollment.lead_id)
                        .where(col(Enrollment.lead_id).in_(candidates))
                        .where(Enrollment.sequence == sequence.name)
                        .where(col(Enrollment.status).in_(RUNNING))
                    )
                )
                candidates = [i for i in candidates if i not in running]
                if not candidates:
                    continue
            query = select(Lead).where(col(Lead.id).in_(candidates)).order_by(col(Lead.id))
            if by == "auto":
                query = query.where(Lead.status == ContactStatus.subscribed.value)
            leads = list(session.exec(query))
            ids = [lead.id for lead in leads if lead.id is not None]
            # An audience that asks nothing of what leads did reads none of their events.
            events = events_by_lead(session, ids) if expression.reads_events else {}
            previous: dict[int, list[Enrollment]] = defaultdict(list)
            for row in session.exec(
                select(Enrollment)
                .where(col(Enrollment.lead_id).in_(ids))
                .where(Enrollment.sequence == sequence.name)
            ):
                previous[row.lead_id].append(row)
            for lead in leads:
                assert lead.id is not None
                engagement = LeadEvents.of(events.get(lead.id, []), sequence.name)
                try:
                    names = context(LeadView.of(lead), engagement, now=now,
                                    scores=scores_now(rules, lead, now))  # fmt: skip
                    matches = truth(expression, names)
                except InvalidValueError as exc:
                    report.errors += 1
                    report.first_error = report.first_error or f"{lead.email}: {exc}"
                    continue
                if not matches:
                    continue
                if dry_run:
                    why = refusal(lead, sequence, previous[lead.id], by)
                    if not why:
                        report.chosen.append(LeadView.of(lead))
                        report.chosen_ids.append(lead.id)
                else:
                    _, why = enroll(session, lead, sequence, now, by=by,
                                       previous=previous[lead.id])  # fmt: skip
                if why:
                    report.refused.append(why)
                else:
                    report.enrolled += 1
    return report


def enroll_stage(
    ctx: Context, catalog: Catalog, rules: ScoringRules | None, now: datetime
) -> PassReport:
    """The enroll stage of a pass: one worker at a time checks the audiences."""
    report = PassReport()
    with exclusive(ctx.engine, "audiences"):
        report.enrolled = enroll_audiences(ctx, catalog, now, rules)
    if report.enrolled:
        refresh_statistics(ctx.engine)
    return report


def enrolled_matching(
    engine: Engine,
    sequence: Sequence,
    expression: Expression,
    now: datetime,
    rules: ScoringRules | None = None,
) -> EnrollReport:
    """The leads with an active or paused enrollment in *sequence* for which
    *expression* holds (in ``chosen``, ``enrolled`` their count); nothing is written."""
    report = EnrollReport()
    with session_scope(engine) as session:
        leads = list(
            session.exec(
                select(Lead)
                .join(Enrollment, col(Enrollment.lead_id) == col(Lead.id))
                .where(col(Enrollment.sequence) == sequence.name)
                .where(col(Enrollment.status).in_(RUNNING))
                .order_by(col(Lead.id))
            )
        )
        ids = [lead.id for lead in leads if lead.id is not None]
        events = events_by_lead(session, ids) if expression.reads_events else {}
        for lead in leads:
            assert lead.id is not None
            view = LeadView.of(lead)
            engagement = LeadEvents.of(events.get(lead.id, []), sequence.name)
            try:
                names = context(view, engagement, now=now, scores=scores_now(rules, lead, now))
                if not truth(expression, names):
                    continue
            except InvalidValueError as exc:
                report.errors += 1
                report.first_error = report.first_error or f"{lead.email}: {exc}"
                continue
            report.enrolled += 1
            report.chosen.append(view)
            report.chosen_ids.append(lead.id)
    return report
