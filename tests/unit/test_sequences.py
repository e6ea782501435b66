"""The sequence parser on its own: values, variants and problems with lines."""

from __future__ import annotations

from pathlib import Path

from nurture.language.sequence_files import load_sequence
from nurture.language.sequences import EmailAction, TaskAction
from nurture.tokens import sign, verify


def load(tmp_path: Path, text: str, templates: tuple[str, ...] = ("a", "b")):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return load_sequence(path, lambda name: name in templates)


def test_a_minimal_sequence_parses(tmp_path: Path) -> None:
    sequence, problems = load(
        tmp_path,
        "name: s\nfrom: A <a@example.com>\nsteps:\n  - id: one\n    email: a\n"
        "  - id: two\n    wait: 2 days\n    task: call\n    timeout: 3 days\n",
    )
    assert problems == []
    assert sequence is not None
    assert isinstance(sequence.steps[0].action, EmailAction)
    task = sequence.steps[1].action
    assert isinstance(task, TaskAction) and str(task.timeout) == "3 days"
    assert sequence.reenroll is False


def test_variants_are_deterministic_per_lead_and_follow_weights() -> None:
    action = EmailAction((("a", 75), ("b", 25)))
    picks = [action.template_for(f"s:step:lead{i}@example.com") for i in range(4000)]
    assert picks == [action.template_for(f"s:step:lead{i}@example.com") for i in range(4000)]
    assert 0.7 < picks.count("a") / len(picks) < 0.8


def test_each_problem_has_its_line(tmp_path: Path) -> None:
    _, problems = load(
        tmp_path,
        "name: s\n"  # 1
        "from: not an address\n"  # 2
        "steps:\n"  # 3
        "  - id: one\n"  # 4
        "    email: a\n"  # 5
        "    task: call\n"  # 6
        "  - id: two\n"  # 7
        "    emial: b\n"  # 8
        "  - id: three\n"  # 9
        "    task: fax\n",  # 10
    )
    found = {(p.line, p.message.split(" (")[0]) for p in problems}
    assert (
        2,
        "from: 'not an address' is not an address like 'Ana Ruiz <ana@example.com>'",
    ) in found
    assert any(line == 4 and "exactly one action" in message for line, message in found)
    assert any(line == 8 and "unknown step key 'emial'" in message for line, message in found)
    assert any(line == 10 and "unknown task 'fax'" in message for line, message in found)


def test_tokens_verify_only_untampered_and_for_their_purpose() -> None:
    token = sign("k", "unsubscribe", "7:s:step")
    assert verify("k", "unsubscribe", token) == "7:s:step"
    assert verify("k", "click", token) is None
    assert verify("other", "unsubscribe", token) is None
    body, mac = token.split(".")
    assert (
        verify("k", "unsubscribe", sign("k", "unsubscribe", "8:s:step").split(".")[0] + "." + mac)
        is None
    )
    assert verify("k", "unsubscribe", "garbage") is None
    assert verify("k", "unsubscribe", body + ".!!") is None


def test_what_events_a_sequence_reads_and_wakes_on(tmp_path: Path) -> None:
    head = "name: s\nfrom: A <a@example.com>\n"
    email = "steps:\n  - id: one\n    email: a\n  - id: two\n    wait: 2 days\n    email: b\n"
    cases = [
        # (the file's other lines, reads events, the types that wake it)
        ("", False, frozenset()),
        ("exit_when: [replied, hot]\n", True, frozenset({"email_replied"})),
        ("exit_when: [webinar_attended]\nevents: [webinar_attended]\n", True,
         frozenset({"webinar_attended"})),
        ('exit_when: ["fit > 50"]\n', False, None),  # scores, no events: any type
        ('exit_when: ["occurred(\'demo\')"]\nevents: [demo]\n', True, None),
    ]  # fmt: skip
    for extra, reads, wakes in cases:
        sequence, problems = load(tmp_path, head + extra + email)
        assert problems == [] and sequence is not None, (extra, problems)
        assert (sequence.reads_events(), sequence.woken_by()) == (reads, wakes), extra
        # Only exit_when here: the check before each email reads what the advance reads
        assert sequence.leaving_reads_events() == reads, extra
    # A condition that reads events is read, and a task step wakes on its completion
    condition = "    if: \"not opened('one')\"\n    email: b\n"
    sequence, _ = load(tmp_path, head + email.replace("    email: b\n", condition))
    assert sequence is not None and sequence.reads_events() and sequence.woken_by() == frozenset()
    assert not sequence.leaving_reads_events()  # the claim's check of its emails reads none
    sequence, _ = load(tmp_path, head + email.replace("    email: b\n", "    task: call\n"))
    assert sequence is not None and not sequence.reads_events()
    assert sequence.woken_by() == frozenset({"call_completed", "linkedin_completed",
                                             "task_completed"})  # fmt: skip
