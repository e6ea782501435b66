"""``nurture report``: the funnel, step by step, from the database.

:func:`funnel` gathers the numbers (a plain dict, the same for the terminal, JSON and
HTML); :func:`to_html` renders a single self-contained page with inline SVG charts.
"""

from __future__ import annotations

import html
import itertools
import math
import statistics
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from nurture.store.enrollments import DeployedSequence
from nurture.store.events import Event
from nurture.store.handoffs import Handoff
from nurture.store.leads import Lead
from nurture.store.outbox import MessageKind, OutboxMessage, OutboxStatus
from nurture.store.tasks import Task, TaskStatus

ORDER = ("cold", "warm", "hot", "accepted", "customer")
STEP_COLUMNS = (
    "sent",
    "delivered",
    "bounced",
    "opened",
    "clicked",
    "replied",
    "unsubscribed",
    "tasks_done",
)


def _percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


def funnel(session: Session, *, since: datetime | None, now: datetime) -> dict[str, Any]:
    """Every number of the report."""
    stages = dict(session.exec(select(Lead.stage, func.count()).group_by(col(Lead.stage))).all())
    reached: dict[str, set[int]] = defaultdict(set)
    for lead_id, stage in session.exec(select(Lead.id, Lead.stage)):
        if stage in ORDER and lead_id is not None:
            for earlier in ORDER[: ORDER.index(stage) + 1]:
                reached[earlier].add(lead_id)
    changes = select(Event.lead_id, Event.data).where(Event.type == "stage_changed")
    for lead_id, data in session.exec(changes):
        moved_to = str((data or {}).get("to"))
        if moved_to in ORDER:
            for earlier in ORDER[: ORDER.index(moved_to) + 1]:
                reached[earlier].add(lead_id)
    for lead_id, stage in session.exec(select(Lead.id, Lead.stage)):
        if stage == "disqualified" and lead_id is not None:
            reached["cold"].add(lead_id)
    conversion = []
    for before, after in itertools.pairwise(ORDER):
        a, b = len(reached[before]), len(reached[after])
        conversion.append(
            {"from": before, "to": after, "leads": b, "rate": round(b / a, 3) if a else None}
        )

    def since_clause(column: Any) -> Any:
        return column >= since if since is not None else column.is_not(None)

    first_touch = dict(
        session.exec(
            select(Event.lead_id, func.min(Event.occurred_at))
            .where(Event.type == "email_sent")
            .group_by(col(Event.lead_id))
        ).all()
    )
    handoffs = list(session.exec(select(Handoff).where(since_clause(col(Handoff.became_hot_at)))))
    to_hot = [
        (h.became_hot_at - first_touch[h.lead_id]).total_seconds() / 86400
        for h in handoffs
        if h.lead_id in first_touch and first_touch[h.lead_id] <= h.became_hot_at
    ]
    answered = [h for h in handoffs if h.answered_at is not None]
    to_answer = [
        (h.answered_at - h.became_hot_at).total_seconds() / 3600 for h in answered if h.answered_at
    ]

    steps: dict[tuple[str, str], dict[str, int]] = defaultdict(
        lambda: dict.fromkeys(STEP_COLUMNS, 0)
    )
    emails = select(OutboxMessage.sequence, OutboxMessage.step, OutboxMessage.status, func.count())
    emails = emails.where(OutboxMessage.kind == MessageKind.email.value)
    emails = emails.where(since_clause(col(OutboxMessage.created_at)))
    for sequence, step, status, count in session.exec(
        emails.group_by(
            col(OutboxMessage.sequence), col(OutboxMessage.step), col(OutboxMessage.status)
        )
    ):
        row = steps[(sequence, step)]
        if status in (OutboxStatus.sent, OutboxStatus.bounced):
            row["sent"] += count
        if status == OutboxStatus.bounced:
            row["bounced"] += count
    kinds = {
        "email_opened": "opened",
        "email_clicked": "clicked",
        "email_replied": "replied",
        "unsubscribed": "unsubscribed",
        "email_bounced": "bounced",
    }
    counted = (
        select(Event.sequence, Event.step, Event.type, func.count(func.distinct(Event.lead_id)))
        .where(col(Event.type).in_([k for k in kinds if k != "email_bounced"]))
        .where(col(Event.machine).is_(False))
        .where(col(Event.sequence).is_not(None))
        .where(since_clause(col(Event.occurred_at)))
        .group_by(col(Event.sequence), col(Event.step), col(Event.type))
    )
    for event_sequence, event_step, type_, count in session.exec(counted):
        if event_sequence and event_step:
            steps[(event_sequence, event_step)][kinds[type_]] += count
    dsn = (
        select(Event.sequence, Event.step, func.count())
        .where(Event.type == "email_bounced")
        .where(Event.source == "imap")
        .where(since_clause(col(Event.occurred_at)))
        .group_by(col(Event.sequence), col(Event.step))
    )
    for dsn_sequence, dsn_step, count in session.exec(dsn):
        if dsn_sequence and dsn_step:
            steps[(dsn_sequence, dsn_step)]["bounced"] += count
    done = (
        select(Task.sequence, Task.step, func.count())
        .where(Task.status == TaskStatus.done.value)
        .where(since_clause(col(Task.done_at)))
        .group_by(col(Task.sequence), col(Task.step))
    )
    for task_sequence, task_step, count in session.exec(done):
        steps[(task_sequence, task_step)]["tasks_done"] += count
    order = _step_order(session)
    rows = []
    for (sequence, step), numbers in sorted(steps.items(), key=lambda item: order(*item[0])):
        numbers["delivered"] = max(numbers["sent"] - numbers["bounced"], 0)
        rows.append({"sequence": sequence, "step": step, **numbers, **rates(numbers)})
    variants = _variants(session, since_clause, order)
    weekly = _weekly(session, now, [h.became_hot_at for h in handoffs])
    statuses: defaultdict[str, int] = defaultdict(int)
    for h in handoffs:
        statuses[h.status] += 1
    return {
        "generated_at": now.isoformat(),
        "since": since.isoformat() if since else None,
        "stages": {stage: stages.get(stage, 0) for stage in (*ORDER, "disqualified")},
        "reached": {stage: len(reached[stage]) for stage in ORDER},
        "conversion": conversion,
        "days_to_hot": {
            "leads": len(to_hot),
            "median": round(statistics.median(to_hot), 2) if to_hot else None,
            "p90": round(p, 2) if (p := _percentile(to_hot, 0.9)) is not None else None,
        },
        "steps": rows,
        "variants": variants,
        "weekly": weekly,
        "handoffs": {
            "total": len(handoffs),
            **{s: statuses.get(s, 0) for s in ("pending", "accepted", "rejected", "recycled")},
            "hours_to_answer_median": round(statistics.median(to_answer), 1) if to_answer else None,
        },
    }


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


def _step_order(session: Session) -> Any:
    """A sort key putting sequences by name and their steps in the deployed order."""
    positions: dict[tuple[str, str], int] = {}
    for name, steps in session.exec(select(DeployedSequence.name, DeployedSequence.steps)):
        for index, (step_id, *_rest) in enumerate(steps or []):
            positions[(name, step_id)] = index

    def key(sequence: str, step: str) -> tuple[str, int, str]:
        return (sequence, positions.get((sequence, step), 10_000), step)

    return key


def two_proportion_p(hits_a: int, n_a: int, hits_b: int, n_b: int) -> float | None:
    """The two-sided p-value that two rates differ only by chance (a two-proportion z-test
    with a pooled rate); ``None`` when either side has no emails or nothing differs."""
    if not n_a or not n_b:
        return None
    pooled = (hits_a + hits_b) / (n_a + n_b)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if spread == 0:
        return None
    z = (hits_a / n_a - hits_b / n_b) / spread
    return round(math.erfc(abs(z) / math.sqrt(2)), 4)


def _variants(session: Session, since_clause: Any, order: Any) -> list[dict[str, Any]]:
    """Per step with more than one template variant: each variant's numbers and rates,
    and how sure the difference from the first variant is (p-values of clicks and
    replies per delivered email)."""
    counts: dict[tuple[str, str, str], dict[str, int]] = defaultdict(
        lambda: dict.fromkeys(("sent", "bounced", *RATES), 0)
    )
    emails = (
        sa_select(col(OutboxMessage.sequence), col(OutboxMessage.step),
                  col(OutboxMessage.template), col(OutboxMessage.status), func.count())
        .where(col(OutboxMessage.kind) == MessageKind.email.value)
        .where(col(OutboxMessage.template).is_not(None))
        .where(since_clause(col(OutboxMessage.created_at)))
        .group_by(col(OutboxMessage.sequence), col(OutboxMessage.step),
                  col(OutboxMessage.template), col(OutboxMessage.status))
    )  # fmt: skip
    for sequence, step, template, status, count in session.execute(emails):
        if status in (OutboxStatus.sent, OutboxStatus.bounced):
            counts[(sequence, step, template)]["sent"] += count
        if status == OutboxStatus.bounced:
            counts[(sequence, step, template)]["bounced"] += count
    by_step: dict[tuple[str, str], set[str]] = defaultdict(set)
    for sequence, step, template in counts:
        by_step[(sequence, step)].add(template)
    tested = {key for key, templates in by_step.items() if len(templates) > 1}
    if not tested:
        return []
    # An event counts for the variant that lead was sent at that step.
    engaged = (
        sa_select(col(OutboxMessage.sequence), col(OutboxMessage.step),
                  col(OutboxMessage.template), col(Event.type),
                  func.count(func.distinct(Event.lead_id)))
        .join(Event, (col(Event.lead_id) == col(OutboxMessage.lead_id))
              & (col(Event.sequence) == col(OutboxMessage.sequence))
              & (col(Event.step) == col(OutboxMessage.step)))
        .where(col(OutboxMessage.kind) == MessageKind.email.value)
        .where(col(Event.type).in_(["email_opened", "email_clicked", "email_replied",
                                    "unsubscribed"]))
        .where(col(Event.machine).is_(False))
        .where(since_clause(col(Event.occurred_at)))
        .group_by(col(OutboxMessage.sequence), col(OutboxMessage.step),
                  col(OutboxMessage.template), col(Event.type))
    )  # fmt: skip
    names = {"email_opened": "opened", "email_clicked": "clicked", "email_replied": "replied",
             "unsubscribed": "unsubscribed"}  # fmt: skip
    for sequence, step, template, type_, count in session.execute(engaged):
        if (sequence, step) in tested:
            counts[(sequence, step, template)][names[type_]] += count
    rows: list[dict[str, Any]] = []
    for sequence, step in sorted(tested, key=lambda key: order(*key)):
        first: dict[str, int] | None = None
        for template in sorted(by_step[(sequence, step)]):
            numbers = dict(counts[(sequence, step, template)])
            numbers["delivered"] = max(numbers["sent"] - numbers["bounced"], 0)
            row: dict[str, Any] = {"sequence": sequence, "step": step, "variant": template,
                                   **numbers, **rates(numbers)}  # fmt: skip
            if first is None:
                first = numbers
                row["compared_with"] = None
            else:
                row["compared_with"] = next(
                    r["variant"]
                    for r in rows
                    if (r["sequence"], r["step"]) == (sequence, step) and r["compared_with"] is None
                )
                for what in ("clicked", "replied"):
                    row[f"{what}_p_value"] = two_proportion_p(
                        numbers[what], numbers["delivered"], first[what], first["delivered"]
                    )
            rows.append(row)
    return rows


def counted(row: dict[str, Any], what: str) -> str:
    """``3 (30%)``: a count with its rate per delivered email."""
    rate = row.get(RATES[what])
    return f"{row[what]} ({100 * rate:.0f}%)" if rate is not None else str(row[what])


#: Weeks the trend shows, the current one last.
TREND_WEEKS = 12


def week_of(moment: datetime) -> str:
    """``2026-W47``: the ISO week of a moment (UTC)."""
    year, week, _ = moment.isocalendar()
    return f"{year}-W{week:02d}"


def _weekly(session: Session, now: datetime, hot_moments: list[datetime]) -> list[dict[str, Any]]:
    """Emails sent, people who opened, clicked and replied, and leads turned hot, per ISO
    week, for the last :data:`TREND_WEEKS` weeks."""
    start = now - timedelta(weeks=TREND_WEEKS - 1)
    start = start - timedelta(days=start.weekday())
    columns = ("sent", "opened", "clicked", "replied", "hot")
    weeks = {
        week_of(start + timedelta(weeks=n)): dict.fromkeys(columns, 0) for n in range(TREND_WEEKS)
    }
    sent = (
        select(OutboxMessage.sent_at)
        .where(col(OutboxMessage.kind) == MessageKind.email.value)
        .where(col(OutboxMessage.sent_at) >= start)
    )
    for moment in session.exec(sent):
        if moment is not None and week_of(moment) in weeks:
            weeks[week_of(moment)]["sent"] += 1
    names = {"email_opened": "opened", "email_clicked": "clicked", "email_replied": "replied"}
    engaged = (
        select(Event.occurred_at, Event.type, Event.lead_id)
        .where(col(Event.type).in_(list(names)))
        .where(col(Event.machine).is_(False))
        .where(col(Event.occurred_at) >= start)
    )
    seen: set[tuple[str, str, int]] = set()
    for moment, type_, lead_id in session.exec(engaged):
        key = (week_of(moment), type_, lead_id)
        if key[0] in weeks and key not in seen:
            seen.add(key)
            weeks[key[0]][names[type_]] += 1
    for moment in hot_moments:
        if week_of(moment) in weeks:
            weeks[week_of(moment)]["hot"] += 1
    return [{"week": week, **numbers} for week, numbers in weeks.items()]


def confidence(p_value: float | None) -> str:
    """How sure a difference is, in words."""
    if p_value is None:
        return "not enough data"
    if p_value < 0.01:
        return f"very likely real (p={p_value:.3f})"
    if p_value < 0.05:
        return f"likely real (p={p_value:.3f})"
    return f"could be chance (p={p_value:.2f})"


def _bar_chart(title: str, items: list[tuple[str, float]], unit: str = "") -> str:
    width, bar_height, label_width = 640, 22, 220
    top = max((value for _, value in items), default=0) or 1
    height = bar_height * len(items) + 10
    parts = [
        f'<svg role="img" aria-label="{html.escape(title)}" width="{width}" '
        f'height="{height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for index, (label, value) in enumerate(items):
        y = index * bar_height + 5
        length = (width - label_width - 60) * value / top
        parts.append(
            f'<text x="0" y="{y + 15}" font-size="13">{html.escape(label)}</text>'
            f'<rect x="{label_width}" y="{y + 2}" width="{length:.1f}" height="{bar_height - 6}"'
            f' fill="#3b6fd8"/><text x="{label_width + length + 6:.1f}" y="{y + 15}" '
            f'font-size="13">{value:g}{unit}</text>'
        )
    parts.append("</svg>")
    return f"<h2>{html.escape(title)}</h2>" + "".join(parts)


def to_html(report: dict[str, Any], project: str) -> str:
    """A single page, no network needed: tables and inline SVG charts."""

    def table(head: list[str], rows: list[list[Any]]) -> str:
        cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
        body = "".join(
            "<tr>"
            + "".join(f"<td>{html.escape('' if v is None else str(v))}</td>" for v in row)
            + "</tr>"
            for row in rows
        )
        return f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"

    funnel_chart = _bar_chart(
        "Funnel: leads that reached each stage", list(report["reached"].items())
    )
    step_chart = _bar_chart(
        "Step performance: clicks per email sent",
        [
            (
                f"{r['sequence']} / {r['step']}",
                round(100 * r["clicked"] / r["sent"], 1) if r["sent"] else 0,
            )
            for r in report["steps"]
        ],
        unit="%",
    )
    conversion = table(
        ["from", "to", "leads", "rate"],
        [
            [
                c["from"],
                c["to"],
                c["leads"],
                f"{100 * c['rate']:.1f}%" if c["rate"] is not None else "-",
            ]
            for c in report["conversion"]
        ],
    )
    steps = "".join(
        f"<h3>{html.escape(sequence)}</h3>"
        + table(
            ["step", "sent", "delivered", "bounced", "opened", "clicked", "replied",
             "unsubscribed", "tasks done"],
            [[r["step"], r["sent"], r["delivered"], r["bounced"], counted(r, "opened"),
              counted(r, "clicked"), counted(r, "replied"), counted(r, "unsubscribed"),
              r["tasks_done"]] for r in rows],
        )
        for sequence, rows in itertools.groupby(report["steps"], key=lambda r: r["sequence"])
    )  # fmt: skip
    variants = ""
    if report["variants"]:
        variants = "<h2>A/B variants</h2>" + table(
            ["sequence / step", "variant", "delivered", "opened", "clicked", "replied",
             "clicks vs the first", "replies vs the first"],
            [[f"{r['sequence']} / {r['step']}", r["variant"], r["delivered"],
              counted(r, "opened"), counted(r, "clicked"), counted(r, "replied"),
              confidence(r["clicked_p_value"]) if r["compared_with"] else "-",
              confidence(r["replied_p_value"]) if r["compared_with"] else "-"]
             for r in report["variants"]],
        )  # fmt: skip
    trend = _bar_chart(
        "Weekly trend: emails sent", [(w["week"], w["sent"]) for w in report["weekly"]]
    ) + table(
        ["week", "emails sent", "opened", "clicked", "replied", "turned hot"],
        [[w["week"], w["sent"], w["opened"], w["clicked"], w["replied"], w["hot"]]
         for w in report["weekly"]],
    )  # fmt: skip
    h = report["handoffs"]
    hot = report["days_to_hot"]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(project)}: funnel report</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem;max-width:60rem}}
table{{border-collapse:collapse;margin:1rem 0}}td,th{{border:1px solid #ccc;padding:.3rem .6rem;
text-align:right}}td:first-child,th:first-child{{text-align:left}}</style></head><body>
<h1>{html.escape(project)}: funnel report</h1>
<p>Generated {html.escape(report["generated_at"][:16])} UTC{
        ", since " + html.escape(report["since"][:10]) if report["since"] else ""
    }.</p>
<p>Leads by stage: {", ".join(f"{k} {v}" for k, v in report["stages"].items())}.</p>
{funnel_chart}{conversion}
<p>Days from first touch to hot: median {shown(hot["median"])}, p90 {shown(hot["p90"])} ({
        hot["leads"]
    } leads).</p>
{step_chart}<h2>Steps, sequence by sequence</h2>{steps}{variants}{trend}
<h2>Hand-offs</h2>
<p>{h["total"]} hand-offs: {h["accepted"]} accepted, {h["rejected"]} rejected,
{h["recycled"]} recycled, {h["pending"]} waiting; median time to answer
{shown(h["hours_to_answer_median"])} hours.</p>
</body></html>
"""


def shown(value: object) -> str:
    """A figure for people: ``-`` where there is none yet (never ``None``)."""
    return "-" if value is None else str(value)
