"""How the report writes its figures for people: rates per delivered email, a count with
its rate, how sure an A/B difference is, a dash for nothing yet."""

from __future__ import annotations

from typing import Any

#: Rates per delivered email, as the report shows them.
RATES = {"opened": "open_rate", "clicked": "click_rate", "replied": "reply_rate",
         "unsubscribed": "unsubscribe_rate"}  # fmt: skip


def rates(numbers: dict[str, int]) -> dict[str, float | None]:
    """Opens, clicks, replies and unsubscribes per delivered email (``None``: none yet)."""
    delivered = numbers.get("delivered", 0)
    return {
        name: round(numbers.get(count, 0) / delivered, 4) if delivered else None
        for count, name in RATES.items()
    }


def counted(row: dict[str, Any], what: str) -> str:
    """``3 (30%)``: a count with its rate per delivered email."""
    rate = row.get(RATES[what])
    return f"{row[what]} ({100 * rate:.0f}%)" if rate is not None else str(row[what])


def confidence(p_value: float | None) -> str:
    """How sure a difference is, in words."""
    if p_value is None:
        return "not enough data"
    if p_value < 0.01:
        return f"very likely real (p={p_value:.3f})"
    if p_value < 0.05:
        return f"likely real (p={p_value:.3f})"
    return f"could be chance (p={p_value:.2f})"


def shown(value: object) -> str:
    """A figure for people: ``-`` where there is none yet (never ``None``)."""
    return "-" if value is None else str(value)
