"""The engine through its commands: tick against simulate, the daemon and its signals,
tasks, enroll, status and the in-flight report of check."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from freezegun import freeze_time
from sqlmodel import select

from nurture.store.database import open_engine, session_scope
from nurture.store.outbox import MessageKind, OutboxMessage
from tests.acceptance.conftest import BLAST, Cli, Run
from tests.conftest import SmtpServer

START = datetime(2026, 11, 20, 23, 30, tzinfo=UTC)  # Friday 15:30 in Los Angeles


def _leads(project: Path) -> list[dict[str, str]]:
    import csv

    with open(project / "leads.csv", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _predicted(cli: Cli, project: Path, days: int) -> set[tuple[str, str, str, datetime]]:
    """Every email simulate predicts for every lead of the example, from START."""
    audiences = {
        "pricing-guide": "pricing-guide-welcome",
        "outbound": "outbound-first-touch",
        "recycled": "recycled-reengage",
    }
    predicted = set()
    for lead in _leads(project):
        sequence = audiences.get(lead["source"])
        if sequence is None:
            continue
        result = cli("simulate", sequence, "--lead", lead["email"], "--start",
                     START.isoformat(), "--days", str(days), "--json")  # fmt: skip
        for entry in json.loads(result.stdout):
            if entry["kind"] == "email":
                moment = datetime.fromisoformat(entry["utc"])
                predicted.add((lead["email"], sequence, entry["step"], moment))
    return predicted


def test_tick_through_two_weeks_delivers_exactly_what_simulate_predicts(
    cli: Cli, project: Path, smtp_server: SmtpServer
) -> None:
    predicted = _predicted(cli, project, days=14)
    assert len(predicted) >= 10
    horizon = START + timedelta(days=14)
    # Tick at every predicted moment and every three hours in between, so that an
    # email going early or late would show.
    moments = {moment for *_, moment in predicted}
    grid = START
    while grid <= horizon:
        moments.add(grid)
        grid += timedelta(hours=3)
    for moment in sorted(moments):
        cli("tick", "--now", moment.isoformat())
        # Salespeople do each task as soon as it is due (what simulate assumes), and
        # nobody answers the calls (simulate assumes no outcome).
        listed = json.loads(cli("tasks", "list", "--json").stdout)
        with freeze_time(moment):
            for task in listed:
                outcome = "no_answer" if task["outcomes"] else "spoke to them"
                cli("tasks", "done", str(task["id"]), "--outcome", outcome)
    engine = open_engine(f"sqlite:///{project / 'nurture.db'}")
    with session_scope(engine) as session:
        rows = {row.message_id: row for row in session.exec(select(OutboxMessage))}
    engine.dispose()
    delivered = set()
    # The leads' email (sales' own mail, like the digest of the tasks the sequences give
    # the team, is not what simulate predicts).
    to_leads = [m for m in smtp_server.handler.messages
                if rows[m["Message-ID"]].kind == MessageKind.email.value]  # fmt: skip
    for message in to_leads:
        row = rows[message["Message-ID"]]
        delivered.add((row.recipient, row.sequence, row.step, message["Date"].datetime))
    assert delivered == predicted
    assert len(to_leads) == len(predicted)  # nothing twice


def test_tasks_list_and_done(cli: Cli) -> None:
    # Outbound: intro emails, then a LinkedIn task one business day later.
    moment = datetime(2026, 11, 23, 0, 0, tzinfo=UTC)
    while moment < datetime(2026, 11, 26, 0, 0, tzinfo=UTC):
        cli("tick", "--now", moment.isoformat())
        moment += timedelta(hours=2)
    listed = json.loads(cli("tasks", "list", "--json", "--owner", "lee@example.com").stdout)
    assert {task["kind"] for task in listed} == {"linkedin"}
    assert {task["lead"]["email"] for task in listed} == {
        "olivia.grant@fernleaf.co.uk", "aiko.tanaka@sakura-foods.jp"}  # fmt: skip
    assert listed[0]["note"].startswith("Connect with ")
    everyone = json.loads(cli("tasks", "list", "--json").stdout)
    assert f"{len(everyone)} tasks" in cli("tasks", "list").stdout
    done = cli("tasks", "done", str(listed[0]["id"]), "--outcome", "connected")
    assert f"task {listed[0]['id']} done" in done.stdout
    again = cli("tasks", "done", str(listed[0]["id"]), ok=False)
    assert again.exit_code == 1


def test_enroll_by_hand_and_status(cli: Cli) -> None:
    result = cli("enroll", "outbound-first-touch", "--lead", "lucas.martin@atelier-nord.fr")
    assert "enrolled lucas.martin@atelier-nord.fr" in result.stdout
    again = cli("enroll", "outbound-first-touch", "--lead", "lucas.martin@atelier-nord.fr",
                ok=False)  # fmt: skip
    assert again.exit_code == 1 and "already in outbound-first-touch" in str(again.exception)
    result = cli("enroll", "recycled-reengage", "--where", "lead.employees | int > 500")
    assert "enrolled 1 leads in recycled-reengage" in result.stdout
    status = json.loads(cli("status", "--json").stdout)
    assert status["enrollments"]["by_sequence"] == {
        "outbound-first-touch": {"active": 1}, "recycled-reengage": {"active": 1}}  # fmt: skip


def test_check_reports_how_many_in_flight_leads_an_edit_affects(cli: Cli, project: Path) -> None:
    cli("tick", "--now", START.isoformat())
    path = project / "sequences" / "pricing-guide-welcome.yaml"
    text = path.read_text()
    start = text.index("  - id: case-study")
    end = text.index("  - id: call")
    path.write_text(text[:start] + text[end:])
    result = cli("check", ok=False)
    assert "step 'case-study' removed (1 lead waiting at it moves on)" in result.stdout
    assert "4 leads in flight" in result.stdout


def _wait_for(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def test_sigterm_finishes_the_sends_in_flight_and_loses_nothing(
    nurture: Run, tmp_path: Path, smtp_server: SmtpServer
) -> None:
    assert nurture("init", "p").returncode == 0
    project = tmp_path / "p"
    for path in (project / "sequences").iterdir():
        path.unlink()
    (project / "sequences" / "blast.yaml").write_text(BLAST)
    rows = "\n".join(f"lead{i}@example.com,bulk" for i in range(30))
    (project / "bulk.csv").write_text("email,source\n" + rows + "\n")
    env = {"NURTURE_SMTP_HOST": "127.0.0.1", "NURTURE_SMTP_PORT": str(smtp_server.port),
           "NURTURE_SMTP_MAX_CONNECTIONS": "2", "NURTURE_DAEMON_BATCH_SIZE": "4"}  # fmt: skip
    assert nurture("db", "upgrade", cwd=project).returncode == 0
    assert nurture("leads", "import", "bulk.csv", cwd=project).returncode == 0
    smtp_server.handler.delay = 0.3
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    daemon = subprocess.Popen(
        [sys.executable, "-m", "nurture", "run", "--log-json"], cwd=project,
        env={**base_env, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _wait_for(lambda: len(smtp_server.handler.messages) >= 2)
        daemon.send_signal(signal.SIGTERM)
        _, stderr = daemon.communicate(timeout=30)
    finally:
        if daemon.poll() is None:
            daemon.kill()
    assert daemon.returncode == 0, stderr
    lines = [json.loads(line) for line in stderr.splitlines()]
    assert lines[-1]["message"] == "daemon stopped"
    engine = open_engine(f"sqlite:///{project / 'nurture.db'}")
    with session_scope(engine) as session:
        outbox = list(session.exec(select(OutboxMessage)))
    received = {m["Message-ID"] for m in smtp_server.handler.messages}
    sent = {row.message_id for row in outbox if row.status == "sent"}
    assert received == sent  # every message the server took is recorded as sent
    assert len(sent) < 30  # it stopped before the end...
    assert {row.status for row in outbox} <= {"sent", "queued"}  # ...and nothing is lost
    smtp_server.handler.delay = 0
    result = nurture("tick", cwd=project, env=env)
    assert result.returncode == 0, result.stderr
    assert len(smtp_server.handler.messages) == 30
    assert len({m["Message-ID"] for m in smtp_server.handler.messages}) == 30
    engine.dispose()


def test_run_until_idle_on_the_embedded_defaults_writes_the_maildir(
    nurture: Run, tmp_path: Path
) -> None:
    assert nurture("init", "p").returncode == 0
    project = tmp_path / "p"
    (project / "sequences" / "blast.yaml").write_text(BLAST)
    (project / "bulk.csv").write_text("email,source\nbulk1@example.com,bulk\n")
    assert nurture("db", "upgrade", cwd=project).returncode == 0
    assert nurture("leads", "import", "leads.csv", cwd=project).returncode == 0
    assert nurture("leads", "import", "bulk.csv", cwd=project).returncode == 0
    result = nurture("run", "--until-idle", cwd=project)
    assert result.returncode == 0, result.stderr
    assert "daemon stopped" in result.stderr
    files = list((project / "outbox" / "new").iterdir())
    assert len(files) >= 1
    assert any("To: bulk1@example.com" in f.read_text() for f in files)
    status = nurture("status", "--json", cwd=project)
    assert json.loads(status.stdout)["outbox"]["sent"] == len(files)


def test_a_broken_template_fails_the_enrollment_until_fixed_and_resumed(
    cli: Cli, project: Path, smtp_server: SmtpServer
) -> None:
    template = project / "templates" / "welcome.html.j2"
    good = template.read_text()
    template.write_text(good.replace("{% block content %}", "{% block content %}{{ lead.nope }}"))
    cli("tick", "--now", "2026-11-23T10:00:00-08:00")
    status = json.loads(cli("status", "--json").stdout)
    failures = [f for f in status["failures"] if f["sequence"] == "pricing-guide-welcome"]
    assert failures and all("welcome.html.j2" in f["error"] for f in failures)
    assert "nope" in failures[0]["error"]
    listed = cli("enrollments", "list", "--status", "failed", "--json").stdout
    assert len(json.loads(listed)) == len(failures)
    template.write_text(good)
    result = cli("enrollments", "resume", "pricing-guide-welcome")
    assert f"resumed {len(failures)} enrollments" in result.stdout
    before = len(smtp_server.handler.messages)
    cli("tick", "--now", "2026-11-23T10:05:00-08:00")
    assert len(smtp_server.handler.messages) - before == len(failures)


def test_pause_holds_an_enrollment_and_resume_lets_it_go_on(
    cli: Cli, smtp_server: SmtpServer
) -> None:
    cli(
        "enrollments",
        "pause",
        "pricing-guide-welcome",
        "--lead",
        "maria.lopez@brightpath.io",
        ok=True,
    )  # nothing enrolled yet: nothing to pause
    cli("tick", "--now", "2026-11-22T10:00:00-08:00")  # Sunday: enrolled, nothing due
    result = cli("enrollments", "pause", "pricing-guide-welcome", "--lead",
                 "maria.lopez@brightpath.io")  # fmt: skip
    assert "paused 1 enrollments" in result.stdout
    cli("tick", "--now", "2026-11-23T10:00:00-08:00")
    recipients = {m["To"].addresses[0].addr_spec for m in smtp_server.handler.messages}
    assert "maria.lopez@brightpath.io" not in recipients
    cli("enrollments", "resume", "pricing-guide-welcome", "--lead", "maria.lopez@brightpath.io")
    cli("tick", "--now", "2026-11-23T10:01:00-08:00")
    recipients = {m["To"].addresses[0].addr_spec for m in smtp_server.handler.messages}
    assert "maria.lopez@brightpath.io" in recipients


def test_enroll_where_sees_events_and_reports_what_it_could_not_evaluate(cli: Cli) -> None:
    result = cli("enroll", "outbound-first-touch", "--where", "lead.employees | int > 800")
    assert "enrolled 1 leads" in result.stdout
    bad = cli("enroll", "outbound-first-touch", "--where", "lead.employees > 5", ok=False)
    assert bad.exit_code == 1
    assert "could not be evaluated for 10 leads" in bad.stderr
    typo = cli("enroll", "outbound-first-touch", "--where", "leed.source == 'x'", ok=False)
    assert typo.exit_code == 1 and "did you mean 'lead'" in str(typo.exception)
