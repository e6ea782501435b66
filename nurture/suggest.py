"""Did-you-mean hints for words a person typed: one rule for every message."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def close_match(word: str, choices: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The choice closest to *word*, or ``None`` when nothing is close."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=cutoff)
    return close[0] if close else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the choice closest to *word*, or ``""``."""
    close = close_match(word, choices)
    return f" (did you mean '{close}'?)" if close else ""
