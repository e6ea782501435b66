"""The daily digest: each salesperson with pending hand-offs or open tasks gets one email
per business day at ``[sales] digest_at`` in their own timezone, with links into the
app. Nobody with nothing to do gets anything."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from nurture import logs
from nurture.engine.context import Context
from nurture.language.timing import day_start, parse_time_of_day, zone
from nurture.sales.explain import when
from nurture.sales.mail import queue_sales_mail
from nurture.sales.notice import lead_url
from nurture.store.database import session_scope
from nurture.store.handoffs import Handoff, HandoffStatus
from nurture.store.leads import Lead
from nurture.store.outbox import MessageKind, OutboxMessage
from nurture.store.tasks import Task, TaskStatus


@dataclass
class Work:
    """One salesperson's open work."""

    handoffs: list[Handoff] = field(default_factory=list)
    tasks: list[Task] = field(default_factory=list)


def open_work(session: Session, desk: str) -> dict[str, Work]:
    """Pending hand-offs and open or missed tasks, by salesperson (hand-offs nobody owns
    go to the sales inbox *desk*)."""
    work: dict[str, Work] = defaultdict(Work)
    pending = session.exec(
        select(Handoff)
        .where(Handoff.status == HandoffStatus.pending.value)
        .order_by(col(Handoff.became_hot_at))
    )
    for handoff in pending:
        owner = handoff.owner or desk
        if owner:
            work[owner].handoffs.append(handoff)
    tasks = session.exec(
        select(Task)
        .where(col(Task.status).in_([TaskStatus.open.value, TaskStatus.expired.value]))
        .where(col(Task.assignee).is_not(None))
        .order_by(col(Task.due_at))
    )
    for task in tasks:
        assert task.assignee is not None
        work[task.assignee].tasks.append(task)
    return work


#: A digest not sent this long after its moment (the daemon was down) waits for the
#: next business day: a morning digest in the evening would only add noise.
LATE = timedelta(hours=4)


def digest_due(now: datetime, tz_name: str, at: str) -> str | None:
    """The local date (ISO) whose digest is due at *now* in *tz_name*: a business day,
    from *at* until :data:`LATE` after it; else ``None``."""
    local = now.astimezone(zone(tz_name))
    start = datetime.combine(local.date(), parse_time_of_day(at), tzinfo=local.tzinfo)
    if local.weekday() >= 5 or not start <= local < start + LATE:
        return None
    return local.date().isoformat()


def send_digests(ctx: Context, now: datetime) -> int:
    """Queue today's digest for each salesperson whose moment has come (once a day)."""
    settings = ctx.config.settings
    sales = settings.sales
    if not sales.digest_at:
        return 0
    zones = {ctx.default_timezone, sales.timezone, *sales.timezones.values()} - {""}
    if not any(digest_due(now, name, sales.digest_at) for name in zones):
        return 0  # nobody's digest moment: the open work is not even read
    count = 0
    with session_scope(ctx.engine) as session:
        work = open_work(session, sales.notify_email)
    for person, todo in sorted(work.items()):
        tz_name = sales.timezone_of(person, ctx.default_timezone)
        day = digest_due(now, tz_name, sales.digest_at)
        if day is None:
            continue
        key = f"digest:{person}:{day}"
        with session_scope(ctx.engine) as session:
            sent = session.exec(
                select(OutboxMessage.id).where(OutboxMessage.idempotency_key == key)
            ).first()
            if sent is not None:
                continue
            values = _values(ctx, session, person, todo, tz_name, now)
            if not values["handoffs"] and not values["tasks"]:
                continue
            parts = []
            if values["handoffs"]:
                parts.append(f"{len(values['handoffs'])} hot lead(s) to answer")
            if values["tasks"]:
                parts.append(f"{len(values['tasks'])} task(s)")
            queue_sales_mail(
                session, ctx.config, kind=MessageKind.digest, key=key, to=person,
                subject=f"Your day: {' and '.join(parts)}", template="digest",
                values=values, now=now,
                mentions={h.lead_id for h in todo.handoffs} | {t.lead_id for t in todo.tasks},
            )  # fmt: skip
            count += 1
            logs.action("digest queued", to=person, handoffs=len(values["handoffs"]),
                        tasks=len(values["tasks"]))  # fmt: skip
    return count


def _values(
    ctx: Context, session: Session, person: str, todo: Work, tz_name: str, now: datetime
) -> dict[str, Any]:
    tz = zone(tz_name)
    end_of_day = day_start(now, tz, days_on=1)
    ids = {h.lead_id for h in todo.handoffs} | {t.lead_id for t in todo.tasks}
    leads = {lead.id: lead for lead in session.exec(select(Lead).where(col(Lead.id).in_(ids)))}
    urls: dict[int, str] = {}

    def url(lead: Lead) -> str:
        assert lead.id is not None
        if lead.id not in urls:
            urls[lead.id] = lead_url(ctx, session, lead, person, now)
        return urls[lead.id]

    handoffs = []
    for handoff in todo.handoffs:
        lead = leads.get(handoff.lead_id)
        if lead is None:
            continue
        reasons = handoff.why.get("reasons") or []
        handoffs.append(
            {
                "name": lead.full_name or lead.email,
                "company": lead.company or "",
                "since": when(handoff.became_hot_at, tz, now),
                "why": reasons[0]["text"] if reasons else handoff.why.get("score", ""),
                "url": url(lead),
            }
        )
    tasks = []
    for task in todo.tasks:
        lead = leads.get(task.lead_id)
        if lead is None or (task.status == TaskStatus.open and task.due_at >= end_of_day):
            continue
        state = (
            "missed"
            if task.status == TaskStatus.expired
            else ("overdue" if task.due_at < day_start(now, tz) else "today")
        )
        tasks.append(
            {
                "kind": task.kind,
                "name": lead.full_name or lead.email,
                "company": lead.company or "",
                "phone": lead.phone or "",
                "note": task.note,
                "state": state,
                "url": url(lead),
            }
        )
    return {
        "person": person,
        "handoffs": handoffs,
        "tasks": tasks,
        "home": f"{ctx.config.settings.tracking.base_url}/app/",
        "timezone": tz_name,
    }
