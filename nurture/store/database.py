"""Opening the database and keeping its schema at the version this code expects.

No engine exists at import time: :func:`open_engine` makes one from a URL. The schema is
owned by the Alembic migrations in ``nurture/migrations``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    NoSuchModuleError,
    OperationalError,
    SQLAlchemyError,
)
from sqlmodel import Session, SQLModel

from nurture import logs
from nurture.errors import DatabaseError, SchemaBehindError

if TYPE_CHECKING:  # Alembic is imported where the schema is read or changed: a process
    # that only works on the database (the pass process) starts without it.
    from alembic.config import Config as AlembicConfig

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def open_engine(url: str, **options: Any) -> Engine:
    """Create an engine for *url*, tuned for nurture's use of each dialect.

    SQLite gets WAL journaling, foreign keys and a busy timeout on every connection.
    No error of the engine carries the parameters of its statement (they hold lead
    data): its messages go to logs.
    """
    options.setdefault("hide_parameters", True)
    try:
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite":
            make_private(parsed.database)
            connect_args = {"timeout": BUSY_TIMEOUT, "factory": _WriterConnection}
            engine = create_engine(parsed, connect_args=connect_args, **options)
            event.listen(engine, "connect", _sqlite_pragmas)
            event.listen(engine, "before_cursor_execute", _claim_writer)
            return engine
        return create_engine(parsed, pool_pre_ping=True, **options)
    except ArgumentError:
        raise DatabaseError(
            f"cannot use database URL {_safe(url)}: not a URL like sqlite:///nurture.db "
            "or postgresql://user@host/db"
        ) from None
    except NoSuchModuleError:
        raise DatabaseError(
            f"cannot use database URL {_safe(url)}: unknown database kind "
            "(use sqlite:// or postgresql://)"
        ) from None
    except ModuleNotFoundError as exc:
        raise DatabaseError(
            f"database URL {_safe(url)} needs the {exc.name} driver: "
            "pip install 'nurture[postgresql]'"
        ) from None


def make_private(database: str | None) -> None:
    """Create the SQLite file readable by its owner only (0600), or make an existing one
    so: it holds every lead's personal data and the signing secret. SQLite gives its
    ``-wal`` and ``-shm`` files the database file's mode."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        for member in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            if member.exists() and member.stat().st_mode & 0o077:
                member.chmod(0o600)
    except OSError:
        return  # the connection will say what is wrong with the path


#: Seconds a SQLite writer waits for another one (this process's or another's).
BUSY_TIMEOUT = 30.0

#: One lock per SQLite file: this process's writers take turns on it.
_WRITERS: dict[str, threading.Lock] = {}
_WRITERS_LOCK = threading.Lock()
#: Per SQLite file, this process's descriptor of ``<file>.writer``, whose ``flock``
#: passes the turn between processes (``None``: it could not be opened).
_TURNS: dict[str, int | None] = {}


def _turn_file(database: str) -> int | None:
    """This process's descriptor of *database*'s turn file, opened once (private to
    the owner, as the database is). ``None`` for a database in memory, or where the
    file cannot be made: SQLite's own lock still guards the database."""
    if database in _TURNS:
        return _TURNS[database]
    descriptor = None
    if database and database != ":memory:" and not database.startswith("file:"):
        try:
            descriptor = os.open(f"{database}.writer", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            descriptor = None
    _TURNS[database] = descriptor
    return descriptor
_READS = ("SELECT", "PRAGMA", "WITH", "EXPLAIN")


#: Seconds between looks at another process's turn, at first and at most.
_TURN_POLL = (0.0002, 0.002)


def _take_turn_file(database: str) -> int | None:
    """Take the turn of the processes writing to *database* (an ``flock`` of its turn
    file), waiting for it; the descriptor, or ``None`` where there is no turn file or
    the turn was not had within :data:`BUSY_TIMEOUT` seconds (a process stopped in the
    middle of a transaction): then SQLite's own lock guards the file, and says so."""
    descriptor = _turn_file(database)
    if descriptor is None:
        return None
    deadline, pause = time.monotonic() + BUSY_TIMEOUT, _TURN_POLL[0]
    while True:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return descriptor
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return None
            # A look every 2 ms at most: the turn is another process's for one
            # transaction, where SQLite's busy handler would sleep up to 100 ms.
            time.sleep(pause)
            pause = min(pause * 2, _TURN_POLL[1])


class _WriterConnection(sqlite3.Connection):
    """A SQLite connection whose write transactions take turns with the other
    connections of this process on a lock of their file.

    SQLite lets one writer in at a time; the others wait in its busy handler, which
    sleeps in steps of up to 100 ms, so a loop that writes often (the delivery's ledger,
    the fast lane) keeps losing its turn to one that writes long. The lock hands the
    turn over at once, and in order of arrival. It is taken before a transaction's first
    write and given back when the transaction ends. Between processes (the daemon and
    its pass process, a command beside them) the turn is an ``flock`` of the file
    ``<database>.writer``, taken once this process's turn is had and looked at every
    2 ms at most, where SQLite's busy handler sleeps up to 100 ms."""

    _writer: threading.Lock | None = None
    _holding = False
    _turn: int | None = None

    def take_turn(self, database: str) -> None:
        if self._holding:
            return
        if self._writer is None:
            with _WRITERS_LOCK:
                self._writer = _WRITERS.setdefault(database, threading.Lock())
        # Past the busy timeout, go on without it: SQLite's lock still guards the file.
        self._holding = self._writer.acquire(timeout=BUSY_TIMEOUT)
        if self._holding:
            self._turn = _take_turn_file(database)

    def _done(self) -> None:
        if self._holding and self._writer is not None:
            self._holding = False
            if self._turn is not None:
                fcntl.flock(self._turn, fcntl.LOCK_UN)
                self._turn = None
            self._writer.release()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self._done()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._done()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._done()


def holds_write_turn(session: Session) -> bool:
    """Whether *session*'s transaction has written to its SQLite file (it holds the
    file's one write turn until it ends). Always ``False`` on PostgreSQL, whose writers
    lock rows, not the database."""
    if not session.in_transaction():
        return False
    dbapi = session.connection().connection.dbapi_connection
    return isinstance(dbapi, _WriterConnection) and dbapi._holding


def _claim_writer(connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
    """Before a statement that writes: wait for this process's turn to write."""
    if statement.lstrip()[:7].upper().startswith(_READS):
        return
    dbapi = connection.connection.dbapi_connection
    if isinstance(dbapi, _WriterConnection):
        dbapi.take_turn(connection.engine.url.database or "")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # An erased person's rows are overwritten, not just unlinked from the file.
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()


def _safe(url: str | Any) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable URL>"


def _alembic_config(engine: Engine | None = None) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if engine is not None:
        cfg.attributes["engine"] = engine
    return cfg


def head_revision() -> str:
    """The newest migration shipped with this code."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The migration the database is at, or ``None`` for an empty database."""
    from alembic.runtime.migration import MigrationContext

    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    except OperationalError as exc:
        raise DatabaseError(f"cannot open database {_safe(engine.url)}: {exc.orig}") from None


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Bring the database to the newest schema; return (revision before, revision after)."""
    from alembic import command

    from nurture.store.meta import project_secret

    before = current_revision(engine)
    try:
        command.upgrade(_alembic_config(engine), "head")
    except OperationalError as exc:
        raise DatabaseError(f"cannot upgrade {_safe(engine.url)}: {exc.orig}") from None
    project_secret("", engine)  # make the installation's signing key now, once
    return before, head_revision()


def check_schema(engine: Engine) -> None:
    """Raise :class:`SchemaBehindError` unless the database is at the newest schema."""
    current = current_revision(engine)
    head = head_revision()
    if current == head:
        return
    where = _safe(engine.url)
    if current is None:
        raise SchemaBehindError(
            f"database {where} has no nurture schema yet: run `nurture db upgrade`"
        )
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config())
    known = {rev.revision for rev in script.walk_revisions()}
    if current not in known:
        raise DatabaseError(
            f"database {where} is at schema {current}, newer than this nurture knows "
            f"({head}): upgrade nurture"
        )
    raise SchemaBehindError(
        f"database {where} is at schema {current}, this nurture needs {head}: "
        "run `nurture db upgrade`"
    )


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session whose transaction commits on success and rolls back on error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


class HeldConnection:
    """One connection kept for a run of short transactions from one thread (the
    delivery run's ledger writes hundreds a second): each :meth:`session` reuses it,
    where :func:`session_scope` takes a connection from the pool, pings it on
    PostgreSQL and resets it, for every transaction. After a transaction that failed it
    is let go, and the next one opens a fresh one. :meth:`close` lets it go."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._connection: Connection | None = None

    @contextmanager
    def session(self) -> Iterator[Session]:
        """As :func:`session_scope`, on the held connection."""
        if self._connection is None or self._connection.invalidated:
            self.close()
            self._connection = self.engine.connect()
        with Session(bind=self._connection, expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                try:
                    session.rollback()
                finally:
                    self.close()
                raise

    def close(self) -> None:
        """Give the connection back to the pool (one that broke is thrown away)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


def can_pipeline(connection: Connection) -> bool:
    """Whether :func:`pipelined` sends its statements in one round trip on *connection*:
    PostgreSQL through psycopg 3 on a libpq that has pipeline mode (14 and later)."""
    if connection.dialect.name != "postgresql" or connection.dialect.driver != "psycopg":
        return False
    return _pipeline_supported()


@cache
def _pipeline_supported() -> bool:
    import psycopg

    return bool(psycopg.Pipeline.is_supported())


def pipelined(connection: Connection, statements: Sequence[tuple[str, Any]]) -> list[list[Any]]:
    """Run *statements* (the driver's SQL, with its parameters) in *connection*'s
    transaction (begun here if it was not) and return the rows of each (none for a
    statement that returns none): in one round trip where :func:`can_pipeline` (the
    ``BEGIN`` of a transaction the server has not seen yet goes with them), one after
    the other elsewhere. A driver error is raised as SQLAlchemy's, as it would be from a
    statement run through it."""
    if not connection.in_transaction():
        connection.begin()
    if not can_pipeline(connection):
        return [list(result) if (result := connection.exec_driver_sql(sql, params)).returns_rows
                else [] for sql, params in statements]  # fmt: skip
    dbapi = connection.connection.dbapi_connection
    driver = connection.dialect.loaded_dbapi
    cursors: list[Any] = []
    try:
        with dbapi.pipeline():  # type: ignore[union-attr]
            for sql, params in statements:
                cursors.append(dbapi.cursor())  # type: ignore[union-attr]
                cursors[-1].execute(sql, params)
        return [cursor.fetchall() if cursor.description is not None else []
                for cursor in cursors]  # fmt: skip
    except driver.Error as exc:
        sent = "; ".join(sql for sql, _ in statements)  # one of them failed
        lost = connection.dialect.is_disconnect(exc, dbapi, None)
        if lost:
            connection.invalidate(exc)
        raise DBAPIError.instance(sent, None, exc, driver.Error, hide_parameters=True,
                                  connection_invalidated=lost,
                                  dialect=connection.dialect) from None  # fmt: skip
    finally:
        for cursor in cursors:
            cursor.close()


#: nurture's tables (``:names``) whose statistics the planner needs to be right: a plan
#: made while one looked empty scans every active row at each start (see
#: :func:`refresh_statistics`). Only tables this role may analyze.
_STALE_TABLES = """
SELECT c.relname FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE s.schemaname = current_schema()
  AND c.relname = ANY(%(names)s)
  AND pg_has_role(c.relowner, 'USAGE')
  AND ((s.last_analyze IS NULL AND s.last_autoanalyze IS NULL
        AND pg_relation_size(c.oid) > 0)
       OR s.n_mod_since_analyze > 50 + 0.1 * greatest(c.reltuples, 0))
"""


def refresh_statistics(engine: Engine) -> list[str]:
    """On PostgreSQL, analyze nurture's tables that hold rows and were never analyzed,
    and those that changed by more than a tenth since they were (autovacuum's own
    threshold, met at once instead of up to a minute later); return their names. A
    pass that filled empty tables would otherwise have its statements planned as if
    they were still empty until autovacuum came by: the start of each email then
    scanned every active enrollment. Each table is analyzed in a transaction of its
    own, skipped if another session is analyzing it. Best effort: a failure (a
    statement timeout, no right to analyze) is logged and changes nothing else. On
    SQLite: nothing (its planner keeps no statistics unless asked to)."""
    if engine.dialect.name != "postgresql":
        return []
    names = [name for name in SQLModel.metadata.tables if name != "alembic_version"]
    analyzed: list[str] = []
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            stale = [row[0] for row in connection.exec_driver_sql(_STALE_TABLES,
                                                                  {"names": names})]  # fmt: skip
            skip_locked = (connection.dialect.server_version_info or (0,)) >= (12,)
            for table in stale:
                quoted = connection.dialect.identifier_preparer.quote(table)
                options = "(SKIP_LOCKED) " if skip_locked else ""
                connection.exec_driver_sql(f"ANALYZE {options}{quoted}")
                analyzed.append(table)
    except SQLAlchemyError as exc:
        logs.action("could not refresh the database's statistics", level=logging.WARNING,
                    error=f"{type(exc).__name__}: {exc}".splitlines()[0])  # fmt: skip
    return analyzed
