"""Speed to sales with real processes: a meeting booked through the API (a ``hot_on``
event) makes María hot, and her owner's notice reaches a real SMTP sink within seconds
under ``nurture run --serve``, not at the next pass an hour away; exactly one."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from bench.smtp_sink import SinkProcess, read_log
from tests.acceptance.conftest import Run, worker
from tests.acceptance.test_speed_to_lead import _listening, _wait_until
from tests.conftest import free_port

KEY = "speed-to-sales-key-0123456789abcdef"
MARIA = "maria.lopez@brightpath.io"


def test_a_meeting_booked_hands_the_lead_off_within_seconds(
    nurture: Run, tmp_path: Path, db_url: str
) -> None:
    sink = SinkProcess(free_port(), tmp_path / "sink.log").start()
    port = free_port()
    env = {
        "NURTURE_DATABASE_URL": db_url,
        "NURTURE_SMTP_HOST": "127.0.0.1",
        "NURTURE_SMTP_PORT": str(sink.port),
        "NURTURE_SMTP_STARTTLS": "false",
        "NURTURE_TRACKING_SECRET": "speed-to-sales-secret-0123456789",
        "NURTURE_SERVER_PORT": str(port),
        "NURTURE_API_KEY": KEY,
        "NURTURE_DAEMON_INTERVAL": "3600",  # the next pass is an hour away
        "NURTURE_DAEMON_DELIVERY_INTERVAL": "3600",
    }
    directory = tmp_path / "site"
    assert nurture("init", directory.name, cwd=tmp_path).returncode == 0
    assert nurture("db", "upgrade", cwd=directory, env=env).returncode == 0
    done = nurture("leads", "import", "leads.csv", cwd=directory, env=env)
    assert done.returncode == 0, done.stderr
    log = tmp_path / "daemon.log"
    process = worker(directory, env, "--serve", log=log)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until(lambda: _listening(url), "server", process)
        _wait_until(lambda: "pass done" in log.read_text(), "first pass", process)

        def notices() -> list[tuple[float, str, str]]:
            return [row for row in read_log(sink.log) if row[1] == "sam@example.com"]

        assert notices() == []
        booked = time.time()
        answer = httpx.post(f"{url}/api/events", headers={"X-API-Key": KEY}, timeout=10,
                            json={"type": "meeting_booked", "lead": MARIA})  # fmt: skip
        assert answer.status_code == 201, answer.text
        _wait_until(lambda: len(notices()) >= 1, "hand-off notice", process, timeout=10)
        [(arrived, _, _)] = notices()
        assert arrived - booked < 10
        # Later passes and lanes add nothing: one notice per hand-off.
        httpx.post(f"{url}/api/events", headers={"X-API-Key": KEY}, timeout=10,
                   json={"type": "page_visited", "lead": MARIA})  # fmt: skip
        _wait_until(lambda: log.read_text().count("arrivals served") >= 2, "second lane",
                    process, timeout=10)  # fmt: skip
        assert len(notices()) == 1
    finally:
        process.terminate()
        assert process.wait(30) == 0, log.read_text()
        sink.stop()
