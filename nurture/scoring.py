"""``scoring.yaml``: the one written definition of a hot lead, shared by marketing and
sales. This module reads and validates it; applying it to leads is pure arithmetic on
events and fields."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nurture.errors import InputFileError, InvalidValueError
from nurture.expressions import Expression, compile_expression
from nurture.problems import Problem, problem_from_error
from nurture.timing import Duration, parse_duration
from nurture.yamlfile import item_line, key_line, load_yaml, node_line, value_line

SCORING_KEYS = ("engagement", "half_life", "fit", "stages")
STAGE_NAMES = ("warm", "hot")


@dataclass(frozen=True)
class EventPoints:
    points: float
    #: At most this many events of the kind count per day; ``None``: no cap.
    max_per_day: int | None = None


@dataclass(frozen=True)
class FitRule:
    condition: Expression
    points: float
    line: int


@dataclass(frozen=True)
class Threshold:
    engagement: float = 0.0
    fit: float = 0.0


@dataclass(frozen=True)
class ScoringRules:
    engagement: dict[str, EventPoints]
    half_life: Duration | None
    fit: tuple[FitRule, ...]
    stages: dict[str, Threshold]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def parse_scoring(path: Path, data: Any) -> tuple[ScoringRules | None, list[Problem]]:
    """Validate the YAML *data* of ``scoring.yaml``."""
    problems: list[Problem] = []

    def problem(line: int, message: str) -> None:
        problems.append(Problem(str(path), line, message))

    if data is None:
        data = {}
    if not isinstance(data, dict):
        return None, [Problem(str(path), 1, "scoring.yaml must be a mapping")]
    top = node_line(data)
    for key in data:
        if key not in SCORING_KEYS:
            problem(
                key_line(data, key, top), f"unknown key {key!r} (use: {', '.join(SCORING_KEYS)})"
            )

    engagement: dict[str, EventPoints] = {}
    node = data.get("engagement") or {}
    if not isinstance(node, dict):
        problem(value_line(data, "engagement", top), "engagement must map event names to points")
        node = {}
    for event, value in node.items():
        line = key_line(node, event, top)
        if isinstance(value, dict):
            unknown = set(value) - {"points", "max_per_day"}
            if unknown:
                problem(
                    line, f"{event}: unknown key {sorted(unknown)[0]!r} (use: points, max_per_day)"
                )
            points, cap = _number(value.get("points")), value.get("max_per_day")
            if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or cap < 1):
                problem(line, f"{event}: max_per_day must be a whole number of at least 1")
                cap = None
        else:
            points, cap = _number(value), None
        if points is None:
            problem(line, f"{event}: points must be a number")
            continue
        engagement[str(event)] = EventPoints(points, cap)

    half_life = None
    if data.get("half_life") is not None:
        try:
            half_life = parse_duration(data["half_life"])
            if half_life.unit == "business_days" or half_life.amount == 0:
                raise InvalidValueError(
                    "half_life must be a positive number of hours, days or weeks"
                )
        except InvalidValueError as exc:
            problem(value_line(data, "half_life", top), f"half_life: {exc}")
            half_life = None

    fit: list[FitRule] = []
    rules = data.get("fit") or []
    if not isinstance(rules, list):
        problem(value_line(data, "fit", top), "fit must be a list of {if, points} rules")
        rules = []
    for index, rule in enumerate(rules):
        line = item_line(rules, index, top)
        if not isinstance(rule, dict) or "if" not in rule or _number(rule.get("points")) is None:
            problem(line, "each fit rule needs 'if' (an expression) and 'points' (a number)")
            continue
        unknown = set(rule) - {"if", "points"}
        if unknown:
            problem(line, f"unknown fit rule key {sorted(unknown)[0]!r} (use: if, points)")
        try:
            condition = compile_expression(rule["if"])
        except InvalidValueError as exc:
            problem(value_line(rule, "if", line), str(exc))
            continue
        fit.append(FitRule(condition, float(rule["points"]), line))

    stages: dict[str, Threshold] = {}
    node = data.get("stages") or {}
    if not isinstance(node, dict):
        problem(value_line(data, "stages", top), "stages must map warm and hot to thresholds")
        node = {}
    for stage, value in node.items():
        line = key_line(node, stage, top)
        if stage not in STAGE_NAMES:
            problem(line, f"unknown stage {stage!r} (thresholds are for: {', '.join(STAGE_NAMES)})")
            continue
        if not isinstance(value, dict) or not value or set(value) - {"engagement", "fit"}:
            problem(
                line,
                f"{stage}: give engagement and/or fit thresholds, like {{engagement: 30, fit: 20}}",
            )
            continue
        numbers = {key: _number(v) for key, v in value.items()}
        if any(v is None for v in numbers.values()):
            problem(line, f"{stage}: thresholds must be numbers")
            continue
        stages[str(stage)] = Threshold(numbers.get("engagement") or 0.0, numbers.get("fit") or 0.0)
    if (
        "warm" in stages
        and "hot" in stages
        and stages["hot"].engagement < stages["warm"].engagement
    ):
        problem(key_line(node, "hot", top), "hot needs at least as much engagement as warm")

    if problems:
        return None, problems
    return ScoringRules(engagement, half_life, tuple(fit), stages), []


def load_scoring(path: Path) -> tuple[ScoringRules | None, list[Problem]]:
    """Read and validate ``scoring.yaml``."""
    if not path.is_file():
        return None, [Problem(str(path), None, "missing: the shared definition of a hot lead")]
    try:
        data = load_yaml(path)
    except InputFileError as exc:
        return None, [problem_from_error(exc, path)]
    return parse_scoring(path, data)
