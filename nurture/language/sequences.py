"""What a sequence is, as plain values: its schedule, its steps and their actions, its
exit rules, and the names the language knows (actions, task kinds, exit events).
:mod:`nurture.language.sequence_files` reads them from the files people write."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path
from typing import Any

from nurture.language.expressions import Expression
from nurture.language.timing import (
    Duration,
    Window,
)

SEQUENCE_KEYS = (
    "name", "description", "audience", "from", "reply_to", "schedule", "exit_when",
    "steps", "reenroll", "events", "fallback_from", "senders",
)  # fmt: skip
SCHEDULE_KEYS = ("timezone", "days", "hours", "holidays")
STEP_KEYS = ("id", "wait", "at", "if", "track", "note", "assignee", "timeout", "outcomes", "to")
ACTIONS = ("email", "task", "notify", "update")
TASK_KINDS = ("call", "linkedin", "todo")
#: ``exit_when`` words and the events they stand for.
EXIT_EVENTS = {
    "replied": "email_replied",
    "opened": "email_opened",
    "clicked": "email_clicked",
    "bounced": "email_bounced",
    "unsubscribed": "unsubscribed",
    "complained": "complained",
    "meeting_booked": "meeting_booked",
    "form_submitted": "form_submitted",
    "page_visited": "page_visited",
    "call_completed": "call_completed",
    # Anyone of the lead's account (its company, else its email's domain) replied.
    "account_replied": "account_replied",
}
#: A custom event's name (as ``nurture event`` and the API take it).
EVENT_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
#: An outcome a task step declares.
OUTCOME_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
#: The event a task records when it is done, by kind (others: ``task_completed``).
TASK_EVENTS = {"call": "call_completed", "linkedin": "linkedin_completed"}
#: Every event a done task records (its outcome in ``data["outcome"]``).
TASK_DONE = frozenset({*TASK_EVENTS.values(), "task_completed"})
#: ``exit_when: [hot]`` ends the sequence when the lead reaches that stage.
EXIT_STAGES = ("hot", "accepted", "customer", "disqualified")


@dataclass(frozen=True)
class Schedule:
    """Where and when the touches of a sequence may happen."""

    #: ``"lead"`` for the lead's own timezone, else an IANA name.
    timezone: str = "lead"
    window: Window = field(default_factory=Window)

    def timezone_for(self, lead_timezone: str | None, default: str) -> str:
        """The IANA timezone a lead's touches are timed in."""
        if self.timezone == "lead":
            return lead_timezone or default
        return self.timezone


@dataclass(frozen=True)
class EmailAction:
    #: ``(template, weight)`` pairs; a single template has weight 1.
    variants: tuple[tuple[str, int], ...]
    #: Rewrite links for click tracking.
    track: bool = True

    def template_for_lead(self, sequence: str, step: str, email: str) -> str:
        """The template a lead gets at a step: the same in ``simulate``, ``preview`` and
        the daemon."""
        return self.template_for(f"{sequence}:{step}:{email}")

    def template_for(self, key: str) -> str:
        """The template a lead gets, chosen deterministically from *key* by weight."""
        if len(self.variants) == 1:
            return self.variants[0][0]
        total = sum(weight for _, weight in self.variants)
        point = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % total
        for name, weight in self.variants:
            if point < weight:
                return name
            point -= weight
        return self.variants[-1][0]


@dataclass(frozen=True)
class TaskAction:
    kind: str
    #: A template for the task's note.
    note: str = ""
    #: Who works it: an email; empty means the lead's owner.
    assignee: str = ""
    #: After this long without the task done, the sequence goes on.
    timeout: Duration | None = None
    #: What doing it may come to (``[qualified, not_now]``); empty: free text, or none.
    outcomes: tuple[str, ...] = ()
    #: The file line where the note's text starts (for errors in it).
    note_line: int = 0

    @property
    def completion_event(self) -> str:
        """The event recorded when the task is done (``call_completed`` for a call)."""
        return TASK_EVENTS.get(self.kind, "task_completed")


@dataclass(frozen=True)
class NotifyAction:
    #: A template for the message.
    message: str
    #: Who hears it: an email; empty means the lead's owner.
    to: str = ""
    #: The file line where the message's text starts (for errors in it).
    message_line: int = 0


@dataclass(frozen=True)
class UpdateAction:
    #: Lead fields to set (already validated).
    fields: tuple[tuple[str, Any], ...] = ()
    #: Custom attributes to set.
    attributes: tuple[tuple[str, Any], ...] = ()


Action = EmailAction | TaskAction | NotifyAction | UpdateAction


@dataclass(frozen=True)
class Step:
    id: str
    action: Action
    line: int
    wait: Duration | None = None
    at: time | None = None
    condition: Expression | None = None
    #: Line of the ``if:`` value, for problems found in it.
    condition_line: int = 0

    @property
    def kind(self) -> str:
        """``email``, ``task``, ``notify`` or ``update``."""
        return {
            EmailAction: "email", TaskAction: "task", NotifyAction: "notify", UpdateAction: "update"
        }[type(self.action)]  # fmt: skip


@dataclass(frozen=True)
class ExitRule:
    """One item of ``exit_when``: an event, a stage, or an expression."""

    source: str
    event: str | None = None
    stage: str | None = None
    expression: Expression | None = None
    #: The file line of the item (for problems found in it).
    line: int = 0


@dataclass(frozen=True)
class Sequence:
    name: str
    path: Path
    steps: tuple[Step, ...]
    description: str = ""
    audience: Expression | None = None
    sender: str = ""
    reply_to: str = ""
    schedule: Schedule = field(default_factory=Schedule)
    exit_when: tuple[ExitRule, ...] = ()
    reenroll: bool = False
    #: Custom event names this sequence reads (``events: [webinar_attended]``), recorded
    #: by other systems through the API or ``nurture event``.
    events: tuple[str, ...] = ()
    #: The file line of ``audience:`` (for problems found in it).
    audience_line: int = 0
    #: ``from: owner``: where a lead with no owner, or an owner with no sender, gets its
    #: email from (an address, or a ``[[senders]]`` name); empty: the project's default.
    fallback_from: str = ""
    #: ``senders: [sam, lee]``: the ``[[senders]]`` its emails rotate between.
    senders: tuple[str, ...] = ()
    #: The file line of ``senders:`` (a name no ``[[senders]]`` entry has is shown there).
    senders_line: int = 0

    def reads_events(self) -> bool:
        """Whether carrying one of its enrollments forward asks what the lead did: an
        ``exit_when`` event, or an ``exit_when`` or ``if`` expression that reads events
        (``opened``, ``occurred``, ``outcome``...). One that does not is advanced
        without reading the lead's events."""
        return self.leaving_reads_events() or any(
            step.condition is not None and step.condition.reads_events for step in self.steps
        )

    def leaving_reads_events(self) -> bool:
        """Whether its ``exit_when`` asks what the lead did (an event it names, or an
        expression that reads events): whether the check that a lead leaves it, made
        again before each of its emails goes, needs the lead's events."""
        return any(
            rule.event is not None or (rule.expression is not None and rule.expression.reads_events)
            for rule in self.exit_when
        )

    def woken_by(self) -> frozenset[str] | None:
        """The event types that can move one of its enrollments before its next step is
        due: the events ``exit_when`` names, and a task's completion when a step is a
        task (the sequence waits for it). ``None``: any type (an ``exit_when``
        expression may read the lead's events or the scores an event moves). Whatever
        the rules, an event that changes the lead (a stage, an opt-out) wakes it too:
        the lead changed."""
        if any(rule.expression is not None for rule in self.exit_when):
            return None
        types = {rule.event for rule in self.exit_when if rule.event is not None}
        if any(isinstance(step.action, TaskAction) for step in self.steps):
            types |= TASK_DONE
        return frozenset(types)

    def step(self, step_id: str) -> Step | None:
        return next((step for step in self.steps if step.id == step_id), None)

    def index(self, step_id: str) -> int | None:
        return next((i for i, step in enumerate(self.steps) if step.id == step_id), None)
