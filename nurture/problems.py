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
