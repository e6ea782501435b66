"""Workers: every ``nurture run`` registers itself and beats a heartbeat, so ``nurture
status`` can say who works on the database. A SQLite database serves one worker: a
second ``nurture run`` on the same file waits as a standby until the first one stops.
"""

from __future__ import annotations

import fcntl
import os
import socket
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Engine
from sqlmodel import Field, Session, SQLModel, col, select

from nurture import __version__, clock
from nurture.store.database import session_scope
from nurture.store.sqltypes import UTCDateTime

HEARTBEAT = timedelta(seconds=10)


class Worker(SQLModel, table=True):
    """One ``nurture run`` process."""

    __tablename__ = "workers"

    id: str = Field(primary_key=True, max_length=64)
    hostname: str = Field(max_length=255)
    pid: int
    version: str = Field(max_length=32)
    #: ``active`` or ``standby`` (waiting for a SQLite database another worker holds).
    role: str = Field(max_length=16)
    started_at: datetime = Field(default_factory=clock.now, sa_type=UTCDateTime)
    heartbeat_at: datetime = Field(default_factory=clock.now, sa_type=UTCDateTime)
    stopped_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


def new_worker_id() -> str:
    """``host:pid:random``, unique across machines and restarts."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def register(engine: Engine, role: str, worker_id: str | None = None) -> str:
    """Record this process as a worker; return its id."""
    worker_id = worker_id or new_worker_id()
    now = clock.now()
    with session_scope(engine) as session:
        session.add(
            Worker(
                id=worker_id,
                hostname=socket.gethostname(),
                pid=os.getpid(),
                version=__version__,
                role=role,
                started_at=now,
                heartbeat_at=now,
            )
        )
    return worker_id


def beat(engine: Engine, worker_id: str, *, role: str | None = None, stopped: bool = False) -> None:
    """Refresh the heartbeat (and the role, or mark the worker stopped)."""
    with session_scope(engine) as session:
        worker = session.get(Worker, worker_id)
        if worker is None:
            return
        now = clock.now()
        worker.heartbeat_at = now
        if role is not None:
            worker.role = role
        if stopped:
            worker.stopped_at = now
        session.add(worker)


def list_workers(session: Session, now: datetime) -> list[dict[str, Any]]:
    """Workers seen in the last day, with whether they are alive (a recent heartbeat)."""
    query = select(Worker).where(col(Worker.heartbeat_at) >= now - timedelta(days=1))
    return [
        {
            "id": w.id,
            "host": w.hostname,
            "pid": w.pid,
            "role": w.role,
            "version": w.version,
            "started_at": w.started_at.isoformat(),
            "heartbeat_at": w.heartbeat_at.isoformat(),
            "alive": w.stopped_at is None and now - w.heartbeat_at <= HEARTBEAT * 3,
        }
        for w in session.exec(query.order_by(col(Worker.started_at)))
    ]


class SqliteLock:
    """An exclusive lock on ``<database>.lock``: one worker per SQLite file."""

    def __init__(self, database: Path) -> None:
        self.path = database.with_name(database.name + ".lock")
        self._handle: IO[str] | None = None

    def acquire(self) -> bool:
        """Take the lock if it is free; ``False`` if another process holds it."""
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        handle.seek(0)
        handle.truncate()
        handle.write(f"{socket.gethostname()} pid {os.getpid()}\n")
        handle.flush()
        self._handle = handle
        return True

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "another process"
        except OSError:
            return "another process"

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def sqlite_file(engine: Engine) -> Path | None:
    """The file of a SQLite database, or ``None`` for another database (or in memory)."""
    if engine.url.get_backend_name() != "sqlite":
        return None
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)
