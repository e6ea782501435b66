"""The diagram is a pure function of the sequence and the marks: its waits, branches,
tasks, outcomes and A/B splits, drawn the same every time."""

from __future__ import annotations

from pathlib import Path

from nurture.language.sequence_files import parse_sequence
from nurture.language.yamlfile import parse_yaml
from nurture.reports.diagram import Mark, sequence_diagram

SEQUENCE = """\
name: demo
audience: "lead.source | default('') == 'web'"
from: "Ana Ruiz <ana@example.com>"
exit_when: [replied]
steps:
  - id: welcome
    email: welcome
  - id: call
    wait: 2 business days
    task: call
    note: "Call {{ lead.first_name }} at {{ lead.company | default('their company') }}"
    outcomes: [qualified, not_now]
  - id: breakup
    wait: 4 days
    at: "10:30"
    if: "outcome('call') != 'qualified'"
    email:
      variants: {short: 30, long: 70}
"""


def demo():
    sequence, problems = parse_sequence(Path("demo.yaml"), parse_yaml(SEQUENCE, "demo.yaml"),
                                        lambda name: True)  # fmt: skip
    assert sequence is not None, problems
    return sequence


def test_the_diagram_draws_waits_branches_tasks_and_splits() -> None:
    svg = sequence_diagram(demo(), {"call": Mark(("done 3: qualified 2 · not_now 1",))})
    assert svg.startswith('<svg class="diagram" viewBox="0 0 360 ')
    for text in (
        "at once", "wait 2 business days", "wait 4 days, at 10:30",
        "if outcome(&#x27;call&#x27;) != &#x27;qualified&#x27;", ">no<", ">yes<",
        "TASK · call", "Call [first_name] at [company]", "outcomes: qualified · not_now",
        "A/B split:", "A: short 30%", "B: long 70%", "exits when: replied",
        "done 3: qualified 2 · not_now 1", "Completed",
    ):  # fmt: skip
        assert text in svg, text
    assert "<script" not in svg and "{{" not in svg
    assert svg == sequence_diagram(demo(), {"call": Mark(("done 3: qualified 2 · not_now 1",))})


def test_marks_show_a_path_and_long_words_wrap_inside_the_drawing() -> None:
    long = "https://example.com/" + "x" * 200
    svg = sequence_diagram(demo(), {
        "welcome": Mark((long,), state="taken"),
        "breakup": Mark(("skipped",), state="skipped"),
        "call": Mark((), ("exits after it: replied",), state="exited"),
    })  # fmt: skip
    assert 'stroke="#146c2e" stroke-width="2.5"' in svg  # taken
    assert 'stroke="#b3261e" stroke-width="2.5"' in svg  # exited
    assert 'stroke-dasharray="5 4"' in svg and 'opacity="0.5"' in svg  # skipped
    assert "x" * 200 not in svg  # broken into lines that fit the box
