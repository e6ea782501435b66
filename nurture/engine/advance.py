"""The pure core of the daemon: what one enrollment does at one moment.

:func:`advance` takes an enrollment's position, the sequence as it is now, the lead, what
the lead has done, and ``now``; it returns what to do (the steps to carry out, in order)
and where the enrollment stands afterwards. It reads no clock and touches no database,
so every rule of timing, conditions, exits and live edits is tested here directly.

The rules are the ones ``nurture simulate`` shows: a step is due :func:`due_moment`
after the previous step happened; a step whose ``if`` is false is skipped and still
counts as the moment the next wait starts from; an ``exit_when`` rule ends the
enrollment as soon as it holds; the step after a task waits for the task to be done (or
for the task step's ``timeout``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from nurture.language.expressions import NO_SCORES, Engagement, LeadView, Scores, context, truth
from nurture.language.sequences import (
    EmailAction,
    ExitRule,
    Sequence,
    Step,
    TaskAction,
    UpdateAction,
)
from nurture.language.timing import add_wait, due_moment

#: Contact statuses that take a lead out of every sequence.
OPTED_OUT = ("unsubscribed", "bounced", "complained")


def exit_reason(
    rules: tuple[ExitRule, ...], events: Engagement, stage: str, names: dict[str, Any]
) -> str | None:
    """The first ``exit_when`` rule that holds, described; ``None`` if none does."""
    for rule in rules:
        if rule.event is not None and events.occurred(rule.event):
            return events.said(rule.event) or rule.source
        if rule.stage is not None and stage == rule.stage:
            return f"lead is {rule.stage}"
        if rule.expression is not None and truth(rule.expression, names):
            return rule.source
    return None


def leaves_because(
    sequence: Sequence,
    lead: dict[str, Any],
    engagement: Engagement,
    now: datetime,
    scores: Scores = NO_SCORES,
) -> str | None:
    """Why the lead leaves *sequence* now: it opted out, or an ``exit_when`` rule holds."""
    status = lead.get("status", "subscribed")
    if status in OPTED_OUT:
        return f"lead is {status}"
    names = context(LeadView(lead), engagement, now=now, scores=scores)
    return exit_reason(sequence.exit_when, engagement, lead.get("stage", "cold"), names)


@dataclass(frozen=True)
class Position:
    """Where an enrollment stands before a pass."""

    next_step: str | None
    #: When the previous step happened; the next wait counts from here.
    base_at: datetime
    #: Steps already done or skipped; none is ever done twice.
    done: tuple[str, ...] = ()
    #: The next step waits for a task that is still open.
    waiting_for_task: bool = False
    #: When the sequence stops waiting for that task.
    task_timeout_at: datetime | None = None
    #: An email this enrollment queued has not left yet (nor been given up): the next
    #: step's wait counts from when it does, and the enrollment completes only then.
    waiting_for_email: bool = False


#: How often an enrollment waiting for its email to leave looks again, should the
#: delivery's wake-up be missed (every way an email settles wakes it at once).
EMAIL_RECHECK = timedelta(days=1)


@dataclass(frozen=True)
class Touch:
    """A step to carry out now."""

    step: Step
    #: For an email: the template (variant) this lead gets.
    template: str | None = None
    #: For a task with a timeout: when the sequence stops waiting for it.
    timeout_at: datetime | None = None
    #: Why the step is later than its wait alone says (a window, a weekend...).
    moved_because: str | None = None


@dataclass
class Outcome:
    """What a pass does to one enrollment."""

    status: str = "active"
    touches: list[Touch] = field(default_factory=list)
    #: ``(step id, reason)`` for each step skipped by its ``if``.
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: Notes for the log: a step removed by an edit, a task timed out.
    notes: list[str] = field(default_factory=list)
    #: Why it exited.
    reason: str | None = None
    next_step: str | None = None
    base_at: datetime | None = None
    due_at: datetime | None = None
    done: list[str] = field(default_factory=list)
    #: The next step waits for the task created by the last touch.
    waits_for_task: bool = False
    #: The next step (or the completion) waits for the email of the last touch to leave.
    waits_for_email: bool = False
    #: The task it waited for timed out: mark it expired.
    task_expired: bool = False
    #: Lead fields and attributes that ``update`` steps set.
    lead_changes: dict[str, Any] = field(default_factory=dict)


def resolve_step(sequence: Sequence, next_step: str | None, done: tuple[str, ...]) -> Step | None:
    """The step an enrollment waiting at *next_step* does next, in the sequence as it is now.

    A step that an edit removed is replaced by the first step after the last step done
    (in the file's current order) that has not been done.
    """
    if next_step is None:
        return None
    step = sequence.step(next_step)
    if step is not None and step.id not in done:
        return step
    positions = [i for i in (sequence.index(s) for s in done) if i is not None]
    start = max(positions, default=-1) + 1
    return next((s for s in sequence.steps[start:] if s.id not in done), None)


def following(sequence: Sequence, step: Step, done: tuple[str, ...]) -> str | None:
    """The id of the step after *step* that has not been done, or ``None``."""
    index = sequence.index(step.id)
    assert index is not None
    return next((s.id for s in sequence.steps[index + 1 :] if s.id not in done), None)


def advance(
    sequence: Sequence,
    position: Position,
    *,
    lead: dict[str, Any],
    engagement: Engagement,
    now: datetime,
    tz: ZoneInfo,
    scores: Scores = NO_SCORES,
) -> Outcome:
    """Carry one enrollment as far as it goes at *now*; *scores* are the lead's at *now*."""
    values = dict(lead)
    done = list(position.done)
    base = position.base_at
    outcome = Outcome(base_at=base, done=done, lead_changes={})
    window = sequence.schedule.window

    def names() -> dict[str, Any]:
        return context(LeadView(values), engagement, now=now, scores=scores)

    def exit_check() -> str | None:
        return leaves_because(sequence, values, engagement, now, scores)

    reason = exit_check()
    if reason:
        return _end(outcome, "exited", reason)
    if position.waiting_for_task:
        if position.task_timeout_at is None or now < position.task_timeout_at:
            outcome.next_step = position.next_step
            outcome.due_at = position.task_timeout_at
            outcome.waits_for_task = True
            return outcome
        outcome.task_expired = True
        outcome.notes.append("task not done before its timeout: the sequence goes on")
        base = position.task_timeout_at
    elif position.waiting_for_email:
        return _wait_for_email(outcome, sequence, position.next_step, base, now, tz)
    if position.next_step is None and done:
        return _end(outcome, "completed", None)  # its last email has left
    step = resolve_step(sequence, position.next_step, tuple(done))
    if step is not None and position.next_step is not None and step.id != position.next_step:
        outcome.notes.append(f"step {position.next_step!r} is gone: moved on to {step.id!r}")
    while step is not None:
        placement = due_moment(base, step.wait, step.at, window, tz)
        if placement.moment > now:
            outcome.next_step, outcome.base_at, outcome.due_at = step.id, base, placement.moment
            return outcome
        base = now
        done.append(step.id)
        if step.condition is not None and not truth(step.condition, names()):
            outcome.skipped.append((step.id, f"if: {step.condition.source}"))
        else:
            touch = _touch(sequence, step, values, now, tz, placement.moved_because)
            outcome.touches.append(touch)
            if isinstance(step.action, UpdateAction):
                changes = dict(step.action.fields)
                values.update(changes)
                attributes = dict(step.action.attributes)
                values.update(attributes)
                outcome.lead_changes.update(changes)
                if attributes:
                    outcome.lead_changes.setdefault("attributes", {}).update(attributes)
            if isinstance(step.action, EmailAction):
                # The next step's wait counts from when this email leaves.
                next_step = following(sequence, step, tuple(done))
                return _wait_for_email(outcome, sequence, next_step, base, now, tz)
            if isinstance(step.action, TaskAction):
                outcome.next_step = following(sequence, step, tuple(done))
                outcome.base_at = base
                if outcome.next_step is None:
                    return _end(outcome, "completed", None)
                outcome.waits_for_task = True
                outcome.due_at = touch.timeout_at
                return outcome
        reason = exit_check()
        if reason:
            outcome.base_at = base
            return _end(outcome, "exited", reason)
        step = sequence.step(following(sequence, step, tuple(done)) or "")
    outcome.base_at = base
    return _end(outcome, "completed", None)


def _touch(
    sequence: Sequence,
    step: Step,
    values: dict[str, Any],
    now: datetime,
    tz: ZoneInfo,
    moved_because: str | None,
) -> Touch:
    action = step.action
    if isinstance(action, EmailAction):
        template = action.template_for_lead(sequence.name, step.id, values.get("email", ""))
        return Touch(step, template=template, moved_because=moved_because)
    if isinstance(action, TaskAction) and action.timeout is not None:
        timeout_at = add_wait(now, action.timeout, tz, sequence.schedule.window)
        return Touch(step, timeout_at=timeout_at, moved_because=moved_because)
    return Touch(step, moved_because=moved_because)


def _wait_for_email(
    outcome: Outcome,
    sequence: Sequence,
    next_step: str | None,
    base: datetime,
    now: datetime,
    tz: ZoneInfo,
) -> Outcome:
    """Stay at *next_step* (``None``: about to complete) until the email leaves. It is
    due when its wait would end if the email left now; the delivery wakes it when the
    email does leave (its wait counts from then), and it looks again at least every
    :data:`EMAIL_RECHECK` while the email waits (a cap, a window, a retry)."""
    step = sequence.step(next_step) if next_step is not None else None
    due = due_moment(base, step.wait, step.at, sequence.schedule.window, tz) if step else None
    outcome.next_step = next_step
    outcome.base_at = base
    outcome.due_at = due.moment if due is not None and due.moment > now else now + EMAIL_RECHECK
    outcome.waits_for_email = True
    return outcome


def _end(outcome: Outcome, status: str, reason: str | None) -> Outcome:
    outcome.status = status
    outcome.reason = reason
    outcome.next_step = None
    outcome.due_at = None
    outcome.waits_for_task = False
    return outcome
