"""The pass in a process of its own (``[daemon] pass_process``, on by default): it runs
beside the daemon's delivery, logs as the daemon does, stops when the daemon stops, and
dies with it when the daemon is killed, leaving nothing half done."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from concurrent.futures import Future
from pathlib import Path
from subprocess import Popen

import pytest
from sqlalchemy import Engine
from sqlmodel import select

from nurture import clock, hooks
from nurture.config import load_settings
from nurture.daemon import Daemon
from nurture.stages.advance import FIRST_BATCH
from nurture.store.database import open_engine, session_scope
from nurture.store.outbox import OutboxMessage, due_waiting
from tests.acceptance.conftest import Run, bulk_project, worker

LEADS = 3000
#: Many small batches: the pass is still going when the test acts on the daemon.
ENV = {
    "NURTURE_DAEMON_BATCH_SIZE": "10",
    "NURTURE_DAEMON_INTERVAL": "1",
    "NURTURE_DAEMON_DELIVERY_INTERVAL": "1",
    "NURTURE_LIMITS_PER_SENDER_DAILY": "100000",
}


def _children(pid: int) -> list[int]:
    """The live processes whose parent is *pid* (read from ``/proc``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after its ")".
        state, ppid = stat.rpartition(")")[2].split()[:2]
        if int(ppid) == pid and state != "Z":
            found.append(int(entry.name))
    return found


def _pass_process(daemon: subprocess.Popen[str]) -> int:
    """The pid of *daemon*'s pass process, once it has one."""
    deadline = time.monotonic() + 120
    while True:
        for child in _spawned_children(daemon.pid):
            return child
        assert daemon.poll() is None, f"the daemon exited ({daemon.returncode})"
        assert time.monotonic() < deadline, "no pass process in 2 minutes"
        time.sleep(0.02)


def _spawned_children(pid: int) -> list[int]:
    """*pid*'s pass processes (not the resource tracker multiprocessing starts)."""
    found = []
    for child in _children(pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
            found.append(child)
    return found


def _daemon_mid_pass(nurture: Run, tmp_path: Path) -> tuple[Path, Path, Popen[str], int]:
    """A daemon whose pass is queueing :data:`LEADS` emails, batch by batch, in its own
    process (which logs as the daemon does): its project, log, process and pass process."""
    project = bulk_project(nurture, tmp_path / "p", LEADS, ENV)
    log = tmp_path / "worker.log"
    daemon = worker(project, ENV, log=log)
    child = _pass_process(daemon)
    # A committed batch (the log says "email queued" before its batch is written).
    _wait_until(lambda: len(_outbox(project)) > 0, "the pass queued nothing", log)
    return project, log, daemon, child


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _wait_until(done: object, what: str, log: Path) -> None:
    deadline = time.monotonic() + 120
    while not done():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what}; log:\n{log.read_text()[-3000:]}"
        time.sleep(0.02)


def _queued(log: Path) -> int:
    return log.read_text().count("email queued") if log.exists() else 0


def _outbox(project: Path) -> list[OutboxMessage]:
    engine = open_engine(f"sqlite:///{project / 'nurture.db'}")
    with session_scope(engine) as session:
        rows = list(session.exec(select(OutboxMessage)))
    engine.dispose()
    return rows


def test_the_pass_dies_with_a_killed_daemon_and_the_next_one_finishes_it(
    nurture: Run, tmp_path: Path
) -> None:
    # Given a daemon whose pass is queueing 3,000 emails, batch by batch, in its own
    # process (it logs there as the daemon does)
    project, log, daemon, child = _daemon_mid_pass(nurture, tmp_path)

    # When the daemon is killed (kill -9) in the middle of the pass
    daemon.send_signal(signal.SIGKILL)
    daemon.wait(10)

    # Then its pass process dies with it, leaving part of the work done
    _wait_until(lambda: not _alive(child), "the pass process outlived the daemon", log)
    assert 0 < len(_outbox(project)) < LEADS
    # and the next daemon queues the rest, each email once
    finish = nurture("run", "--until-idle", cwd=project, env=ENV)
    assert finish.returncode == 0, finish.stderr
    outbox = _outbox(project)
    per_lead = Counter(row.recipient for row in outbox)
    assert len(per_lead) == LEADS and max(per_lead.values()) == 1


def test_sigterm_stops_the_pass_between_batches_and_the_daemon_exits_cleanly(
    nurture: Run, tmp_path: Path
) -> None:
    # Given a daemon in the middle of a long pass, in its own process
    project, log, daemon, child = _daemon_mid_pass(nurture, tmp_path)

    # When an operator stops it (SIGTERM)
    daemon.send_signal(signal.SIGTERM)

    # Then the pass ends at its next batch, the daemon exits 0, and no process is left
    assert daemon.wait(120) == 0, log.read_text()[-3000:]
    assert not _alive(child)
    text = log.read_text()
    assert "daemon stopped" in text and "Traceback" not in text
    queued = len(_outbox(project))
    assert 0 < queued < LEADS  # it stopped in the middle, each batch whole
    assert queued == _queued(log)


def test_the_pass_can_run_in_the_daemons_own_process(nurture: Run, tmp_path: Path) -> None:
    # Given [daemon] pass_process = false
    env = {**ENV, "NURTURE_DAEMON_PASS_PROCESS": "false", "NURTURE_DAEMON_BATCH_SIZE": "200"}
    project = bulk_project(nurture, tmp_path / "p", 300, env)
    log = tmp_path / "worker.log"

    # When the daemon runs until nothing is due
    daemon = worker(project, env, "--until-idle", log=log)
    spawned: set[int] = set()
    while daemon.poll() is None:  # watching it all along
        spawned.update(pid for pid in _children(daemon.pid) if _is_spawned(pid))
        time.sleep(0.01)

    # Then it queued and sent every email without starting a process
    assert daemon.returncode == 0, log.read_text()[-3000:]
    assert not spawned
    assert Counter(row.status for row in _outbox(project)) == {"sent": 300}


def _is_spawned(pid: int) -> bool:
    try:
        return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def test_a_pass_process_killed_between_passes_is_replaced_at_the_next_pass(
    nurture: Run, tmp_path: Path
) -> None:
    # Given a daemon whose pass process made a pass and waits for the next one
    project = bulk_project(nurture, tmp_path / "p", 20, ENV)
    log = tmp_path / "worker.log"
    daemon = worker(project, ENV, log=log)
    try:
        first = _pass_process(daemon)
        _wait_until(lambda: "pass done" in log.read_text(), "no pass was made", log)

        # When it is killed between passes (the OOM killer, an operator)
        os.kill(first, signal.SIGKILL)

        # Then the next pass starts a new one, says so, and the daemon goes on
        def replaced() -> bool:
            return any(pid != first for pid in _spawned_children(daemon.pid))

        _wait_until(replaced, "no new pass process", log)
        _wait_until(lambda: "a new one makes this pass" in log.read_text(),
                    "the replacement was not logged", log)  # fmt: skip
        assert daemon.poll() is None
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(120) == 0, log.read_text()[-3000:]
    assert "daemon stopped" in log.read_text()



def _daemon_here(
    nurture: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, leads: int, *, batch: int
) -> tuple[Path, Engine, Daemon]:
    """A project with *leads* due emails, and a daemon in this process (run until
    nothing is due, in batches of *batch*) whose pass process is not started yet."""
    env = {**ENV, "NURTURE_DAEMON_BATCH_SIZE": str(batch)}
    project = bulk_project(nurture, tmp_path / "p", leads, env)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(project)
    config = load_settings(project / "nurture.toml")
    engine = open_engine(config.database_url)
    return project, engine, Daemon(engine, config, until_idle=True)


def test_the_first_pass_begins_in_the_daemon_while_its_process_starts_and_the_process_goes_on(
    nurture: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given 300 due emails and a daemon (in this process) whose pass process is not
    # started yet (starting it takes most of a second: it imports nurture)
    project, engine, daemon = _daemon_here(nurture, tmp_path, monkeypatch, 300, batch=100)
    process = daemon.pass_process
    assert process is not None and not process.running
    # The process may start before the daemon's thread reaches its first batch (it
    # then makes the whole pass, rightly): the daemon sees it started only once that
    # batch is being written, whatever the machine's speed.
    real_start, batch_begun = process.start, threading.Event()

    def start_seen_after_the_first_batch() -> Future[None]:
        started, seen = real_start(), Future[None]()

        def tell() -> None:
            batch_begun.wait(120)
            seen.set_result(started.result(120))

        threading.Thread(target=tell, daemon=True).start()
        return seen

    monkeypatch.setattr(process, "start", start_seen_after_the_first_batch)
    here: list[int] = []

    def first_batch_written_here(_session: object, due: list[object]) -> None:
        # The daemon's thread writes its first batch only once the process has started
        # (the hooks of this process are not the pass process's).
        here.append(len(due))
        batch_begun.set()
        real_start().result(timeout=120)

    # When it runs until nothing is due
    with hooks.at("advance.before_write", first_batch_written_here):
        asyncio.run(daemon.main())
    engine.dispose()

    # Then the pass began here with one small batch, handed the rest over to the pass
    # process once it had started, and every email was queued and sent once
    assert here == [FIRST_BATCH]
    outbox = _outbox(project)
    assert Counter(row.status for row in outbox) == {"sent": 300}
    assert max(Counter(row.recipient for row in outbox).values()) == 1


def test_while_its_process_starts_the_daemon_renders_no_further_ahead_than_its_senders(
    nurture: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given 200 due emails in batches of 10, a daemon (in this process) whose pass
    # process never gets started, so that the whole pass is made here, and senders
    # slower than the pass (each send holds the event loop 5 ms)
    project, engine, daemon = _daemon_here(nurture, tmp_path, monkeypatch, 200, batch=10)
    assert daemon.pass_process is not None
    never: Future[None] = Future()
    monkeypatch.setattr(daemon.pass_process, "start", lambda: never)
    monkeypatch.setattr("nurture.daemon.AHEAD_WHILE_STARTING", 2)
    waiting: list[int] = []

    def count_waiting(_session: object, _due: object) -> None:
        with engine.connect() as connection:
            waiting.append(due_waiting(connection, clock.now(), 1000))

    # When it runs until nothing is due
    with (
        hooks.at("advance.before_write", count_waiting),
        hooks.at("delivery.before_send", lambda _item: time.sleep(0.005)),
    ):
        asyncio.run(daemon.main())
    engine.dispose()

    # Then each batch was made while fewer than two batches waited for the senders (this
    # interpreter's time went to sending), and every email was sent once
    assert len(waiting) >= 200 // 10 and max(waiting) < 2 * 10, waiting
    outbox = _outbox(project)
    assert Counter(row.status for row in outbox) == {"sent": 200}
    assert max(Counter(row.recipient for row in outbox).values()) == 1
