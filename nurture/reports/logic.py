"""Logic mistakes ``nurture check`` catches in files that parse: event names nothing
records or declares, and task outcomes a step does not declare.

Pure functions of the parsed sequences and scoring rules: no file, no database."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from nurture.language.expressions import Expression
from nurture.language.scoring import ScoringRules
from nurture.language.sequences import (
    EXIT_EVENTS,
    EXIT_STAGES,
    TASK_DONE,
    Sequence,
    TaskAction,
)
from nurture.problems import Problem
from nurture.store.events import ENGINE_PREFIXES, ENGINE_TYPES, KNOWN_TYPES, likely_typo
from nurture.suggest import close_match

#: Every event nurture records by itself or knows by name.
RECORDED = frozenset({*KNOWN_TYPES, *ENGINE_TYPES, *TASK_DONE, "task_snoozed"})


def recorded_by_nurture(name: str) -> bool:
    """Whether nurture itself records events called *name* (or knows them by name)."""
    return name in RECORDED or name.startswith(ENGINE_PREFIXES)


@dataclass
class EventCheck:
    """What :func:`check_event_names` found."""

    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    #: Declared custom event names used somewhere, with where the first use stands.
    custom: dict[str, Problem] = field(default_factory=dict)


def _uses(sequence: Sequence) -> list[tuple[str, int, str]]:
    """``(event, line, how)`` for each event name the sequence reads."""
    found = [
        (rule.event, rule.line, f"exit_when {rule.source!r}")
        for rule in sequence.exit_when
        if rule.event
    ]
    expressions: list[tuple[Expression | None, int]] = [
        (sequence.audience, sequence.audience_line),
        *((step.condition, step.condition_line) for step in sequence.steps),
        *((rule.expression, rule.line) for rule in sequence.exit_when),
    ]
    for expression, line in expressions:
        if expression is not None:
            found += [(name, line, f"occurred({name!r})") for name in expression.events]
    return found


def check_event_names(
    sequences: Iterable[Sequence],
    scoring: ScoringRules | None,
    scoring_file: Path,
    line_of: Callable[[Path, str], int | None] = lambda path, word: None,
) -> EventCheck:
    """An event a sequence reads that nurture never records and nothing declares (in
    ``scoring.yaml``, or the sequence's own ``events:`` list) is a problem, with a
    did-you-mean: those leads would never exit. A scored name that looks like a typo of
    a known one is a warning. *line_of* finds the line of a name in ``scoring.yaml``."""
    result = EventCheck()
    declared = scoring.declared_events() if scoring is not None else set()
    for sequence in sequences:
        own = {*declared, *sequence.events}
        for name, line, how in _uses(sequence):
            if recorded_by_nurture(name):
                continue
            if name in own:
                result.custom.setdefault(name, Problem(str(sequence.path), line or None, ""))
                continue
            choices = [*EXIT_EVENTS, *EXIT_STAGES, *sorted(RECORDED), *sorted(own)]
            guess = close_match(name, choices, cutoff=0.7) or close_match(name, choices)
            hint = f" (did you mean {guess!r}?)" if guess else ""
            result.problems.append(
                Problem(
                    str(sequence.path), line or None,
                    f"{how}: nurture never records an event {name!r} and nothing declares "
                    f"it{hint}, so no lead would ever match it; if another system records "
                    f"it, declare it with events: [{name}]",
                )
            )  # fmt: skip
    if scoring is not None:
        for name in (*scoring.engagement, *scoring.hot_on):
            if recorded_by_nurture(name):
                continue
            guess = likely_typo(name)
            where = Problem(str(scoring_file), line_of(scoring_file, name), "")
            if guess:
                result.warnings.append(
                    Problem(where.path, where.line,
                            f"event {name!r} is not one nurture knows (did you mean {guess!r}?)")
                )  # fmt: skip
            else:
                result.custom.setdefault(name, where)
    return result


def check_outcomes(sequence: Sequence) -> list[Problem]:
    """Each ``outcome('step')`` compared with a value the step does not declare (its
    ``outcomes:``), or naming a step that is not a task, is a problem."""
    problems: list[Problem] = []
    expressions = [
        *((step.condition, step.condition_line) for step in sequence.steps),
        *((rule.expression, rule.line) for rule in sequence.exit_when),
    ]
    for expression, line in expressions:
        if expression is None:
            continue
        for step_id, value in dict.fromkeys(expression.outcomes):
            step = sequence.step(step_id)
            if step is None:
                continue  # an unknown step: the parser says so
            if not isinstance(step.action, TaskAction):
                problems.append(Problem(str(sequence.path), line or None,
                                        f"outcome({step_id!r}): step {step_id!r} is a "
                                        f"{step.kind}, not a task: it has no outcome"))  # fmt: skip
                continue
            declared = step.action.outcomes
            if not declared or value in declared:
                continue
            guess = close_match(value, declared)
            hint = f" (did you mean {guess!r}?)" if guess else ""
            problems.append(
                Problem(
                    str(sequence.path), line or None,
                    f"outcome({step_id!r}) is compared with {value!r}, which step "
                    f"{step_id!r} does not declare{hint}: its outcomes are "
                    f"{', '.join(declared)}",
                )
            )  # fmt: skip
    return problems
