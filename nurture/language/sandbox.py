"""Jinja2's sandbox with bounds: what a marketer writes may fail, never hang or eat memory.

Templates, subjects, task notes and expressions all run in :class:`BoundedSandbox`.
Beyond what Jinja2's sandbox refuses (unsafe attributes), it refuses:

- powers whose result would exceed :data:`MAX_POWER_BITS` bits (``9 ** (9 ** 9)``);
- strings and lists built larger than :data:`MAX_SIZE` items by ``*``, ``+``, ``~`` or
  a padding filter or method (``"a" * 10 ** 9``, ``"x" | center(10 ** 9)``);
- more than :data:`MAX_RANGE_ITEMS` items from ``range``, or :data:`MAX_LOOP_STEPS`
  steps of ``{% for %}`` loops, in one rendering (two nested ``range(100000)`` loops);
- any work past a deadline (:func:`bounded`, :data:`RENDER_SECONDS` by default),
  checked at every call, attribute, item, operator and loop step of ``range``.

Each refusal is a :class:`jinja2.sandbox.SecurityError`, so callers report it as the
template's or the expression's problem, with its line.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.sandbox import SandboxedEnvironment, SecurityError

#: The largest string or list a template may build (characters or items).
MAX_SIZE = 1_000_000
#: The largest power a template may compute, in bits of the result.
MAX_POWER_BITS = 65_536
#: Items ``range`` may give in one rendering, all loops together.
MAX_RANGE_ITEMS = 200_000
#: Steps of ``{% for %}`` loops in one rendering, all loops together.
MAX_LOOP_STEPS = 1_000_000
#: The global every ``{% for %}`` loop's iterable is passed through.
LOOP_GUARD = "_nurture_loop"
#: How long one rendering or one expression may take.
RENDER_SECONDS = 2.0
#: String methods that pad or repeat by a number they are given.
_PADDING_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs", "format"})
#: A width or precision of seven digits or more in a format string.
_HUGE_WIDTH = re.compile(r"\d{7,}")


@dataclass
class _Budget:
    deadline: float
    seconds: float
    range_items: int = 0
    loop_steps: int = 0


_budget: ContextVar[_Budget | None] = ContextVar("nurture_render_budget", default=None)


@contextmanager
def bounded(seconds: float = RENDER_SECONDS) -> Iterator[None]:
    """Bound the renderings and evaluations inside the block to *seconds* and to one
    shared ``range`` allowance. Nested blocks keep the outer, earlier deadline."""
    outer = _budget.get()
    if outer is not None:
        yield
        return
    token = _budget.set(_Budget(time.monotonic() + seconds, seconds))
    try:
        yield
    finally:
        _budget.reset(token)


def _tick() -> None:
    budget = _budget.get()
    if budget is not None and time.monotonic() > budget.deadline:
        raise SecurityError(f"took longer than {budget.seconds:g} seconds: stopped")


def _sized(value: Any) -> Any:
    if isinstance(value, (str, list, tuple)) and len(value) > MAX_SIZE:
        raise SecurityError(f"builds a value of over {MAX_SIZE:,} characters or items")
    return value


def _length(value: Any) -> int | None:
    """The characters or items *value* holds, strings inside a list counted by their
    characters (a list of one long string repeated must not pass as short)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, (list, tuple)):
        return sum(len(item) if isinstance(item, str) else 1 for item in value)
    return None


def _check_count(count: Any) -> None:
    if isinstance(count, int) and count > MAX_SIZE:
        raise SecurityError(f"a width or count of {count:,} is over the limit of {MAX_SIZE:,}")


def _check_format(text: Any) -> None:
    if isinstance(text, str) and _HUGE_WIDTH.search(text):
        raise SecurityError("a format width or precision is over the limit")


def _bounded_range(*args: int) -> range:
    """``range`` as Jinja2 knows it (a real range: ``|length``, indexing), counted against
    the rendering's budget; loops over it are ticked by the loop guard."""
    numbers = range(*args)
    budget = _budget.get()
    if budget is not None and budget.range_items + len(numbers) > MAX_RANGE_ITEMS:
        raise SecurityError(f"range() gives more than {MAX_RANGE_ITEMS:,} items in one rendering")
    if budget is not None:
        budget.range_items += len(numbers)
    return numbers


def _guarded_loop(iterable: Any) -> Iterator[Any]:
    budget = _budget.get()
    for step, item in enumerate(iterable):
        if step % 256 == 0:
            _tick()
            if budget is not None:
                budget.loop_steps += 256
                if budget.loop_steps > MAX_LOOP_STEPS:
                    raise SecurityError(
                        f"loops ran more than {MAX_LOOP_STEPS:,} steps in one rendering"
                    )
        yield item


class _SizedConcat(CodeGenerator):
    """Compiles ``a ~ b`` so that the joined string is checked against :data:`MAX_SIZE`."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.sized(")
        super().visit_Concat(node, frame)
        self.write(")")


class BoundedSandbox(SandboxedEnvironment):
    """A :class:`SandboxedEnvironment` that refuses runaway work (see the module)."""

    code_generator_class = _SizedConcat
    intercepted_binops = frozenset({"**", "*", "+"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.globals["range"] = _bounded_range
        self.globals[LOOP_GUARD] = _guarded_loop
        for name in ("center", "indent"):
            self.filters[name] = _guarded_filter(self.filters[name])
        self.filters["format"] = _guarded_format(self.filters["format"])
        self.filters["join"] = _guarded_join(self.filters["join"])
        for name, function in list(self.filters.items()):  # every result is sized
            self.filters[name] = _sized_result(function)

    def make_globals(self, d: MutableMapping[str, Any] | None) -> MutableMapping[str, Any]:
        """A template's globals as one dict: the environment's (set in :meth:`__init__`,
        never changed after: Jinja2 asks the same), under the template's own. Jinja2's
        ``ChainMap`` gives the same names, but every rendering copies it, key by key in
        Python, into the rendering's context: most of what a short template costs."""
        return {**self.globals, **(d or {})}

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        """Parse, then pass every ``{% for %}`` loop's iterable through the loop guard."""
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            guard = nodes.Name(LOOP_GUARD, "load", lineno=loop.lineno)
            loop.iter = nodes.Call(guard, [loop.iter], [], None, None, lineno=loop.lineno)
        tree.set_environment(self)
        return tree

    @staticmethod
    def sized(value: Any) -> Any:
        """Refuse a joined value over :data:`MAX_SIZE` (called by compiled ``~``)."""
        _tick()
        return _sized(value)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _tick()
        if operator == "**" and isinstance(left, int) and isinstance(right, int):
            if right > 0 and abs(left) > 1 and left.bit_length() * right > MAX_POWER_BITS:
                raise SecurityError(f"{left} ** {right} is too large to compute")
        if operator == "*":
            for sequence, count in ((left, right), (right, left)):
                length = _length(sequence)
                if length is not None and isinstance(count, int) and length * count > MAX_SIZE:
                    raise SecurityError(f"builds a value of over {MAX_SIZE:,} characters or items")
        if operator == "+":
            a, b = _length(left), _length(right)
            if a is not None and b is not None and a + b > MAX_SIZE:
                raise SecurityError(f"builds a value of over {MAX_SIZE:,} characters or items")
        return super().call_binop(context, operator, left, right)

    def getattr(self, obj: Any, attribute: str) -> Any:
        _tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _tick()
        return super().getitem(obj, argument)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _tick()
        if isinstance(getattr(__obj, "__self__", None), str):
            name = getattr(__obj, "__name__", "")
            if name in _PADDING_METHODS:
                for value in (*args, *kwargs.values()):
                    _check_count(value)
                if name == "format":
                    _check_format(__obj.__self__)
        return _sized(super().call(__context, __obj, *args, **kwargs))


def _guarded_filter(function: Any) -> Any:
    """A padding filter that refuses a width over :data:`MAX_SIZE`."""

    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _tick()
        for argument in (*args, *kwargs.values()):
            _check_count(argument)
        return _sized(function(*args, **kwargs))

    return guarded


def _sized_result(function: Any) -> Any:
    """A filter whose result is refused past :data:`MAX_SIZE`."""

    @functools.wraps(function)
    def sized(*args: Any, **kwargs: Any) -> Any:
        _tick()
        return _sized(function(*args, **kwargs))

    return sized


def _guarded_join(function: Any) -> Any:
    """``join``, refusing before it builds a string past :data:`MAX_SIZE`."""

    @functools.wraps(function)
    def guarded(eval_ctx: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
        items = list(value) if not isinstance(value, str) else value
        total = sum(len(item) if isinstance(item, str) else 1 for item in items)
        if total > MAX_SIZE:
            raise SecurityError(f"builds a value of over {MAX_SIZE:,} characters or items")
        return function(eval_ctx, items, *args, **kwargs)

    return guarded


def _guarded_format(function: Any) -> Any:
    """The ``format`` filter, refusing huge widths in the format string."""

    @functools.wraps(function)
    def guarded(value: Any, *args: Any, **kwargs: Any) -> Any:
        _tick()
        _check_format(value)
        return _sized(function(value, *args, **kwargs))

    return guarded
