"""``nurture report handoffs``: how the written definition of a hot lead is doing. What
sales answered to the hand-offs, per rule of ``scoring.yaml`` that contributed to them,
sales' reasons counted, and plain suggestions once enough answers support them.

Reading the database (:func:`gather`) is apart from the arithmetic (:func:`summarize`,
a pure function of the hand-offs as :class:`Row` values and the rules)."""

from __future__ import annotations

import html
import statistics
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from nurture.language.expressions import LeadView
from nurture.language.scoring import ScoringRules, fit_label, fit_of
from nurture.store.events import Event
from nurture.store.handoffs import Handoff, HandoffStatus
from nurture.store.leads import Lead

ANSWERS = ("accepted", "rejected", "recycled", "waiting")
#: Suggestions need at least this many answered hand-offs...
MIN_ANSWERED = 20
#: ...at least this many of them on the side of a rule that a suggestion is about...
MIN_GROUP = 10
#: ...and at least this share of them rejected.
REJECTED_SHARE = 0.6


@dataclass(frozen=True)
class Row:
    """One hand-off as the report reads it."""

    answer: str  # one of ANSWERS
    became_hot_at: datetime
    answered_at: datetime | None
    reason: str
    customer: bool
    #: The rules that contributed: ``(kind, rule)`` with kind ``engagement``, ``fit``
    #: or ``hot_on``; the rule is an event type or a fit rule's label.
    rules: frozenset[tuple[str, str]] = field(default_factory=frozenset)


def _answer(status: str) -> str:
    return "waiting" if status == HandoffStatus.pending else status


def gather(session: Session, rules: ScoringRules | None, since: datetime | None,
           now: datetime) -> list[Row]:  # fmt: skip
    """The hand-offs made by the scores (not claims, not superseded) since *since*, with
    the rules that contributed: the engagement events and ``hot_on`` events the lead
    earned points with before it turned hot (since its last recycle), and the fit rules
    it matches."""
    query = (
        select(Handoff, Lead)
        .join(Lead, col(Lead.id) == Handoff.lead_id)
        .where(col(Handoff.stage_event_id).is_not(None))
        .where(Handoff.status != HandoffStatus.superseded.value)
        .order_by(col(Handoff.id))
    )
    if since is not None:
        query = query.where(col(Handoff.became_hot_at) >= since)
    found = list(session.exec(query))
    types: dict[int, list[tuple[str, datetime]]] = {}
    ids = sorted({lead.id for _, lead in found if lead.id is not None})
    for start in range(0, len(ids), 500):
        for lead_id, type_, moment in session.exec(
            select(Event.lead_id, Event.type, Event.occurred_at)
            .where(col(Event.lead_id).in_(ids[start : start + 500]))
            .where(col(Event.points) > 0)
            .where(col(Event.machine).is_(False))
        ):
            types.setdefault(lead_id, []).append((type_, moment))
    rows = []
    for handoff, lead in found:
        contributed: set[tuple[str, str]] = set()
        floor = lead.score_reset_at if lead.score_reset_at and lead.score_reset_at < (
            handoff.became_hot_at) else None  # fmt: skip
        for type_, moment in types.get(lead.id or 0, []):
            if moment <= handoff.became_hot_at and (floor is None or moment >= floor):
                if rules is not None and type_ in rules.hot_on:
                    contributed.add(("hot_on", type_))
                if rules is None or type_ in rules.engagement:
                    contributed.add(("engagement", type_))
        if rules is not None:
            _, matched = fit_of(rules, LeadView.of(lead), now)
            contributed |= {("fit", fit_label(rule)) for rule in matched}
        rows.append(Row(
            answer=_answer(handoff.status), became_hot_at=handoff.became_hot_at,
            answered_at=handoff.answered_at, reason=(handoff.reason or "").strip(),
            customer=handoff.status == HandoffStatus.accepted and lead.stage == "customer",
            rules=frozenset(contributed),
        ))  # fmt: skip
    return rows


def _all_rules(rules: ScoringRules | None, rows: list[Row]) -> list[tuple[str, str]]:
    """Every rule of scoring.yaml (and any other that contributed), in the file's order."""
    listed: list[tuple[str, str]] = []
    if rules is not None:
        listed += [("engagement", name) for name in rules.engagement]
        listed += [("fit", fit_label(rule)) for rule in rules.fit]
        listed += [("hot_on", name) for name in rules.hot_on]
    seen = set(listed)
    listed += sorted({r for row in rows for r in row.rules} - seen)
    return list(dict.fromkeys(listed))


def percent(part: int, whole: int) -> str:
    return f"{round(100 * part / whole)} %"


def suggestions(rows: list[Row], rules: list[tuple[str, str]]) -> list[str]:
    """Plain suggestions, each supported by at least :data:`MIN_ANSWERED` answers."""
    answered = [row for row in rows if row.answer != "waiting"]
    if len(answered) < MIN_ANSWERED:
        return []
    said = []
    for kind, rule in rules:
        if kind == "fit":
            without = [row for row in answered if (kind, rule) not in row.rules]
            rejected = sum(row.answer == "rejected" for row in without)
            if len(without) >= MIN_GROUP and rejected >= REJECTED_SHARE * len(without):
                said.append(
                    f'Leads handed off without "{rule}" were rejected {rejected} times out '
                    f"of {len(without)} ({percent(rejected, len(without))}): consider "
                    "requiring it for hot."
                )
        else:
            having = [row for row in answered if (kind, rule) in row.rules]
            rejected = sum(row.answer == "rejected" for row in having)
            if len(having) >= MIN_GROUP and rejected >= REJECTED_SHARE * len(having):
                fix = "fewer points" if kind == "engagement" else "no place in hot_on"
                said.append(
                    f'Hand-offs with "{rule}" were rejected {rejected} times out of '
                    f"{len(having)} ({percent(rejected, len(having))}): consider giving it "
                    f"{fix}."
                )
    return said


def summarize(rows: list[Row], rules: ScoringRules | None) -> dict[str, Any]:
    """The report's figures (the ``--json`` contract)."""
    answers = Counter(row.answer for row in rows)
    hours = [
        (row.answered_at - row.became_hot_at) / timedelta(hours=1)
        for row in rows
        if row.answered_at is not None and row.answer != "waiting"
    ]
    listed = _all_rules(rules, rows)
    per_rule = []
    for kind, rule in listed:
        having = [row for row in rows if (kind, rule) in row.rules]
        per_rule.append({
            "rule": rule, "kind": kind, "handoffs": len(having),
            **{a: sum(row.answer == a for row in having)
               for a in ("accepted", "rejected", "recycled")},
        })  # fmt: skip
    reasons = Counter(
        (row.answer, row.reason) for row in rows if row.answer in ("rejected", "recycled")
        and row.reason
    )  # fmt: skip
    return {
        "handoffs": len(rows),
        "answers": {answer: answers.get(answer, 0) for answer in ANSWERS},
        "median_hours_to_answer": round(statistics.median(hours), 1) if hours else None,
        "customers": sum(row.customer for row in rows),
        "rules": per_rule,
        "reasons": [
            {"answer": answer, "reason": reason, "count": count}
            for (answer, reason), count in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
        "suggestions": suggestions(rows, listed),
    }


def by_week(rows: list[Row]) -> list[tuple[str, Counter[str]]]:
    """Answers by the week the lead turned hot (Monday's date), oldest first."""
    weeks: dict[str, Counter[str]] = {}
    for row in sorted(rows, key=lambda r: r.became_hot_at):
        monday = (row.became_hot_at - timedelta(days=row.became_hot_at.weekday())).date()
        weeks.setdefault(monday.isoformat(), Counter())[row.answer] += 1
    return list(weeks.items())


COLORS = {"accepted": "#2f7d32", "rejected": "#c62828", "recycled": "#ef8f00",
          "waiting": "#9e9e9e"}  # fmt: skip


def _bar(counts: dict[str, int]) -> str:
    """A stacked bar of answers, as plain HTML (no script)."""
    total = sum(counts.get(a, 0) for a in ANSWERS) or 1
    parts = "".join(
        f'<span style="width:{100 * counts.get(a, 0) / total:.1f}%;background:{COLORS[a]}" '
        f'title="{a}: {counts.get(a, 0)}"></span>'
        for a in ANSWERS if counts.get(a, 0)
    )  # fmt: skip
    figures = ", ".join(f"{counts.get(a, 0)} {a}" for a in ANSWERS if counts.get(a, 0))
    return f'<div class="bar">{parts}</div><div class="small">{html.escape(figures)}</div>'


def to_html(data: dict[str, Any], rows: list[Row], project: str) -> str:
    """The report as one server-rendered page, readable on a phone."""
    e = html.escape
    a = data["answers"]
    out = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Hot-lead definition: {e(project)}</title><style>",
        "body{font:16px/1.5 system-ui,sans-serif;max-width:46rem;margin:auto;padding:1rem}",
        ".bar{display:flex;height:1.1rem;background:#eee;border-radius:3px;overflow:hidden}",
        ".bar span{display:block}.small{font-size:.85rem;color:#555;margin-bottom:.6rem}",
        "table{border-collapse:collapse;width:100%}td,th{padding:.25rem;text-align:left;",
        "border-bottom:1px solid #ddd}td.n{text-align:right}</style></head><body>",
        "<h1>How our hot-lead definition is doing</h1>",
        f"<p>{data['handoffs']} hand-offs: {a['accepted']} accepted, {a['rejected']} rejected,"
        f" {a['recycled']} recycled, {a['waiting']} waiting. Median time to answer: "
        f"{data['median_hours_to_answer'] if data['median_hours_to_answer'] is not None else '-'}"
        f" hours. Accepted leads that became customers: {data['customers']}.</p>",
    ]
    if data["suggestions"]:
        out.append("<h2>Suggestions</h2><ul>")
        out += [f"<li>{e(text)}</li>" for text in data["suggestions"]]
        out.append("</ul>")
    out.append("<h2>Answers by week</h2>")
    for week, counts in by_week(rows):
        out.append(f"<div>Week of {e(week)}</div>{_bar(dict(counts))}")
    out.append("<h2>Answers by rule</h2>")
    for rule in data["rules"]:
        if rule["handoffs"]:
            shares = {k: int(rule[k]) for k in ("accepted", "rejected", "recycled")}
            shares["waiting"] = rule["handoffs"] - sum(shares.values())
            out.append(f"<div>{e(rule['rule'])} <span class=small>({e(rule['kind'])}, "
                       f"{rule['handoffs']} hand-offs)</span></div>{_bar(shares)}")  # fmt: skip
    if data["reasons"]:
        out.append("<h2>Sales' reasons</h2><table><tr><th>answer</th><th>reason</th>"
                   "<th>times</th></tr>")  # fmt: skip
        out += [f"<tr><td>{e(r['answer'])}</td><td>{e(r['reason'])}</td>"
                f"<td class=n>{r['count']}</td></tr>" for r in data["reasons"]]  # fmt: skip
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out)
