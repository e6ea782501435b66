"""Problems found in files people write: each one is a ``path:line: message`` line."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong in one place of one file."""

    path: str
    #: 1-based line, or ``None`` when the problem is about the whole file.
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.message}"


def problem_from_error(error: Exception, path: object) -> Problem:
    """Split a ``path:line: message`` error back into a :class:`Problem`."""
    text = str(error)
    prefix = f"{path}:"
    if text.startswith(prefix):
        rest = text[len(prefix) :]
        head, _, message = rest.partition(": ")
        if head.isdigit():
            return Problem(str(path), int(head), message)
        return Problem(str(path), None, rest.lstrip())
    return Problem(str(path), None, text)
