"""One pass of the engine: enroll audiences, claim due enrollments, carry them forward.

The decisions are :func:`nurture.engine.advance`'s; this module reads what it needs,
and writes what it decided in the same transaction: the emails into the outbox, the
tasks, the lead updates and the enrollment's new position. A pass costs in proportion
to the work that is due: enrollments are found by their indexed due moment, and only
leads changed since the last pass are checked against the audiences.
"""

from __future__ import annotations

import logging
import secrets
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from email.message import Message
from email.utils import make_msgid
from typing import Any

from sqlalchemy import Engine, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from nurture import logs
from nurture.catalog import Catalog
from nurture.config import Config
from nurture.engine import Outcome, Position, Touch, advance
from nurture.enrollments import HELD, DeployedSequence, Enrollment, EnrollmentStatus
from nurture.errors import InvalidValueError, NurtureError
from nurture.events import Event, LeadEvents, events_by_lead, wake_changed
from nurture.expressions import Expression, LeadView, Scores, context, truth
from nurture.leads import ContactStatus, Lead, merge_status
from nurture.locks import exclusive
from nurture.messages import (
    TEST_LEAD_ID,
    Sender,
    build_message,
    build_notification,
    render_step_email,
    unsubscribe_url,
)
from nurture.meta import advance_mark, mark_for, since_mark
from nurture.outbox import MessageKind, emails_not_left, queue_message
from nurture.retry import is_transient
from nurture.scoring import ScoringRules, scores_now
from nurture.sequences import EmailAction, NotifyAction, Sequence, TaskAction
from nurture.store import changed_lead_ids, session_scope
from nurture.tasks import Task, TaskStatus
from nurture.templates import TemplateSet
from nurture.timing import zone
from nurture.tokens import project_secret
from nurture.tracking import track, track_text
from nurture.workers import new_worker_id

#: Leads changed this long before the last check are looked at again, so that a
#: transaction that committed late is not missed. Enrolling is idempotent.
OVERLAP = timedelta(minutes=1)
LEADS_CHECKED_KEY = "leads_checked_at"


@dataclass
class PassReport:
    """What one pass did."""

    enrolled: int = 0
    emails_queued: int = 0
    tasks_created: int = 0
    notifications: int = 0
    updates: int = 0
    skipped: int = 0
    exited: int = 0
    completed: int = 0
    failed: int = 0
    #: Enrollments kept waiting at a step whose template is missing.
    held: int = 0
    stage_changes: int = 0
    hot: int = 0
    reminders: int = 0

    def add(self, other: PassReport) -> None:
        for item in fields(self):
            setattr(self, item.name, getattr(self, item.name) + getattr(other, item.name))


@dataclass
class Context:
    """What every pass needs, opened once."""

    engine: Engine
    config: Config
    templates: TemplateSet
    secret: str
    batch_size: int = 200
    #: Who claims work in this process: the registered worker of ``nurture run``, or a
    #: one-off id for ``nurture tick``.
    worker_id: str = field(default_factory=lambda: new_worker_id())
    #: The scoring rules the last pass read: expressions see each lead's engagement
    #: decayed by their half-life (``None``: scoring.yaml unreadable, as stored).
    rules: ScoringRules | None = None
    #: After the mail server refused to send for us: no delivery before this moment, and
    #: how many delivery runs in a row met a refusal (the pause doubles).
    sending_paused_until: datetime | None = None
    sending_refusals: int = 0

    def scores(self, lead: Lead, now: datetime) -> Scores:
        """The lead's scores at *now*, as expressions see them."""
        return scores_now(self.rules, lead, now)

    @classmethod
    def open(cls, engine: Engine, config: Config) -> Context:
        settings = config.settings
        return cls(
            engine=engine,
            config=config,
            templates=TemplateSet(config.templates_dir),
            secret=project_secret(settings.tracking.secret, engine),
            batch_size=settings.daemon.batch_size,
        )

    @property
    def default_timezone(self) -> str:
        return self.config.settings.project.default_timezone

    def timezone_for(self, sequence: Sequence, lead: Lead) -> str:
        return sequence.schedule.timezone_for(lead.timezone, self.default_timezone)

    def sender(self, sequence: Sequence) -> Sender:
        settings = self.config.settings.sender
        return Sender.parse(sequence.sender, settings.postal_address, settings.title)


# --- enrollment ------------------------------------------------------------------------


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
    if lead.status != ContactStatus.subscribed:
        return None, f"{lead.email} is {lead.status}: never enrolled"
    if not sequence.steps:
        return None, f"{sequence.name} has no steps"
    if previous is None:
        previous = list(
            session.exec(
                select(Enrollment)
                .where(Enrollment.lead_id == lead.id)
                .where(Enrollment.sequence == sequence.name)
            )
        )
    running = [
        e for e in previous if e.status in (EnrollmentStatus.active, EnrollmentStatus.paused)
    ]
    if running:
        return None, f"{lead.email} is already in {sequence.name} ({running[0].status})"
    if previous:
        if not sequence.reenroll:
            return None, f"{lead.email} was in {sequence.name} already (reenroll is off)"
        ended = max((e.ended_at or e.updated_at) for e in previous)
        if by == "auto" and lead.updated_at <= ended:
            return None, f"{lead.email} has not changed since it left {sequence.name}"
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


def enroll_audiences(ctx: Context, catalog: Catalog, now: datetime) -> int:
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
            rules=ctx.rules,
        )  # fmt: skip
        enrolled += report.enrolled
        if report.errors:
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
) -> EnrollReport:
    """Enroll every lead for which *expression* holds, a chunk of leads at a time.

    Automatic enrollment (``by="auto"``) looks only at subscribed leads changed, or with
    events, after *since*; enrollment by hand looks at every lead and says why a
    matching one was not enrolled. *rules* decay the engagement expressions see.
    """
    report = EnrollReport()
    chunks = _audience_candidates(engine, since, now, chunk) if lead_ids is None else [lead_ids]
    for candidates in chunks:
        with session_scope(engine) as session:
            query = select(Lead).where(col(Lead.id).in_(candidates)).order_by(col(Lead.id))
            if by == "auto":
                query = query.where(Lead.status == ContactStatus.subscribed.value)
            leads = list(session.exec(query))
            ids = [lead.id for lead in leads if lead.id is not None]
            events = events_by_lead(session, ids)
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
                made, why = enroll(session, lead, sequence, now, by=by,
                                   previous=previous[lead.id])  # fmt: skip
                if made is None:
                    report.refused.append(why)
                else:
                    report.enrolled += 1
    return report


# --- advancing -------------------------------------------------------------------------


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


def run_pass(
    ctx: Context, catalog: Catalog, now: datetime, stop: Callable[[], bool] | None = None
) -> PassReport:
    """One full pass at *now* (emails are queued here; :mod:`nurture.delivery` sends).

    *stop* is asked between batches: when it says so, the pass ends early.
    """
    report = PassReport()
    with exclusive(ctx.engine, "audiences"):
        report.enrolled = enroll_audiences(ctx, catalog, now)
    report.add(advance_due(ctx, catalog, now, stop))
    return report


def serve_arrivals(
    ctx: Context, catalog: Catalog, lead_ids: list[int], now: datetime
) -> PassReport:
    """Speed to lead: enroll the leads that just arrived in the sequences whose audience
    they match, and carry their due enrollments forward, touching nothing else (a long
    pass may be going on beside it)."""
    report = PassReport()
    for sequence in catalog.sequences.values():
        if sequence.audience is None:
            continue
        enrolled = enroll_matching(ctx.engine, sequence, sequence.audience, now,
                                   lead_ids=lead_ids, rules=ctx.rules)  # fmt: skip
        report.enrolled += enrolled.enrolled
    report.add(advance_due(ctx, catalog, now, lead_ids=lead_ids))
    return report


def advance_due(
    ctx: Context,
    catalog: Catalog,
    now: datetime,
    stop: Callable[[], bool] | None = None,
    lead_ids: list[int] | None = None,
) -> PassReport:
    """Carry every due enrollment (of *lead_ids* only, if given) forward, a batch at a
    time; *stop* is asked between batches."""
    report = PassReport()
    seen: set[int] = set()
    while stop is None or not stop():
        try:
            batch, ids = _advance_batch(ctx, catalog, now, seen, isolated=False,
                                        only_leads=lead_ids)  # fmt: skip
        except Exception as exc:
            if is_transient(exc):
                raise
            # A write that failed spoils the whole batch's transaction: do the batch
            # again with each enrollment in a savepoint of its own, so that only the
            # enrollment at fault fails.
            logs.action("a batch failed: its enrollments are done one by one",
                        level=logging.WARNING, error=f"{type(exc).__name__}: {exc}")  # fmt: skip
            batch, ids = _advance_batch(ctx, catalog, now, seen, isolated=True,
                                        only_leads=lead_ids)  # fmt: skip
        if not ids:
            break
        seen.update(ids)
        report.add(batch)
    return report


def _advance_batch(
    ctx: Context,
    catalog: Catalog,
    now: datetime,
    seen: set[int],
    *,
    isolated: bool,
    only_leads: list[int] | None = None,
) -> tuple[PassReport, list[int]]:
    """Claim the next batch of due enrollments (skipping *seen*) and carry each forward,
    in one transaction; return what was done and the enrollments' ids."""
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
        for enrollment in due:
            sequence = catalog.sequences[enrollment.sequence]
            lead = leads[enrollment.lead_id]
            task = tasks.get(enrollment.waiting_task_id or -1)
            _process(ctx, session, sequence, enrollment, lead, events[lead.id or 0], task, now,
                     report, isolated=isolated,
                     waiting_for_email=enrollment.id in unsent)  # fmt: skip
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
    waiting_for_email: bool = False,
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
            scores=ctx.scores(lead, now),
        )
        needed = {t.template for t in outcome.touches if t.template}
        missing = sorted(name for name in needed if not ctx.templates.exists(name))
        if missing:
            _hold_for_templates(session, enrollment, missing, now, report)
            return
        if enrollment.reason and enrollment.reason.startswith(HELD):
            enrollment.reason = None  # its templates are back
        writes = [
            _prepare(ctx, sequence, enrollment, lead, view, touch, tz_name, now)
            for touch in outcome.touches
        ]
    except Exception as exc:
        _fail_because(session, enrollment, lead, exc, now, report)
        return
    if not isolated:  # a write that fails spoils the batch: the caller does it again
        _apply(session, sequence, enrollment, lead, task, outcome, writes, report, now)
        return
    done = PassReport()  # counted only if the savepoint holds
    try:
        with session.begin_nested():
            _apply(session, sequence, enrollment, lead, task, outcome, writes, done, now)
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
Write = Callable[[Session, PassReport], "Task | None"]


def _apply(
    session: Session,
    sequence: Sequence,
    enrollment: Enrollment,
    lead: Lead,
    task: Task | None,
    outcome: Outcome,
    writes: list[Write],
    report: PassReport,
    now: datetime,
) -> None:
    for note in outcome.notes:
        logs.action(note, lead=lead.email, sequence=sequence.name)
    if outcome.task_expired and task is not None:
        task.status = TaskStatus.expired.value
        session.add(task)
    for step_id, reason in outcome.skipped:
        report.skipped += 1
        logs.action(
            "step skipped", lead=lead.email, sequence=sequence.name, step=step_id, reason=reason
        )
    new_task: Task | None = None
    for write in writes:
        made = write(session, report)
        if isinstance(made, Task):
            new_task = made
    if outcome.lead_changes:
        _update_lead(lead, outcome.lead_changes, now)
        session.add(lead)
        report.updates += 1
    enrollment.status = outcome.status
    enrollment.next_step = outcome.next_step
    enrollment.base_at = outcome.base_at or enrollment.base_at
    enrollment.due_at = outcome.due_at
    enrollment.done_steps = list(outcome.done)
    enrollment.updated_at = now
    if outcome.waits_for_task:
        if new_task is not None:
            session.flush()
            enrollment.waiting_task_id = new_task.id
    else:
        enrollment.waiting_task_id = None
    if outcome.status != EnrollmentStatus.active:
        enrollment.ended_at = now
        enrollment.reason = outcome.reason
        if outcome.status == EnrollmentStatus.exited:
            report.exited += 1
            _cancel_tasks(session, enrollment)
            logs.action("exited", lead=lead.email, sequence=sequence.name, reason=outcome.reason)
        else:
            report.completed += 1
            logs.action("completed", lead=lead.email, sequence=sequence.name)
    session.add(enrollment)


def _cancel_tasks(session: Session, enrollment: Enrollment) -> None:
    session.execute(
        update(Task)
        .where(col(Task.enrollment_id) == enrollment.id)
        .where(col(Task.status) == TaskStatus.open.value)
        .values(status=TaskStatus.cancelled.value)
    )


def _update_lead(lead: Lead, changes: dict[str, Any], now: datetime) -> None:
    for key, value in changes.items():
        if key == "attributes":
            lead.attributes = {**(lead.attributes or {}), **value}
        elif key == "status":
            lead.status = merge_status(lead.status, value)
        else:
            setattr(lead, key, value)
    lead.updated_at = now


@dataclass(frozen=True)
class ComposedEmail:
    message: Message
    sender: Sender
    #: The tracked links' original URLs, in order.
    links: list[str]


def compose_email(
    ctx: Context,
    sequence: Sequence,
    step_id: str,
    template: str,
    lead: Lead,
    view: LeadView,
    now: datetime,
    tracking_id: str | None,
    test_to: str | None = None,
) -> ComposedEmail:
    """The email *lead* gets at a step: rendered, tracked (with a *tracking_id*), with
    every header set. ``nurture preview`` shows exactly this. With *test_to*, the same
    email as a test for that address: ``[test]`` before the subject, and an unsubscribe
    link that names no lead (it opens a page that says so, and changes nothing)."""
    assert lead.id is not None
    sender = ctx.sender(sequence)
    settings = ctx.config.settings
    base = settings.tracking.base_url
    lead_id = TEST_LEAD_ID if test_to else lead.id
    link = unsubscribe_url(base, ctx.secret, lead_id, sequence.name, step_id)
    rendered = render_step_email(ctx.templates, template, view, sender, sequence, step_id, link)
    links: list[str] = []
    if tracking_id is not None:
        body, links = track(rendered.html, base_url=base, secret=ctx.secret,
                            tracking_id=tracking_id)  # fmt: skip
        text = track_text(rendered.text, links, base_url=base, secret=ctx.secret,
                          tracking_id=tracking_id)  # fmt: skip
        rendered = replace(rendered, html=body, text=text)
    if test_to:
        rendered = replace(rendered, subject=f"[test] {rendered.subject}")
    message = build_message(
        rendered,
        sender=sender,
        to_email=test_to or lead.email,
        to_name="" if test_to else lead.full_name,
        date=now,
        unsubscribe=link,
        unsubscribe_mailto=settings.tracking.unsubscribe_mailto,
        reply_to=sequence.reply_to,
        message_id=make_msgid(domain=sender.domain),
    )
    return ComposedEmail(message, sender, links)


def _prepare(
    ctx: Context,
    sequence: Sequence,
    enrollment: Enrollment,
    lead: Lead,
    view: LeadView,
    touch: Touch,
    tz_name: str,
    now: datetime,
) -> Write:
    """Render one touch (what can fail for this lead: a template, a note) and return
    what writes it."""
    step = touch.step
    action = step.action
    key = f"{enrollment.id}:{step.id}"
    lead_id = lead.id
    assert lead_id is not None
    where: dict[str, Any] = {"lead": lead.email, "sequence": sequence.name, "step": step.id}
    if isinstance(action, EmailAction):
        assert touch.template is not None
        template = touch.template
        tracking_id = secrets.token_urlsafe(12) if action.track else None
        email = compose_email(ctx, sequence, step.id, template, lead, view, now, tracking_id)

        def queue_email(session: Session, report: PassReport) -> Task | None:
            queue_message(
                session, email.message, kind=MessageKind.email, key=key, lead_id=lead_id,
                sequence=sequence.name, step=step.id, sender=email.sender.email,
                recipient=lead.email, timezone=tz_name, now=now, enrollment_id=enrollment.id,
                template=template, tracking_id=tracking_id, links=email.links,
            )  # fmt: skip
            report.emails_queued += 1
            logs.action("email queued", **where, template=template, moved=touch.moved_because)
            return None

        return queue_email
    if isinstance(action, TaskAction):
        note = ""
        if action.note:
            note = ctx.templates.render_text(
                action.note, {"lead": view}, str(sequence.path), action.note_line
            )
        kind, assignee = action.kind, action.assignee or lead.owner
        outcomes = action.outcomes

        def create_task(session: Session, report: PassReport) -> Task | None:
            task = Task(
                lead_id=lead_id,
                enrollment_id=enrollment.id,
                sequence=sequence.name,
                step=step.id,
                kind=kind,
                note=note,
                assignee=assignee,
                due_at=now,
                timeout_at=touch.timeout_at,
                outcomes=list(outcomes),
                created_at=now,
            )
            session.add(task)
            report.tasks_created += 1
            logs.action("task created", **where, kind=kind, assignee=assignee or "unassigned")
            return task

        return create_task
    if isinstance(action, NotifyAction):
        to = action.to or lead.owner
        body = ctx.templates.render_text(
            action.message, {"lead": view}, str(sequence.path), action.message_line
        )
        if not to:

            def nobody(session: Session, report: PassReport) -> Task | None:
                logs.action("nobody to notify: the lead has no owner", level=logging.WARNING,
                            **where, note=body)  # fmt: skip
                return None

            return nobody
        sender = ctx.sender(sequence)
        message = build_notification(
            sender=sender,
            to_email=to,
            subject=f"[nurture] {view.get('name')}: {sequence.name}",
            body=f"{body}\n\nLead: {lead.email}\nSequence: {sequence.name}, step {step.id}\n",
            date=now,
            message_id=make_msgid(domain=sender.domain),
        )

        def queue_notice(session: Session, report: PassReport) -> Task | None:
            queue_message(
                session, message, kind=MessageKind.notify, key=key, lead_id=lead_id,
                sequence=sequence.name, step=step.id, sender=sender.email, recipient=to,
                timezone=tz_name, now=now, enrollment_id=enrollment.id,
            )  # fmt: skip
            report.notifications += 1
            logs.action("notification queued", **where, to=to)
            return None

        return queue_notice

    def log_update(session: Session, report: PassReport) -> Task | None:
        logs.action("lead updated", **where)
        return None

    return log_update
