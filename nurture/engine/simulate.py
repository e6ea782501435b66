"""``nurture simulate``: the timeline a lead would get from a sequence, computed with the
same timing and conditions the daemon uses, with nothing sent or stored.

Engagement is what the caller assumes (``--assume clicked:welcome``): an assumed event
happens right after the step it names. Tasks are taken as done when they fall due, and
record their event then (``call_completed`` for a call); ``--assume qualified:call``
gives the task at step ``call`` the outcome ``qualified`` (one its step declares).
Each email leaves when it falls due (no cap or retry holds it), so the next step's wait
counts from then, as the daemon counts it from the moment an email actually left.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from nurture.engine.advance import exit_reason
from nurture.errors import InvalidValueError
from nurture.language.expressions import NO_SCORES, EventSet, LeadView, Scores, context, truth
from nurture.language.scoring import (
    SCORED_STAGES,
    ScoringRules,
    decayed,
    event_points,
    implied_stage,
)
from nurture.language.sequences import (
    EXIT_EVENTS,
    EXIT_STAGES,
    EmailAction,
    NotifyAction,
    Sequence,
    TaskAction,
    UpdateAction,
)
from nurture.language.timing import day_start, due_moment, zone


@dataclass(frozen=True)
class Assumption:
    """``EVENT:STEP``: the lead does EVENT right after STEP."""

    event: str
    step: str
    #: ``OUTCOME:STEP`` for a task step that declares it: the task ends with it.
    outcome: str | None = None

    @classmethod
    def parse(cls, text: str, sequence: Sequence) -> Assumption:
        word, sep, step = text.partition(":")
        word, step = word.strip(), step.strip()
        if not sep or not word or not step:
            raise InvalidValueError(f"--assume {text!r}: write EVENT:STEP, like clicked:welcome")
        if sequence.step(step) is None:
            ids = ", ".join(s.id for s in sequence.steps)
            raise InvalidValueError(
                f"--assume {text!r}: no step {step!r} in {sequence.name} ({ids})"
            )
        found = sequence.step(step)
        if found is not None and isinstance(found.action, TaskAction):
            if word in found.action.outcomes:
                return cls(found.action.completion_event, step, outcome=word)
        if word in EXIT_STAGES:
            return cls(word, step)
        return cls(EXIT_EVENTS.get(word, word), step)


@dataclass(frozen=True)
class Entry:
    """One line of a timeline."""

    moment: datetime
    timezone: str
    #: ``email``, ``task``, ``notify``, ``update``, ``skipped``, ``exited``, ``completed``,
    #: ``beyond`` (after the simulated period) or ``note``.
    kind: str
    step: str | None
    detail: str
    #: Why the moment moved, or why the step was skipped or the sequence exited.
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "kind": self.kind,
            "local": self.moment.astimezone(zone(self.timezone)).isoformat(),
            "utc": self.moment.isoformat(),
            "timezone": self.timezone,
            "detail": self.detail,
            "reason": self.reason,
        }


class ScoreTrack:
    """The lead's scores along a simulated timeline: its scores at the start, plus the
    points each assumed event (and each task taken as done) earns by ``scoring.yaml``,
    decaying as in the daemon."""

    def __init__(
        self, rules: ScoringRules | None, start: datetime, scores: Scores, tz_name: str
    ) -> None:
        self.rules, self.start, self.base, self.tz = rules, start, scores, zone(tz_name)
        self.earned: list[tuple[datetime, float]] = []
        self.per_day: dict[tuple[str, datetime], int] = {}

    def record(self, event: str, moment: datetime) -> None:
        if self.rules is None:
            return
        key = (event, day_start(moment, self.tz))
        points = event_points(self.rules, event, False, self.per_day.get(key, 0))
        if points:
            self.per_day[key] = self.per_day.get(key, 0) + (1 if points > 0 else 0)
            self.earned.append((moment, points))

    def at(self, moment: datetime) -> Scores:
        if self.rules is None:
            return self.base
        engagement = decayed(self.base.engagement, self.start, moment, self.rules) + sum(
            decayed(points, earned_at, moment, self.rules)
            for earned_at, points in self.earned
            if earned_at <= moment
        )
        return Scores(engagement, self.base.fit)

    def stage(self, moment: datetime, approachable: bool) -> str | None:
        """The stage the scores give at *moment* (``None`` without rules)."""
        if self.rules is None:
            return None
        scores = self.at(moment)
        return implied_stage(self.rules, scores.engagement, scores.fit, approachable)


def simulate(
    sequence: Sequence,
    lead: LeadView,
    *,
    start: datetime,
    days: int,
    assumptions: list[Assumption],
    default_timezone: str,
    render_note: Any = None,
    rules: ScoringRules | None = None,
    scores: Scores = NO_SCORES,
    approachable: bool = True,
) -> list[Entry]:
    """The timeline of *lead* in *sequence* from *start* for *days* days. *scores* are
    the lead's at *start*; assumed events earn points by *rules*, and a lead whose scores
    cross a threshold changes stage as in the daemon (hot only if *approachable*)."""
    tz_name = sequence.schedule.timezone_for(lead.get("timezone"), default_timezone)
    tz = zone(tz_name)
    window = sequence.schedule.window
    horizon = start + timedelta(days=days)
    events = EventSet()
    values = lead.as_dict()
    entries: list[Entry] = []

    def add(moment: datetime, kind: str, step: str | None, detail: str, reason: str = "") -> None:
        entries.append(Entry(moment, tz_name, kind, step, detail, reason))

    track = ScoreTrack(rules, start, scores, tz_name)
    scored_stage = [track.stage(start, approachable)]

    def names(moment: datetime) -> dict[str, Any]:
        implied = track.stage(moment, approachable)
        if implied is not None and implied != scored_stage[0]:
            scored_stage[0] = implied  # the scores crossed a threshold: the stage moves
            if values.get("stage", "cold") in SCORED_STAGES:
                values["stage"] = implied
        return context(LeadView(values), events, now=moment, scores=track.at(moment))

    if sequence.audience is not None and not truth(sequence.audience, names(start)):
        add(start, "note", None, "not in the audience: would be enrolled only by hand",
            sequence.audience.source)  # fmt: skip
    emailable = values.get("status", "subscribed") == "subscribed"
    if not emailable:
        add(start, "note", None, f"lead is {values.get('status')}: never emailed")
    first = names(start)
    reason = exit_reason(sequence.exit_when, events, values.get("stage", "cold"), first)
    if reason:
        add(start, "exited", None, "exits before the first step", reason)
        return entries
    base = start
    for step in sequence.steps:
        placement = due_moment(base, step.wait, step.at, window, tz)
        moment = placement.moment
        if moment > horizon:
            add(moment, "beyond", step.id, f"{step.kind} due after the {days} simulated days")
            return entries
        base = moment
        if step.condition is not None and not truth(step.condition, names(moment)):
            add(moment, "skipped", step.id, f"{step.kind} skipped", f"if: {step.condition.source}")
            continue
        action = step.action
        if isinstance(action, EmailAction):
            template = action.template_for_lead(sequence.name, step.id, values.get("email", ""))
            if emailable:
                add(moment, "email", step.id, f"email {template}", placement.moved_because or "")
            else:
                add(
                    moment,
                    "skipped",
                    step.id,
                    f"email {template}",
                    f"lead is {values.get('status')}",
                )
        elif isinstance(action, TaskAction):
            assignee = action.assignee or values.get("owner") or "unassigned"
            note = render_note(action.note, LeadView(values)) if render_note and action.note else ""
            detail = f"{action.kind} task for {assignee}" + (f": {note}" if note else "")
            add(moment, "task", step.id, detail, placement.moved_because or "")
            events.add(action.completion_event, step.id)  # taken as done when due
            track.record(action.completion_event, moment)
        elif isinstance(action, NotifyAction):
            to = action.to or values.get("owner") or "the sales team"
            note = render_note(action.message, LeadView(values)) if render_note else action.message
            add(moment, "notify", step.id, f"notify {to}: {note}", placement.moved_because or "")
        elif isinstance(action, UpdateAction):
            values.update(dict(action.fields))
            values.update(dict(action.attributes))
            changes = ", ".join(f"{k}={v}" for k, v in (*action.fields, *action.attributes))
            add(moment, "update", step.id, f"update {changes}", placement.moved_because or "")
        for assumption in assumptions:
            if assumption.step == step.id:
                if assumption.outcome is not None:
                    events.outcomes[step.id] = assumption.outcome
                elif assumption.event in EXIT_STAGES:
                    values["stage"] = assumption.event
                else:
                    events.add(assumption.event, step.id)
                    track.record(assumption.event, moment)
        current = names(moment)
        reason = exit_reason(sequence.exit_when, events, values.get("stage", "cold"), current)
        if reason:
            add(moment, "exited", step.id, f"exits after {step.id}", reason)
            return entries
    add(base, "completed", None, "sequence completed")
    return entries


#: Entries that are something the lead (or sales) gets.
TOUCHES = ("email", "task", "notify", "update")


def first_touch(entries: list[Entry]) -> Entry | None:
    """The first thing a timeline gives the lead (a touch, an exit, or the end), or
    ``None`` when nothing happens within it."""
    return next((e for e in entries if e.kind in (*TOUCHES, "exited", "completed", "beyond")), None)
