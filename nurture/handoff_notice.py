"""What sales hears: the hand-off notice (email and webhook) and the reminder. The
webhook calls are made by :mod:`nurture.webhooks`."""

from __future__ import annotations

from datetime import datetime
from email.utils import make_msgid
from typing import Any

from sqlmodel import Session, col, select

from nurture import logs, slack
from nurture.enrollments import Enrollment
from nurture.events import Event
from nurture.handoff import (
    Handoff,
    Webhook,
    business_days_after,
    remind_due,
)
from nurture.leads import Lead
from nurture.messages import Sender, build_notification
from nurture.meta import Meta
from nurture.outbox import MessageKind, queue_message
from nurture.runner import Context
from nurture.scoring import ScoringRules
from nurture.store import session_scope

ROUND_ROBIN_KEY = "sales_round_robin"
TIMELINE = 10
TOP = 5


def next_in_team(session: Session, team: list[str]) -> str:
    """The next salesperson in turn (the turn is kept in the database)."""
    mark = session.get(Meta, ROUND_ROBIN_KEY, with_for_update=True)
    turn = int(mark.value) if mark is not None else 0
    session.merge(Meta(key=ROUND_ROBIN_KEY, value=str(turn + 1)))
    return team[turn % len(team)]


def explain(
    session: Session, rules: ScoringRules, lead: Lead, engagement: float, now: datetime
) -> dict[str, Any]:
    """Why the lead is hot, as data for the notice and the report."""
    from nurture.scorer import breakdown

    assert lead.id is not None
    detail = breakdown(session, rules, lead, now)
    timeline = list(
        session.exec(
            select(Event)
            .where(Event.lead_id == lead.id)
            .where(col(Event.machine).is_(False))
            .order_by(col(Event.occurred_at).desc(), col(Event.id).desc())
            .limit(TIMELINE)
        )
    )
    enrollments = session.exec(select(Enrollment).where(Enrollment.lead_id == lead.id))
    return {
        "engagement": round(engagement, 1),
        "fit": lead.fit,
        "thresholds": detail["thresholds"],
        "top_events": [e for e in detail["events"] if e["now"] > 0][:TOP],
        "fit_rules": detail["fit_rules"],
        "timeline": [
            {
                "at": e.occurred_at.isoformat(),
                "type": e.type,
                "sequence": e.sequence,
                "step": e.step,
                "detail": f"{e.data.get('from')} -> {e.data.get('to')}"
                if e.type == "stage_changed"
                else "",
            }
            for e in reversed(timeline)
        ],
        "sequences": [
            {
                "sequence": e.sequence,
                "status": e.status,
                "step": e.next_step if e.status == "active" else None,
                "reason": e.reason,
            }
            for e in enrollments
        ],
    }


def _touch(sequence: str | None, step: str | None) -> str:
    return f" {sequence}/{step}" if sequence and step else (f" {sequence}" if sequence else "")


def notice_text(lead: Lead, why: dict[str, Any], base_url: str, reminder: bool = False) -> str:
    """The plain-text notice a salesperson reads."""
    who = lead.full_name or lead.email
    company = f" at {lead.company}" if lead.company else ""
    hot = why["thresholds"].get("hot", {})
    lines = [
        (
            f"Reminder: {who}{company} is still waiting for your answer."
            if reminder
            else f"{who}{company} is a hot lead."
        ),
        "",
        f"Why: engagement {why['engagement']:g} (hot from {hot.get('engagement', 0):g}), "
        f"fit {why['fit']:g} (hot from {hot.get('fit', 0):g}).",
        "",
        "What they did (points now, after decay):",
    ]
    for event in why["top_events"]:
        lines.append(
            f"  +{round(event['now'], 1):g}  {event['type']}"
            f"{_touch(event['sequence'], event['step'])}"
            f"  {event['at'][:16].replace('T', ' ')} UTC"
        )
    if not why["top_events"]:
        lines.append("  (no scored events)")
    lines += ["", "Who they are (fit rules that matched):"]
    for rule in why["fit_rules"]:
        lines.append(f"  +{rule['points']:g}  {rule['if']}")
    if not why["fit_rules"]:
        lines.append("  (none)")
    lines += ["", "Recent timeline:"]
    for item in why["timeline"]:
        lines.append(
            f"  {item['at'][:16].replace('T', ' ')} UTC  {item['type']}"
            f"{_touch(item['sequence'], item['step'])}"
            + (f" {item['detail']}" if item.get("detail") else "")
        )
    lines += ["", "Sequences:"]
    for item in why["sequences"]:
        lines.append(
            f"  {item['sequence']}: {item['status']}"
            + (f", next step {item['step']}" if item.get("step") else "")
            + (f" ({item['reason']})" if item["reason"] else "")
        )
    lines += [
        "",
        "Contact:",
        f"  {lead.email}" + (f", {lead.phone}" if lead.phone else ""),
        f"  {lead.title or ''}{' - ' if lead.title and lead.timezone else ''}"
        f"{lead.timezone or ''}".rstrip(),
        "",
        "Answer with one of:",
        f"  nurture handoff accept {lead.email}",
        f'  nurture handoff reject {lead.email} --reason "..."',
        f'  nurture handoff recycle {lead.email} --reason "..."',
        f'  or POST {base_url}/api/handoff {{"lead": "{lead.email}", "answer": "accept"}}',
    ]
    return "\n".join(lines) + "\n"


def slack_body(lead: Lead, why: dict[str, Any], text: str, kind: str) -> dict[str, Any]:
    """A Slack-compatible incoming-webhook body, with the facts for other receivers.
    Lead data goes through :mod:`nurture.slack`: it can ping nobody, make no link and
    close no code block."""
    headline = slack.escape(text.splitlines()[0])
    return {
        "text": headline,
        "blocks": [slack.section(f"*{headline}*"), slack.section(slack.code_block(text))],
        "nurture": {"kind": kind, "lead": lead.email, "owner": lead.owner, "why": why},
    }


def _queue_email(
    ctx: Context,
    session: Session,
    lead: Lead,
    to: str,
    subject: str,
    body: str,
    key: str,
    now: datetime,
) -> None:
    sales = ctx.config.settings.sales
    sender = Sender.parse(sales.from_address)
    message = build_notification(
        sender=sender,
        to_email=to,
        subject=subject,
        body=body,
        date=now,
        message_id=make_msgid(domain=sender.domain),
    )
    assert lead.id is not None
    queue_message(
        session, message, kind=MessageKind.handoff, key=key, lead_id=lead.id,
        sequence="handoff", step=key.split(":")[0], sender=sender.email, recipient=to,
        timezone=ctx.default_timezone, now=now,
    )  # fmt: skip


def hand_off(
    ctx: Context,
    session: Session,
    rules: ScoringRules,
    lead: Lead,
    engagement: float,
    now: datetime,
) -> Handoff:
    """Hand a lead that just turned hot to sales: one notice per transition."""
    sales = ctx.config.settings.sales
    if not lead.owner and sales.team:
        lead.owner = next_in_team(session, sales.team)
        session.add(lead)
    to = lead.owner or sales.notify_email
    why = explain(session, rules, lead, engagement, now)
    assert lead.id is not None
    handoff = Handoff(
        lead_id=lead.id,
        became_hot_at=now,
        owner=lead.owner,
        engagement=engagement,
        fit=lead.fit,
        why=why,
        remind_at=business_days_after(now, sales.accept_within, ctx.default_timezone),
    )
    session.add(handoff)
    session.flush()
    text = notice_text(lead, why, ctx.config.settings.tracking.base_url)
    company = f" ({lead.company})" if lead.company else ""
    subject = f"Hot lead: {lead.full_name or lead.email}{company}"
    _queue_email(ctx, session, lead, to, subject, text, f"handoff:{handoff.id}", now)
    if sales.webhook_url:
        session.add(
            Webhook(
                idempotency_key=f"handoff:{handoff.id}",
                url=sales.webhook_url,
                lead_id=lead.id,
                body=slack_body(lead, why, text, "hot"),
                next_attempt_at=now,
                created_at=now,
            )
        )
    logs.action("handed off", lead=lead.email, to=to, handoff=handoff.id)
    return handoff


def send_reminders(ctx: Context, now: datetime) -> int:
    """One reminder for each hand-off nobody answered in time."""
    sales = ctx.config.settings.sales
    count = 0
    with session_scope(ctx.engine) as session:
        for handoff in remind_due(session, now):
            lead = session.get(Lead, handoff.lead_id)
            if lead is None:
                continue
            text = notice_text(
                lead, handoff.why, ctx.config.settings.tracking.base_url, reminder=True
            )
            subject = f"Reminder: hot lead {lead.full_name or lead.email} waits for an answer"
            for to in dict.fromkeys(a for a in (handoff.owner, sales.notify_email) if a):
                _queue_email(
                    ctx, session, lead, to, subject, text, f"reminder:{handoff.id}:{to}", now
                )
            if sales.webhook_url:
                session.add(
                    Webhook(
                        idempotency_key=f"reminder:{handoff.id}",
                        url=sales.webhook_url,
                        lead_id=lead.id,
                        body=slack_body(lead, handoff.why, text, "reminder"),
                        next_attempt_at=now,
                        created_at=now,
                    )
                )
            handoff.reminded_at = now
            session.add(handoff)
            count += 1
            logs.action("hand-off reminder", lead=lead.email, handoff=handoff.id)
    return count
