"""kill -9: the daemon is killed at random moments while it sends to a real SMTP server,
and restarted. No lead gets an email twice; every lead gets its email, except the ones
held as uncertain (in flight at a kill), which are reported, never resent on their own."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlmodel import select

from nurture.database import open_engine
from nurture.outbox import OutboxMessage
from nurture.store import session_scope
from tests.acceptance.conftest import Run
from tests.conftest import SmtpServer

LEADS = 300
KILLS = 5
BATCH = 20
SEQUENCE = """\
name: blast
audience: "lead.source == 'bulk'"
from: "Ana Ruiz <ana@example.com>"
steps:
  - id: hello
    email: welcome
"""


@pytest.mark.slow
def test_kill_9_loses_and_doubles_nothing(
    nurture: Run, tmp_path: Path, smtp_server: SmtpServer
) -> None:
    assert nurture("init", "p").returncode == 0
    project = tmp_path / "p"
    for path in (project / "sequences").iterdir():
        path.unlink()
    (project / "sequences" / "blast.yaml").write_text(SEQUENCE)
    rows = "\n".join(f"lead{i}@example.com,bulk" for i in range(LEADS))
    (project / "bulk.csv").write_text("email,source\n" + rows + "\n")
    env = {
        "NURTURE_SMTP_HOST": "127.0.0.1",
        "NURTURE_SMTP_PORT": str(smtp_server.port),
        "NURTURE_SMTP_MAX_CONNECTIONS": "2",
        "NURTURE_DAEMON_BATCH_SIZE": str(BATCH),
        "NURTURE_DAEMON_INTERVAL": "1",
        "NURTURE_DAEMON_DELIVERY_INTERVAL": "1",
        "NURTURE_DELIVERY_LEASE": "1",
    }
    assert nurture("db", "upgrade", cwd=project).returncode == 0
    assert nurture("leads", "import", "bulk.csv", cwd=project).returncode == 0
    smtp_server.handler.delay = 0.01
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    rng = random.Random(20261123)
    for _ in range(KILLS):
        daemon = subprocess.Popen(
            [sys.executable, "-m", "nurture", "run"],
            cwd=project,
            env={**base_env, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(1.0, 2.5))
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
    time.sleep(1.5)  # the last leases run out
    finish = nurture("run", "--until-idle", cwd=project, env=env)
    assert finish.returncode == 0, finish.stderr

    received = Counter(m["To"].addresses[0].addr_spec for m in smtp_server.handler.messages)
    assert max(received.values()) == 1, "a lead got an email twice"
    engine = open_engine(f"sqlite:///{project / 'nurture.db'}")
    with session_scope(engine) as session:
        outbox = list(session.exec(select(OutboxMessage)))
    engine.dispose()
    assert len(outbox) == LEADS  # one email per lead was queued, never two
    status = Counter(row.status for row in outbox)
    assert set(status) <= {"sent", "uncertain"}, status
    uncertain = [row for row in outbox if row.status == "uncertain"]
    assert len(uncertain) <= KILLS * 2  # at most the connections in flight at each kill
    sent = {row.recipient for row in outbox if row.status == "sent"}
    assert sent == set(received) - {row.recipient for row in uncertain}
    # Held messages were reported, not resent: those the server did not get are missing
    # until someone resends them, and the report says so.
    for row in uncertain:
        assert "outbox resend" in (row.last_error or "")
    print(
        f"kill -9 x{KILLS}: {status['sent']} sent, {len(uncertain)} held as uncertain, of "
        f"which {sum(r.recipient in received for r in uncertain)} had reached the server"
    )
