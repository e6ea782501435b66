"""check, preview and simulate through the real command line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.acceptance.conftest import Run


@pytest.fixture
def demo(nurture: Run, tmp_path: Path) -> Path:
    assert nurture("init", "demo").returncode == 0
    directory = tmp_path / "demo"
    assert nurture("db", "upgrade", cwd=directory).returncode == 0
    imported = nurture("--now", "2026-11-16T09:00Z", "leads", "import", "leads.csv", cwd=directory)
    assert imported.returncode == 0
    return directory


def replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_examples_pass_check(nurture: Run, demo: Path) -> None:
    result = nurture("check", cwd=demo)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("no problems")


def test_check_names_every_planted_error(nurture: Run, demo: Path) -> None:
    seq = demo / "sequences" / "pricing-guide-welcome.yaml"
    replace(seq, "exit_when:", "exit_wen:")  # line 10
    replace(seq, "wait: 2 days", "wait: 2 dayz")  # line 15
    replace(seq, "not clicked('welcome')", "not clicked('welcme')")  # line 16
    replace(seq, "email: case-study", "email: case-studdy")  # line 17
    replace(seq, 'at: "10:30"', 'at: "25:30"')  # line 24
    replace(seq, "  - id: call\n", "  - id: welcome\n")  # line 18
    replace(
        demo / "sequences" / "outbound-first-touch.yaml",
        "audience: \"lead.source | default('') == 'outbound' and lead.stage == 'cold'\"",
        'audience: "lead.source =="',
    )  # line 3
    (demo / "sequences" / "broken.yaml").write_text(
        "name: broken\nsteps:\n  - id: a\n   email: x\n"
    )
    replace(
        demo / "templates" / "welcome.html.j2", "{% block content %}", "{% block content %}{% if %}"
    )  # line 6
    replace(
        demo / "templates" / "outbound-intro.html.j2", "<p>Hi", "<p>{{ lead.nickname }} Hi"
    )  # line 6
    replace(demo / "scoring.yaml", "half_life: 14 days", "half_life: 14 moons")  # line 10
    replace(
        demo / "templates" / "reengage-offer.html.j2", "{{ lead.company", "{{ leed.company"
    )  # line 2

    result = nurture("check", cwd=demo)
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    expected = [
        r"pricing-guide-welcome\.yaml:10: unknown sequence key 'exit_wen' "
        r"\(did you mean 'exit_when'\?\)",
        r"pricing-guide-welcome\.yaml:15: wait: bad duration '2 dayz'",
        r"pricing-guide-welcome\.yaml:16: unknown step 'welcme' .*did you mean 'welcome'",
        r"pricing-guide-welcome\.yaml:17: unknown template 'case-studdy'",
        r"pricing-guide-welcome\.yaml:18: duplicate step id 'welcome' \(first on line 12\)",
        r"pricing-guide-welcome\.yaml:24: bad time of day '25:30'",
        r"outbound-first-touch\.yaml:3: expression 'lead.source ==' does not parse",
        r"broken\.yaml:4: invalid YAML",
        r"welcome\.html\.j2:6: ",
        r"outbound-intro\.html\.j2:6: undefined variable: lead has no attribute 'nickname'",
        r"reengage-offer\.html\.j2:2: undefined variable: 'leed' is undefined",
        r"scoring\.yaml:10: half_life: bad duration '14 moons'",
    ]
    for pattern in expected:
        assert any(re.search(pattern, line) for line in lines), (pattern, lines)
    assert re.match(r"\d+ problems in ", lines[-1])


def test_simulate_friday_afternoon_in_los_angeles(nurture: Run, demo: Path) -> None:
    # Given María (America/Los_Angeles) and a start on Friday 2026-11-20 at 15:30 her time
    result = nurture(
        "simulate", "pricing-guide-welcome", "--lead", "maria.lopez@brightpath.io",
        "--start", "2026-11-20T15:30-08:00", "--json", cwd=demo,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    timeline = [(e["step"], e["kind"], e["local"], e["utc"]) for e in json.loads(result.stdout)]
    # Then: welcome at once; case-study 2 days later falls on Sunday -> Monday 09:00;
    # the call 1 business day later on Tuesday; the breakup 4 days later on Saturday
    # -> Monday at its `at` time, 10:30
    assert timeline == [
        ("welcome", "email", "2026-11-20T15:30:00-08:00", "2026-11-20T23:30:00+00:00"),
        ("case-study", "email", "2026-11-23T09:00:00-08:00", "2026-11-23T17:00:00+00:00"),
        ("call", "task", "2026-11-24T09:00:00-08:00", "2026-11-24T17:00:00+00:00"),
        ("breakup", "email", "2026-11-30T10:30:00-08:00", "2026-11-30T18:30:00+00:00"),
        (None, "completed", "2026-11-30T10:30:00-08:00", "2026-11-30T18:30:00+00:00"),
    ]


def test_simulate_honours_assumed_clicks_and_replies(nurture: Run, demo: Path) -> None:
    base = ["simulate", "pricing-guide-welcome", "--lead", "maria.lopez@brightpath.io",
            "--start", "2026-11-20T15:30-08:00", "--json"]  # fmt: skip
    clicked = json.loads(nurture(*base, "--assume", "clicked:welcome", cwd=demo).stdout)
    assert [(e["step"], e["kind"]) for e in clicked][:2] == [
        ("welcome", "email"),
        ("case-study", "skipped"),
    ]
    replied = json.loads(nurture(*base, "--assume", "replied:case-study", cwd=demo).stdout)
    assert [(e["step"], e["kind"], e["reason"]) for e in replied][-1] == (
        "case-study",
        "exited",
        "replied",
    )
    bad = nurture(*base, "--assume", "clicked:nowhere", cwd=demo)
    assert (
        bad.returncode == 1 and "no step 'nowhere'" in bad.stderr and "Traceback" not in bad.stderr
    )


def test_preview_shows_the_message_and_writes_html(nurture: Run, demo: Path) -> None:
    result = nurture(
        "preview", "pricing-guide-welcome", "welcome", "--lead", "maria.lopez@brightpath.io",
        "--html", "out.html", cwd=demo,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "To: María López <maria.lopez@brightpath.io>" in result.stdout
    assert "Subject: María, your Acme pricing guide" in result.stdout
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in result.stdout
    assert "----- text/plain -----" in result.stdout
    assert "/u/" in (demo / "out.html").read_text()
    not_email = nurture(
        "preview", "pricing-guide-welcome", "call", "--lead", "maria.lopez@brightpath.io", cwd=demo
    )
    assert not_email.returncode == 1 and "not an email" in not_email.stderr


def test_check_warns_of_likely_typos_unrecorded_events_and_dead_links(
    nurture: Run, demo: Path
) -> None:
    seq = demo / "sequences" / "pricing-guide-welcome.yaml"
    replace(seq, "exit_when: [", "exit_when: [webinar_attended, ")  # line 10
    # A custom event is declared (another system records it): a warning until it is seen.
    seq.write_text(seq.read_text() + "events: [webinar_attended]\n")
    replace(demo / "scoring.yaml", "  form_submitted:", "  email_click: 3\n  form_submitted:")
    real = {"NURTURE_SMTP_HOST": "smtp.example.com"}
    result = nurture("check", cwd=demo, env=real)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{demo / 'scoring.yaml'}:6: warning: event 'email_click'" in result.stdout
    assert "(did you mean 'email_clicked'?)" in result.stdout
    assert f"{seq}:10: warning: custom event 'webinar_attended': nothing has recorded it yet" in (
        result.stdout
    )
    assert "[tracking] base_url is 'http://localhost:8080' while [smtp] host" in result.stdout
    lines = result.stdout.splitlines()
    assert lines[-1].startswith("ok: ") and lines[-1].endswith("no problems, 3 warnings")
    strict = nurture("check", "--strict", cwd=demo, env=real)
    assert strict.returncode == 1
    assert strict.stdout.splitlines()[-1].startswith("failed (--strict): 3 warnings")
    assert "ok" not in strict.stdout.splitlines()[-1]
    # A loopback mail server (a test sink, a local relay) is not a reason to warn.
    local = nurture("check", cwd=demo, env={"NURTURE_SMTP_HOST": "127.0.0.1"})
    assert "base_url" not in local.stdout


def test_event_refuses_likely_typos_and_unknown_steps(nurture: Run, demo: Path) -> None:
    maria = ("--lead", "maria.lopez@brightpath.io")
    now = ("--now", "2026-11-20T09:00Z")
    typo = nurture(*now, "event", "clicked", *maria, cwd=demo)
    assert typo.returncode == 1 and "Traceback" not in typo.stderr
    assert "event type 'clicked' is not one nurture knows (did you mean 'email_clicked'?)" in (
        typo.stderr
    )
    where = ("--sequence", "pricing-guide-welcome")
    step = nurture(*now, "event", "email_clicked", *maria, *where, "--step", "welcom", cwd=demo)
    assert step.returncode == 1
    assert "--step 'welcom' is not a step of pricing-guide-welcome (did you mean 'welcome'?)" in (
        step.stderr
    )
    forced = nurture(*now, "event", "clicked", *maria, "--custom", cwd=demo)
    assert forced.returncode == 0, forced.stderr
    # Once recorded, the custom name is the team's own: no more questions.
    again = nurture(*now, "event", "clicked", *maria, "--at", "2026-11-20T08:00Z", cwd=demo)
    assert again.returncode == 0, again.stderr


def test_check_renders_against_the_leads_of_each_audience(nurture: Run, demo: Path) -> None:
    # Two outbound leads without a company, and a note that needs one (line 17 on purpose).
    (demo / "noco.csv").write_text(
        "email,first_name,source\nal@example.com,Al,outbound\nbo@example.com,Bo,outbound\n"
    )
    now = ("--now", "2026-11-16T09:00Z")
    assert nurture(*now, "leads", "import", "noco.csv", cwd=demo).returncode == 0
    seq = demo / "sequences" / "outbound-first-touch.yaml"
    assert nurture("check", cwd=demo).returncode == 0  # the examples allow a missing company
    replace(seq, "at {{ lead.company | default('their company') }} on LinkedIn",
            "at {{ lead.company }} on LinkedIn")  # fmt: skip
    result = nurture("check", cwd=demo)
    assert result.returncode == 1
    assert (
        f"{seq}:17: 2 leads in the audience of outbound-first-touch have no company "
        "(e.g. al@example.com); use | default(...)"
    ) in result.stdout
    # The run fails those leads' enrollments naming the note's own file and line.
    replace(seq, "at {{ lead.company }} on LinkedIn",
            "at {{ lead.company | default('their company') }} on LinkedIn")  # fmt: skip
    call = demo / "sequences" / "call-first.yaml"
    call.write_text(
        "name: call-first\naudience: \"lead.source == 'outbound'\"\n"
        'from: "Sam Patel <sam@example.com>"\nsteps:\n  - id: call\n    task: call\n'
        "    note: |\n      Call {{ lead.first_name }}\n      at {{ lead.company }}\n"
    )
    nurture(*now, "tick", cwd=demo)
    failed = nurture("enrollments", "list", "--status", "failed", "--json", cwd=demo)
    reasons = {e["lead"]: e["reason"] for e in json.loads(failed.stdout)}
    assert f"{call}:9:" in reasons["al@example.com"], reasons


def test_status_and_lists_show_the_projects_time(nurture: Run, demo: Path) -> None:
    now = ("--now", "2026-11-16T17:00Z")
    nurture(*now, "tick", cwd=demo)
    listed = nurture(*now, "enrollments", "list", cwd=demo, env={"COLUMNS": "250"})
    # The project's timezone (America/New_York in the example): never bare UTC.
    assert "(UTC)" not in listed.stdout
    assert "EST" in listed.stdout
    assert "(their " in listed.stdout  # leads elsewhere see their own time beside
    status = nurture(*now, "status", cwd=demo)
    assert "next due: 2026-" in status.stdout and "EST" in status.stdout
