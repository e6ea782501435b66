"""Reading the actions of sequence steps (``email``, ``task``, ``notify``, ``update``),
for :mod:`nurture.language.sequence_files`: each checked key by key, every problem kept
with its line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nurture.errors import InvalidValueError
from nurture.language.fields import SETTABLE_FIELDS, normalize_email, parse_field
from nurture.language.sequences import (
    OUTCOME_NAME,
    TASK_KINDS,
    EmailAction,
    NotifyAction,
    TaskAction,
    UpdateAction,
)
from nurture.language.timing import Duration, parse_duration
from nurture.language.yamlfile import key_line, value_line
from nurture.problems import Problem
from nurture.suggest import did_you_mean


def text_line(value: Any, line: int) -> int:
    """The line where a text value's content starts: the line after ``note: |`` for a
    block scalar, else the value's own line."""
    from ruamel.yaml.scalarstring import FoldedScalarString, LiteralScalarString

    return line + 1 if isinstance(value, (LiteralScalarString, FoldedScalarString)) else line


class ActionReader:
    """Reads step actions; the sequence reader is one."""

    path: Path
    problems: list[Problem]
    template_exists: Any
    template_names: tuple[str, ...]

    def problem(self, line: int | None, message: str) -> None:
        self.problems.append(Problem(str(self.path), line, message))

    def duration(self, node: dict[str, Any], key: str, line: int) -> Duration | None:
        if key not in node:
            return None
        try:
            return parse_duration(node[key])
        except InvalidValueError as exc:
            self.problem(value_line(node, key, line), f"{key}: {exc}")
            return None

    def email(self, value: Any, line: int, track: Any) -> EmailAction | None:
        if isinstance(value, str):
            variants: list[tuple[str, int]] = [(value, 1)]
        elif (
            isinstance(value, dict)
            and set(value) == {"variants"}
            and isinstance(value["variants"], dict)
        ):
            variants = []
            for name, weight in value["variants"].items():
                weight_line = key_line(value["variants"], name, line)
                if not isinstance(weight, int) or isinstance(weight, bool) or weight <= 0:
                    self.problem(weight_line, f"variant {name!r} needs a positive whole weight")
                    continue
                variants.append((str(name), weight))
            if not variants:
                self.problem(line, "variants must name at least one template with a weight")
                return None
        else:
            self.problem(line, "email must be a template name or {variants: {NAME: WEIGHT, ...}}")
            return None
        for name, _ in variants:
            if not self.template_exists(name):
                hint = did_you_mean(name, self.template_names)
                self.problem(line, f"unknown template {name!r} (no templates/{name}.html.j2){hint}")
        if not isinstance(track, bool):
            self.problem(line, "track must be true or false")
            track = True
        return EmailAction(tuple(variants), track)

    def task(
        self, value: Any, node: dict[str, Any], line: int, step_line: int
    ) -> TaskAction | None:
        if value not in TASK_KINDS:
            self.problem(
                line,
                f"unknown task {value!r}: use one of {', '.join(TASK_KINDS)}"
                f"{did_you_mean(value, TASK_KINDS)}",
            )
            return None
        note = node.get("note", "")
        if not isinstance(note, str):
            self.problem(value_line(node, "note", step_line), "note must be text")
            note = ""
        note_line = text_line(note, value_line(node, "note", step_line))
        self.text_template(note, note_line)
        assignee = self.email_field(node, "assignee", step_line)
        timeout = self.duration(node, "timeout", step_line)
        outcomes = self.outcomes(node, step_line)
        return TaskAction(str(value), note, assignee, timeout, outcomes, note_line)

    def outcomes(self, node: dict[str, Any], step_line: int) -> tuple[str, ...]:
        if "outcomes" not in node:
            return ()
        value = node["outcomes"]
        line = value_line(node, "outcomes", step_line)
        if not isinstance(value, list) or not value:
            self.problem(line, "outcomes must be a list of names, like [qualified, not_now]")
            return ()
        names: list[str] = []
        for item in value:
            if not isinstance(item, str) or not OUTCOME_NAME.fullmatch(item):
                self.problem(line, f"outcome {item!r}: use lower-case letters, digits and _ "
                                   "(like not_now)")  # fmt: skip
            elif item in names:
                self.problem(line, f"outcome {item!r} is listed twice")
            else:
                names.append(item)
        return tuple(names)

    def notify(self, value: Any, node: dict[str, Any], line: int) -> NotifyAction | None:
        if not isinstance(value, str) or not value.strip():
            self.problem(line, "notify must be the message text")
            return None
        message_line = text_line(value, line)
        self.text_template(value, message_line)
        return NotifyAction(value, self.email_field(node, "to", line), message_line)

    def update(self, value: Any, line: int) -> UpdateAction | None:
        if not isinstance(value, dict) or not value:
            self.problem(line, "update must be a mapping of fields to set, like {stage: warm}")
            return None
        fields: list[tuple[str, Any]] = []
        attributes: list[tuple[str, Any]] = []
        for key, raw in value.items():
            key_at = key_line(value, key, line)
            if key == "email":
                self.problem(key_at, "update cannot change a lead's email")
            elif key in SETTABLE_FIELDS:
                try:
                    fields.append((key, parse_field(key, str(raw))))
                except InvalidValueError as exc:
                    self.problem(key_at, f"update {key}: {exc}")
            elif key in ("id", "attributes", "created_at", "updated_at"):
                self.problem(key_at, f"update cannot set {key!r}")
            else:
                attributes.append((str(key), raw))
        return UpdateAction(tuple(fields), tuple(attributes))

    def email_field(self, node: dict[str, Any], key: str, line: int) -> str:
        if key not in node:
            return ""
        try:
            return normalize_email(str(node[key]))
        except InvalidValueError as exc:
            self.problem(value_line(node, key, line), f"{key}: {exc}")
            return ""

    def text_template(self, source: str, line: int) -> None:
        from jinja2 import TemplateSyntaxError

        from nurture.language.expressions import environment

        try:
            environment().parse(source)
        except TemplateSyntaxError as exc:
            self.problem(line + exc.lineno - 1, f"template does not parse: {exc.message}")
        except RecursionError:
            self.problem(line, "template is nested too deeply to read")
