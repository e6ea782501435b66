"""``nurture simulate --html``: one lead's path through a sequence, drawn on the same
diagram as the report (:mod:`nurture.reports.diagram`): the steps the lead gets, when,
in the lead's time; those skipped and why; where it exits. Pure: the sequence and the
timeline in, a page out."""

from __future__ import annotations

import html

from nurture.engine.simulate import TOUCHES, Entry
from nurture.language.sequences import Sequence
from nurture.language.timing import zone
from nurture.reports.diagram import Mark, sequence_diagram


def _local(entry: Entry) -> str:
    return entry.moment.astimezone(zone(entry.timezone)).strftime("%a %Y-%m-%d %H:%M %Z")


def path_marks(sequence: Sequence, entries: list[Entry]) -> tuple[dict[str, Mark], tuple[str, ...]]:
    """Each step's mark for one lead's timeline, and the end box's lines."""
    marks: dict[str, Mark] = {}
    tail: tuple[str, ...] = ("not reached",)
    ended = False
    for entry in entries:
        why = (entry.reason,) if entry.reason else ()
        if entry.kind in TOUCHES and entry.step:
            marks[entry.step] = Mark((f"gets it {_local(entry)}", *why), state="taken")
        elif entry.kind == "skipped" and entry.step:
            marks[entry.step] = Mark((f"skipped {_local(entry)}",), state="skipped")
        elif entry.kind == "exited":
            ended = True
            tail = (f"exits {_local(entry)}: {entry.reason}",)
            if entry.step:
                old = marks.get(entry.step, Mark())
                marks[entry.step] = Mark(old.lines, (f"exits after it: {entry.reason}",),
                                         state="exited")  # fmt: skip
        elif entry.kind == "beyond" and entry.step:
            marks[entry.step] = Mark((f"due after the simulated period: {_local(entry)}",),
                                     state="unreached")  # fmt: skip
        elif entry.kind == "completed":
            ended = True
            tail = (f"completed {_local(entry)}",)
    if ended:
        for step in sequence.steps:
            marks.setdefault(step.id, Mark(("not reached",), state="unreached"))
    return marks, tail


def simulation_page(
    sequence: Sequence, entries: list[Entry], lead: str, timezone: str, project: str
) -> str:
    """A self-contained page: the diagram with the lead's path, and the timeline."""
    marks, tail = path_marks(sequence, entries)
    head = (f"for {lead} ({timezone})",)
    diagram = sequence_diagram(sequence, marks, head=head, tail=tail,
                               title=f"{sequence.name} for {lead}")  # fmt: skip
    rows = "".join(
        f"<li><b>{html.escape(_local(e))}</b>"
        f"{' · ' + html.escape(e.step) if e.step else ''}<br>{html.escape(e.detail)}"
        f"{'<br><i>' + html.escape(e.reason) + '</i>' if e.reason else ''}</li>"
        for e in entries
    )
    title = html.escape(f"{project}: {sequence.name} for {lead}")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{title}</title>
<style>body{{margin:0;font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:#1c2430;background:#f4f5f7;overflow-wrap:anywhere}}main{{max-width:60rem;margin:0 auto;
padding:.75rem}}h1{{font-size:1.25rem}}svg{{display:block;max-width:30rem;width:100%;
height:auto;margin:0 auto}}section{{background:#fff;border:1px solid #d8dde3;border-radius:10px;
padding:1rem;margin:0 0 .9rem}}h2{{font-size:1.05rem;margin:0 0 .4rem}}
ol{{margin:0;padding-left:1.2rem}}li{{padding:.35rem 0;border-bottom:1px solid #eef0f2}}
i{{color:#57606a}}</style></head>
<body><main><h1>{title}</h1>
<p>Simulated: nothing was sent or stored. Green: what the lead gets; dashed: skipped;
red: where the lead exits.</p>
<section>{diagram}</section>
<section><h2>Timeline</h2><ol>{rows}</ol></section>
</main></body></html>
"""
