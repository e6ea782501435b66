"""What a touch becomes, in the transaction that advances its enrollment: an email in the
outbox, a task for sales, a notification, a lead update. Rendering happens first (what
can fail for one lead fails that enrollment alone); the write is returned to run later."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from datetime import datetime
from email.utils import make_msgid
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col

from nurture import logs
from nurture.config import Config
from nurture.engine.advance import Outcome, Touch
from nurture.engine.context import Context
from nurture.language.expressions import LeadView
from nurture.language.fields import merge_status
from nurture.language.sequences import EmailAction, NotifyAction, Sequence, TaskAction
from nurture.mail.compose import (
    Sender,
    build_notification,
    compose_email,
    sequence_sender,
)
from nurture.mail.senders import OWNER, SenderBook
from nurture.mail.wire import as_text
from nurture.sales.notice import owner_for
from nurture.stages.report import PassReport
from nurture.store.enrollments import Enrollment, EnrollmentStatus
from nurture.store.leads import Lead
from nurture.store.outbox import MessageKind, queue_message
from nurture.store.tasks import Task, TaskStatus

Write = Callable[[Session, PassReport], "Task | None"]


def write_outcome(
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


def prepare_touch(
    ctx: Context,
    sequence: Sequence,
    enrollment: Enrollment,
    lead: Lead,
    view: LeadView,
    touch: Touch,
    tz_name: str,
    now: datetime,
    book: SenderBook | None = None,
) -> Write:
    """Render one touch (what can fail for this lead: a template, a note) and return
    what writes it. *book*: what picking the email's sender reads (see
    :func:`~nurture.mail.senders.pick_sender`)."""
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
        choice = book.pick(sequence, lead_id, lead.owner) if book is not None else None
        email = compose_email(ctx, sequence, step.id, template, lead, view, now, tracking_id,
                              choice=choice)  # fmt: skip
        raw = as_text(email.message)  # before the transaction that stores it

        def queue_email(session: Session, report: PassReport) -> Task | None:
            queue_message(
                session, email.message, kind=MessageKind.email, key=key, lead_id=lead_id,
                sequence=sequence.name, step=step.id, sender=email.sender.email,
                recipient=lead.email, timezone=tz_name, now=now, enrollment_id=enrollment.id,
                template=template, tracking_id=tracking_id, links=email.links, raw=raw,
            )  # fmt: skip
            report.emails_queued += 1
            logs.action("email queued", **where, template=template, moved=touch.moved_because,
                        sender=email.choice.label() if email.choice else None)  # fmt: skip
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
            # A lead nobody owns: the task goes by the hand-off's rule (round robin, or
            # the sales inbox), never to "unassigned", which no Tasks page lists.
            owner = assignee or owner_for(session, ctx)
            task = Task(
                lead_id=lead_id,
                enrollment_id=enrollment.id,
                sequence=sequence.name,
                step=step.id,
                kind=kind,
                note=note,
                assignee=owner,
                due_at=now,
                timeout_at=touch.timeout_at,
                outcomes=list(outcomes),
                created_at=now,
            )
            session.add(task)
            report.tasks_created += 1
            logs.action("task created", **where, kind=kind, assignee=owner or "unassigned")
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
        sender = _notice_sender(ctx.config, sequence)
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


def _notice_sender(config: Config, sequence: Sequence) -> Sender:
    """Who a notification to sales comes from: the sequence's own ``from:`` address;
    for a sequence whose emails come from its leads' senders (``from: owner``,
    ``senders: [...]``), the project's default sender (``[sales] from_address``), never
    one of those mailboxes (which may be paused, or paced)."""
    if sequence.senders or sequence.sender == OWNER:
        settings = config.settings
        return Sender.parse(settings.sales.from_address, settings.sender.postal_address,
                            settings.sender.title)  # fmt: skip
    return sequence_sender(config, sequence)
