"""What the sales app shows, read from the database: the home page's queues, a lead's
page, the task list, the lead search; and who may see which lead."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import or_
from sqlmodel import Session, col, select

from nurture.language.scoring import ScoringRules
from nurture.language.timing import day_start, zone
from nurture.sales.dossier import gather
from nurture.sales.explain import Reason, one_line, points, when
from nurture.store.access import People
from nurture.store.handoffs import Handoff, HandoffStatus
from nurture.store.leads import Lead
from nurture.store.outbox import MessageKind, OutboxMessage, OutboxStatus
from nurture.store.tasks import Task, TaskStatus

#: Rows of a list page.
PAGE = 100


@dataclass(frozen=True)
class Who:
    """The person looking, and what they may see."""

    email: str
    manager: bool
    desk: bool
    tz: ZoneInfo
    #: The sales inbox's address: its tasks are there for a salesperson to take, once.
    inbox: str = ""

    @classmethod
    def of(cls, people: People, email: str, tz_name: str) -> Who:
        inbox = next(iter(sorted(people.desk)), "")
        return cls(email, people.is_manager(email), people.sees_desk(email), zone(tz_name),
                   inbox)  # fmt: skip

    def may_take(self, task: Task) -> bool:
        """Whether *task* is the sales inbox's and this salesperson may take it."""
        return bool(self.inbox) and task.assignee == self.inbox and self.email != self.inbox


def may_open(session: Session, who: Who, lead: Lead) -> bool:
    """A salesperson opens their own leads and leads nobody owns; a manager, any lead;
    the sales inbox, the hot leads handed to nobody."""
    if who.manager or lead.owner in (None, who.email):
        return True
    assert lead.id is not None
    mine = (
        session.exec(
            select(Task.id).where(Task.lead_id == lead.id).where(Task.assignee == who.email)
        ).first()
        or session.exec(
            select(Handoff.id).where(Handoff.lead_id == lead.id).where(Handoff.owner == who.email)
        ).first()
    )
    return mine is not None


def may_answer(who: Who, handoff: Handoff) -> bool:
    """The hand-off's owner answers it; a manager any; the sales inbox those of nobody."""
    return who.manager or handoff.owner == who.email or (handoff.owner is None and who.desk)


def may_work(who: Who, task: Task) -> bool:
    """The assignee works a task; a manager any; the sales inbox, one of nobody's."""
    return who.manager or task.assignee == who.email or (task.assignee is None and who.desk)


def _tasks_of(who: Who) -> Any:
    """The tasks *who* lists (home and Tasks page alike): their own; the sales inbox,
    also those of nobody (older tasks; new ones always get an owner); a manager, all."""
    if who.manager:
        return col(Task.id).is_not(None)
    if who.desk:
        return or_(col(Task.assignee) == who.email, col(Task.assignee).is_(None))
    return col(Task.assignee) == who.email


def _waiting(since: datetime, now: datetime) -> str:
    hours = int((now - since).total_seconds() // 3600)
    if hours < 1:
        return "just now"
    if hours < 48:
        return f"{hours} h"
    return f"{hours // 24} days"


def _lead_names(session: Session, ids: set[int]) -> dict[int, Lead]:
    if not ids:
        return {}
    return {lead.id or 0: lead for lead in session.exec(select(Lead).where(col(Lead.id).in_(ids)))}


def _handoff_row(handoff: Handoff, lead: Lead, now: datetime) -> dict[str, Any]:
    reasons = handoff.why.get("reasons") or []
    why = (
        one_line([Reason(r["text"], r["points"], r["score"]) for r in reasons])
        if reasons
        else handoff.why.get("score", "")
    )
    return {
        "lead_id": lead.id,
        "name": lead.full_name or lead.email,
        "company": lead.company or "",
        "owner": handoff.owner or "",
        "why": why,
        "waiting": _waiting(handoff.became_hot_at, now),
    }


def task_rows(session: Session, tasks: list[Task], who: Who, now: datetime) -> list[dict[str, Any]]:
    """Tasks as the pages list them, with their state: ``today``, ``overdue``,
    ``later``, ``missed`` (its step's timeout passed) or ``done``."""
    leads = _lead_names(session, {t.lead_id for t in tasks})
    today, tomorrow = day_start(now, who.tz), day_start(now, who.tz, days_on=1)
    rows = []
    for task in tasks:
        lead = leads.get(task.lead_id)
        if lead is None:
            continue
        if task.status == TaskStatus.done:
            state = "done"
        elif task.status == TaskStatus.expired:
            state = "missed"
        elif task.due_at < today:
            state = "overdue"
        elif task.due_at < tomorrow:
            state = "today"
        else:
            state = "later"
        local = now.astimezone(zone(lead.timezone)) if lead.timezone else None
        rows.append(
            {
                "id": task.id,
                "kind": task.kind,
                "kind_label": {"call": "Call", "linkedin": "LinkedIn"}.get(task.kind, "To-do"),
                "state": state,
                "due": when(task.due_at, who.tz, now),
                "note": task.note,
                "outcomes": list(task.outcomes),
                "outcome": task.outcome or "",
                "assignee": task.assignee or "",
                "lead_id": lead.id,
                "name": lead.full_name or lead.email,
                "company": lead.company or "",
                "phone": lead.phone or "",
                "tel": tel(lead.phone),
                "their_time": f"{local:%a %H:%M}" if local else "",
                "workable": state != "done" and may_work(who, task),
                "takeable": state != "done" and who.may_take(task),
            }
        )
    return rows


def tel(phone: str | None) -> str:
    """A ``tel:`` URI for *phone* (digits and a leading ``+`` only)."""
    if not phone:
        return ""
    digits = "".join(ch for ch in phone if ch.isdigit())
    return ("+" if phone.strip().startswith("+") else "") + digits


def home(session: Session, who: Who, now: datetime) -> dict[str, Any]:
    """My pending hand-offs (oldest first), the hot leads nobody owns (the sales inbox
    and managers), and today's, overdue and missed tasks; a manager sees everyone's."""
    query = (
        select(Handoff)
        .where(Handoff.status == HandoffStatus.pending.value)
        .order_by(col(Handoff.became_hot_at), col(Handoff.id))
        .limit(PAGE)
    )
    owner = col(Handoff.owner)
    # Each list is its own query: however many hand-offs wait, none hides another's.
    groups = {"mine": list(session.exec(query.where(owner == who.email)))}
    groups["desk"] = list(session.exec(query.where(owner.is_(None)))) if who.desk else []
    groups["others"] = (
        list(session.exec(query.where(owner.is_not(None)).where(owner != who.email)))
        if who.manager
        else []
    )
    leads = _lead_names(session, {h.lead_id for rows in groups.values() for h in rows})
    mine, desk, others = (
        [_handoff_row(h, leads[h.lead_id], now) for h in groups[name] if h.lead_id in leads]
        for name in ("mine", "desk", "others")
    )
    tasks = session.exec(
        select(Task)
        .where(col(Task.status).in_([TaskStatus.open.value, TaskStatus.expired.value]))
        .where(col(Task.due_at) < day_start(now, who.tz, days_on=1))
        .where(_tasks_of(who))
        .order_by(col(Task.due_at))
        .limit(PAGE)
    )  # fmt: skip
    return {
        "mine": mine[:PAGE],
        "desk": desk[:PAGE],
        "others": others[:PAGE],
        "tasks": task_rows(session, list(tasks), who, now),
    }


def my_tasks(session: Session, who: Who, now: datetime) -> list[dict[str, Any]]:
    """Open and missed tasks (a manager: everyone's), then the last week's done ones."""
    mine = _tasks_of(who)
    if who.inbox and not who.manager and not who.desk:  # the inbox's, to take once
        mine = or_(mine, col(Task.assignee) == who.inbox)
    current = session.exec(
        select(Task)
        .where(col(Task.status).in_([TaskStatus.open.value, TaskStatus.expired.value]))
        .where(mine)
        .order_by(col(Task.due_at))
        .limit(PAGE)
    )
    done = session.exec(
        select(Task)
        .where(Task.status == TaskStatus.done.value)
        .where(mine)
        .where(col(Task.done_at) >= now - timedelta(days=7))
        .order_by(col(Task.done_at).desc())
        .limit(PAGE)
    )
    return task_rows(session, [*current, *done], who, now)


def search(session: Session, who: Who, text: str) -> list[Lead]:
    """Leads I may open whose email, name or company contains *text*: mine and those
    nobody owns (a manager: all)."""
    query = select(Lead)
    if not who.manager:
        query = query.where(or_(col(Lead.owner) == who.email, col(Lead.owner).is_(None)))
    words = text.strip()[:100]
    if words:
        pattern = f"%{words.lower()}%"
        query = query.where(
            or_(
                col(Lead.email).like(pattern),
                col(Lead.first_name).ilike(pattern),
                col(Lead.last_name).ilike(pattern),
                col(Lead.company).ilike(pattern),
            )
        )
    else:
        query = query.where(col(Lead.stage).in_(["hot", "warm", "accepted"]))
    return list(session.exec(query.order_by(col(Lead.updated_at).desc()).limit(PAGE)))


def waiting_mail(
    session: Session, lead: Lead, tz: ZoneInfo, now: datetime
) -> list[dict[str, str]]:
    """The lead's emails that wait (deferred by a window or a cap, held for a paused
    enrollment or sender), and why: the reason the outbox keeps."""
    rows = session.exec(
        select(OutboxMessage)
        .where(col(OutboxMessage.lead_id) == lead.id)
        .where(col(OutboxMessage.kind) == MessageKind.email.value)
        .where(col(OutboxMessage.status).in_([OutboxStatus.queued.value,
                                              OutboxStatus.held.value]))
        .order_by(col(OutboxMessage.id))
    )  # fmt: skip
    return [
        {"step": f"{m.sequence} / {m.step}", "from": m.sender,
         "when": "" if m.status == OutboxStatus.held else when(m.next_attempt_at, tz, now),
         "reason": m.last_error or ""}
        for m in rows
        if m.status == OutboxStatus.held or m.last_error
    ]  # fmt: skip


def lead_page(
    session: Session, who: Who, lead: Lead, rules: ScoringRules | None, now: datetime
) -> dict[str, Any]:
    """Everything the lead's page shows."""
    dossier = gather(session, lead, rules, now)
    lead_tz = lead.timezone
    local = now.astimezone(zone(lead_tz)) if lead_tz else None
    pending = dossier.pending
    open_tasks = [t for t in dossier.tasks if t.status in (TaskStatus.open, TaskStatus.expired)]
    reasons = dossier.reasons(who.tz)
    answered = [h for h in dossier.handoffs if h.answered_at is not None]
    latest = answered[-1] if answered else None
    # Who just said no (rejected, recycled) is not offered the lead back, until the
    # lead does something new.
    said_no = (
        latest is not None
        and latest.status in (HandoffStatus.rejected, HandoffStatus.recycled)
        and latest.answered_by == who.email
        and latest.answered_at is not None
        and not any(e.occurred_at > latest.answered_at and not e.type.startswith("handoff_")
                    for e in dossier.events)
    )  # fmt: skip
    fields = [
        ("Email", lead.email),
        ("Title", lead.title or ""),
        ("Company", lead.company or ""),
        ("Source", lead.source or ""),
        ("Owner", lead.owner or "nobody"),
    ]
    fields += [(key.replace("_", " ").capitalize(), str(value))
               for key, value in sorted((lead.attributes or {}).items())
               if key not in ("recycled_at",) and value not in (None, "")]  # fmt: skip
    return {
        "lead": lead,
        "name": lead.full_name or lead.email,
        "fields": [(k, v) for k, v in fields if v],
        "phone": lead.phone or "",
        "tel": tel(lead.phone),
        "their_time": f"{local:%a %H:%M}" if local else "",
        "their_timezone": lead_tz or "",
        "stage": lead.stage,
        "reasons": [
            {"text": r.text, "points": points(r.points), "score": r.score} for r in reasons
        ],
        "score_line": dossier.score_line(),
        "reply": dossier.last_reply(),
        "away": dossier.away(zone(lead_tz) if lead_tz else who.tz),
        "timeline": [
            {"when": when(h.at, who.tz, now), "kind": h.kind, "text": h.text, "detail": h.detail}
            for h in dossier.timeline()
        ],
        "sequences": dossier.sequences(who.tz),
        "waiting_mail": waiting_mail(session, lead, who.tz, now),
        "pending": pending,
        "can_answer": pending is not None and may_answer(who, pending),
        "can_claim": pending is None
        and not said_no
        and lead.stage not in ("accepted", "customer")
        and lead.owner in (None, who.email),
        "answer": None
        if latest is None or pending is not None
        else {
            "status": latest.status,
            "when": when(latest.answered_at or latest.became_hot_at, who.tz, now),
            "by": "you" if latest.answered_by == who.email else (latest.answered_by or ""),
            "reason": latest.reason or "",
        },
        "reset_at": when(lead.score_reset_at, who.tz, now) if lead.score_reset_at else "",
        "tasks": task_rows(session, open_tasks, who, now),
        "handoffs": [
            {
                "status": h.status,
                "when": when(h.answered_at or h.became_hot_at, who.tz, now),
                "by": h.answered_by or "",
                "via": h.answered_via or "",
                "reason": h.reason or "",
            }
            for h in dossier.handoffs
            if h.status != HandoffStatus.pending
        ],
    }
