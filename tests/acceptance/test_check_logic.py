"""``nurture check`` catches logic mistakes, counts right and speaks plainly (the real
command line, in a subprocess)."""

from __future__ import annotations

from pathlib import Path

from tests.acceptance.conftest import Run
from tests.acceptance.test_language import demo, replace

__all__ = ["demo"]


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def test_an_event_nothing_records_or_declares_is_a_problem_with_a_did_you_mean(
    nurture: Run, demo: Path
) -> None:
    seq = demo / "sequences" / "pricing-guide-welcome.yaml"
    replace(seq, "exit_when: [replied,", "exit_when: [repled,")  # line 10
    replace(seq, "if: \"not clicked('welcome')\"", "if: \"not occurred('meeting_book')\"")  # 16
    result = nurture("check", cwd=demo)
    assert result.returncode == 1, result.stdout
    out = result.stdout
    assert f"{seq}:10: exit_when 'repled': nurture never records an event 'repled'" in out
    assert "(did you mean 'replied'?)" in out
    assert f"{seq}:16: occurred('meeting_book'): nurture never records" in out
    assert "(did you mean 'meeting_booked'?)" in out
    assert last_line(out).startswith("2 problems in 1 file;")
    # Declared by the sequence (another system records it): no longer a problem.
    replace(seq, "exit_when: [repled,", "exit_when: [replied, webinar_attended,")
    replace(seq, "occurred('meeting_book')", "occurred('webinar_attended')")
    seq.write_text(seq.read_text() + "events: [webinar_attended]\n")
    declared = nurture("check", cwd=demo)
    assert declared.returncode == 0, declared.stdout
    # ... or by scoring.yaml's events list.
    replace(seq, "events: [webinar_attended]\n", "")
    scoring = demo / "scoring.yaml"
    scoring.write_text(scoring.read_text() + "events: [webinar_attended]\n")
    assert nurture("check", cwd=demo).returncode == 0


def test_an_outcome_the_step_does_not_declare_is_a_problem(nurture: Run, demo: Path) -> None:
    seq = demo / "sequences" / "outbound-first-touch.yaml"
    replace(seq, "outcomes: [qualified,", "outcomes: [registered, qualified,")
    replace(seq, "if: \"outcome('call') == 'qualified'\"", "if: \"outcome('call') == 'registerd'\"")
    result = nurture("check", cwd=demo)
    assert result.returncode == 1
    assert (
        f"{seq}:31: outcome('call') is compared with 'registerd', which step 'call' does not "
        "declare (did you mean 'registered'?): its outcomes are registered, qualified"
    ) in result.stdout
    assert last_line(result.stdout).startswith("1 problem in 1 file;")


def test_unknown_template_names_and_variables_get_a_did_you_mean(nurture: Run, demo: Path) -> None:
    seq = demo / "sequences" / "pricing-guide-welcome.yaml"
    replace(seq, "email: case-study", "email: case-studdy")  # line 17
    replace(seq, "if: \"not clicked('welcome')\"", "if: \"not clicked('welcme')\"")  # line 16
    replace(seq, "wait: 4 days", "wait: 4 dayz")  # line 23
    welcome = demo / "templates" / "welcome.html.j2"
    replace(welcome, '{{ lead.first_name | default("there") }}', "{{ leed.first_name }}")
    result = nurture("check", cwd=demo)
    out = result.stdout
    assert "unknown template 'case-studdy' (no templates/case-studdy.html.j2) " in out
    assert "(did you mean 'case-study'?)" in out
    assert "unknown variable 'leed' (did you mean 'lead'?)" in out
    # Three problems in one sequence file, one in a template: counted by file.
    assert last_line(out).startswith("4 problems in 2 files;"), out
    assert "3 sequences, " in last_line(out)


def test_syntax_and_yaml_mistakes_are_said_in_plain_words(nurture: Run, demo: Path) -> None:
    seq = demo / "sequences" / "pricing-guide-welcome.yaml"
    replace(seq, "if: \"not clicked('welcome')\"", "if: \"not (clicked('welcome')\"")  # 16
    note = demo / "sequences" / "recycled-reengage.yaml"
    note.write_text("name: broken\nsteps:\n  - id: a\n   email: x\n")
    other = demo / "sequences" / "quotes.yaml"
    other.write_text('name: "quotes\nsteps: []\n')
    welcome = demo / "templates" / "welcome.html.j2"
    name = '{{ lead.first_name | default("there") }}'
    replace(welcome, name, name.replace('"there")', '"there"'))
    result = nurture("check", cwd=demo)
    out = result.stdout
    assert "Traceback" not in out + result.stderr
    parse = f"{seq}:16: expression \"not (clicked('welcome')\" does not parse"
    assert f"{parse}: a '(' is never closed: add ')'" in out
    assert "unexpected '}'" not in out
    assert f"{welcome}:7: a '(' is never closed before '}}}}': add ')'" in out
    assert f"{note}:4: invalid YAML: this line is not indented like the lines above it" in out
    assert f"{other}:1: invalid YAML: a quote opened here is never closed" in out
    assert "expected <block end>" not in out and "could not find" not in out


def test_an_audience_that_fails_for_some_leads_is_reported_by_check_and_once_in_status(
    nurture: Run, demo: Path
) -> None:
    # The example audiences work for leads as they come: one without a source.
    (demo / "nosource.csv").write_text("email,first_name\nnos@example.com,Nos\n")
    now = ("--now", "2026-11-16T09:00Z")
    assert nurture(*now, "leads", "import", "nosource.csv", cwd=demo).returncode == 0
    assert nurture("check", cwd=demo).returncode == 0
    tick = nurture(*now, "tick", cwd=demo)
    assert tick.returncode == 0 and "audience could not be evaluated" not in tick.stderr
    assert "audience of" not in nurture("status", cwd=demo).stdout
    # An audience written without a default fails for that lead.
    seq = demo / "sequences" / "recycled-reengage.yaml"
    replace(seq, "lead.source | default('') == 'recycled'", "lead.source == 'recycled'")
    check = nurture("check", cwd=demo)
    assert check.returncode == 1
    assert (
        f"{seq}:3: the audience fails for 1 lead (e.g. nos@example.com): lead has no "
        "attribute 'source'; some leads have no source: write lead.source | default('') =="
    ) in check.stdout
    assert "LeadView" not in check.stdout
    logs = [nurture("--now", f"2026-11-16T1{hour}:00Z", "tick", cwd=demo).stderr
            for hour in range(3)]  # fmt: skip
    said = sum(log.count("audience could not be evaluated") for log in logs)
    assert said == 1, logs
    assert "LeadView" not in "".join(logs)
    status = nurture("status", cwd=demo).stdout
    lines = [line for line in status.splitlines() if line.startswith("audience of")]
    assert len(lines) == 1 and "recycled-reengage fails for some leads" in lines[0], status
    # Fixed: the next look at every lead forgets it.
    replace(seq, "lead.source == 'recycled'", "lead.source | default('') == 'recycled'")
    assert nurture("--now", "2026-11-16T14:00Z", "tick", cwd=demo).returncode == 0
    assert "audience of" not in nurture("status", cwd=demo).stdout


def test_account_replied_is_an_exit_word_and_its_misspelling_gets_a_did_you_mean(
    nurture: Run, demo: Path
) -> None:
    seq = demo / "sequences" / "pricing-guide-welcome.yaml"
    replace(seq, "exit_when: [replied,", "exit_when: [replied, account_replied,")
    accepted = nurture("check", cwd=demo)
    assert accepted.returncode == 0, accepted.stdout
    replace(seq, "account_replied,", "acount_replied,")
    result = nurture("check", cwd=demo)
    assert result.returncode == 1, result.stdout
    assert f"{seq}:10: exit_when 'acount_replied': nurture never records" in result.stdout
    assert "(did you mean 'account_replied'?)" in result.stdout
