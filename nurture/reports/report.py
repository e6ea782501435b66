"""``nurture report``: the funnel, step by step, from the database.

:func:`funnel` gathers the numbers (a plain dict, the same for the terminal, JSON and
HTML); :func:`to_html` renders a single self-contained page with inline SVG charts.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import defaultdict
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from nurture.language.sequences import EmailAction, Sequence
from nurture.reports.figures import RATES, confidence, counted, rates, shown
from nurture.store.enrollments import DeployedSequence, Enrollment
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


def funnel(
    session: Session,
    *,
    since: datetime | None,
    now: datetime,
    sequences: Mapping[str, Sequence] | None = None,
) -> dict[str, Any]:
    """Every number of the report. *sequences* (by name, as their files say) order each
    A/B test's variants as listed, the first listed being the one compared with."""
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
    listed = {
        (sequence.name, step.id): [name for name, _ in step.action.variants]
        for sequence in (sequences or {}).values()
        for step in sequence.steps
        if isinstance(step.action, EmailAction)
    }
    variants = _variants(session, since_clause, order, listed)
    flow = enrollment_flow(session, since_clause)
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
        "sequences": flow["sequences"],
        "step_flow": flow["steps"],
        "weekly": weekly,
        "handoffs": {
            "total": len(handoffs),
            **{s: statuses.get(s, 0) for s in ("pending", "accepted", "rejected", "recycled")},
            "hours_to_answer_median": round(statistics.median(to_answer), 1) if to_answer else None,
        },
    }


def enrollment_flow(session: Session, since_clause: Any) -> dict[str, Any]:
    """Per sequence, its enrollments (enrolled since, active, completed, exited by
    reason, paused, failed); per step, the leads that reached it, those waiting there,
    those who exited after it (by reason; step ``""``: before the first) and its tasks'
    outcomes."""
    sequences: dict[str, dict[str, Any]] = {}
    steps: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)

    def step_of(sequence: str, step: str) -> dict[str, Any]:
        return steps[sequence].setdefault(
            step, {"reached": 0, "waiting": 0, "exited": {}, "outcomes": {}}
        )

    query = sa_select(col(Enrollment.sequence), col(Enrollment.status), col(Enrollment.next_step),
                      col(Enrollment.done_steps), col(Enrollment.reason))  # fmt: skip
    for name, status, next_step, done, reason in session.execute(
        query.where(since_clause(col(Enrollment.enrolled_at)))
    ):
        counts = sequences.setdefault(
            name, {"enrolled": 0, **dict.fromkeys(_STATES, 0), "exit_reasons": {}}
        )
        counts["enrolled"] += 1
        counts[status] = counts.get(status, 0) + 1
        for step in done or []:
            step_of(name, step)["reached"] += 1
        if status == "exited":
            why = _exit_reason(reason)
            counts["exit_reasons"][why] = counts["exit_reasons"].get(why, 0) + 1
            # Where it left: after the last step it had ("" before the first).
            exits = step_of(name, done[-1] if done else "")["exited"]
            exits[why] = exits.get(why, 0) + 1
        elif status in ("active", "paused") and next_step:
            step_of(name, next_step)["waiting"] += 1
    outcomes = (
        select(Task.sequence, Task.step, Task.outcome, func.count())
        .where(Task.status == TaskStatus.done.value)
        .where(since_clause(col(Task.done_at)))
        .group_by(col(Task.sequence), col(Task.step), col(Task.outcome))
    )
    for name, step, outcome, count in session.exec(outcomes):
        step_of(name, step)["outcomes"][outcome or "done"] = count
    # What each step did (an email queued, a task made): the rest of who reached it
    # were skipped by its condition.
    made = [
        select(OutboxMessage.sequence, OutboxMessage.step, func.count())
        .where(col(OutboxMessage.enrollment_id).is_not(None))
        .where(since_clause(col(OutboxMessage.created_at)))
        .group_by(col(OutboxMessage.sequence), col(OutboxMessage.step)),
        select(Task.sequence, Task.step, func.count())
        .where(since_clause(col(Task.created_at)))
        .group_by(col(Task.sequence), col(Task.step)),
    ]
    for query_made in made:
        for name, step, count in session.exec(query_made):
            done_here = step_of(name, step)
            done_here["acted"] = done_here.get("acted", 0) + count
    return {"sequences": sequences, "steps": dict(steps)}


_STATES = ("active", "completed", "exited", "paused", "failed")


def _exit_reason(reason: str | None) -> str:
    """An exit's reason as the report groups it (``replied``, ``unsubscribed``...)."""
    text = (reason or "unknown").strip()
    return text[:80]


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


def _variants(
    session: Session, since_clause: Any, order: Any, listed: Mapping[tuple[str, str], list[str]]
) -> list[dict[str, Any]]:
    """Per step with more than one template variant: each variant's numbers and rates,
    and how sure the difference from the first variant is (p-values of clicks and
    replies per delivered email). The first is the first *listed* in the file, else
    the first by name."""
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
        written = listed.get((sequence, step), [])

        def rank(template: str, written: list[str] = written) -> tuple[int, str]:
            return (written.index(template) if template in written else len(written), template)

        ranked = sorted(by_step[(sequence, step)], key=rank)
        for template in ranked:
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


def to_html(report: dict[str, Any], project: str, sequences: Any = None) -> str:
    """The report as one self-contained page (see :mod:`nurture.reports.page`)."""
    from nurture.reports.page import render_page

    return render_page(report, project, sequences or {})


__all__ = ["RATES", "confidence", "counted", "funnel", "rates", "shown", "to_html"]
