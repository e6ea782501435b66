"""The one expression language of sequences and scoring: Jinja2 expressions, evaluated in
the sandbox.

Names an expression can use: ``lead`` (fields and custom attributes as ``lead.NAME``),
``opened(step)``, ``clicked(step)``, ``replied(step=None)``, ``occurred(event, step=None)``,
``outcome(step)`` (what sales recorded when doing the task at that step, or ``None``),
``engagement``, ``fit``, ``stage`` and ``now``. What the engagement helpers answer comes
from an :class:`Engagement` the caller supplies: recorded events in the daemon, assumed
ones in ``nurture simulate``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any, Protocol

from jinja2 import StrictUndefined, TemplateError, Undefined, nodes

from nurture.errors import InvalidValueError, NurtureError
from nurture.language.sandbox import BoundedSandbox, bounded
from nurture.language.wording import syntax, undefined
from nurture.suggest import did_you_mean

#: Helpers that take a step id as their first argument.
STEP_HELPERS = ("opened", "clicked", "replied", "outcome")
#: Every name an expression may use.
#: The names that ask what the lead did (its events).
EVENT_HELPERS = frozenset({*STEP_HELPERS, "occurred"})
NAMES = ("lead", *STEP_HELPERS, "occurred", "engagement", "fit", "stage", "now")


class View:
    """Read-only ``view.NAME`` access to a mapping, for expressions and templates.

    Missing names are undefined (so ``is defined`` and ``| default`` work); private
    names never resolve in the sandbox.
    """

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("read-only")

    def get(self, name: str, default: Any = None) -> Any:
        return self._values.get(name, default)

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {sorted(self._values)}>"


class LeadView(View):
    """A lead as expressions and templates see it: ``lead.NAME`` for fields and custom
    attributes; empty fields are undefined, so ``lead.title is defined`` means "known"."""

    __slots__ = ()

    @classmethod
    def of(cls, lead: Any) -> LeadView:
        """A view of a :class:`~nurture.store.leads.Lead` (or anything with ``to_dict``)."""
        data = lead.to_dict()
        values = {key: value for key, value in (data.pop("attributes") or {}).items()}
        values.update({key: value for key, value in data.items() if value not in (None, "")})
        values["name"] = " ".join(
            part for part in (data.get("first_name"), data.get("last_name")) if part
        ) or data.get("email")
        return cls(values)

    def __repr__(self) -> str:
        return f"<lead {self._values.get('email', '?')}>"


class Engagement(Protocol):
    """What has happened to a lead, as the engagement helpers ask it."""

    def occurred(self, event: str, step: str | None = None) -> bool: ...

    def outcome(self, step: str) -> str | None:
        """The outcome recorded for the task at *step*, or ``None`` (not done, or none)."""
        ...

    def said(self, event: str) -> str | None:
        """What the latest *event* says in words, when it says more than its name
        (``Ana Ruiz at BrightPath replied``); ``None`` otherwise."""
        ...


@dataclass
class EventSet:
    """An :class:`Engagement` over a set of ``(event, step)`` pairs and task outcomes."""

    events: set[tuple[str, str | None]] = field(default_factory=set)
    outcomes: dict[str, str] = field(default_factory=dict)

    def add(self, event: str, step: str | None = None) -> None:
        self.events.add((event, step))

    def outcome(self, step: str) -> str | None:
        return self.outcomes.get(step)

    def occurred(self, event: str, step: str | None = None) -> bool:
        if step is None:
            return any(name == event for name, _ in self.events)
        return (event, step) in self.events

    def said(self, event: str) -> str | None:
        return None


@cache
def environment() -> BoundedSandbox:
    """The sandboxed, bounded, strict environment expressions are compiled in."""
    return BoundedSandbox(undefined=StrictUndefined)


@dataclass(frozen=True)
class Expression:
    """A compiled expression with the step ids it names."""

    source: str
    #: Step ids passed to ``opened``/``clicked``/``replied`` as literals.
    steps: tuple[str, ...]
    _compiled: Callable[..., Any] = field(repr=False, compare=False)
    #: Event names passed to ``occurred`` as literals.
    events: tuple[str, ...] = ()
    #: ``(step, value)``: each literal an ``outcome('step')`` is compared with.
    outcomes: tuple[tuple[str, str], ...] = ()
    #: Whether it asks what the lead did (``opened``, ``occurred``, ``outcome``...): an
    #: expression that does not can be evaluated without reading the lead's events.
    reads_events: bool = True

    def evaluate(self, context: Mapping[str, Any]) -> Any:
        """The value of the expression; raise :class:`InvalidValueError` if it fails."""
        try:
            with bounded():
                value = self._compiled(**context)
        except TemplateError as exc:
            message = undefined(exc.message or str(exc))
            raise InvalidValueError(f"{self.source!r}: {message}") from None
        except RecursionError:
            raise InvalidValueError(f"{self.source!r}: recursion too deep") from None
        except NurtureError:
            raise
        except Exception as exc:
            raise InvalidValueError(f"{self.source!r}: {exc}") from None
        if isinstance(value, Undefined):
            raise InvalidValueError(f"{self.source!r}: {undefined(value._undefined_message)}")
        return value


def compile_expression(source: Any, extra_names: tuple[str, ...] = ()) -> Expression:
    """Parse and check *source*; raise :class:`InvalidValueError` saying what is wrong."""
    if not isinstance(source, str) or not source.strip():
        raise InvalidValueError("an expression must be a non-empty string")
    env = environment()
    try:
        compiled = env.compile_expression(source, undefined_to_none=False)
        tree = env.parse("{{ (" + source + ") }}")
    except TemplateError as exc:
        raise InvalidValueError(
            f"expression {source!r} does not parse: {syntax(exc.message or str(exc))}"
        ) from None
    except (RecursionError, MemoryError):
        shown = source if len(source) <= 60 else source[:57] + "..."
        raise InvalidValueError(f"expression {shown!r} is nested too deeply to read") from None
    known = (*NAMES, *extra_names)
    for name in tree.find_all(nodes.Name):
        if name.ctx == "load" and name.name not in known and name.name not in env.globals:
            hint = did_you_mean(name.name, known)
            raise InvalidValueError(f"expression {source!r} uses unknown name '{name.name}'{hint}")
    steps = []
    for call in tree.find_all(nodes.Call):
        if isinstance(call.node, nodes.Name) and call.node.name in STEP_HELPERS and call.args:
            first = call.args[0]
            if isinstance(first, nodes.Const) and isinstance(first.value, str):
                steps.append(first.value)
    reads_events = any(
        name.name in EVENT_HELPERS for name in tree.find_all(nodes.Name) if name.ctx == "load"
    )
    return Expression(source, tuple(steps), compiled, _events(tree), _outcome_values(tree),
                      reads_events)  # fmt: skip


def _literal(node: nodes.Node) -> str | None:
    return node.value if isinstance(node, nodes.Const) and isinstance(node.value, str) else None


def _events(tree: nodes.Node) -> tuple[str, ...]:
    """The event names ``occurred('name', ...)`` is called with, as literals."""
    names = []
    for call in tree.find_all(nodes.Call):
        if isinstance(call.node, nodes.Name) and call.node.name == "occurred" and call.args:
            name = _literal(call.args[0])
            if name is not None:
                names.append(name)
    return tuple(names)


def _outcome_step(node: nodes.Node) -> str | None:
    """The step of ``outcome('step')``, when *node* is that call."""
    if (
        isinstance(node, nodes.Call)
        and isinstance(node.node, nodes.Name)
        and node.node.name == "outcome"
        and node.args
    ):
        return _literal(node.args[0])
    return None


def _outcome_values(tree: nodes.Node) -> tuple[tuple[str, str], ...]:
    """``(step, value)`` for each literal compared with ``outcome('step')``:
    ``outcome('call') == 'qualified'``, ``!=``, ``in ('a', 'b')``, and the other way round."""
    found: list[tuple[str, str]] = []
    for compare in tree.find_all(nodes.Compare):
        sides = [compare.expr, *(operand.expr for operand in compare.ops)]
        steps = [step for side in sides if (step := _outcome_step(side)) is not None]
        if not steps:
            continue
        for side in sides:
            items = side.items if isinstance(side, nodes.Tuple | nodes.List) else [side]
            for item in items:
                value = _literal(item)
                if value is not None:
                    found.extend((step, value) for step in steps)
    return tuple(found)


@dataclass(frozen=True)
class Scores:
    """A lead's scores at one moment: ``engagement`` (decayed to that moment) and
    ``fit``, as expressions see them."""

    engagement: float = 0.0
    fit: float = 0.0


#: A lead nothing has been scored for.
NO_SCORES = Scores()


def context(
    lead: LeadView, engagement: Engagement, *, now: datetime, scores: Scores = NO_SCORES
) -> dict[str, Any]:
    """The names an expression sees, for one lead at one moment."""

    def opened(step: str | None = None) -> bool:
        return engagement.occurred("email_opened", step)

    def clicked(step: str | None = None) -> bool:
        return engagement.occurred("email_clicked", step)

    def replied(step: str | None = None) -> bool:
        return engagement.occurred("email_replied", step)

    def occurred(event: str, step: str | None = None) -> bool:
        return engagement.occurred(event, step)

    def outcome(step: str) -> str | None:
        return engagement.outcome(step)

    return {
        "lead": lead,
        "opened": opened,
        "clicked": clicked,
        "replied": replied,
        "occurred": occurred,
        "outcome": outcome,
        "engagement": scores.engagement,
        "fit": scores.fit,
        "stage": lead.get("stage", "cold"),
        "now": now,
    }


def truth(expression: Expression, names: Mapping[str, Any]) -> bool:
    """Evaluate *expression* as a condition."""
    return bool(expression.evaluate(names))
