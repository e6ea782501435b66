"""kill -9: the daemon is killed at random moments while it sends to a real SMTP server
(another process), and restarted each time. No lead gets an email twice; every lead gets
its email, except the ones held as uncertain (in flight at a kill): reported, never
resent on their own, and no more of them than were in flight at each kill: at most
:func:`~nurture.mail.ledger.in_flight_at_most` (per connection the one being handed over
and the next one started, and the sent ones whose outcome was not written yet)."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlmodel import select

from bench.smtp_sink import SinkProcess
from nurture.mail.ledger import in_flight_at_most
from nurture.store.database import open_engine, session_scope
from nurture.store.outbox import OutboxMessage
from tests.acceptance.conftest import Run, bulk_project, worker

LEADS = 2000
KILLS = 10
CONNECTIONS = 2


@pytest.mark.slow
def test_kill_9_loses_and_doubles_nothing(nurture: Run, tmp_path: Path, sink: SinkProcess) -> None:
    # Given 2,000 leads due for one email, and a worker that sends over 2 connections
    env = {
        "NURTURE_SMTP_HOST": "127.0.0.1",
        "NURTURE_SMTP_PORT": str(sink.port),
        "NURTURE_SMTP_MAX_CONNECTIONS": str(CONNECTIONS),
        "NURTURE_DAEMON_BATCH_SIZE": "50",
        "NURTURE_DAEMON_INTERVAL": "1",
        "NURTURE_DAEMON_DELIVERY_INTERVAL": "1",
        "NURTURE_LIMITS_PER_SENDER_DAILY": "100000",  # the daily cap is not under test
    }
    project = bulk_project(nurture, tmp_path / "p", LEADS, env)
    log = tmp_path / "worker.log"

    # When it is SIGKILLed ten times while it sends, restarted each time: each kill
    # waits until the sink has received more than at the previous kill (progress, not a
    # fixed sleep, so a slow machine is tested as a fast one), then falls a random short
    # moment later
    rng = random.Random(20261124)
    received_at_kill: list[int] = []
    for _ in range(KILLS):
        before = len(sink.received())
        if before >= LEADS:
            break
        daemon = worker(project, env, log=log)
        _wait_for_progress(sink, before, daemon)
        time.sleep(rng.uniform(0.0, 0.3))
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
        received_at_kill.append(len(sink.received()))
    # and then left to finish
    finish = nurture("run", "--until-idle", cwd=project, env=env)
    assert finish.returncode == 0, finish.stderr

    # Then no lead got two emails, and every one not held as uncertain got one
    received = Counter(recipient for _, recipient, _ in sink.received())
    assert received and max(received.values()) == 1, "a lead got an email twice"
    engine = open_engine(f"sqlite:///{project / 'nurture.db'}")
    with session_scope(engine) as session:
        outbox = list(session.exec(select(OutboxMessage)))
    engine.dispose()
    assert len(outbox) == LEADS  # one email per lead was queued, never two
    status = Counter(row.status for row in outbox)
    assert set(status) <= {"sent", "uncertain"}, status
    uncertain = [row for row in outbox if row.status == "uncertain"]
    # at most those in flight at each kill
    assert len(uncertain) <= KILLS * in_flight_at_most(CONNECTIONS)
    sent = {row.recipient for row in outbox if row.status == "sent"}
    assert sent == set(received) - {row.recipient for row in uncertain}
    assert sent | {row.recipient for row in uncertain} == {
        f"lead{i}@example.com" for i in range(LEADS)
    }
    # Held messages were reported, not resent: `nurture status` counts them.
    for row in uncertain:
        assert "outbox resend" in (row.last_error or "")
    shown = nurture("status", "--json", cwd=project, env=env)
    assert f'"uncertain": {len(uncertain)}' in shown.stdout
    # The kills fell while mail was going out, not only before or after.
    assert len(received_at_kill) >= KILLS // 2, received_at_kill
    assert all(0 < n < LEADS for n in received_at_kill[:-1]), received_at_kill
    print(
        f"kill -9 x{KILLS}: {status['sent']} sent, {len(uncertain)} held as uncertain, of "
        f"which {sum(r.recipient in received for r in uncertain)} had reached the server; "
        f"received at each kill: {received_at_kill}"
    )


def _wait_for_progress(sink: SinkProcess, before: int, daemon: subprocess.Popen[str]) -> None:
    """Return once the sink holds more messages than *before*; the daemon must not exit.

    Polls the sink's log; the deadline only turns a hung daemon into a failure."""
    deadline = time.monotonic() + 300
    while len(sink.received()) <= before:
        assert daemon.poll() is None, f"the daemon exited ({daemon.returncode}) before sending"
        assert time.monotonic() < deadline, "the daemon sent nothing for 5 minutes"
        time.sleep(0.02)
