"""Many workers and faults, with real processes: four ``nurture run`` on one PostgreSQL
database share the work and deliver each touch once; workers carry on when PostgreSQL
drops their connections; a mail server that stops for a while loses nothing."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from subprocess import Popen

import pytest
from sqlalchemy import Engine, text
from sqlmodel import select

from bench.smtp_sink import SinkProcess
from nurture.store.database import open_engine, session_scope
from nurture.store.outbox import OutboxMessage
from tests.acceptance.conftest import Run, bulk_project, worker


def _env(sink: SinkProcess, **more: str) -> dict[str, str]:
    return {
        "NURTURE_SMTP_HOST": "127.0.0.1",
        "NURTURE_SMTP_PORT": str(sink.port),
        "NURTURE_SMTP_MAX_CONNECTIONS": "2",
        "NURTURE_DAEMON_BATCH_SIZE": "100",
        "NURTURE_DAEMON_INTERVAL": "1",
        "NURTURE_DAEMON_DELIVERY_INTERVAL": "1",
        "NURTURE_LIMITS_PER_SENDER_DAILY": "100000",  # the daily cap is not under test
        **more,
    }


def _enrolled(nurture: Run, directory: Path, leads: int, env: dict[str, str]) -> Path:
    """A project on *env*'s database whose *leads* leads are enrolled, due now."""
    project = bulk_project(nurture, directory, leads, env)
    enrolled = nurture("enroll", "blast", "--where", "lead.source == 'bulk'", "--yes",
                        cwd=project, env=env)  # fmt: skip
    assert enrolled.returncode == 0, enrolled.stderr
    return project


def _outbox(url: str) -> list[OutboxMessage]:
    engine = open_engine(url)
    with session_scope(engine) as session:
        rows = list(session.exec(select(OutboxMessage)))
    engine.dispose()
    return rows


def _wait(workers: list[Popen[str]], log: Path, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    for process in workers:
        try:
            code = process.wait(max(deadline - time.monotonic(), 1))
        except Exception:
            for other in workers:
                other.kill()
            raise AssertionError(f"a worker did not finish:\n{log.read_text()[-3000:]}") from None
        assert code == 0, log.read_text()[-3000:]


def _until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.postgresql
def test_four_workers_share_the_work_and_deliver_each_touch_once(
    nurture: Run, tmp_path: Path, sink: SinkProcess, pg_url: str
) -> None:
    # Given 5,000 leads enrolled in a one-email sequence on PostgreSQL
    leads = 5000
    env = _env(sink, NURTURE_DATABASE_URL=pg_url)
    project = _enrolled(nurture, tmp_path / "p", leads, env)

    # When four workers run until nothing is due
    log = tmp_path / "workers.log"
    workers = [worker(project, env, "--until-idle", log=log) for _ in range(4)]
    _wait(workers, log)

    # Then every lead got its email exactly once, and all four workers did a share
    received = Counter(recipient for _, recipient, _ in sink.received())
    assert set(received) == {f"lead{i}@example.com" for i in range(leads)}
    assert max(received.values()) == 1, "a touch was delivered twice"
    outbox = _outbox(pg_url)
    assert len(outbox) == leads and {row.status for row in outbox} == {"sent"}
    shares = Counter(row.worker for row in outbox)
    assert len(shares) == 4 and min(shares.values()) > 0, shares
    print(f"four workers, {leads} touches: shares {sorted(shares.values())}")


@pytest.mark.slow
@pytest.mark.postgresql
def test_workers_recover_when_postgresql_drops_their_connections(
    nurture: Run, tmp_path: Path, sink: SinkProcess, pg_url: str, pg_admin: Engine
) -> None:
    # Given two workers sending 1,500 due touches on PostgreSQL
    leads = 1500
    env = _env(sink, NURTURE_DATABASE_URL=pg_url)
    project = _enrolled(nurture, tmp_path / "p", leads, env)
    log = tmp_path / "workers.log"
    workers = [worker(project, env, "--until-idle", log=log) for _ in range(2)]

    # When every connection to their database is terminated, six times, mid-run
    database = pg_url.rsplit("/", 1)[1]
    terminated = 0
    _until(lambda: len(sink.received()) > 0, 120, "no email went out")
    for _ in range(6):
        with pg_admin.connect() as connection:
            terminated += len(
                connection.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": database},
                ).all()
            )
        time.sleep(1.0)

    # Then the workers carry on and finish: each touch delivered once, none held
    _wait(workers, log)
    assert terminated > 0
    assert "database unavailable: retrying" in log.read_text()
    received = Counter(recipient for _, recipient, _ in sink.received())
    assert set(received) == {f"lead{i}@example.com" for i in range(leads)}
    assert max(received.values()) == 1, "a touch was delivered twice"
    assert {row.status for row in _outbox(pg_url)} == {"sent"}
    print(f"{terminated} connections terminated; {len(received)} delivered once each")


@pytest.mark.slow
def test_mail_server_outage_loses_nothing_and_the_backlog_drains(
    nurture: Run, tmp_path: Path, sink: SinkProcess
) -> None:
    # Given a worker sending 800 emails, retrying a refused connection after a second
    leads = 800
    # A message cut off mid-DATA by the stop may have gone: sent again (on_uncertain).
    env = _env(sink, NURTURE_DELIVERY_RETRY_AFTER="1", NURTURE_DELIVERY_RETRY_MAX="2",
               NURTURE_DELIVERY_ON_UNCERTAIN="resend")  # fmt: skip
    project = bulk_project(nurture, tmp_path / "p", leads, env)
    log = tmp_path / "worker.log"
    daemon = worker(project, env, log=log)
    try:
        # When the mail server stops for a while mid-run, then comes back
        _until(lambda: len(sink.received()) >= 100, 120, "no email went out")
        sink.stop()
        stopped_at = len(sink.received())
        time.sleep(4)
        sink.start()

        # Then the backlog drains: every lead gets its email
        _until(lambda: len({r for _, r, _ in sink.received()}) >= leads, 180, "backlog left")
    finally:
        daemon.terminate()
        assert daemon.wait(60) == 0, log.read_text()[-3000:]
    assert stopped_at < leads
    received = Counter(recipient for _, recipient, _ in sink.received())
    assert set(received) == {f"lead{i}@example.com" for i in range(leads)}
    # Only a message cut off by the stop itself can have gone twice (the server took it
    # but its answer never came back): at most one per connection.
    assert sum(count - 1 for count in received.values()) <= 2
    outbox = _outbox(f"sqlite:///{project / 'nurture.db'}")
    assert {row.status for row in outbox} == {"sent"}
    assert any(row.attempts > 1 for row in outbox)  # the refused sends were retried
    text_log = log.read_text()
    assert "mail server unreachable" in text_log
    print(f"outage after {stopped_at} emails; all {leads} delivered")
