"""Named points in the engine where a test steps in, to make two loops meet in one
exact order (an erasure while a pass writes, an opt-out between two sends).

Nothing is registered in production: reaching a point costs one dict lookup. A test
registers a callable for the length of a ``with`` block (:func:`at`); the callable
runs in the thread that reaches the point, with what the point passes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

_points: dict[str, Callable[..., None]] = {}


def reach(name: str, *args: Any) -> None:
    """The engine reached the point *name*: run what a test registered there, if any."""
    step = _points.get(name)
    if step is not None:
        step(*args)


@contextmanager
def at(name: str, step: Callable[..., None]) -> Iterator[None]:
    """Run *step* whenever the point *name* is reached, inside the block."""
    _points[name] = step
    try:
        yield
    finally:
        _points.pop(name, None)
