"""``nurture rescore --dry-run`` (and ``nurture check`` after ``scoring.yaml`` changed):
what the rules as written now would do, computed in memory; nothing is written.

- now: how many leads would turn hot, how many would stop being hot;
- replayed over the last :data:`DAYS` days of hand-offs and sales' answers: how many
  hand-offs sales rejected would not have been made, how many it accepted would have
  been missed.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from nurture.language.expressions import LeadView
from nurture.language.fields import ContactStatus
from nurture.language.replay import replay
from nurture.language.scoring import SCORED_STAGES, ScoringRules, fit_of, stage_reached
from nurture.language.timing import zone
from nurture.store.events import Event
from nurture.store.handoffs import Handoff, HandoffStatus
from nurture.store.leads import Lead

DAYS = 90
CHUNK = 500


def _events(session: Session, ids: list[int]) -> dict[int, list[tuple[str, datetime, bool]]]:
    found: dict[int, list[tuple[str, datetime, bool]]] = {}
    for lead_id, type_, moment, machine in session.exec(
        select(Event.lead_id, Event.type, Event.occurred_at, Event.machine).where(
            col(Event.lead_id).in_(ids)
        )
    ):
        found.setdefault(lead_id, []).append((type_, moment, machine))
    return found


def dry_run(
    session: Session, rules: ScoringRules, now: datetime, *, someone: bool, default_tz: str
) -> dict[str, Any]:
    """What *rules* would change (read only). *someone*: whether a hot lead nobody owns
    has someone to go to (a team or a sales inbox)."""
    turn_hot, stop_hot, leads = [], [], 0
    last = 0
    while True:
        batch = list(
            session.exec(
                select(Lead).where(col(Lead.id) > last).order_by(col(Lead.id)).limit(CHUNK)
            )
        )
        if not batch:
            break
        last = batch[-1].id or 0
        events = _events(session, [lead.id for lead in batch if lead.id is not None])
        for lead in batch:
            leads += 1
            tz = zone(lead.timezone or default_tz)
            engagement, _ = replay(rules, events.get(lead.id or 0, []), now,
                                   since=lead.score_reset_at, tz=tz)  # fmt: skip
            fit, _ = fit_of(rules, LeadView.of(lead), now)
            approachable = lead.status == ContactStatus.subscribed and bool(lead.owner or someone)
            would = stage_reached(rules, engagement, None, fit, approachable)
            if lead.stage == "hot" and would != "hot":
                stop_hot.append(lead.email)
            elif lead.stage in SCORED_STAGES and lead.stage != "hot" and would == "hot":
                turn_hot.append(lead.email)
    rejected_not_made, accepted_missed, replayed = 0, 0, 0
    answered = list(
        session.exec(
            select(Handoff, Lead)
            .join(Lead, col(Lead.id) == Handoff.lead_id)
            .where(col(Handoff.stage_event_id).is_not(None))
            .where(col(Handoff.became_hot_at) >= now - timedelta(days=DAYS))
            .where(col(Handoff.status).in_([HandoffStatus.accepted.value,
                                            HandoffStatus.rejected.value]))
        )
    )  # fmt: skip
    events = _events(session, sorted({lead.id for _, lead in answered if lead.id is not None}))
    for handoff, lead in answered:
        replayed += 1
        floor = lead.score_reset_at if lead.score_reset_at and lead.score_reset_at < (
            handoff.became_hot_at) else None  # fmt: skip
        _, at_event = replay(rules, events.get(lead.id or 0, []), handoff.became_hot_at,
                             since=floor, tz=zone(lead.timezone or default_tz))  # fmt: skip
        fit, _ = fit_of(rules, LeadView.of(lead), now)
        if stage_reached(rules, at_event, None, fit, True) != "hot":
            if handoff.status == HandoffStatus.rejected:
                rejected_not_made += 1
            else:
                accepted_missed += 1
    return {
        "leads": leads,
        "would_turn_hot": len(turn_hot),
        "would_stop_being_hot": len(stop_hot),
        "turn_hot": turn_hot[:20],
        "stop_being_hot": stop_hot[:20],
        "days": DAYS,
        "answered_handoffs_replayed": replayed,
        "rejected_not_made": rejected_not_made,
        "accepted_missed": accepted_missed,
    }


def sentences(result: dict[str, Any]) -> list[str]:
    """The dry run in plain words."""
    return [
        f"{result['would_turn_hot']} leads would turn hot now, "
        f"{result['would_stop_being_hot']} would stop being hot (of {result['leads']}).",
        f"Replayed over the last {result['days']} days ({result['answered_handoffs_replayed']} "
        f"answered hand-offs): {result['rejected_not_made']} hand-offs sales rejected would "
        f"not have been made; {result['accepted_missed']} it accepted would have been missed.",
    ]
