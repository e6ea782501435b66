"""``nurture report --html``: one self-contained page a marketing team opens on Monday.

Per sequence: the diagram of its steps with each step's figures on it, its enrollments
(enrolled, active, completed, exited by reason) and a table of its steps; the A/B tests
against the first variant listed; the weekly trend. Server-rendered HTML and SVG (a
Jinja2 template), no script, no network; tables become cards on a phone."""

from __future__ import annotations

import html
from collections.abc import Mapping
from collections.abc import Sequence as Rows
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from nurture.language.sequences import EmailAction, Sequence, TaskAction
from nurture.reports.diagram import Mark, sequence_diagram
from nurture.reports.figures import confidence, counted, shown


@cache
def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=select_autoescape(["j2", "html"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def table(head: list[str], rows: Rows[Rows[Any]]) -> Markup:
    """A table whose cells carry their column's name: a wide one (more than six
    columns) becomes a card per row on a phone, each value beside its name."""
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td data-label="{html.escape(head[i])}">{html.escape(shown_cell(v))}</td>'
            for i, v in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    wide = ' class="wide"' if len(head) > 6 else ""
    return Markup(f"<table{wide}><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>")


def shown_cell(value: object) -> str:
    return "-" if value is None else str(value)


def bars(title: str, items: list[tuple[str, float]], colour: str = "#0b57d0") -> Markup:
    """Horizontal bars, 360 units wide (they scale to the page)."""
    width, row, label = 360, 24, 120
    top = max((value for _, value in items), default=0) or 1
    height = row * len(items) + 6
    parts = [
        f'<svg class="bars" viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-label="{html.escape(title)}" xmlns="http://www.w3.org/2000/svg" '
        f'font-family="system-ui, sans-serif"><title>{html.escape(title)}</title>'
    ]
    for index, (name, value) in enumerate(items):
        y = index * row + 3
        length = (width - label - 50) * value / top
        parts.append(
            f'<text x="0" y="{y + 16}" font-size="13" fill="#1c2430">{html.escape(name)}</text>'
            f'<rect x="{label}" y="{y + 3}" width="{max(length, 1):.1f}" height="{row - 8}" '
            f'rx="3" fill="{colour}"/><text x="{label + length + 6:.1f}" y="{y + 16}" '
            f'font-size="13" fill="#1c2430">{value:g}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def columns(title: str, items: list[tuple[str, float]], colour: str = "#0b57d0") -> Markup:
    """Vertical bars with a label under each (the weekly trend), 360 units wide."""
    width, height, base = 360, 170, 140
    top = max((value for _, value in items), default=0) or 1
    step = width / max(len(items), 1)
    parts = [
        f'<svg class="columns" viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-label="{html.escape(title)}" xmlns="http://www.w3.org/2000/svg" '
        f'font-family="system-ui, sans-serif"><title>{html.escape(title)}</title>'
        f'<line x1="0" y1="{base}" x2="{width}" y2="{base}" stroke="#c4cad1"/>'
    ]
    for index, (name, value) in enumerate(items):
        x = index * step + step * 0.18
        tall = (base - 24) * value / top
        parts.append(
            f'<rect x="{x:.1f}" y="{base - tall:.1f}" width="{step * 0.64:.1f}" '
            f'height="{tall:.1f}" rx="2" fill="{colour}"/>'
            f'<text x="{x + step * 0.32:.1f}" y="{base - tall - 4:.1f}" font-size="10" '
            f'text-anchor="middle" fill="#1c2430">{value:g}</text>'
            f'<text x="{x + step * 0.32:.1f}" y="{base + 14}" font-size="10" '
            f'text-anchor="middle" fill="#57606a">{html.escape(name)}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def _percent(part: int, whole: int) -> str:
    return f" ({100 * part / whole:.0f}%)" if whole else ""


def step_marks(report: dict[str, Any], sequence: Sequence) -> dict[str, Mark]:
    """Each step's figures, to write on its box: reached, waiting; sent, opened by
    people, clicked, replied (of delivered); the A/B variants' own; tasks done and
    their outcomes; who exited while waiting for it, and why."""
    rows = {r["step"]: r for r in report["steps"] if r["sequence"] == sequence.name}
    flow = report.get("step_flow", {}).get(sequence.name, {})
    variants = [v for v in report["variants"] if v["sequence"] == sequence.name]
    marks = {}
    for step in sequence.steps:
        row, moved = rows.get(step.id), flow.get(step.id, {})
        waiting = f" · waiting here {moved['waiting']}" if moved.get("waiting") else ""
        reached = moved.get("reached", 0)
        skipped = ""
        if step.condition is not None and "acted" in moved:
            skipped = f" · skipped {max(reached - moved['acted'], 0)}"
        lines = [f"reached {reached}{skipped}{waiting}"]
        if isinstance(step.action, EmailAction) and row is not None:
            delivered = row["delivered"]
            lines.append(f"sent {row['sent']} · opened by people {row['opened']}"
                         f"{_percent(row['opened'], delivered)}")  # fmt: skip
            clicked = f"{row['clicked']}{_percent(row['clicked'], delivered)}"
            replied = f"{row['replied']}{_percent(row['replied'], delivered)}"
            lines.append(f"clicked {clicked} · replied {replied}")
            for variant in (v for v in variants if v["step"] == step.id):
                lines.append(f"{variant['variant']}: {variant['delivered']} delivered, "
                             f"clicked {counted(variant, 'clicked')}")  # fmt: skip
        if isinstance(step.action, TaskAction):
            outcomes = moved.get("outcomes", {})
            done = sum(outcomes.values())
            named = " · ".join(
                f"{name} {count}" for name, count in sorted(outcomes.items()) if name != "done"
            )
            lines.append(f"done {done}" + (f": {named}" if named else ""))
        exits = moved.get("exited", {})
        alerts: tuple[str, ...] = ()
        if exits:
            why = ", ".join(f"{reason} {count}" for reason, count in sorted(exits.items()))
            alerts = (f"exited after it {sum(exits.values())}: {why}",)
        marks[step.id] = Mark(tuple(lines), alerts)
    return marks


def _sequence_view(report: dict[str, Any], name: str, sequence: Sequence | None) -> dict[str, Any]:
    counts = report.get("sequences", {}).get(name, {})
    rows = [r for r in report["steps"] if r["sequence"] == name]
    flow = report.get("step_flow", {}).get(name, {})
    order = [s.id for s in sequence.steps] if sequence else []
    ids = order + sorted(({r["step"] for r in rows} | set(flow)) - set(order) - {""})
    by_step = {r["step"]: r for r in rows}
    table_rows = []
    for step_id in ids:
        row, moved = by_step.get(step_id), flow.get(step_id, {})
        exited = sum(moved.get("exited", {}).values())
        if row is None:
            table_rows.append([step_id, moved.get("reached", 0), "-", "-", "-", "-", "-", "-",
                               sum(moved.get("outcomes", {}).values()), exited])  # fmt: skip
            continue
        table_rows.append([step_id, moved.get("reached", 0), row["sent"], row["delivered"],
                           counted(row, "opened"), counted(row, "clicked"),
                           counted(row, "replied"), counted(row, "unsubscribed"),
                           row["tasks_done"], exited])  # fmt: skip
    enrolled = counts.get("enrolled", 0)
    funnel_items = [("enrolled", enrolled)] + [
        (state, counts.get(state, 0))
        for state in ("active", "completed", "exited", "paused", "failed")
    ]
    diagram = None
    if sequence is not None:
        head: tuple[str, ...] = ()
        if sequence.audience is not None:
            head = (f"audience: {sequence.audience.source}",)
        head += (f"enrolled {enrolled}",)
        before = flow.get("", {}).get("exited", {})
        if before:
            why = ", ".join(f"{reason} {count}" for reason, count in sorted(before.items()))
            head += (f"exited before the first step {sum(before.values())}: {why}",)
        tail = (f"completed {counts.get('completed', 0)}",)
        diagram = Markup(sequence_diagram(sequence, step_marks(report, sequence),
                                          head=head, tail=tail))  # fmt: skip
    return {
        "name": name,
        "description": sequence.description if sequence else "",
        "diagram": diagram,
        "funnel": bars(f"Enrollments of {name}", funnel_items, "#146c2e"),
        "exits": sorted(counts.get("exit_reasons", {}).items(), key=lambda item: -item[1]),
        "rows": table_rows,
    }


def render_page(report: dict[str, Any], project: str, sequences: Mapping[str, Sequence]) -> str:
    """The report's page, from :func:`~nurture.reports.report.funnel` and the sequences
    as their files say (by name)."""
    names = list(sequences) + sorted(
        ({r["sequence"] for r in report["steps"]} | set(report.get("sequences", {})))
        - set(sequences)
    )
    conversion = [
        [
            c["from"],
            c["to"],
            c["leads"],
            f"{100 * c['rate']:.1f}%" if c["rate"] is not None else "-",
        ]
        for c in report["conversion"]
    ]
    variants = [
        [f"{r['sequence']} / {r['step']}", r["variant"] + ("" if r["compared_with"] else " (A)"),
         r["delivered"], counted(r, "opened"), counted(r, "clicked"), counted(r, "replied"),
         confidence(r["clicked_p_value"]) if r["compared_with"] else "-",
         confidence(r["replied_p_value"]) if r["compared_with"] else "-"]
        for r in report["variants"]
    ]  # fmt: skip
    weekly = [[w["week"], w["sent"], w["opened"], w["clicked"], w["replied"], w["hot"]]
              for w in report["weekly"]]  # fmt: skip
    template = _environment().get_template("report.html.j2")
    return template.render(
        project=project,
        report=report,
        generated=report["generated_at"][:16].replace("T", " "),
        since=(report["since"] or "")[:10],
        shown=shown,
        table=table,
        funnel_chart=bars("Leads that reached each stage", list(report["reached"].items())),
        conversion=conversion,
        sequences=[_sequence_view(report, name, sequences.get(name)) for name in names],
        variants=variants,
        trend_chart=columns(
            "Emails sent per week",
            [(w["week"].split("-")[-1], w["sent"]) for w in report["weekly"]],
        ),
        weekly=weekly,
    )
