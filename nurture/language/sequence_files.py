"""Reading sequence files: one YAML file per sequence in ``sequences/``, checked key by
key and parsed into the values of :mod:`nurture.language.sequences`.

:func:`load_sequences` reads a directory and returns the sequences that are valid plus
every problem found, each with its ``path:line``; a bad file never hides a good one."""

from __future__ import annotations

import re
from collections.abc import Iterable
from email.utils import parseaddr
from pathlib import Path
from typing import Any

from nurture.errors import InputFileError, InvalidValueError
from nurture.language.expressions import Expression, compile_expression
from nurture.language.fields import check_timezone, normalize_email
from nurture.language.sequences import (
    ACTIONS,
    EVENT_NAME,
    EXIT_EVENTS,
    EXIT_STAGES,
    SCHEDULE_KEYS,
    SEQUENCE_KEYS,
    STEP_KEYS,
    Action,
    ExitRule,
    Schedule,
    Sequence,
    Step,
)
from nurture.language.step_actions import ActionReader
from nurture.language.timing import (
    DAY_NAMES,
    Window,
    holiday_calendar,
    parse_day,
    parse_hours,
    parse_time_of_day,
)
from nurture.language.yamlfile import item_line, key_line, load_yaml, node_line, value_line
from nurture.problems import Problem, problem_from_error
from nurture.suggest import did_you_mean

#: A ``[[senders]]`` entry's name (as ``nurture.toml`` allows it).
KEY_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


class _Reader(ActionReader):
    """Collects problems while turning one file's YAML into a :class:`Sequence`."""

    def __init__(
        self, path: Path, template_exists: Any, template_names: Iterable[str] = ()
    ) -> None:
        self.path = path
        self.problems: list[Problem] = []
        self.template_exists = template_exists
        self.template_names = tuple(template_names)

    def unknown_keys(self, node: dict[str, Any], allowed: Iterable[str], what: str) -> None:
        allowed = tuple(allowed)
        for key in node:
            if key not in allowed:
                self.problem(
                    key_line(node, key, node_line(node)),
                    f"unknown {what} key {key!r}{did_you_mean(key, allowed)}",
                )

    def expression(
        self, node: Any, key: Any, line: int, extra: tuple[str, ...] = ()
    ) -> Expression | None:
        try:
            return compile_expression(node[key], extra)
        except InvalidValueError as exc:
            self.problem(line, str(exc))
            return None

    def read(self, data: Any) -> Sequence | None:
        if not isinstance(data, dict):
            self.problem(1, "a sequence file must be a mapping with name, steps, ...")
            return None
        top = node_line(data)
        self.unknown_keys(data, SEQUENCE_KEYS, "sequence")
        name = data.get("name", self.path.stem)
        if not isinstance(name, str) or not name.strip():
            self.problem(value_line(data, "name", top), "name must be a non-empty string")
            name = self.path.stem
        audience = None
        if data.get("audience") is not None:
            audience = self.expression(data, "audience", value_line(data, "audience", top))
        rotation = self.sender_names(data, top)
        if data.get("from") == "owner":
            sender = "owner"
        else:
            sender = self.address(data, "from", top, required=not rotation)
        fallback = ""
        if data.get("fallback_from") is not None:
            text = str(data["fallback_from"]).strip()
            fallback = (text if KEY_NAME.fullmatch(text)  # a [[senders]] name
                        else self.address(data, "fallback_from", top, required=False))  # fmt: skip
        reply_to = self.address(data, "reply_to", top, required=False)
        schedule = self.schedule(data.get("schedule"), value_line(data, "schedule", top))
        steps = self.steps(data.get("steps"), value_line(data, "steps", top))
        exit_rules = self.exit_rules(data, top)
        reenroll = data.get("reenroll", False)
        if not isinstance(reenroll, bool):
            self.problem(value_line(data, "reenroll", top), "reenroll must be true or false")
            reenroll = False
        self.check_step_references(steps, audience, exit_rules, data, top)
        events = self.event_names(data, top)
        if self.problems:
            return None
        return Sequence(
            name=name.strip(),
            path=self.path,
            steps=tuple(steps),
            description=str(data.get("description") or ""),
            audience=audience,
            sender=sender,
            reply_to=reply_to,
            schedule=schedule,
            exit_when=tuple(exit_rules),
            reenroll=reenroll,
            events=events,
            audience_line=value_line(data, "audience", top),
            fallback_from=fallback,
            senders=rotation,
            senders_line=value_line(data, "senders", top),
        )

    def sender_names(self, data: dict[str, Any], top: int) -> tuple[str, ...]:
        """``senders: [sam, lee]``: the ``[[senders]]`` names its emails rotate between
        (``nurture check`` finds the names no entry has)."""
        if data.get("senders") is None:
            return ()
        node, line = data["senders"], value_line(data, "senders", top)
        if not isinstance(node, list) or not node:
            self.problem(line, "senders must be a list of [[senders]] names, like [sam, lee]")
            return ()
        names = []
        for index, item in enumerate(node):
            if not isinstance(item, str) or not KEY_NAME.fullmatch(item):
                self.problem(item_line(node, index, line),
                             f"sender {item!r}: a [[senders]] name, like sam")  # fmt: skip
            else:
                names.append(item)
        return tuple(dict.fromkeys(names))

    def event_names(self, data: dict[str, Any], top: int) -> tuple[str, ...]:
        """``events: [webinar_attended, ...]``: custom events this sequence reads."""
        if data.get("events") is None:
            return ()
        node, line = data["events"], value_line(data, "events", top)
        if not isinstance(node, list):
            self.problem(line, "events must be a list of event names, like [webinar_attended]")
            return ()
        names = []
        for index, item in enumerate(node):
            if not isinstance(item, str) or not EVENT_NAME.fullmatch(item):
                self.problem(item_line(node, index, line),
                             f"event {item!r}: use lower-case letters, digits and _ "
                             "(like webinar_attended)")  # fmt: skip
            else:
                names.append(item)
        return tuple(names)

    def address(self, data: dict[str, Any], key: str, top: int, *, required: bool) -> str:
        value = data.get(key)
        line = value_line(data, key, top)
        if value is None:
            if required:
                self.problem(top, f"missing {key!r}: the sender, like 'Ana Ruiz <ana@example.com>'")
            return ""
        _, address = parseaddr(str(value))
        try:
            normalize_email(address)
        except InvalidValueError:
            self.problem(
                line, f"{key}: {value!r} is not an address like 'Ana Ruiz <ana@example.com>'"
            )
            return ""
        if "\n" in str(value) or "\r" in str(value):
            self.problem(line, f"{key} must be on one line")
            return ""
        return str(value).strip()

    def schedule(self, node: Any, line: int) -> Schedule:
        if node is None:
            return Schedule()
        if not isinstance(node, dict):
            self.problem(line, "schedule must be a mapping (timezone, days, hours, holidays)")
            return Schedule()
        self.unknown_keys(node, SCHEDULE_KEYS, "schedule")
        timezone = str(node.get("timezone", "lead"))
        if timezone != "lead":
            try:
                check_timezone(timezone)
            except InvalidValueError as exc:
                self.problem(value_line(node, "timezone", line), f"schedule timezone: {exc}")
        days = frozenset(range(7))
        if "days" in node:
            raw_days = node["days"]
            if not isinstance(raw_days, list) or not raw_days:
                self.problem(
                    value_line(node, "days", line),
                    f"days must be a list like [{', '.join(DAY_NAMES[:5])}]",
                )
            else:
                parsed = set()
                for i, day in enumerate(raw_days):
                    try:
                        parsed.add(parse_day(day))
                    except InvalidValueError as exc:
                        self.problem(item_line(raw_days, i, line), str(exc))
                days = frozenset(parsed) or days
        start, end = 0, 24 * 60
        if "hours" in node:
            try:
                start, end = parse_hours(node["hours"])
            except InvalidValueError as exc:
                self.problem(value_line(node, "hours", line), str(exc))
        holidays = node.get("holidays")
        if holidays is not None:
            try:
                holiday_calendar(str(holidays))
                holidays = str(holidays)
            except InvalidValueError as exc:
                self.problem(value_line(node, "holidays", line), str(exc))
                holidays = None
        return Schedule(timezone, Window(days, start, end, holidays))

    def steps(self, node: Any, line: int) -> list[Step]:
        if not isinstance(node, list) or not node:
            self.problem(line, "steps must be a non-empty list")
            return []
        steps: list[Step] = []
        seen: dict[str, int] = {}
        for index, item in enumerate(node):
            item_at = item_line(node, index, line)
            step = self.step(item, item_at, index)
            if step is None:
                continue
            if step.id in seen:
                self.problem(
                    item_at, f"duplicate step id {step.id!r} (first on line {seen[step.id]})"
                )
                continue
            seen[step.id] = item_at
            steps.append(step)
        return steps

    def step(self, node: Any, line: int, index: int) -> Step | None:
        if not isinstance(node, dict):
            self.problem(line, "each step must be a mapping with an id and one action")
            return None
        allowed = (*STEP_KEYS, *ACTIONS)
        self.unknown_keys(node, allowed, "step")
        step_id = node.get("id")
        if not isinstance(step_id, str | int) or not str(step_id).strip():
            self.problem(line, f"step {index + 1} needs an id")
            return None
        step_id = str(step_id).strip()
        actions = [key for key in ACTIONS if key in node]
        if len(actions) != 1:
            found = ", ".join(actions) if actions else "none"
            self.problem(
                line,
                f"step {step_id!r} must have exactly one action of {', '.join(ACTIONS)} "
                f"(found {found})",
            )
            return None
        wait = self.duration(node, "wait", line)
        at = None
        if "at" in node:
            try:
                at = parse_time_of_day(node["at"])
            except InvalidValueError as exc:
                self.problem(value_line(node, "at", line), str(exc))
        condition = None
        condition_line = value_line(node, "if", line)
        if "if" in node:
            condition = self.expression(node, "if", condition_line)
        action = self.action(actions[0], node, line, step_id)
        if action is None:
            return None
        return Step(step_id, action, line, wait, at, condition, condition_line)

    def action(self, kind: str, node: dict[str, Any], line: int, step_id: str) -> Action | None:
        value = node[kind]
        at = value_line(node, kind, line)
        misplaced = {"email": ("note", "assignee", "timeout", "outcomes", "to"),
                     "task": ("track", "to"),
                     "notify": ("note", "assignee", "timeout", "outcomes", "track"),
                     "update": ("note", "assignee", "timeout", "outcomes", "track",
                                "to")}[kind]  # fmt: skip
        for key in misplaced:
            if key in node:
                self.problem(key_line(node, key, line), f"{key!r} does not go with {kind!r}")
        if kind == "email":
            return self.email(value, at, node.get("track", True))
        if kind == "task":
            return self.task(value, node, at, line)
        if kind == "notify":
            return self.notify(value, node, at)
        return self.update(value, at)

    def exit_rules(self, data: dict[str, Any], top: int) -> list[ExitRule]:
        node = data.get("exit_when")
        if node is None:
            return []
        line = value_line(data, "exit_when", top)
        if not isinstance(node, list):
            self.problem(line, "exit_when must be a list of events or expressions")
            return []
        rules = []
        for index, item in enumerate(node):
            at = item_line(node, index, line)
            text = str(item).strip()
            if text in EXIT_EVENTS:
                rules.append(ExitRule(text, event=EXIT_EVENTS[text], line=at))
            elif text in EXIT_EVENTS.values():
                rules.append(ExitRule(text, event=text, line=at))
            elif text in EXIT_STAGES:
                rules.append(ExitRule(text, stage=text, line=at))
            elif text.isidentifier():
                # A custom event name, as recorded by `nurture event NAME` or the API.
                rules.append(ExitRule(text, event=text, line=at))
            else:
                expression = self.expression(node, index, at)
                if expression is not None:
                    rules.append(ExitRule(text, expression=expression, line=at))
        return rules

    def check_step_references(
        self,
        steps: list[Step],
        audience: Expression | None,
        exits: list[ExitRule],
        data: dict[str, Any],
        top: int,
    ) -> None:
        ids = [step.id for step in steps]
        for step in steps:
            if step.condition is not None:
                self.unknown_steps(step.condition, ids, step.condition_line)
        for rule in exits:
            if rule.expression is not None:
                self.unknown_steps(rule.expression, ids, value_line(data, "exit_when", top))
        if audience is not None and audience.steps:
            self.problem(
                value_line(data, "audience", top),
                "audience is checked before a lead has any step: it cannot name steps",
            )

    def unknown_steps(self, expression: Expression, ids: list[str], line: int) -> None:
        for name in expression.steps:
            if name not in ids:
                self.problem(
                    line,
                    f"unknown step {name!r} in {expression.source!r}{did_you_mean(name, ids)}",
                )


def parse_sequence(
    path: Path, data: Any, template_exists: Any, template_names: Iterable[str] = ()
) -> tuple[Sequence | None, list[Problem]]:
    """Turn the YAML *data* of *path* into a :class:`Sequence`, or problems (an unknown
    template gets a did-you-mean from *template_names*)."""
    reader = _Reader(path, template_exists, template_names)
    sequence = reader.read(data)
    return sequence, reader.problems


def load_sequence(
    path: Path, template_exists: Any, template_names: Iterable[str] = ()
) -> tuple[Sequence | None, list[Problem]]:
    """Read one sequence file."""
    try:
        data = load_yaml(path)
        return parse_sequence(path, data, template_exists, template_names)
    except InputFileError as exc:
        return None, [problem_from_error(exc, path)]
    except RecursionError:  # a value nested past what any reader can follow
        return None, [Problem(str(path), None, "nested too deeply to read: refused")]


#: What :func:`load_sequences` found: the valid sequences, and the problems of the others.
SequenceFiles = tuple[list["Sequence"], list[Problem]]


def load_sequences(
    directory: Path, template_exists: Any, template_names: Iterable[str] = ()
) -> SequenceFiles:
    """Every valid sequence in *directory* and every problem of the others."""
    sequences: list[Sequence] = []
    problems: list[Problem] = []
    if not directory.is_dir():
        return [], [Problem(str(directory), None, "no sequences directory")]
    paths = sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])
    names: dict[str, Path] = {}
    for path in paths:
        sequence, found = load_sequence(path, template_exists, template_names)
        problems.extend(found)
        if sequence is None:
            continue
        if sequence.name in names:
            problems.append(
                Problem(
                    str(path),
                    1,
                    f"sequence name {sequence.name!r} is also used by {names[sequence.name]}",
                )
            )
            continue
        names[sequence.name] = path
        sequences.append(sequence)
    return sequences, problems
