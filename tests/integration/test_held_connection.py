"""The ledger's database plumbing: statements in one round trip (:func:`pipelined`) and a
connection kept for a run of transactions (:class:`HeldConnection`), on SQLite and
PostgreSQL."""

from __future__ import annotations

import threading

import pytest
from freezegun import freeze_time
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from nurture.retry import is_transient
from nurture.stages.passes import run_pass
from nurture.store.database import HeldConnection, open_engine, pipelined
from tests.enginekit import Harness
from tests.integration.test_send_promises import MOMENT, ctx_and_catalog, deliver_now, wait_for

COUNT = "INSERT INTO send_counts (key, day, n) VALUES ({key}, '2026-11-23', 1) RETURNING key"


def _param(engine: Engine, name: str) -> str:
    return f"%({name})s" if engine.dialect.name == "postgresql" else f":{name}"


def _keys(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return list(connection.execute(text("SELECT key FROM send_counts ORDER BY key")).scalars())


def test_pipelined_statements_run_in_the_transaction_in_order(engine: Engine) -> None:
    held = HeldConnection(engine)
    key = _param(engine, "key")
    # Given two statements that write, the second seeing the first's row
    with held.session() as session:
        rows = pipelined(session.connection(), [
            (COUNT.format(key=key), {"key": "a"}),
            ("SELECT count(*) FROM send_counts", {}),
        ])  # fmt: skip
        # Then each one's rows come back, in order, within one transaction
        assert [list(map(tuple, found)) for found in rows] == [[("a",)], [(1,)]]
    assert _keys(engine) == ["a"]
    held.close()


def test_a_pipelined_statement_that_fails_raises_as_sqlalchemy_and_writes_nothing(
    engine: Engine,
) -> None:
    held = HeldConnection(engine)
    key = _param(engine, "key")
    with held.session() as session:
        pipelined(session.connection(), [(COUNT.format(key=key), {"key": "a"})])
    # When the second of two statements breaks a unique key
    with pytest.raises(IntegrityError), held.session() as session:
        pipelined(session.connection(), [
            (COUNT.format(key=key), {"key": "b"}),
            (COUNT.format(key=key), {"key": "a"}),
        ])  # fmt: skip
    # Then the transaction is rolled back whole, and the next one works on a fresh
    # connection
    assert _keys(engine) == ["a"]
    with held.session() as session:
        pipelined(session.connection(), [(COUNT.format(key=key), {"key": "c"})])
    assert _keys(engine) == ["a", "c"]
    held.close()


@pytest.mark.postgresql
def test_a_connection_lost_under_a_pipeline_is_transient_and_the_next_write_reconnects(
    pg_url: str,
) -> None:
    engine = open_engine(pg_url)
    held = HeldConnection(engine)
    with held.session() as session:
        pid = session.connection().execute(text("SELECT pg_backend_pid()")).scalar_one()
    # Given the server ends the held connection between two writes
    with engine.connect() as other:
        other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    # Then the next write fails as the database being out of reach (the ledger waits
    # and tries again), not as a fault in the work
    with pytest.raises(DBAPIError) as raised, held.session() as session:
        pipelined(session.connection(), [(COUNT.format(key="%(key)s"), {"key": "a"})])
    assert is_transient(raised.value)
    # And the one after it opens a new connection and writes
    with held.session() as session:
        pipelined(session.connection(), [(COUNT.format(key="%(key)s"), {"key": "b"})])
    assert _keys(engine) == ["b"]
    held.close()
    engine.dispose()


def test_a_delivery_run_gives_back_its_connection_and_ends_its_writer_thread(
    harness: Harness,
) -> None:
    # Given two welcome emails due
    harness.add_leads({"email": "bo@example.com", "source": "guide"})
    with freeze_time(MOMENT, real_asyncio=True):
        ctx, catalog = ctx_and_catalog(harness, MOMENT)
        run_pass(ctx, catalog, MOMENT)
        # When a delivery run sends them
        report = deliver_now(ctx, catalog)
    assert report.sent == 2 and len(harness.sent()) == 2
    # Then the ledger's connection is back in the pool and its thread has ended
    assert harness.engine.pool.checkedout() == 0  # type: ignore[attr-defined]

    def writer_gone() -> bool:
        return not any(t.name.startswith("nurture-ledger") for t in threading.enumerate())

    wait_for(writer_gone, "the writer thread to end")
