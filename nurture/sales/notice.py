"""What sales hears: the hand-off notice (email and webhook) and the reminder. The
webhook calls are made by :mod:`nurture.mail.webhooks`.

The hand-off reacts to scoring: each ``stage_changed`` event to ``hot`` that scoring
recorded gets one hand-off (unique on the event) after the pass has moved the
enrollments, so the notice tells the sequences' state after this pass.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from nurture import logs
from nurture.engine.context import Context
from nurture.language.scoring import ScoringRules
from nurture.language.timing import zone
from nurture.retry import is_transient
from nurture.sales import slack
from nurture.sales.dossier import Dossier, gather
from nurture.sales.explain import points, when
from nurture.sales.mail import queue_sales_mail
from nurture.store.access import LinkPurpose, issue_link
from nurture.store.database import session_scope
from nurture.store.events import Event
from nurture.store.handoffs import (
    Handoff,
    HandoffStatus,
    Webhook,
    business_days_after,
    pending_handoff,
    remind_due,
)
from nurture.store.leads import Lead
from nurture.store.meta import Meta
from nurture.store.outbox import MessageKind

ROUND_ROBIN_KEY = "sales_round_robin"
#: The id of the last ``stage_changed`` event the hand-off has looked at.
HANDOFF_MARK = "handoff_event_id"
#: Lines of recent timeline in a notice.
TIMELINE = 8


def next_in_team(session: Session, team: list[str]) -> str:
    """The next salesperson in turn (the turn is kept in the database)."""
    mark = session.get(Meta, ROUND_ROBIN_KEY, with_for_update=True)
    turn = int(mark.value) if mark is not None else 0
    session.merge(Meta(key=ROUND_ROBIN_KEY, value=str(turn + 1)))
    return team[turn % len(team)]


def owner_for(session: Session, ctx: Context) -> str | None:
    """Who gets the work of a lead nobody owns, by the hand-off's rule: the next in the
    team's round robin, else the sales inbox (``[sales] notify_email``), else nobody."""
    sales = ctx.config.settings.sales
    if sales.team:
        return next_in_team(session, sales.team)
    return sales.notify_email or None


def lead_url(ctx: Context, session: Session, lead: Lead, to: str, now: datetime) -> str:
    """A link to *lead*'s page in the app for *to*, valid ``[app] link_days`` without
    signing in."""
    assert lead.id is not None
    token = issue_link(
        session, ctx.secret, LinkPurpose.lead, to, lead_id=lead.id, now=now,
        lifetime=timedelta(days=ctx.config.settings.app.link_days),
    )  # fmt: skip
    return f"{ctx.config.settings.tracking.base_url}/app/l/{token}"


def notice_values(
    ctx: Context, dossier: Dossier, to: str, url: str, *, reminder: bool
) -> dict[str, Any]:
    """What the notice templates (email text and HTML, webhook) are written from."""
    settings = ctx.config.settings
    tz_name = settings.sales.timezone_of(to, ctx.default_timezone)
    tz = zone(tz_name)
    lead, now = dossier.lead, dossier.now
    lead_tz = lead.timezone or ctx.default_timezone
    local = now.astimezone(zone(lead_tz))
    return {
        "lead": lead,
        "name": lead.full_name or lead.email,
        "reminder": reminder,
        "reasons": [
            {"text": r.text, "points": points(r.points), "score": r.score}
            for r in dossier.reasons(tz)
        ],
        "score_line": dossier.score_line(),
        "reply": dossier.last_reply(),
        "url": url,
        "their_time": f"{local:%a %H:%M} ({lead_tz})",
        "your_timezone": tz_name,
        "timeline": [
            {"when": when(h.at, tz, now), "text": h.text, "detail": h.detail}
            for h in dossier.timeline(TIMELINE)
        ],
        "sequences": dossier.sequences(tz),
        "link_days": settings.app.link_days,
    }


def slack_body(values: dict[str, Any], kind: str) -> dict[str, Any]:
    """A Slack-compatible incoming-webhook body, with the facts for other receivers.
    Lead data goes through :mod:`nurture.sales.slack`: it can ping nobody, make no link and
    close no code block."""
    lead: Lead = values["lead"]
    at = f" at {lead.company}" if lead.company else ""
    whom = lead.owner or "the sales desk"
    headline = slack.escape(
        f"Reminder: {values['name']}{at} still waits for an answer from {whom}"
        if values["reminder"]
        else f"{values['name']}{at} is a hot lead for {whom}"
    )
    reasons = "\n".join(
        f"• {slack.escape(r['text'])}: {r['points']}" + (" fit" if r["score"] == "fit" else "")
        for r in values["reasons"]
    )
    blocks: list[dict[str, Any]] = [
        slack.section(f"*{headline}*"),
        slack.section(f"{reasons}\n_{slack.escape(values['score_line'])}_".strip()),
    ]
    if values["reply"]:
        quoted = "\n".join(f"> {slack.escape(line)}" for line in values["reply"].splitlines())
        blocks.append(slack.section(f"They wrote:\n{quoted}"))
    timeline = "\n".join(f"{item['when']}  {item['text']}" for item in values["timeline"])
    if timeline:
        blocks.append(slack.section(slack.code_block(timeline)))
    blocks.append(
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": "Open the lead to answer"},
                    "url": values["url"],
                }
            ],
        }
    )
    return {
        "text": headline,
        "blocks": blocks,
        "nurture": {
            "kind": kind,
            "lead": lead.email,
            "owner": lead.owner,
            "url": values["url"],
            "reasons": values["reasons"],
            "score": values["score_line"],
            "sequences": values["sequences"],
        },
    }


def _notify(
    ctx: Context,
    session: Session,
    dossier: Dossier,
    handoff: Handoff,
    recipients: list[str],
    now: datetime,
    *,
    reminder: bool,
) -> None:
    """Queue the notice (or reminder) to each of *recipients*, and the webhook."""
    lead = dossier.lead
    sales = ctx.config.settings.sales
    company = f" ({lead.company})" if lead.company else ""
    name = lead.full_name or lead.email
    kind = "reminder" if reminder else "handoff"
    subject = (
        f"Reminder: hot lead {name}{company} waits for your answer"
        if reminder
        else f"Hot lead: {name}{company}"
    )
    first: dict[str, Any] | None = None
    for to in recipients:
        values = notice_values(ctx, dossier, to, lead_url(ctx, session, lead, to, now),
                               reminder=reminder)  # fmt: skip
        first = first or values
        key = f"{kind}:{handoff.id}" + (f":{to}" if reminder else "")
        queue_sales_mail(
            session, ctx.config, kind=MessageKind.handoff, key=key, to=to, subject=subject,
            template="notice", values=values, now=now, lead_id=lead.id,
        )  # fmt: skip
    if sales.webhook_url and first is not None:
        session.add(
            Webhook(
                idempotency_key=f"{kind}:{handoff.id}",
                url=sales.webhook_url,
                lead_id=lead.id,
                body=slack_body(first, "hot" if not reminder else "reminder"),
                next_attempt_at=now,
                created_at=now,
            )
        )


def hand_off(
    ctx: Context,
    session: Session,
    rules: ScoringRules | None,
    lead: Lead,
    became_hot: Event,
    now: datetime,
) -> Handoff:
    """Hand a lead that turned hot to sales: a hand-off and its notice."""
    sales = ctx.config.settings.sales
    if not lead.owner and sales.team:
        lead.owner = next_in_team(session, sales.team)
        session.add(lead)
    to = lead.owner or sales.notify_email
    assert lead.id is not None
    dossier = gather(session, lead, rules, now)
    tz = zone(sales.timezone_of(to, ctx.default_timezone))
    handoff = Handoff(
        lead_id=lead.id,
        became_hot_at=became_hot.occurred_at,
        owner=lead.owner,
        engagement=float(became_hot.data.get("engagement", lead.engagement)),
        fit=lead.fit,
        why={
            "score": dossier.score_line(),
            "reasons": [
                {"text": r.text, "points": r.points, "score": r.score} for r in dossier.reasons(tz)
            ],
        },
        remind_at=business_days_after(now, sales.accept_within, ctx.default_timezone),
        stage_event_id=became_hot.id,
    )
    session.add(handoff)
    session.flush()
    if to:
        _notify(ctx, session, dossier, handoff, [to], now, reminder=False)
    logs.action("handed off", lead=lead.email, to=to or "nobody", handoff=handoff.id)
    return handoff


def hand_off_hot_leads(ctx: Context, rules: ScoringRules | None, now: datetime) -> int:
    """React to the leads scoring turned hot since the last look: one hand-off each
    (a lead handed off since, answered since, or no longer hot is left alone). Each
    lead in its own transaction: one that fails is logged and the others go on."""
    with session_scope(ctx.engine) as session:
        mark = session.get(Meta, HANDOFF_MARK)
        last = int(mark.value) if mark is not None else 0
        changes = list(
            session.exec(
                select(Event.id, Event.lead_id, Event.data)
                .where(Event.type == "stage_changed")
                .where(col(Event.id) > last)
                .order_by(col(Event.id))
            )
        )
    count = 0
    for event_id, lead_id, data in changes:
        if (data or {}).get("to") != "hot":
            continue
        try:
            with session_scope(ctx.engine) as session:
                event = session.get(Event, event_id)
                lead = session.get(Lead, lead_id)
                if event is None or lead is None or lead.stage != "hot":
                    continue
                handed = session.exec(
                    select(Handoff.id)
                    .where(Handoff.lead_id == lead_id)
                    .where(col(Handoff.became_hot_at) >= event.occurred_at)
                ).first()
                if handed is not None:
                    continue
                earlier = pending_handoff(session, lead_id)
                if earlier is not None:  # it turned hot again: the new hand-off stands
                    earlier.status = HandoffStatus.superseded.value
                    session.add(earlier)
                hand_off(ctx, session, rules, lead, event, now)
                count += 1
        except Exception as exc:
            if is_transient(exc):
                raise  # the pass is done again once the database is back
            logs.logger.exception("hand-off failed for lead %s; the others go on", lead_id)
    if changes:
        with session_scope(ctx.engine) as session:
            session.merge(Meta(key=HANDOFF_MARK, value=str(changes[-1][0])))
    return count


def send_reminders(ctx: Context, now: datetime, rules: ScoringRules | None = None) -> int:
    """One reminder for each hand-off nobody answered in time, to its owner and the
    sales inbox."""
    sales = ctx.config.settings.sales
    count = 0
    with session_scope(ctx.engine) as session:
        for handoff in remind_due(session, now):
            lead = session.get(Lead, handoff.lead_id)
            if lead is None:
                continue
            dossier = gather(session, lead, rules, now)
            recipients = list(dict.fromkeys(a for a in (handoff.owner, sales.notify_email) if a))
            _notify(ctx, session, dossier, handoff, recipients, now, reminder=True)
            handoff.reminded_at = now
            session.add(handoff)
            count += 1
            logs.action("hand-off reminder", lead=lead.email, handoff=handoff.id)
    return count
