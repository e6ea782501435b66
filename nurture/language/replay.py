"""Replaying a lead's events under scoring rules, in memory: what its engagement would
be, under rules that may differ from those its stored scores were computed with. Pure:
a function of the rules, the events and the moments asked about."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from zoneinfo import ZoneInfo

from nurture.language.scoring import ScoringRules, decayed, event_points
from nurture.language.timing import day_start


def replay(
    rules: ScoringRules,
    events: Iterable[tuple[str, datetime, bool]],
    until: datetime,
    *,
    since: datetime | None = None,
    tz: ZoneInfo,
) -> tuple[float, float]:
    """Score *events* (``(type, moment, machine)``) between *since* and *until*, oldest
    first, daily caps counted by the lead's day (in *tz*): the engagement at *until*, and
    the engagement just after the last event (as of that event: what a threshold is
    compared with when the event happens)."""
    engagement, at = 0.0, None
    counted: dict[tuple[str, datetime], int] = {}
    for type_, moment, machine in sorted(events, key=lambda e: e[1]):
        if moment > until or (since is not None and moment < since):
            continue
        key = (type_, day_start(moment, tz))
        points = event_points(rules, type_, machine, counted.get(key, 0))
        if points > 0:
            counted[key] = counted.get(key, 0) + 1
        engagement = (decayed(engagement, at, moment, rules) if at else engagement) + points
        at = moment
        if type_ in rules.hot_on and not machine and "hot" in rules.stages:
            engagement = max(engagement, rules.stages["hot"].engagement)
    if at is None:
        return 0.0, 0.0
    return decayed(engagement, at, until, rules), engagement
