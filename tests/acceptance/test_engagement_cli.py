"""Engagement through the commands: nurture event, nurture serve, nurture run --serve."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.acceptance.conftest import Run
from tests.conftest import free_port


def _project(nurture: Run, tmp_path: Path) -> Path:
    assert nurture("init", "p").returncode == 0
    project = tmp_path / "p"
    assert nurture("db", "upgrade", cwd=project).returncode == 0
    assert nurture("leads", "import", "leads.csv", cwd=project).returncode == 0
    return project


def test_event_command_records_once_and_acts(nurture: Run, tmp_path: Path) -> None:
    project = _project(nurture, tmp_path)
    lead = "maria.lopez@brightpath.io"
    assert nurture("tick", "--now", "2026-11-20T10:00:00-08:00", cwd=project).returncode == 0
    result = nurture(
        "event",
        "email_replied",
        "--lead",
        lead,
        "--sequence",
        "pricing-guide-welcome",
        "--step",
        "welcome",
        "--data",
        "note=hi",
        "--at",
        "2026-11-20T18:01:00Z",
        cwd=project,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"recorded email_replied for {lead}")
    tick = nurture("tick", "--now", "2026-11-20T10:05:00-08:00", cwd=project)
    assert "exited 1" in tick.stdout
    shown = nurture("enrollments", "list", "--lead", lead, "--json", cwd=project)
    [enrollment] = json.loads(shown.stdout)
    assert (enrollment["status"], enrollment["reason"]) == ("exited", "replied")
    unsubscribe = nurture("event", "unsubscribed", "--lead", lead, cwd=project)
    assert unsubscribe.returncode == 0
    show = json.loads(nurture("leads", "show", lead, "--json", cwd=project).stdout)
    assert show["status"] == "unsubscribed"
    # A later import saying "subscribed" never undoes it.
    (project / "again.csv").write_text(f"email,status\n{lead},subscribed\n")
    nurture("leads", "import", "again.csv", cwd=project)
    show = json.loads(nurture("leads", "show", lead, "--json", cwd=project).stdout)
    assert show["status"] == "unsubscribed"
    bad = nurture("event", "Not A Type", "--lead", lead, cwd=project)
    assert bad.returncode == 1 and "event type 'Not A Type'" in bad.stderr
    nobody = nurture("event", "form_submitted", "--lead", "x@example.com", cwd=project)
    assert nobody.returncode == 1 and "no lead with email x@example.com" in nobody.stderr
    assert "Traceback" not in bad.stderr + nobody.stderr


def _wait_healthy(url: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1]
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("the server did not come up")


def _start(project: Path, *args: str, port: int) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    env["NURTURE_SERVER_PORT"] = str(port)
    return subprocess.Popen(
        [sys.executable, "-m", "nurture", *args],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_serve_answers_and_stops_on_sigterm(nurture: Run, tmp_path: Path) -> None:
    project = _project(nurture, tmp_path)
    port = free_port()
    server = _start(project, "serve", port=port)
    try:
        _wait_healthy(f"http://127.0.0.1:{port}", server)
        off = httpx.post(f"http://127.0.0.1:{port}/api/events", json={}, timeout=5)
        assert off.status_code == 503 and "[api] key" in off.json()["detail"]
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=20)
    finally:
        if server.poll() is None:
            server.kill()
    assert server.returncode == 0


def test_run_serve_runs_the_daemon_and_the_server_in_one_process(
    nurture: Run, tmp_path: Path
) -> None:
    project = _project(nurture, tmp_path)
    port = free_port()
    daemon = _start(project, "run", "--serve", port=port)
    try:
        _wait_healthy(f"http://127.0.0.1:{port}", daemon)
        daemon.send_signal(signal.SIGTERM)
        _, stderr = daemon.communicate(timeout=30)
    finally:
        if daemon.poll() is None:
            daemon.kill()
    assert daemon.returncode == 0, stderr
    assert "server listening" in stderr and "daemon stopped" in stderr


def test_a_second_run_on_the_same_sqlite_file_waits_as_a_standby(
    nurture: Run, tmp_path: Path
) -> None:
    project = _project(nurture, tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    env["NURTURE_DAEMON_INTERVAL"] = "1"

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "nurture", "run", "--log-json"],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    first = start()
    try:
        deadline = time.monotonic() + 30
        while (
            not (project / "nurture.db.lock").exists()
            or "pid" not in (project / "nurture.db.lock").read_text()
        ):
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.1)
        second = start()
        try:
            deadline = time.monotonic() + 30
            while True:
                status = json.loads(nurture("status", "--json", cwd=project).stdout)
                roles = sorted(w["role"] for w in status["workers"] if w["alive"])
                if roles == ["active", "standby"]:
                    break
                assert time.monotonic() < deadline, roles
                time.sleep(0.2)
            first.send_signal(signal.SIGTERM)
            assert first.wait(30) == 0
            deadline = time.monotonic() + 30
            while True:
                status = json.loads(nurture("status", "--json", cwd=project).stdout)
                roles = [w["role"] for w in status["workers"] if w["alive"]]
                if roles == ["active"]:
                    break
                assert time.monotonic() < deadline, roles
                time.sleep(0.2)
            second.send_signal(signal.SIGTERM)
            _, stderr = second.communicate(timeout=30)
            assert second.returncode == 0
            messages = [json.loads(line)["message"] for line in stderr.splitlines()]
            assert messages[0].startswith("another nurture run works on this SQLite database")
            assert "the other worker stopped: taking over" in messages
        finally:
            if second.poll() is None:
                second.kill()
    finally:
        if first.poll() is None:
            first.kill()
