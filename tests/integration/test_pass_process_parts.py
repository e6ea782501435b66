"""The parts the daemon shares with its pass process: a flag both read, and the SQLite
writers' turn between processes. Neither may leave one process stuck behind another
that died or stopped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from nurture.stages.process import CONTEXT, SharedFlag
from nurture.store import database
from nurture.store.database import open_engine


def _wait_on(flag: SharedFlag, waiting: SharedFlag) -> None:
    waiting.set()
    flag.wait(600)


def test_a_flag_set_by_the_daemon_is_seen_by_its_child_and_a_dead_waiter_blocks_nothing() -> None:
    # Given a process waiting on a flag (it says when it waits)
    flag, waiting = SharedFlag(), SharedFlag()
    child = CONTEXT.Process(target=_wait_on, args=(flag, waiting))
    child.start()
    assert waiting.wait(120), "the child never started waiting"
    # When it is killed while it waits
    child.kill()
    child.join(60)
    # Then the flag still sets and clears at once (a multiprocessing.Event would block
    # here for good: its set() waits for the dead waiter to wake)
    flag.set()
    assert flag.is_set()
    flag.clear()
    assert not flag.is_set()


def _setter(flag: SharedFlag) -> None:
    flag.set()


def test_a_flag_set_in_one_process_is_seen_in_the_other() -> None:
    flag = SharedFlag()
    child = CONTEXT.Process(target=_setter, args=(flag,))
    child.start()
    child.join(120)
    assert child.exitcode == 0
    assert flag.is_set()


_HOLD = """
import fcntl, os, sys
descriptor = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(descriptor, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()  # until the test lets go
"""


def test_a_turn_held_by_a_stopped_process_is_waited_for_only_so_long(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a SQLite database, and another process holding the writers' turn without
    # ever writing (as one stopped with Ctrl-Z in the middle of a transaction would)
    engine = open_engine(f"sqlite:///{tmp_path / 'n.db'}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (x TEXT)"))
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(tmp_path / "n.db.writer")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        # When this process writes, with a short busy timeout
        monkeypatch.setattr(database, "BUSY_TIMEOUT", 0.3)
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO t VALUES ('written')"))
        # Then the write goes on without the turn once the timeout passed (SQLite's own
        # lock, free here, still guards the file), rather than waiting for good
        with engine.connect() as connection:
            assert connection.execute(text("SELECT x FROM t")).scalars().all() == ["written"]
    finally:
        holder.communicate("", timeout=60)
        engine.dispose()
