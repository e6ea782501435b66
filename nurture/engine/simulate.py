"""``nurture simulate``: the timeline a lead would get from a sequence, with nothing sent
or stored. Every step, skip and exit is decided by the daemon's own step,
:func:`nurture.engine.advance.advance` (exit rules by
:func:`~nurture.engine.advance.leaves_because`, as the delivery's last check), called at
the moments the daemon looks at the enrollment: when its next step is due, when an email
leaves or a task is done, when the lead does something, and when decay moves the lead
down a stage.

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

from nurture.engine.advance import Position, Touch, advance, resolve_step
from nurture.errors import InvalidValueError
from nurture.language.expressions import NO_SCORES, EventSet, LeadView, Scores, context, truth
from nurture.language.scoring import (
    SCORED_STAGES,
    ScoringRules,
    decayed,
    event_points,
    falls_below_at,
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
from nurture.language.timing import day_start, zone


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

    def review_at(self, moment: datetime, approachable: bool) -> datetime | None:
        """When decay next takes the lead down from the stage its scores give at
        *moment*, as the daemon's scorer computes it (and then wakes the lead's
        enrollments); ``None`` if it never does."""
        stage = self.stage(moment, approachable)
        if self.rules is None or stage is None:
            return None
        review = falls_below_at(self.rules, stage, self.at(moment).engagement, moment)
        return review if review is not None and review > moment else None


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
    cross a threshold changes stage as in the daemon (hot only if *approachable*).

    Each step, skip and exit is decided by :func:`~nurture.engine.advance.advance`, the
    daemon's own step, called at the moments the daemon's passes would call it: when the
    enrollment falls due; again at once when an email leaves, a task is done or the lead
    does what is assumed; and when decay moves the lead down a stage (each of these
    wakes the enrollment in the daemon)."""
    tz_name = sequence.schedule.timezone_for(lead.get("timezone"), default_timezone)
    tz = zone(tz_name)
    horizon = start + timedelta(days=days)
    events = EventSet()
    values = lead.as_dict()
    entries: list[Entry] = []

    def add(moment: datetime, kind: str, step: str | None, detail: str, reason: str = "") -> None:
        entries.append(Entry(moment, tz_name, kind, step, detail, reason))

    track = ScoreTrack(rules, start, scores, tz_name)
    scored_stage = [track.stage(start, approachable)]

    def scores_at(moment: datetime) -> Scores:
        """The scores at *moment*; the stage moves if they crossed a threshold."""
        implied = track.stage(moment, approachable)
        if implied is not None and implied != scored_stage[0]:
            scored_stage[0] = implied  # the scores crossed a threshold: the stage moves
            if values.get("stage", "cold") in SCORED_STAGES:
                values["stage"] = implied
        return track.at(moment)

    audience = sequence.audience
    if audience is not None:
        names = context(LeadView(values), events, now=start, scores=scores_at(start))
        if not truth(audience, names):
            add(start, "note", None, "not in the audience: would be enrolled only by hand",
                audience.source)  # fmt: skip
    status = values.get("status", "subscribed")
    emailable = status == "subscribed"
    if not emailable:
        add(start, "note", None, f"lead is {status}: never emailed")
    now = start
    position = Position(sequence.steps[0].id, start)
    #: The step done last and when: an exit at that moment comes right after it.
    last: tuple[str, datetime] | None = None
    while True:
        before = LeadView(dict(values))  # what the touches of this pass are rendered with
        woken = False  # the lead did something: the daemon looks again at once
        outcome = advance(sequence, position, lead=values, engagement=events, now=now, tz=tz,
                          scores=scores_at(now))  # fmt: skip
        touches = {touch.step.id: touch for touch in outcome.touches}
        skipped = dict(outcome.skipped)
        for step_id in outcome.done[len(position.done) :]:
            if step_id in skipped:
                step = sequence.step(step_id)
                kind = step.kind if step is not None else "step"
                add(now, "skipped", step_id, f"{kind} skipped", skipped[step_id])
            else:
                touch = touches[step_id]
                _touch_entry(add, touch, now, values, before, emailable, render_note)
                if isinstance(touch.step.action, TaskAction):  # done as it falls due
                    events.add(touch.step.action.completion_event, step_id)
                    track.record(touch.step.action.completion_event, now)
                woken = _assume(assumptions, step_id, events, values, track, now) or woken
            last = (step_id, now)
        if outcome.status == "exited":
            reason = outcome.reason or ""
            if last is not None and last[1] == now:
                add(now, "exited", last[0], f"exits after {last[0]}", reason)
            elif last is None:
                add(now, "exited", None, "exits before the first step", reason)
            else:
                ahead = resolve_step(sequence, position.next_step, position.done)
                at = ahead.id if ahead is not None else None
                add(now, "exited", at, f"exits before {at}" if at else "exits", reason)
            return entries
        if outcome.status == "completed":
            add(now, "completed", None, "sequence completed")
            return entries
        done = tuple(outcome.done)
        if outcome.waits_for_email or outcome.waits_for_task:
            # The email leaves now, or the task is done now (simulate takes it as done
            # when it falls due): the daemon wakes the enrollment at that moment.
            position = Position(outcome.next_step, now, done)
            continue
        step = sequence.step(outcome.next_step or "")
        due = outcome.due_at
        assert step is not None and due is not None
        position = Position(step.id, outcome.base_at or now, done)
        if woken:
            continue
        # The daemon looks at the enrollment when its next step is due, or earlier when
        # decay moves the lead down a stage (the stage change wakes it).
        scored = values.get("stage", "cold") in SCORED_STAGES  # else scores never move it
        review = track.review_at(now, approachable) if scored else None
        if review is not None and review < due and review <= horizon:
            now = review
            continue
        if due > horizon:
            add(due, "beyond", step.id, f"{step.kind} due after the {days} simulated days")
            return entries
        now = due


def _touch_entry(
    add: Any,
    touch: Touch,
    now: datetime,
    values: dict[str, Any],
    before: LeadView,
    emailable: bool,
    render_note: Any,
) -> None:
    """The line of one touch; an ``update`` changes *values* as it does the lead."""
    step, action = touch.step, touch.step.action
    moved = touch.moved_because or ""
    if isinstance(action, EmailAction):
        if emailable:
            add(now, "email", step.id, f"email {touch.template}", moved)
        else:
            add(now, "skipped", step.id, f"email {touch.template}",
                f"lead is {values.get('status')}")  # fmt: skip
    elif isinstance(action, TaskAction):
        assignee = action.assignee or values.get("owner") or "unassigned"
        note = render_note(action.note, before) if render_note and action.note else ""
        detail = f"{action.kind} task for {assignee}" + (f": {note}" if note else "")
        add(now, "task", step.id, detail, moved)
    elif isinstance(action, NotifyAction):
        to = action.to or values.get("owner") or "the sales team"
        note = render_note(action.message, before) if render_note else action.message
        add(now, "notify", step.id, f"notify {to}: {note}", moved)
    elif isinstance(action, UpdateAction):
        values.update(dict(action.fields))
        values.update(dict(action.attributes))
        changes = ", ".join(f"{k}={v}" for k, v in (*action.fields, *action.attributes))
        add(now, "update", step.id, f"update {changes}", moved)


def _assume(
    assumptions: list[Assumption],
    step_id: str,
    events: EventSet,
    values: dict[str, Any],
    track: ScoreTrack,
    now: datetime,
) -> bool:
    """What the caller assumes happens right after step *step_id* (a task's outcome,
    an event, a stage); whether anything does."""
    found = False
    for assumption in assumptions:
        if assumption.step != step_id:
            continue
        found = True
        if assumption.outcome is not None:
            events.outcomes[step_id] = assumption.outcome
        elif assumption.event in EXIT_STAGES:
            values["stage"] = assumption.event
        else:
            events.add(assumption.event, step_id)
            track.record(assumption.event, now)
    return found


#: Entries that are something the lead (or sales) gets.
TOUCHES = ("email", "task", "notify", "update")


def first_touch(entries: list[Entry]) -> Entry | None:
    """The first thing a timeline gives the lead (a touch, an exit, or the end), or
    ``None`` when nothing happens within it."""
    return next((e for e in entries if e.kind in (*TOUCHES, "exited", "completed", "beyond")), None)
