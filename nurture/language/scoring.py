"""``scoring.yaml``: the one written definition of a hot lead, shared by marketing and
sales. This module reads and validates it; applying it to leads is pure arithmetic on
events and fields."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from nurture.errors import InputFileError, InvalidValueError
from nurture.language.expressions import Expression, Scores, compile_expression
from nurture.language.sequences import EVENT_NAME
from nurture.language.timing import Duration, parse_duration
from nurture.language.yamlfile import item_line, key_line, load_yaml, node_line, value_line
from nurture.problems import Problem, problem_from_error

SCORING_KEYS = ("engagement", "half_life", "fit", "stages", "hot_on", "events", "reasons")
#: The answers sales gives a reason for, as ``reasons:`` names them.
REASON_ANSWERS = ("reject", "recycle")
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
    #: What the rule means in sales' words (``label: VP title``), shown as the reason.
    label: str = ""


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
    #: Events that make an approachable lead hot at once (``hot_on: [meeting_booked]``):
    #: they lift its engagement to at least the hot threshold; fit still counts.
    hot_on: tuple[str, ...] = ()
    #: Custom events other systems record that earn no points but that sequences read
    #: (``events: [webinar_attended]``).
    events: tuple[str, ...] = ()
    #: Sales' shared list of reasons (``reasons: {reject: [...], recycle: [...]}``),
    #: offered by the app, the notice links and ``nurture handoff``, besides "other".
    reasons: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def declared_events(self) -> set[str]:
        """Every event name this file declares: scored, hot-making or listed."""
        return {*self.engagement, *self.hot_on, *self.events}


_FIELD = re.compile(r"\blead\.(\w+)")


def fit_label(rule: FitRule) -> str:
    """What sales reads for a fit rule: its ``label``, else a plain default naming the
    fields it reads (``Fits: title``), never the expression."""
    if rule.label:
        return rule.label
    names = list(dict.fromkeys(m.replace("_", " ") for m in _FIELD.findall(rule.condition.source)))
    return "Fits: " + (", ".join(names) if names else "a fit rule")


def _number(value: Any) -> float | None:
    """*value* as a float, or ``None`` when it is not a finite number (YAML reads
    ``.inf``, ``.nan`` and ``1e400`` as floats: no score can hold them)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


#: Events that earn no points whatever the rules say: an out-of-office is not
#: engagement, and a colleague's reply is not this lead's.
UNSCORED = frozenset({"out_of_office", "account_replied"})


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
        if event in UNSCORED:
            problem(line, f"{event} earns no points: it is not the lead's engagement")
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
        unknown = set(rule) - {"if", "points", "label"}
        if unknown:
            problem(line, f"unknown fit rule key {sorted(unknown)[0]!r} (use: if, points, label)")
        label = rule.get("label", "")
        if not isinstance(label, str):
            problem(value_line(rule, "label", line), "label must be text, like 'VP title'")
            label = ""
        try:
            condition = compile_expression(rule["if"])
        except InvalidValueError as exc:
            problem(value_line(rule, "if", line), str(exc))
            continue
        fit.append(FitRule(condition, float(rule["points"]), line, label.strip()))

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
    hot_on: list[str] = []
    node_hot = data.get("hot_on")
    if node_hot is not None:
        hot_line = value_line(data, "hot_on", top)
        if not isinstance(node_hot, list) or not all(isinstance(v, str) for v in node_hot):
            problem(hot_line, "hot_on must be a list of event names, like [meeting_booked]")
        else:
            hot_on = [name.strip() for name in node_hot]
            if "hot" not in stages:
                problem(hot_line, "hot_on needs a hot stage in stages")
    events: list[str] = []
    node_events = data.get("events")
    if node_events is not None:
        if not isinstance(node_events, list) or not all(
            isinstance(v, str) and EVENT_NAME.fullmatch(v) for v in node_events
        ):
            problem(value_line(data, "events", top),
                    "events must be a list of event names, like [webinar_attended]")  # fmt: skip
        else:
            events = list(node_events)
    reasons = _reasons(data, top, problem)
    if problems:
        return None, problems
    rules = ScoringRules(engagement, half_life, tuple(fit), stages, tuple(hot_on), tuple(events),
                         reasons)  # fmt: skip
    return rules, []


def _reasons(data: dict[str, Any], top: int, problem: Any) -> dict[str, tuple[str, ...]]:
    """``reasons: {reject: [...], recycle: [...]}``: lists of short texts."""
    node = data.get("reasons")
    if node is None:
        return {}
    line = value_line(data, "reasons", top)
    if (
        not isinstance(node, dict)
        or set(node) - set(REASON_ANSWERS)
        or not all(
            isinstance(v, list) and all(isinstance(t, str) and t.strip() for t in v)
            for v in node.values()
        )
    ):
        problem(
            line,
            "reasons must map reject and/or recycle to lists of texts, like "
            "{reject: [student, competitor], recycle: [budget next quarter]}",
        )
        return {}
    return {answer: tuple(dict.fromkeys(t.strip() for t in node[answer])) for answer in node}


def load_scoring(path: Path) -> tuple[ScoringRules | None, list[Problem]]:
    """Read and validate ``scoring.yaml``."""
    if not path.is_file():
        return None, [Problem(str(path), None, "missing: the shared definition of a hot lead")]
    try:
        data = load_yaml(path)
    except InputFileError as exc:
        return None, [problem_from_error(exc, path)]
    return parse_scoring(path, data)


# --- applying the rules: pure functions of their inputs and `now` ---------------------

#: Stages scoring moves leads between; the others are sales' answers and stay put.
SCORED_STAGES = ("cold", "warm", "hot")


def half_life_seconds(rules: ScoringRules) -> float | None:
    """The half-life in seconds, or ``None`` when engagement does not decay."""
    if rules.half_life is None:
        return None
    unit = {"minutes": 60, "hours": 3600, "days": 86400, "weeks": 604800}[rules.half_life.unit]
    return float(rules.half_life.amount * unit)


def decayed(value: float, since: datetime, now: datetime, rules: ScoringRules) -> float:
    """*value* as of *since*, decayed to *now*."""
    half_life = half_life_seconds(rules)
    if half_life is None or now <= since:
        return value
    return value * 0.5 ** ((now - since).total_seconds() / half_life)


def scores_now(rules: ScoringRules | None, lead: Any, now: datetime) -> Scores:
    """A lead's scores at *now*, as expressions see them: its engagement decayed to *now*
    (by *rules*' half-life; as stored when the rules cannot be read) and its fit."""
    engagement = float(lead.engagement or 0.0)
    if rules is not None and lead.scored_at is not None:
        engagement = decayed(engagement, lead.scored_at, now, rules)
    return Scores(engagement, float(lead.fit or 0.0))


def event_points(rules: ScoringRules, type: str, machine: bool, counted_today: int) -> float:
    """The points an event earns: none for a machine's, none past the daily cap."""
    rule = rules.engagement.get(type)
    if rule is None or machine or type in UNSCORED:
        return 0.0
    if rule.max_per_day is not None and counted_today >= rule.max_per_day:
        return 0.0
    return rule.points


def fit_of(rules: ScoringRules, lead: Any, now: datetime) -> tuple[float, list[FitRule]]:
    """The fit score of a lead (a :class:`~nurture.language.expressions.LeadView`) and the rules
    that matched; a rule that cannot be evaluated for this lead does not match."""
    from nurture.language.expressions import EventSet, context, truth

    names = context(lead, EventSet(), now=now)
    matched = []
    for rule in rules.fit:
        try:
            if truth(rule.condition, names):
                matched.append(rule)
        except InvalidValueError:
            continue
    return sum(rule.points for rule in matched), matched


#: Scores are compared as sales reads them, to two decimals: a reply (20) and a form
#: (10) a minute apart make 30, not 29.9999.
PRECISION = 2
#: How far below a threshold decay must take engagement before a lead leaves the stage.
TOLERANCE = 0.5 * 10**-PRECISION


def reaches(rules: ScoringRules, stage: str, engagement: float, fit: float) -> bool:
    """Whether scores meet *stage*'s thresholds (compared to two decimals)."""
    threshold = rules.stages.get(stage)
    return (
        threshold is not None
        and round(engagement, PRECISION) >= threshold.engagement
        and round(fit, PRECISION) >= threshold.fit
    )


def implied_stage(rules: ScoringRules, engagement: float, fit: float, approachable: bool) -> str:
    """The stage the scores alone give: ``hot`` (which also needs an approachable lead),
    ``warm`` or ``cold``."""
    if approachable and reaches(rules, "hot", engagement, fit):
        return "hot"
    if reaches(rules, "warm", engagement, fit) or reaches(rules, "hot", engagement, fit):
        return "warm" if "warm" in rules.stages else "cold"
    return "cold"


#: The order of the scored stages, coldest first.
STAGE_RANK = {name: rank for rank, name in enumerate(SCORED_STAGES)}


def stage_reached(
    rules: ScoringRules,
    engagement_now: float,
    peak: float | None,
    fit: float,
    approachable: bool,
) -> str:
    """The stage a lead is at *now*: the one its scores give now, or, when an event of
    this look took it higher, the one it reached at that event's moment (*peak*: its
    engagement just after the event, as of the event). A threshold is crossed when the
    event happens, not when a pass gets round to it."""
    now_stage = implied_stage(rules, engagement_now, fit, approachable)
    if peak is None:
        return now_stage
    at_event = implied_stage(rules, peak, fit, approachable)
    return at_event if STAGE_RANK[at_event] > STAGE_RANK[now_stage] else now_stage


def falls_below_at(
    rules: ScoringRules, stage: str, engagement: float, since: datetime
) -> datetime | None:
    """When decay takes *engagement* (as of *since*) below the threshold that keeps a
    lead at *stage*; ``None`` if it never does."""
    threshold = rules.stages.get(stage)
    half_life = half_life_seconds(rules)
    if stage not in ("warm", "hot") or threshold is None or half_life is None:
        return None
    if threshold.engagement <= 0 or engagement <= 0:
        return None
    floor = threshold.engagement - TOLERANCE
    if engagement < floor:
        return since
    seconds = half_life * math.log2(engagement / floor)
    return since + timedelta(seconds=seconds + 1)
