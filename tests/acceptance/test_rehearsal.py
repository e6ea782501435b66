"""Rehearsal: the global ``--now`` / ``NURTURE_NOW`` gives every command one clock, and
moments typed without an offset follow one rule (the project's default timezone)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.acceptance.conftest import Run

MARIA = "maria.lopez@brightpath.io"  # America/Los_Angeles; the project is America/New_York
#: Far ahead of any real date this suite runs on: a rehearsal in the future.
DAY = "2040-03-05"  # a Monday


def _project(nurture: Run, tmp_path: Path) -> Path:
    assert nurture("init", "p").returncode == 0
    project = tmp_path / "p"
    assert nurture("db", "upgrade", cwd=project).returncode == 0
    imported = nurture("--now", f"{DAY}T08:00", "leads", "import", "leads.csv", cwd=project)
    assert imported.returncode == 0, imported.stderr
    return project


def test_a_rehearsal_moves_through_time_with_one_clock(nurture: Run, tmp_path: Path) -> None:
    project = _project(nurture, tmp_path)
    # Given a pass rehearsed on a future day (12:00 in New York, 9:00 for Maria)
    tick = nurture("--now", f"{DAY}T12:00", "tick", cwd=project)
    assert tick.returncode == 0, tick.stderr
    assert f"tick at {DAY}T17:00:00+00:00" in tick.stdout
    # Log lines carry the rehearsed moment, not the real one.
    logged = [line for line in tick.stderr.splitlines() if " INFO " in line]
    assert logged and all(line.startswith(f"{DAY}T17:00:00Z") for line in logged)
    # When an event is recorded "now" in the rehearsal (after the real time: accepted)
    event = nurture(
        "--now", f"{DAY}T12:30", "event", "meeting_booked", "--lead", MARIA, cwd=project
    )
    assert event.returncode == 0, event.stderr
    assert f"at {DAY}T17:30:00+00:00" in event.stdout
    # Then it comes after the enrollment and counts: the next pass ends the sequence.
    later = nurture("tick", cwd=project, env={"NURTURE_NOW": f"{DAY}T13:00"})
    assert "exited 1" in later.stdout, later.stdout
    listed = nurture(
        "--now", f"{DAY}T13:00", "enrollments", "list", "--lead", MARIA, "--json", cwd=project
    )
    rows = json.loads(listed.stdout)
    [enrollment] = [e for e in rows if e["sequence"] == "pricing-guide-welcome"]
    assert (enrollment["status"], enrollment["reason"]) == ("exited", "meeting_booked")


def test_moments_without_an_offset_are_the_projects_timezone(nurture: Run, tmp_path: Path) -> None:
    project = _project(nurture, tmp_path)
    # event --at: no offset is New York time (it was UTC), an offset is kept.
    at = nurture(
        "--now", f"{DAY}T20:00Z", "event", "page_visited", "--lead", MARIA,
        "--at", f"{DAY}T09:15", cwd=project,
    )  # fmt: skip
    assert f"at {DAY}T14:15:00+00:00" in at.stdout, at.stderr
    with_offset = nurture(
        "--now", f"{DAY}T20:00Z", "event", "form_submitted", "--lead", MARIA,
        "--at", f"{DAY}T09:15+01:00", cwd=project,
    )  # fmt: skip
    assert f"at {DAY}T08:15:00+00:00" in with_offset.stdout
    # tick --now (kept as it was) and the global --now read the same.
    tick = nurture("tick", "--now", f"{DAY}T11:00", cwd=project)
    assert f"tick at {DAY}T16:00:00+00:00" in tick.stdout
    # simulate --start: no offset is New York time too (it was the lead's).
    simulated = nurture(
        "simulate", "pricing-guide-welcome", "--lead", MARIA, "--start", f"{DAY}T12:00",
        "--days", "1", "--json", cwd=project,
    )  # fmt: skip
    assert simulated.returncode == 0, simulated.stderr
    first = json.loads(simulated.stdout)[0]
    assert first["utc"].startswith(f"{DAY}T17:00"), first
    # The global --now with no --start starts the simulation there.
    pinned = nurture(
        "--now", f"{DAY}T12:00", "simulate", "pricing-guide-welcome", "--lead", MARIA,
        "--days", "1", "--json", cwd=project,
    )  # fmt: skip
    assert json.loads(pinned.stdout)[0]["utc"] == first["utc"]


def test_a_bad_now_is_one_line_exit_2(nurture: Run, tmp_path: Path) -> None:
    project = _project(nurture, tmp_path)
    result = nurture("--now", "next tuesday", "status", cwd=project)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "nurture: --now 'next tuesday': not an ISO 8601 moment like 2026-11-20T15:30 "
        "(or 2026-11-20T15:30+01:00)"
    ]
    assert nurture("--now", "x", "init", "q", cwd=tmp_path).returncode == 2


def test_run_serve_under_now_has_one_clock_for_the_daemon_and_the_server(
    nurture: Run, tmp_path: Path
) -> None:
    """The server of ``nurture --now ... run --serve`` stores what it records (API
    events, clicks) at the rehearsed moment, as the daemon does its sends."""
    import email
    import os
    import signal
    import subprocess
    import sys
    import time

    import httpx

    from tests.conftest import free_port

    project = _project(nurture, tmp_path)
    port, key = free_port(), "rehearsal-key-0123456789"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")},
           "NURTURE_SERVER_PORT": str(port), "NURTURE_API_KEY": key,
           "NURTURE_TRACKING_BASE_URL": f"http://127.0.0.1:{port}"}  # fmt: skip
    daemon = subprocess.Popen(
        [sys.executable, "-m", "nurture", "--now", f"{DAY}T12:00", "run", "--serve"],
        cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        # The daemon sends Maria's welcome (9:00 for her) into the Maildir outbox.
        def to_maria() -> list[email.message.Message]:
            messages = [email.message_from_bytes(path.read_bytes())
                        for path in (project / "outbox" / "new").glob("*")]  # fmt: skip
            return [m for m in messages if MARIA in str(m["To"])]

        deadline = time.monotonic() + 60
        while not to_maria():
            assert daemon.poll() is None, daemon.communicate()[1]
            assert time.monotonic() < deadline, "no email within 60 s"
            time.sleep(0.1)
        [message] = to_maria()
        body = next(p for p in message.walk() if p.get_content_type() == "text/html")
        html = body.get_payload(decode=True).decode()  # type: ignore[union-attr]
        click = html[html.index(f"{url}/c/") :].split('"', 1)[0].replace("&amp;", "&")
        with httpx.Client(timeout=10) as http:
            assert http.get(click, follow_redirects=False).status_code == 302
            posted = http.post(f"{url}/api/events", json={"type": "page_visited", "lead": MARIA},
                               headers={"Authorization": f"Bearer {key}"})  # fmt: skip
            assert posted.status_code == 201, posted.text
            shown = http.get(f"{url}/api/leads/{MARIA}",
                             headers={"Authorization": f"Bearer {key}"}).json()  # fmt: skip
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
    moments = {item["type"]: item["at"] for item in shown["timeline"]}
    for kind in ("email_sent", "email_clicked", "page_visited"):
        assert moments[kind].startswith(f"{DAY}T17:0"), (kind, moments)
