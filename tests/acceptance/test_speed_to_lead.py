"""Speed to lead with real processes: a lead posted to a form gets its welcome email
from a daemon whose next pass is an hour away, woken in its own process (``nurture run
--serve``) or from a separate ``nurture serve`` (LISTEN/NOTIFY on PostgreSQL, a cheap
poll on SQLite)."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from subprocess import Popen

import httpx
import pytest

from bench.smtp_sink import SinkProcess, read_log
from nurture import clock
from nurture.intake.forms import time_token
from tests.acceptance.conftest import Run, worker
from tests.conftest import free_port
from tests.web import WEB_WELCOME as SEQUENCE

SECRET = "speed-test-secret-0123456789"
FORM = """\
fields: {email: email, first_name: first_name}
set: {source: web-form}
min_seconds: 2
"""


def _project(nurture: Run, directory: Path, env: dict[str, str]) -> Path:
    assert nurture("init", directory.name, cwd=directory.parent).returncode == 0
    for path in (directory / "sequences").iterdir():
        path.unlink()
    (directory / "sequences" / "web-welcome.yaml").write_text(SEQUENCE)
    (directory / "forms" / "contact.yaml").write_text(FORM)
    done = nurture("db", "upgrade", cwd=directory, env=env)
    assert done.returncode == 0, done.stderr
    return directory


def _wait_until(
    check: Callable[[], bool], what: str, process: Popen[str], timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert process.poll() is None, f"the process stopped while waiting for {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.05)


def _post_form(url: str, email: str) -> None:
    token = time_token(SECRET, "contact", clock.now().timestamp() - 10)
    response = httpx.post(f"{url}/f/contact", data={"email": email, "first_name": "Ann",
                          "_t": token}, follow_redirects=False, timeout=10)  # fmt: skip
    assert response.status_code == 303, response.text


def _start(directory: Path, env: dict[str, str], *args: str, log: Path) -> Popen[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    output = open(log, "a")
    return Popen([sys.executable, "-m", "nurture", *args], cwd=directory, env={**base, **env},
                 stdout=output, stderr=output, text=True)  # fmt: skip


def _listening(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.parametrize("separate", [False, True], ids=["run-serve", "serve-and-run"])
def test_a_form_lead_gets_its_welcome_without_waiting_for_the_pass(
    nurture: Run, tmp_path: Path, db_url: str, separate: bool
) -> None:
    sink = SinkProcess(free_port(), tmp_path / "sink.log").start()
    port = free_port()
    env = {
        "NURTURE_DATABASE_URL": db_url,
        "NURTURE_SMTP_HOST": "127.0.0.1",
        "NURTURE_SMTP_PORT": str(sink.port),
        "NURTURE_SMTP_STARTTLS": "false",
        "NURTURE_TRACKING_SECRET": SECRET,
        "NURTURE_SERVER_PORT": str(port),
        "NURTURE_DAEMON_INTERVAL": "3600",  # the next pass is an hour away
        "NURTURE_DAEMON_DELIVERY_INTERVAL": "3600",
    }
    directory = _project(nurture, tmp_path / "site", env)
    log = tmp_path / "daemon.log"
    processes = [worker(directory, env, *(() if separate else ("--serve",)), log=log)]
    if separate:
        processes.append(_start(directory, env, "serve", log=tmp_path / "server.log"))
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until(lambda: _listening(url), "server", processes[-1])
        _wait_until(lambda: "daemon started" in log.read_text(), "daemon", processes[0])
        _wait_until(lambda: "pass done" in log.read_text() or "sequence deployed" in
                    log.read_text(), "first pass", processes[0])  # fmt: skip
        for index in range(3):
            _post_form(url, f"ann{index}@example.com")
            _wait_until(lambda n=index + 1: len(read_log(sink.log)) == n, "welcome email",
                        processes[0], timeout=30)  # fmt: skip
        assert [row[1] for row in read_log(sink.log)] == [
            f"ann{index}@example.com" for index in range(3)
        ]
        assert "arrivals served" in log.read_text()
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            assert process.wait(30) == 0, log.read_text()
        sink.stop()
