"""What a touch becomes, in the transaction that advances its enrollment: an email in the
outbox, a task for sales, a notification, a lead update. Rendering happens first (what
can fail for one lead fails that enrollment alone); what it writes is returned as rows
(:class:`Prepared`, gathered per enrollment in a :class:`Plan`), for the batch to write
in a few statements."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import make_msgid
from typing import Any

from sqlmodel import Session

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
from nurture.store.advancing import (
    WRITTEN,
    DueEnrollment,
    DueLead,
    cancel_tasks,
    expire_tasks,
    insert_task,
    update_lead,
)
from nurture.store.enrollments import HELD, EnrollmentStatus
from nurture.store.outbox import MessageKind, message_row
from nurture.store.tasks import TaskStatus


@dataclass
class Prepared:
    """A touch rendered, ready to write: its outbox row or task row (or neither), and
    what is logged and counted once it is written."""

    log: str
    where: dict[str, Any]
    #: The :class:`PassReport` counter it adds one to, if any.
    counts: str | None = None
    level: int = logging.INFO
    outbox: dict[str, Any] | None = None
    #: A task row, without its assignee when the lead has none (the hand-off's rule
    #: picks one as it is written).
    task: dict[str, Any] | None = None


@dataclass
class Plan:
    """What the advance of one enrollment writes: its touches, its lead's changes, and
    its own new columns (:data:`~nurture.store.advancing.WRITTEN`)."""

    due: DueEnrollment
    sequence: Sequence
    row: dict[str, Any]
    outcome: Outcome | None = None
    touches: list[Prepared] = field(default_factory=list)
    #: The lead's columns its ``update`` steps set.
    lead_values: dict[str, Any] | None = None
    #: The task it waited for, when that task timed out.
    expired_task: int | None = None


def held_row(due: DueEnrollment, reason: str, due_at: datetime, now: datetime) -> dict[str, Any]:
    """The columns of an enrollment that stays where it is, active, until *due_at*."""
    return _row(due, status=EnrollmentStatus.active.value, next_step=due.next_step,
                base_at=due.base_at, due_at=due_at, waiting_task_id=due.waiting_task_id,
                done_steps=list(due.done_steps), reason=reason, updated_at=now,
                ended_at=due.ended_at)  # fmt: skip


def failed_row(due: DueEnrollment, error: str, now: datetime) -> dict[str, Any]:
    """The columns of an enrollment failed for *error* (it keeps its step, for the log)."""
    return _row(due, status=EnrollmentStatus.failed.value, next_step=due.next_step,
                base_at=due.base_at, due_at=None, waiting_task_id=due.waiting_task_id,
                done_steps=list(due.done_steps), reason=error, updated_at=now,
                ended_at=now)  # fmt: skip


def outcome_row(due: DueEnrollment, outcome: Outcome, now: datetime) -> dict[str, Any]:
    """The columns of an enrollment after *outcome* (the task it waits for, if a touch
    creates it, is set as that task is written)."""
    ended = outcome.status != EnrollmentStatus.active
    reason = outcome.reason if ended else due.reason
    if reason is not None and not ended and reason.startswith(HELD):
        reason = None  # its templates are back
    return _row(due, status=outcome.status, next_step=outcome.next_step,
                base_at=outcome.base_at or due.base_at, due_at=outcome.due_at,
                waiting_task_id=due.waiting_task_id if outcome.waits_for_task else None,
                done_steps=list(outcome.done), reason=reason, updated_at=now,
                ended_at=now if ended else due.ended_at)  # fmt: skip


def _row(due: DueEnrollment, **columns: Any) -> dict[str, Any]:
    assert set(columns) == set(WRITTEN)
    return {"_id": due.id, "_version": due.version, **columns}


def lead_values(lead: DueLead, changes: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The lead columns that *changes* (an ``update`` step's) set: attributes merged
    into the lead's, an opt-out never undone."""
    values: dict[str, Any] = {}
    for key, value in changes.items():
        if key == "attributes":
            values["attributes"] = {**(lead.attributes or {}), **value}
        elif key == "status":
            values["status"] = merge_status(lead.status, value)
        else:
            values[key] = value
    values["updated_at"] = now
    return values


def write_plan(
    session: Session, ctx: Context, plan: Plan, report: PassReport, now: datetime
) -> list[dict[str, Any]]:
    """Write what *plan* writes besides its outbox rows and its enrollment's row, which
    it returns and sets (for a batch to store in one statement each); logs and counts."""
    due, sequence, outcome = plan.due, plan.sequence, plan.outcome
    email = due.lead.email
    if outcome is not None:
        for note in outcome.notes:
            logs.action(note, lead=email, sequence=sequence.name)
        for step_id, reason in outcome.skipped:
            report.skipped += 1
            logs.action("step skipped", lead=email, sequence=sequence.name, step=step_id,
                        reason=reason)  # fmt: skip
    if plan.expired_task is not None:
        expire_tasks(session, [plan.expired_task])
    outbox: list[dict[str, Any]] = []
    for touch in plan.touches:
        fields = dict(touch.where)
        if touch.outbox is not None:
            outbox.append(touch.outbox)
        if touch.task is not None:
            task = dict(touch.task)
            if task["assignee"] is None:
                # A lead nobody owns: the task goes by the hand-off's rule (round robin,
                # or the sales inbox), never to "unassigned", which no Tasks page lists.
                task["assignee"] = owner_for(session, ctx)
                session.flush()  # the round robin's turn, before a statement of its own
            task_id = insert_task(session, task)
            if outcome is not None and outcome.waits_for_task:
                plan.row["waiting_task_id"] = task_id
            fields["assignee"] = task["assignee"] or "unassigned"
        if touch.counts is not None:
            setattr(report, touch.counts, getattr(report, touch.counts) + 1)
        logs.action(touch.log, level=touch.level, **fields)
    if plan.lead_values is not None:
        update_lead(session, due.lead_id, plan.lead_values)
        report.updates += 1
    if outcome is not None and outcome.status != EnrollmentStatus.active:
        if outcome.status == EnrollmentStatus.exited:
            report.exited += 1
            cancel_tasks(session, [due.id])
            logs.action("exited", lead=email, sequence=sequence.name, reason=outcome.reason)
        else:
            report.completed += 1
            logs.action("completed", lead=email, sequence=sequence.name)
    return outbox


def prepare_touch(
    ctx: Context,
    sequence: Sequence,
    enrollment: DueEnrollment,
    lead: DueLead,
    view: LeadView,
    touch: Touch,
    tz_name: str,
    now: datetime,
    book: SenderBook | None = None,
) -> Prepared:
    """Render one touch (what can fail for this lead: a template, a note) and return
    what it writes. *book*: what picking the email's sender reads (see
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

        row = message_row(
            email.message, kind=MessageKind.email, key=key, lead_id=lead_id,
            sequence=sequence.name, step=step.id, sender=email.sender.email,
            recipient=lead.email, timezone=tz_name, now=now, enrollment_id=enrollment.id,
            template=template, tracking_id=tracking_id, links=email.links, raw=raw,
        )  # fmt: skip
        return Prepared("email queued", {**where, "template": template,
                        "moved": touch.moved_because,
                        "sender": email.choice.label() if email.choice else None},
                        counts="emails_queued", outbox=row)  # fmt: skip
    if isinstance(action, TaskAction):
        note = ""
        if action.note:
            note = ctx.templates.render_text(
                action.note, {"lead": view}, str(sequence.path), action.note_line
            )
        kind, assignee = action.kind, action.assignee or lead.owner
        outcomes = action.outcomes

        task = {
            "lead_id": lead_id, "enrollment_id": enrollment.id, "sequence": sequence.name,
            "step": step.id, "kind": kind, "note": note, "assignee": assignee,
            "due_at": now, "timeout_at": touch.timeout_at, "status": TaskStatus.open.value,
            "outcome": None, "outcomes": list(outcomes), "done_by": None, "done_via": None,
            "created_at": now, "done_at": None,
        }  # fmt: skip
        return Prepared("task created", {**where, "kind": kind}, counts="tasks_created",
                        task=task)  # fmt: skip
    if isinstance(action, NotifyAction):
        to = action.to or lead.owner
        body = ctx.templates.render_text(
            action.message, {"lead": view}, str(sequence.path), action.message_line
        )
        if not to:
            return Prepared("nobody to notify: the lead has no owner", {**where, "note": body},
                            level=logging.WARNING)  # fmt: skip
        sender = _notice_sender(ctx.config, sequence)
        message = build_notification(
            sender=sender,
            to_email=to,
            subject=f"[nurture] {view.get('name')}: {sequence.name}",
            body=f"{body}\n\nLead: {lead.email}\nSequence: {sequence.name}, step {step.id}\n",
            date=now,
            message_id=make_msgid(domain=sender.domain),
        )

        row = message_row(
            message, kind=MessageKind.notify, key=key, lead_id=lead_id,
            sequence=sequence.name, step=step.id, sender=sender.email, recipient=to,
            timezone=tz_name, now=now, enrollment_id=enrollment.id,
        )  # fmt: skip
        return Prepared("notification queued", {**where, "to": to}, counts="notifications",
                        outbox=row)  # fmt: skip

    return Prepared("lead updated", where)


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
