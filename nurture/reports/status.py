"""``nurture status``: what is due, queued, deferred and failed, from the database."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from nurture.store.enrollments import HELD, Enrollment, EnrollmentStatus
from nurture.store.handoffs import Handoff, HandoffStatus, Webhook
from nurture.store.leads import Lead
from nurture.store.meta import audience_failures
from nurture.store.outbox import SENDING_PROBLEM, OutboxMessage, OutboxStatus
from nurture.store.sender_health import paused as paused_senders
from nurture.store.tasks import Task, TaskStatus
from nurture.store.workers import list_workers


def collect_status(session: Session, now: datetime, *, failures: int = 10) -> dict[str, Any]:
    """A JSON-ready summary of the engine's state at *now*."""
    sequences: dict[str, dict[str, int]] = {}
    for name, status, count in session.exec(
        select(Enrollment.sequence, Enrollment.status, func.count()).group_by(
            col(Enrollment.sequence), col(Enrollment.status)
        )
    ):
        sequences.setdefault(name, {})[status] = count
    active = EnrollmentStatus.active.value
    due_now = session.exec(
        select(func.count())
        .select_from(Enrollment)
        .where(col(Enrollment.status) == active)
        .where(col(Enrollment.due_at) <= now)
    ).one()
    next_due = session.exec(
        select(func.min(Enrollment.due_at))
        .where(col(Enrollment.status) == active)
        .where(col(Enrollment.due_at) > now)
    ).one()
    waiting_tasks = session.exec(
        select(func.count())
        .select_from(Enrollment)
        .where(col(Enrollment.status) == active)
        .where(col(Enrollment.waiting_task_id).is_not(None))
    ).one()
    outbox: dict[str, int] = {
        status: count
        for status, count in session.exec(
            select(OutboxMessage.status, func.count()).group_by(col(OutboxMessage.status))
        )
    }
    queued = OutboxStatus.queued.value
    queue = {
        "ready": _count_outbox(session, queued, *queue_conditions("ready", now)),
        "deferred": _count_outbox(session, queued, *queue_conditions("deferred", now)),
        "retrying": _count_outbox(session, queued, *queue_conditions("retrying", now)),
        "sending": outbox.get(OutboxStatus.sending.value, 0)
        + outbox.get(OutboxStatus.leased.value, 0),
        "sent": outbox.get(OutboxStatus.sent.value, 0),
        "bounced": outbox.get(OutboxStatus.bounced.value, 0),
        "failed": outbox.get(OutboxStatus.failed.value, 0),
        "cancelled": outbox.get(OutboxStatus.cancelled.value, 0),
        "uncertain": outbox.get(OutboxStatus.uncertain.value, 0),
        "held": outbox.get(OutboxStatus.held.value, 0),
    }
    tasks = {
        "open": session.exec(
            select(func.count()).select_from(Task).where(col(Task.status) == TaskStatus.open.value)
        ).one(),
    }
    handoffs = {
        "pending": session.exec(
            select(func.count())
            .select_from(Handoff)
            .where(col(Handoff.status) == HandoffStatus.pending.value)
        ).one(),
        "overdue": session.exec(
            select(func.count())
            .select_from(Handoff)
            .where(col(Handoff.status) == HandoffStatus.pending.value)
            .where(col(Handoff.remind_at) <= now)
        ).one(),
    }
    webhooks = {
        status: count
        for status, count in session.exec(
            select(Webhook.status, func.count()).group_by(col(Webhook.status))
        )
    }
    failed_rows = session.exec(
        select(Enrollment, Lead.email)
        .join(Lead, col(Lead.id) == col(Enrollment.lead_id))
        .where(col(Enrollment.status) == EnrollmentStatus.failed.value)
        .order_by(col(Enrollment.updated_at).desc())
        .limit(failures)
    ).all()
    held = session.exec(
        select(Enrollment.sequence, Enrollment.next_step, Enrollment.reason, func.count())
        .where(col(Enrollment.status) == EnrollmentStatus.active.value)
        .where(col(Enrollment.reason).startswith(HELD))
        .group_by(col(Enrollment.sequence), col(Enrollment.next_step), col(Enrollment.reason))
    ).all()
    failed_messages = session.exec(
        select(OutboxMessage)
        .where(
            col(OutboxMessage.status).in_([OutboxStatus.failed.value, OutboxStatus.bounced.value])
        )
        .order_by(col(OutboxMessage.id).desc())
        .limit(failures)
    ).all()
    return {
        "now": now.isoformat(),
        "sending_problem": sending_problem(session),
        "enrollments": {
            "by_sequence": sequences,
            "due_now": due_now,
            "waiting_for_tasks": waiting_tasks,
            "next_due": next_due.isoformat() if next_due else None,
        },
        "outbox": queue,
        "outbox_reasons": {
            name: queue_reasons(session, name, now)
            for name in ("deferred", "retrying", "held")
            if queue[name]
        },
        "paused_senders": [
            {"sender": name, "since": state.paused_at.isoformat() if state.paused_at else None,
             "reason": state.pause_reason}
            for name, state in sorted(paused_senders(session.connection()).items())
        ],
        "tasks": tasks,
        "handoffs": handoffs,
        "workers": list_workers(session, now),
        "webhooks": webhooks,
        "audience_failures": [
            {key: item.get(key) for key in ("sequence", "leads", "error")}
            for item in audience_failures(session)
        ],
        "held": [
            {"sequence": name, "step": step, "reason": reason, "enrollments": count}
            for name, step, reason, count in held
        ],
        "failures": [
            {"lead": email, "sequence": e.sequence, "step": e.next_step, "error": e.reason}
            for e, email in failed_rows
        ]
        + [
            {
                "lead": m.recipient,
                "sequence": m.sequence,
                "step": m.step,
                "error": f"{m.status}: {m.last_error}",
            }
            for m in failed_messages
        ],
    }


#: What a queued message is doing, as ``status`` and ``outbox list --status`` name it:
#: ``ready`` (due now), ``deferred`` (held back: the sending window, a daily cap),
#: ``retrying`` (an attempt failed for now).
QUEUE_STATES = ("ready", "deferred", "retrying")


def queue_conditions(name: str, now: datetime) -> list[Any]:
    """The conditions, beside ``status = queued``, of the queue state *name*
    (``held``: none beside ``status = held``)."""
    due = col(OutboxMessage.next_attempt_at)
    if name == "held":
        return []
    if name == "ready":
        return [due <= now, col(OutboxMessage.attempts) == 0]
    if name == "deferred":
        return [due > now, col(OutboxMessage.attempts) == 0]
    return [col(OutboxMessage.attempts) > 0]


def queue_state(message: OutboxMessage, now: datetime) -> str:
    """``ready``, ``deferred`` or ``retrying`` for a queued message; else its status."""
    if message.status != OutboxStatus.queued.value:
        return message.status
    if message.attempts > 0:
        return "retrying"
    return "ready" if message.next_attempt_at <= now else "deferred"


def queue_reasons(
    session: Session, name: str, now: datetime, limit: int = 3
) -> list[dict[str, Any]]:
    """The commonest reasons the messages in queue state *name* (or ``held``) wait,
    with how many and the soonest next attempt."""
    status = OutboxStatus.held if name == "held" else OutboxStatus.queued
    query = (
        select(OutboxMessage.last_error, func.count(), func.min(OutboxMessage.next_attempt_at))
        .where(col(OutboxMessage.status) == status.value)
        .group_by(col(OutboxMessage.last_error))
        .order_by(func.count().desc())
        .limit(limit)
    )
    for condition in queue_conditions(name, now):
        query = query.where(condition)
    return [
        {"reason": reason or "no reason recorded", "messages": count,
         "next_attempt_at": soonest.isoformat() if soonest else None}
        for reason, count, soonest in session.exec(query)
    ]  # fmt: skip


def list_outbox(
    session: Session, status: str | None, now: datetime, limit: int = 200
) -> list[OutboxMessage]:
    """The newest messages in *status* (an outbox status, or a queue state of
    :data:`QUEUE_STATES`), or all."""
    query = select(OutboxMessage)
    if status in QUEUE_STATES:
        query = query.where(col(OutboxMessage.status) == OutboxStatus.queued.value)
        for condition in queue_conditions(status, now):
            query = query.where(condition)
    elif status is not None:
        query = query.where(col(OutboxMessage.status) == status)
    return list(session.exec(query.order_by(col(OutboxMessage.id).desc()).limit(limit)))


def _count_outbox(session: Session, status: str, *conditions: Any) -> int:
    query = (
        select(func.count()).select_from(OutboxMessage).where(col(OutboxMessage.status) == status)
    )
    for condition in conditions:
        query = query.where(condition)
    return int(session.exec(query).one())


def sending_problem(session: Session) -> dict[str, Any] | None:
    """The mail server's latest refusal to send for us (relay, authentication, policy),
    unless an email has gone since: when, its reply, and the messages it failed."""
    failed = session.exec(  # the columns it reads, not the messages' bodies
        select(
            OutboxMessage.id,
            OutboxMessage.sender,
            OutboxMessage.last_error,
            OutboxMessage.next_attempt_at,
        )
        .where(col(OutboxMessage.status) == OutboxStatus.failed.value)
        .order_by(col(OutboxMessage.next_attempt_at).desc())
        .limit(500)
    ).all()
    # (id, sender, reply, refused at), newest first
    refused = [
        (message_id, sender, error.removeprefix(SENDING_PROBLEM), at)
        for message_id, sender, error, at in failed
        if error and error.startswith(SENDING_PROBLEM)
    ]
    if not refused:
        return None
    _, _, reply, latest = refused[0]
    # The refused senders' last sends, through the (sender, sent_at) index.
    sent = [
        session.exec(
            select(func.max(OutboxMessage.sent_at)).where(OutboxMessage.sender == sender)
        ).one()
        for sender in {sender for _, sender, _, _ in refused}
    ]
    last_sent = max((moment for moment in sent if moment is not None), default=None)
    if last_sent is not None and last_sent >= latest:
        return None  # mail has gone since: fixed
    return {
        "at": latest.isoformat(),
        "reply": reply,
        "failed": [i for i, _, _, at in refused if last_sent is None or at > last_sent],
    }
