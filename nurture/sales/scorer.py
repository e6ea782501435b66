"""Scoring in the pass: new events earn points, changed leads get their fit, and leads
whose scores moved (or whose engagement has decayed past a threshold) change stage.

The cost is per new event and per changed lead: engagement is stored as of
``scored_at`` and decays on read; ``stage_review_at`` (indexed) says when decay could
next move a lead down, so a pass looks only at those leads.

A form post (``form_submitted`` from ``POST /f/NAME``) is anyone's to make: its points
count only once the address is proven to be the lead's (:data:`PROOF_TYPES`: a confirmed
double opt-in, a click in one of our emails, a reply). Until then it earns nothing; the
proof scores the lead again from its events, the held posts included.

Scoring decides stage changes and records each as a ``stage_changed`` event; it knows
nothing of sales. The hand-off reacts to those events later in the pass
(:func:`nurture.sales.notice.hand_off_hot_leads`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import func, update
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from nurture import logs
from nurture.engine.context import Context
from nurture.language.expressions import LeadView
from nurture.language.fields import ContactStatus
from nurture.language.scoring import (
    SCORED_STAGES,
    ScoringRules,
    decayed,
    event_points,
    falls_below_at,
    fit_label,
    fit_of,
    stage_reached,
)
from nurture.language.timing import day_start, zone
from nurture.store.bulk import one_of, update_rows
from nurture.store.database import session_scope
from nurture.store.events import (
    Event,
    NewEvent,
    events_of,
    record_event,
    record_events,
    unscored_events,
)
from nurture.store.leads import Lead, changed_lead_ids
from nurture.store.meta import advance_mark, read_mark

FIT_CHECKED_KEY = "fit_checked_at"
_EVENTS = Event.__table__  # type: ignore[attr-defined]
_LEADS = Lead.__table__  # type: ignore[attr-defined]
_LEAD_SCORES = sa_select(
    _LEADS.c.id, _LEADS.c.engagement, _LEADS.c.scored_at, _LEADS.c.score_reset_at,
    _LEADS.c.timezone,
)  # fmt: skip
#: Events scored per transaction (their leads read in one query, written in one).
EVENTS_BATCH = 5000
OVERLAP = timedelta(minutes=1)
#: Events that prove the address is the lead's own: a confirmed double opt-in, a click on
#: a tracked link of one of our emails, a reply (never a machine's: a scanner's click, a
#: reply matched only by a From address nobody vouched for).
PROOF_TYPES = ("opt_in_confirmed", "email_clicked", "email_replied")
#: The event a web form records, and its source: a post anyone can make.
FORM_POST, FORM_SOURCE = "form_submitted", "form"


@dataclass
class ScoreReport:
    events: int = 0
    leads: int = 0
    stage_changes: int = 0
    hot: int = 0
    reminders: int = 0
    #: ``(email, old stage, new stage)``.
    changes: list[tuple[str, str, str]] = field(default_factory=list)


#: Events of one lead and type that earned points on one local day: ``(lead id, type,
#: day start)`` → count. A scoring run keeps it, so each day is counted in the database
#: once, not once per event.
EarnedToday = dict[tuple[int, str, datetime], int]


def count_earned(
    session: Session,
    rules: ScoringRules,
    events: list[Any],
    zones: dict[int, str],
    earned: EarnedToday,
) -> None:
    """Count, in one query, what the leads of *events* (in the timezones *zones*) earned
    already on the days of those events, for the types with a daily cap; add the days
    *earned* does not know yet."""
    capped = {name for name, rule in rules.engagement.items() if rule.max_per_day is not None}
    fresh: set[tuple[int, str, datetime]] = set()
    for event in events:
        if event.type in capped:
            key = (
                event.lead_id,
                event.type,
                day_start(event.occurred_at, zone(zones[event.lead_id])),
            )
            if key not in earned:
                fresh.add(key)
                earned[key] = 0
    if not fresh:
        return
    moments = [key[2] for key in fresh]
    rows = session.exec(
        select(Event.lead_id, Event.type, Event.occurred_at)
        .where(col(Event.lead_id).in_({key[0] for key in fresh}))
        .where(col(Event.type).in_({key[1] for key in fresh}))
        .where(col(Event.scored).is_(True))
        .where(col(Event.points) > 0)
        .where(col(Event.occurred_at) >= min(moments))
        .where(col(Event.occurred_at) < max(moments) + timedelta(days=2))
    )
    for lead_id, type_, moment in rows:
        key = (lead_id, type_, day_start(moment, zone(zones[lead_id])))
        if key in fresh:
            earned[key] += 1


@dataclass(slots=True)
class LeadScores:
    """What scoring an event reads and moves of a lead (a :class:`Lead` has the same)."""

    id: int | None
    engagement: float
    scored_at: datetime | None
    score_reset_at: datetime | None
    #: The lead's timezone, or the project's.
    timezone: str


class Scorable(Protocol):
    """What scoring reads of an event (an :class:`Event`, or a row of those columns)."""

    @property
    def type(self) -> str: ...
    @property
    def occurred_at(self) -> datetime: ...
    @property
    def machine(self) -> bool: ...
    @property
    def source(self) -> str: ...


def is_form_post(event: Scorable) -> bool:
    """Whether *event* is a web form's post (anyone's to make)."""
    return event.type == FORM_POST and event.source == FORM_SOURCE


def proven_leads(session: Session, lead_ids: Iterable[int], *, scored_only: bool = False
                 ) -> set[int]:  # fmt: skip
    """Which of *lead_ids* have proven their address (an event of :data:`PROOF_TYPES`,
    not a machine's); with *scored_only*, by an event scored already."""
    ids = list(lead_ids)
    if not ids:
        return set()
    query = (
        select(Event.lead_id)
        .where(col(Event.lead_id).in_(ids))
        .where(col(Event.type).in_(PROOF_TYPES))
        .where(col(Event.machine).is_(False))
    )
    if scored_only:
        query = query.where(col(Event.scored).is_(True))
    return set(session.exec(query.distinct()))


def score_event(
    session: Session,
    rules: ScoringRules,
    lead: Lead | LeadScores,
    event: Scorable,
    tz_name: str,
    earned: EarnedToday | None = None,
    proven: bool = True,
) -> float:
    """Add the points *event* earns to the lead's engagement and return them (the caller
    stores them on the event). Events must come oldest first; *earned* carries the
    daily caps' counts from one event to the next. A form post of a lead not *proven*
    earns nothing (yet)."""
    counts = not (lead.score_reset_at and event.occurred_at < lead.score_reset_at)
    if not proven and is_form_post(event):
        counts = False
    points = 0.0
    if counts:
        cap = rules.engagement.get(event.type)
        earned_today = 0
        key = None
        if cap is not None and cap.max_per_day is not None:
            start = day_start(event.occurred_at, zone(tz_name))
            key = (lead.id or 0, event.type, start)
            if earned is None or key not in earned:
                earned_today = session.exec(
                    select(func.count())
                    .select_from(Event)
                    .where(Event.lead_id == lead.id)
                    .where(Event.type == event.type)
                    .where(col(Event.scored).is_(True))
                    .where(col(Event.points) > 0)
                    .where(col(Event.occurred_at) >= start)
                    .where(col(Event.occurred_at) < day_start(start, zone(tz_name), days_on=1))
                ).one()
            else:
                earned_today = earned[key]
        points = event_points(rules, event.type, event.machine, earned_today)
        if key is not None and earned is not None:
            earned[key] = earned_today + (1 if points > 0 else 0)
    if points:
        base = lead.scored_at or event.occurred_at
        moment = max(base, event.occurred_at)
        lead.engagement = decayed(lead.engagement, base, moment, rules) + decayed(
            points, event.occurred_at, moment, rules
        )
        lead.scored_at = moment
    if counts and event.type in rules.hot_on and not event.machine and "hot" in rules.stages:
        # A buying signal (hot_on): at least the hot threshold's engagement, at once.
        base = lead.scored_at or event.occurred_at
        moment = max(base, event.occurred_at)
        needed = rules.stages["hot"].engagement
        current = decayed(lead.engagement, base, moment, rules)
        if current < needed:
            points += needed - current
            lead.engagement, lead.scored_at = needed, moment
    return points


def approachable(ctx: Context, lead: Lead) -> bool:
    """Subscribed, and someone to hand it to."""
    sales = ctx.config.settings.sales
    return lead.status == ContactStatus.subscribed and bool(
        lead.owner or sales.team or sales.notify_email
    )


def review_stage(
    ctx: Context,
    session: Session,
    rules: ScoringRules,
    lead: Lead,
    now: datetime,
    report: ScoreReport,
    pending: list[NewEvent] | None = None,
    peak: float | None = None,
) -> None:
    """Move the lead to the stage its scores now give it, or the one an event scored in
    this pass took it to (*peak*: its engagement just after that event, as of the event).
    The ``stage_changed`` event goes to *pending*, if given, for the caller to record
    with a chunk of others (:func:`~nurture.store.events.record_events`)."""
    engagement = decayed(lead.engagement, lead.scored_at or now, now, rules)
    implied = stage_reached(rules, engagement, peak, lead.fit, approachable(ctx, lead))
    if peak is not None:
        engagement = max(engagement, peak)  # the scores when it crossed
    lead.stage_review_at = falls_below_at(rules, implied, lead.engagement, lead.scored_at or now)
    crossed = implied != lead.score_stage
    lead.score_stage = implied
    old = lead.stage
    # Scores move a lead only when they cross a threshold, and never out of sales'
    # stages (accepted, customer, disqualified).
    new = implied if crossed and old in SCORED_STAGES else old
    if new != old:
        lead.stage = new
        lead.updated_at = now
        report.stage_changes += 1
        report.changes.append((lead.email, old, new))
        assert lead.id is not None
        session.add(lead)
        data = {"from": old, "to": new, "engagement": round(engagement, 2), "fit": lead.fit}
        if pending is not None:
            pending.append(NewEvent(lead_id=lead.id, type="stage_changed", data=data,
                                    occurred_at=now))  # fmt: skip
        else:
            record_event(session, lead.id, "stage_changed", data=data, at=now)
        logs.action(
            "stage changed",
            lead=lead.email,
            stage=new,
            was=old,
            engagement=round(engagement, 1),
            fit=lead.fit,
        )
        if new == "hot":
            report.hot += 1
    session.add(lead)


def score_pass(ctx: Context, rules: ScoringRules, now: datetime) -> ScoreReport:
    """Score new events, refresh the fit of changed leads, and review stages."""
    report = ScoreReport()
    touched: set[int] = set()
    #: Per lead, its highest engagement just after an event scored in this pass.
    peaks: dict[int, float] = {}
    earned: EarnedToday = {}
    with session_scope(ctx.engine) as session:
        # Events scoring.yaml gives no points to (email_sent, stage changes...) earn
        # nothing and change no score: settle them in one statement. A proof of the
        # address is read in the loop (it releases held form posts).
        session.execute(
            update(Event)
            .where(col(Event.scored).is_(False))
            .where(col(Event.type).not_in([*rules.engagement, *rules.hot_on, *PROOF_TYPES]))
            .values(scored=True, points=0.0)
        )
    _score_new_events(ctx, rules, report, touched, peaks, earned)
    # Changed leads get their fit and a review, a chunk at a time (after a large import
    # that is every lead); the mark moves only once all are done.
    with session_scope(ctx.engine) as session:
        since = read_mark(session, FIT_CHECKED_KEY, OVERLAP, now)
    for ids in changed_lead_ids(ctx.engine, since, now):
        with session_scope(ctx.engine) as session:
            pending: list[NewEvent] = []
            among = one_of(session.get_bind().dialect, col(Lead.id), ids)
            for lead in session.exec(select(Lead).where(among)):
                lead.fit, _ = fit_of(rules, LeadView.of(lead), now)
                review_stage(ctx, session, rules, lead, now, report, pending,
                             peaks.get(lead.id or 0))  # fmt: skip
                report.leads += 1
                touched.discard(lead.id or 0)
            record_events(session, pending)
    with session_scope(ctx.engine) as session:
        advance_mark(session, FIT_CHECKED_KEY, now, OVERLAP)
    with session_scope(ctx.engine) as session:
        due = session.exec(select(Lead.id).where(col(Lead.stage_review_at) <= now))
        touched |= {i for i in due if i is not None}
    review_leads(ctx, rules, sorted(touched), now, report, peaks)
    return report


def score_leads(ctx: Context, rules: ScoringRules, lead_ids: list[int], now: datetime
                ) -> ScoreReport:  # fmt: skip
    """The fast lane's scoring: the new events of *lead_ids* only, then their fit and
    stage (the caller holds scoring's lock: :func:`nurture.stages.score.scoring_lock`)."""
    report = ScoreReport()
    peaks: dict[int, float] = {}
    _score_new_events(ctx, rules, report, set(), peaks, {}, lead_ids)
    with session_scope(ctx.engine) as session:
        for lead in session.exec(select(Lead).where(col(Lead.id).in_(lead_ids))):
            lead.fit, _ = fit_of(rules, LeadView.of(lead), now)
            session.add(lead)
    review_leads(ctx, rules, sorted(lead_ids), now, report, peaks)
    return report


def review_leads(ctx: Context, rules: ScoringRules, ids: list[int], now: datetime,
                 report: ScoreReport, peaks: dict[int, float]) -> None:  # fmt: skip
    """Review the stage of the leads *ids*, 500 at a time."""
    for start in range(0, len(ids), 500):
        with session_scope(ctx.engine) as session:
            pending: list[NewEvent] = []
            for lead in session.exec(
                select(Lead).where(
                    one_of(session.get_bind().dialect, col(Lead.id), ids[start : start + 500])
                )
            ):
                review_stage(ctx, session, rules, lead, now, report, pending,
                             peaks.get(lead.id or 0))  # fmt: skip
                report.leads += 1
            record_events(session, pending)


def _score_new_events(
    ctx: Context,
    rules: ScoringRules,
    report: ScoreReport,
    touched: set[int],
    peaks: dict[int, float],
    earned: EarnedToday,
    lead_ids: list[int] | None = None,
) -> None:
    """Score the events not scored yet (of *lead_ids* only, if given), oldest first;
    the leads whose engagement moved go to *touched*, their highest engagement just
    after an event to *peaks*."""
    default_tz = ctx.default_timezone
    while True:
        with session_scope(ctx.engine) as session:
            events: list[Any] = list(  # rows of the columns scoring reads
                session.connection().execute(unscored_events(EVENTS_BATCH, lead_ids))
            )
            if not events:
                break
            batch_ids = sorted({e.lead_id for e in events})
            dialect = session.get_bind().dialect
            # The scores of the batch's leads as plain values (no ORM object per lead),
            # written back in one statement.
            leads = {
                row.id: LeadScores(
                    row.id, row.engagement, row.scored_at, row.score_reset_at,
                    row.timezone or default_tz,
                )
                for start in range(0, len(batch_ids), 1000)
                for row in session.connection().execute(
                    _LEAD_SCORES.where(
                        one_of(dialect, _LEADS.c.id, batch_ids[start : start + 1000])
                    )
                )
            }
            before = {i: (lead.engagement, lead.scored_at) for i, lead in leads.items()}
            scored: list[dict[str, Any]] = []
            zones = {i: lead.timezone for i, lead in leads.items()}
            count_earned(session, rules, events, zones, earned)
            proven, newly_proven = _proofs(session, rules, events)
            for event in sorted(events, key=lambda e: (e.occurred_at, e.id or 0)):
                lead = leads[event.lead_id]
                points = score_event(
                    session, rules, lead, event, lead.timezone, earned,
                    proven=event.lead_id in proven,
                )  # fmt: skip
                scored.append({"id": event.id, "points": points})
                report.events += 1
                if points:
                    # Points alone are not a change of the lead (updated_at): engagement
                    # moves all the time (it decays), and a change would re-enroll a
                    # lead in a `reenroll: true` sequence it finished. A stage change is.
                    touched.add(event.lead_id)
                    peaks[event.lead_id] = max(peaks.get(event.lead_id, 0.0), lead.engagement)
            # One statement for the events and one for the leads whose scores moved,
            # not an ORM update per row.
            update_rows(session.connection(), _EVENTS, scored, scored=True)
            moved = [
                {"id": i, "engagement": lead.engagement, "scored_at": lead.scored_at}
                for i, lead in leads.items()
                if (lead.engagement, lead.scored_at) != before[i]
            ]
            update_rows(session.connection(), _LEADS, moved)
            # A lead that just proved its address gets the points of its held form posts:
            # scored again from its events.
            for lead_id in _holding_form_posts(session, newly_proven):
                stored = session.get(Lead, lead_id)
                assert stored is not None
                rescore_lead(session, rules, stored, leads[lead_id].timezone, proven=True)
                peaks[lead_id] = max(peaks.get(lead_id, 0.0), stored.engagement)
                for key in [key for key in earned if key[0] == lead_id]:
                    del earned[key]  # counted again from the database when needed
                touched.add(lead_id)


def _proofs(session: Session, rules: ScoringRules, events: list[Any]) -> tuple[set[int], set[int]]:
    """Of the leads of *events*: those whose address is proven, and those proven by an
    event of this batch only (their held form posts are scored again)."""
    if FORM_POST not in rules.engagement and FORM_POST not in rules.hot_on:
        return {e.lead_id for e in events}, set()  # form posts earn nothing anyway
    posting = {e.lead_id for e in events if is_form_post(e)}
    proving = {e.lead_id for e in events if e.type in PROOF_TYPES and not e.machine}
    if not posting and not proving:
        return set(), set()
    proven = proven_leads(session, posting | proving)
    before = proven_leads(session, proving, scored_only=True) if proving else set()
    return proven, (proving & proven) - before


def _holding_form_posts(session: Session, lead_ids: set[int]) -> list[int]:
    """Which of *lead_ids* have a form post scored without points (held, or capped)."""
    if not lead_ids:
        return []
    query = (
        select(Event.lead_id)
        .where(col(Event.lead_id).in_(sorted(lead_ids)))
        .where(col(Event.type) == FORM_POST)
        .where(col(Event.source) == FORM_SOURCE)
        .where(col(Event.scored).is_(True))
        .where(col(Event.points) == 0)
    )
    return sorted(set(session.exec(query.distinct())))


def rescore_lead(
    session: Session, rules: ScoringRules, lead: Lead, tz_name: str, *, proven: bool
) -> int:
    """Score *lead* again from all its events, oldest first; return how many."""
    assert lead.id is not None
    lead.engagement, lead.scored_at = 0.0, None
    events = events_of(session, lead.id)
    for event in events:
        event.scored, event.points = False, None
        session.add(event)
    for event in events:  # oldest first; each daily cap counts the ones before
        event.points = score_event(session, rules, lead, event, tz_name, proven=proven)
        event.scored = True
        session.flush()
    session.add(lead)
    return len(events)


def rescore(ctx: Context, rules: ScoringRules, now: datetime) -> ScoreReport:
    """Score every lead again from its events under the current rules."""
    report = ScoreReport()
    default_tz = ctx.default_timezone
    last_id = 0
    while True:
        with session_scope(ctx.engine) as session:
            leads = list(
                session.exec(
                    select(Lead).where(col(Lead.id) > last_id).order_by(col(Lead.id)).limit(500)
                )
            )
            if not leads:
                break
            last_id = leads[-1].id or 0
            proven = proven_leads(session, [lead.id for lead in leads if lead.id is not None])
            for lead in leads:
                report.events += rescore_lead(session, rules, lead, lead.timezone or default_tz,
                                              proven=lead.id in proven)  # fmt: skip
                lead.fit, _ = fit_of(rules, LeadView.of(lead), now)
                review_stage(ctx, session, rules, lead, now, report)
                report.leads += 1
    return report


def breakdown(session: Session, rules: ScoringRules, lead: Lead, now: datetime) -> dict[str, Any]:
    """Why a lead scores what it does: each event's points now, each fit rule, thresholds."""
    assert lead.id is not None
    events = [
        {
            "id": e.id,
            "type": e.type,
            "at": e.occurred_at.isoformat(),
            "sequence": e.sequence,
            "step": e.step,
            "points": e.points,
            "now": round(decayed(e.points or 0.0, e.occurred_at, now, rules), 2),
            "machine": e.machine,
        }
        for e in events_of(session, lead.id)
        # Points before a recycle (score_reset_at) no longer count: not shown either.
        if e.points and not (lead.score_reset_at and e.occurred_at < lead.score_reset_at)
    ]
    _, matched = fit_of(rules, LeadView.of(lead), now)
    return {
        "engagement": round(decayed(lead.engagement, lead.scored_at or now, now, rules), 2),
        "fit": lead.fit,
        "events": sorted(events, key=lambda e: -abs(e["now"])),
        "fit_rules": [
            {"if": r.condition.source, "points": r.points, "label": fit_label(r)} for r in matched
        ],
        "thresholds": {
            name: {"engagement": t.engagement, "fit": t.fit} for name, t in rules.stages.items()
        },
        "half_life": str(rules.half_life) if rules.half_life else None,
    }
