"""A sequence drawn as boxes and arrows, as server-rendered SVG: its waits, its branches
with their conditions, its tasks and their outcomes, its A/B splits, and on each step
what the caller marks there (the report's figures, or one lead's path in ``simulate``).

A pure function of the parsed sequence and the marks: no file, no database, no script.
The drawing is 360 units wide and scales to its box (``width: 100%``), so it reads on
a 390 px phone as on a desktop."""

from __future__ import annotations

import html
import re
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass

from nurture.language.sequences import (
    EmailAction,
    NotifyAction,
    Sequence,
    Step,
    TaskAction,
    UpdateAction,
)

#: The drawing's width, its margin, and the lane on the right where skipped steps'
#: arrows go round them.
WIDTH, MARGIN, LANE = 360, 6, 26
BOX = WIDTH - 2 * MARGIN - LANE
LINE, SMALL = 17, 15
#: Colours: by kind of step, and for what a mark says.
KIND_COLOUR = {"email": "#0b57d0", "task": "#146c2e", "notify": "#8a5300", "update": "#57606a"}
STATE_STROKE = {"taken": "#146c2e", "exited": "#b3261e"}


@dataclass(frozen=True)
class Mark:
    """What to write on a step's box."""

    #: Figures (``reached 120 · sent 118``) or one lead's moment, under the box's text.
    lines: tuple[str, ...] = ()
    #: In red: exits here.
    alerts: tuple[str, ...] = ()
    #: ``""`` (plain), ``taken`` (the lead gets it), ``skipped`` (its condition is
    #: false), ``exited`` (the lead leaves here), ``unreached`` (after an exit or the
    #: simulated period).
    state: str = ""


def wrap(text: str, width: float, size: float = 13) -> list[str]:
    """*text* in lines that fit *width* units at font *size* (long URLs broken too)."""
    chars = max(8, int(width / (size * 0.56)))
    return textwrap.wrap(text, chars, break_long_words=True, break_on_hyphens=False) or [""]


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def wait_text(step: Step, first: bool) -> str:
    """How long before the step, in words: ``wait 2 days, at 10:30``."""
    parts = []
    if step.wait is not None:
        parts.append(f"wait {step.wait.amount:g} {step.wait.unit.replace('_', ' ')}")
    if step.at is not None:
        parts.append(f"at {step.at.strftime('%H:%M')}")
    if not parts:
        return "at once" if first else "right after"
    text = ", ".join(parts)
    return text.replace("wait 1 days", "wait 1 day").replace("wait 1 weeks", "wait 1 week")


def describe_step(step: Step) -> tuple[str, list[str]]:
    """The title of a step's box and its lines (templates, variants, note, outcomes)."""
    action = step.action
    if isinstance(action, EmailAction):
        if len(action.variants) == 1:
            return f"EMAIL · {step.id}", [f"template {action.variants[0][0]}"]
        total = sum(weight for _, weight in action.variants) or 1
        lines = ["A/B split:"] + [
            f"{'A' if i == 0 else chr(65 + i)}: {name} {100 * weight / total:.0f}%"
            for i, (name, weight) in enumerate(action.variants)
        ]
        return f"EMAIL · {step.id}", lines
    if isinstance(action, TaskAction):
        lines = []
        if action.note:
            lines.append(_shorten(action.note, 90))
        if action.timeout is not None:
            lines.append(f"waits up to {action.timeout.amount:g} {action.timeout.unit}")
        if action.outcomes:
            lines.append("outcomes: " + " · ".join(action.outcomes))
        name = action.kind if action.kind == step.id else f"{action.kind} · {step.id}"
        return f"TASK · {name}", lines
    if isinstance(action, NotifyAction):
        to = action.to or "the owner"
        return f"NOTIFY · {step.id}", [f"to {to}: {_shorten(action.message, 80)}"]
    assert isinstance(action, UpdateAction)
    changes = ", ".join(f"{k}: {v}" for k, v in (*action.fields, *action.attributes))
    return f"UPDATE · {step.id}", [f"set {changes}"]


_LEAD_VALUE = re.compile(r"\{\{\s*lead\.(\w+)[^}]*\}\}")
_OTHER_VALUE = re.compile(r"\{\{.*?\}\}|\{%.*?%\}")


def _shorten(text: str, length: int) -> str:
    """A note or message as a person reads it, in at most *length* characters: each
    ``{{ lead.company | default(...) }}`` shown as [company]."""
    text = _OTHER_VALUE.sub("…", _LEAD_VALUE.sub(lambda m: f"[{m.group(1)}]", text))
    flat = " ".join(text.split())
    return flat if len(flat) <= length else flat[: length - 1] + "…"


class _Canvas:
    """SVG parts laid out top to bottom."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.y = float(MARGIN)

    def text(self, x: float, y: float, value: str, *, size: float = 13, weight: str = "400",
             fill: str = "#1c2430", anchor: str = "start") -> None:  # fmt: skip
        self.parts.append(
            f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" font-weight="{weight}" '
            f'fill="{fill}" text-anchor="{anchor}">{_e(value)}</text>'
        )

    def arrow(self, x: float, y1: float, y2: float, colour: str = "#8a94a0") -> None:
        self.parts.append(
            f'<line x1="{x:.1f}" y1="{y1:.1f}" x2="{x:.1f}" y2="{y2 - 6:.1f}" '
            f'stroke="{colour}" stroke-width="1.5"/>'
            f'<path d="M{x - 4:.1f},{y2 - 7:.1f} L{x + 4:.1f},{y2 - 7:.1f} L{x:.1f},{y2:.1f} Z" '
            f'fill="{colour}"/>'
        )

    def block(self, lines: list[tuple[str, dict[str, str]]], *, x: float, width: float,
              fill: str, stroke: str, dash: bool = False, thick: bool = False,
              bar: str | None = None, opacity: float = 1.0) -> float:  # fmt: skip
        """A rounded box of text lines, each ``(text, style)``; returns its height."""
        wrapped: list[tuple[str, dict[str, str]]] = []
        for text, style in lines:
            size = float(style.get("size", 13))
            for piece in wrap(text, width - 20, size):
                wrapped.append((piece, style))
        height = 10 + sum(LINE if float(s.get("size", 13)) >= 13 else SMALL for _, s in wrapped)
        dashes = ' stroke-dasharray="5 4"' if dash else ""
        self.parts.append(
            f'<g opacity="{opacity}"><rect x="{x:.1f}" y="{self.y:.1f}" width="{width:.1f}" '
            f'height="{height:.1f}" rx="8" fill="{fill}" stroke="{stroke}" '
            f'stroke-width="{2.5 if thick else 1.2}"{dashes}/>'
        )
        if bar:
            self.parts.append(
                f'<rect x="{x:.1f}" y="{self.y:.1f}" width="5" height="{height:.1f}" rx="2" '
                f'fill="{bar}"/>'
            )
        cursor = self.y + 4
        for text, style in wrapped:
            size = float(style.get("size", 13))
            cursor += LINE if size >= 13 else SMALL
            self.text(x + 12, cursor - 4, text, size=size, weight=style.get("weight", "400"),
                      fill=style.get("fill", "#1c2430"))  # fmt: skip
        self.parts.append("</g>")
        return height


def sequence_diagram(
    sequence: Sequence,
    marks: Mapping[str, Mark] | None = None,
    *,
    head: tuple[str, ...] = (),
    tail: tuple[str, ...] = (),
    title: str = "",
) -> str:
    """The SVG of *sequence*: a start box (*head* lines, the exit rules), each step with
    the wait before it, its condition (a skipped step's arrow goes round it), what it
    does and its :class:`Mark`, then an end box (*tail* lines)."""
    marks = marks or {}
    canvas = _Canvas()
    centre = MARGIN + BOX / 2
    start = [("Enrolled" + (f": {sequence.name}" if not title else ""), {"weight": "700"})]
    start += [(line, {"size": "12"}) for line in head]
    if sequence.exit_when:
        exits = ", ".join(rule.source for rule in sequence.exit_when)
        start.append((f"exits when: {exits}", {"size": "12", "fill": "#b3261e"}))
    canvas.y += canvas.block(start, x=MARGIN, width=BOX, fill="#eef2f7", stroke="#aab3bd")
    pending_bypass: list[float] = []  # y where a bypass left, waiting for the next join
    for index, step in enumerate(sequence.steps):
        mark = marks.get(step.id, Mark())
        top = canvas.y
        canvas.text(centre + 10, top + 14, wait_text(step, index == 0), size=12, fill="#57606a")
        canvas.arrow(centre, top, top + 26)
        canvas.y = top + 26
        for left in pending_bypass:  # skipped steps' arrows join here
            _bypass(canvas, left, top + 22, centre)
        pending_bypass = []
        faded = mark.state in ("skipped", "unreached")
        if step.condition is not None:
            condition = [(f"if {step.condition.source}", {"size": "12", "fill": "#8a5300"})]
            height = canvas.block(condition, x=MARGIN + 24, width=BOX - 48, fill="#fff8e6",
                                  stroke="#e0b252", dash=True)  # fmt: skip
            branch_y = canvas.y + height / 2
            canvas.parts.append(
                f'<line x1="{MARGIN + BOX - 24:.1f}" y1="{branch_y:.1f}" '
                f'x2="{WIDTH - MARGIN - LANE / 2:.1f}" y2="{branch_y:.1f}" stroke="#e0b252" '
                f'stroke-width="1.5" stroke-dasharray="4 3"/>'
            )
            canvas.text(WIDTH - MARGIN - LANE / 2 - 2, branch_y - 4, "no", size=11,
                        fill="#8a5300", anchor="end")  # fmt: skip
            canvas.y += height
            canvas.text(centre + 8, canvas.y + 14, "yes", size=11, fill="#8a5300")
            canvas.arrow(centre, canvas.y, canvas.y + 20)
            canvas.y += 20
            pending_bypass.append(branch_y)
        name, details = describe_step(step)
        colour = KIND_COLOUR[step.kind]
        lines = [(name, {"weight": "700", "fill": colour})]
        lines += [(line, {"size": "12", "fill": "#3b4450"}) for line in details]
        lines += [(line, {"size": "12", "weight": "600"}) for line in mark.lines]
        lines += [
            (line, {"size": "12", "weight": "600", "fill": "#b3261e"}) for line in mark.alerts
        ]
        canvas.y += canvas.block(
            lines, x=MARGIN, width=BOX, fill="#ffffff",
            stroke=STATE_STROKE.get(mark.state, "#c4cad1"), dash=mark.state == "skipped",
            thick=mark.state in STATE_STROKE, bar=colour, opacity=0.5 if faded else 1.0,
        )  # fmt: skip
    top = canvas.y
    canvas.arrow(centre, top, top + 22)
    for left in pending_bypass:
        _bypass(canvas, left, top + 11, centre)
    canvas.y = top + 22
    end = [("Completed", {"weight": "700"})] + [(line, {"size": "12"}) for line in tail]
    canvas.y += canvas.block(end, x=MARGIN, width=BOX, fill="#e6f4ea", stroke="#9fd3ae")
    height = canvas.y + MARGIN
    label = title or f"The steps of {sequence.name}"
    return (
        f'<svg class="diagram" viewBox="0 0 {WIDTH} {height:.0f}" width="100%" role="img" '
        f'aria-label="{_e(label)}" xmlns="http://www.w3.org/2000/svg" '
        f'font-family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif">'
        f"<title>{_e(label)}</title>{''.join(canvas.parts)}</svg>"
    )


def _bypass(canvas: _Canvas, from_y: float, to_y: float, centre: float) -> None:
    """The dashed arrow of a skipped step: down the right lane, back to the centre."""
    lane = WIDTH - MARGIN - LANE / 2
    canvas.parts.append(
        f'<path d="M{lane:.1f},{from_y:.1f} L{lane:.1f},{to_y:.1f} L{centre + 6:.1f},{to_y:.1f}" '
        f'fill="none" stroke="#e0b252" stroke-width="1.5" stroke-dasharray="4 3"/>'
    )
