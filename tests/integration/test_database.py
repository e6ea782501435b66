"""Migrations, schema checks and the lead store on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, text
from sqlmodel import SQLModel, select

import nurture.store.models  # noqa: F401
from nurture.errors import LeadNotFoundError, SchemaBehindError
from nurture.sales.scorer import EVENTS_BATCH
from nurture.store.advancing import claim_query
from nurture.store.database import (
    check_schema,
    current_revision,
    head_revision,
    open_engine,
    session_scope,
    upgrade,
)
from nurture.store.events import unscored_events
from nurture.store.leads import LeadChanges, get_lead, list_leads, upsert_leads


def test_migrations_build_exactly_the_models(engine: Engine) -> None:
    # Given a database migrated to head, when compared with the models, then no difference.
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    assert diff == []
    assert current_revision(engine) == head_revision()
    check_schema(engine)


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("pg", marks=pytest.mark.postgresql)])
def test_an_empty_database_is_reported_then_upgraded(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'fresh.db'}"
        if kind == "sqlite"
        else request.getfixturevalue("empty_pg_url")
    )
    engine = open_engine(url)
    with pytest.raises(SchemaBehindError, match="no nurture schema yet: run `nurture db upgrade`"):
        check_schema(engine)
    assert upgrade(engine) == (None, head_revision())
    assert upgrade(engine) == (head_revision(), head_revision())
    check_schema(engine)
    engine.dispose()


def test_sqlite_runs_in_wal_mode_with_foreign_keys(sqlite_url: str) -> None:
    engine = open_engine(sqlite_url)
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
    engine.dispose()


def test_upsert_creates_updates_and_leaves_unchanged(engine: Engine) -> None:
    with session_scope(engine) as session:
        first = upsert_leads(
            session,
            [
                LeadChanges("ann@example.com", {"company": "Acme"}, {"employees": "40"}),
                LeadChanges("bob@example.com", {"stage": "warm"}),
            ],
        )
    assert first.created == ["ann@example.com", "bob@example.com"]
    with session_scope(engine) as session:
        second = upsert_leads(
            session,
            [
                LeadChanges("ann@example.com", {"title": "VP Sales"}, {"industry": "SaaS"}),
                LeadChanges("bob@example.com", {"stage": "warm"}),
            ],
        )
    assert (second.created, second.updated, second.unchanged) == (
        [],
        ["ann@example.com"],
        ["bob@example.com"],
    )
    with session_scope(engine) as session:
        ann = get_lead(session, "ANN@Example.com")
        assert (ann.company, ann.title) == ("Acme", "VP Sales")
        assert ann.attributes == {"employees": "40", "industry": "SaaS"}
        assert ann.updated_at > ann.created_at
        assert [lead.email for lead in list_leads(session, stage="warm")] == ["bob@example.com"]


def test_an_unsubscribe_survives_a_later_import(engine: Engine) -> None:
    with session_scope(engine) as session:
        upsert_leads(session, [LeadChanges("ann@example.com", {"status": "unsubscribed"})])
    with session_scope(engine) as session:
        upsert_leads(session, [LeadChanges("ann@example.com", {"status": "subscribed"})])
    with session_scope(engine) as session:
        assert get_lead(session, "ann@example.com").status == "unsubscribed"


def test_unknown_lead_is_a_clear_error(engine: Engine) -> None:
    with session_scope(engine) as session, pytest.raises(LeadNotFoundError, match="no lead with"):
        get_lead(session, "nobody@example.com")


def test_times_come_back_aware_utc(engine: Engine) -> None:
    with session_scope(engine) as session:
        upsert_leads(session, [LeadChanges("ann@example.com")])
    with session_scope(engine) as session:
        lead = get_lead(session, "ann@example.com")
    assert lead.created_at.utcoffset() is not None
    assert lead.created_at.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


def test_changed_leads_are_found_in_chunks_once_each(engine: Engine) -> None:
    from datetime import UTC, datetime, timedelta

    from nurture.store.leads import Lead, changed_lead_ids

    # Given leads changed at various moments, several at the same one
    base = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    minutes = [0, 5, 5, 5, 10, 20, 30, 30]
    with session_scope(engine) as session:
        for i, minute in enumerate(minutes):
            moment = base + timedelta(minutes=minute)
            session.add(Lead(email=f"l{i}@example.com", created_at=base, updated_at=moment))
    # When they are read two at a time, changed after 09:01 and by 09:20
    chunks = list(changed_lead_ids(engine, base + timedelta(minutes=1),
                                   base + timedelta(minutes=20), chunk=2))  # fmt: skip
    # Then each lead changed in that span comes once, in the order of change
    assert all(len(chunk) <= 2 for chunk in chunks)
    found = [lead_id for chunk in chunks for lead_id in chunk]
    assert found == [2, 3, 4, 5, 6]
    # and without a lower bound, every lead comes
    assert sorted(i for chunk in changed_lead_ids(engine, None, base, chunk=3) for i in chunk) == (
        list(range(1, 9))
    )


def test_a_single_use_token_is_spent_once_and_forgotten_after_its_time(engine: Engine) -> None:
    from datetime import UTC, datetime, timedelta

    from nurture.store.meta import Meta, use_once

    now = datetime(2030, 1, 7, 10, tzinfo=UTC)
    with session_scope(engine) as session:
        assert use_once(session, "form:a", now + timedelta(hours=1), now)
        assert not use_once(session, "form:a", now + timedelta(hours=1), now)
        assert use_once(session, "form:b", now + timedelta(hours=1), now)
    later = now + timedelta(hours=2)
    with session_scope(engine) as session:  # past their time: forgotten, others kept
        assert use_once(session, "form:c", later + timedelta(hours=1), later)
        keys = {row.key for row in session.exec(select(Meta))}
    assert "once:form:a" not in keys and "once:form:c" in keys


_PROBE = """
import fcntl, os, sys
descriptor = os.open(sys.argv[1], os.O_RDWR)
try:
    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    print("held")
else:
    print("free")
"""


def _turn_seen_by_another_process(path: Path) -> str:
    import subprocess
    import sys

    probe = subprocess.run([sys.executable, "-c", _PROBE, str(path)], capture_output=True,
                           text=True, timeout=60, check=True)  # fmt: skip
    return probe.stdout.strip()


def test_a_sqlite_write_holds_the_turn_of_every_process_until_it_ends(tmp_path: Path) -> None:
    # Given a SQLite database
    database = tmp_path / "n.db"
    engine = open_engine(f"sqlite:///{database}")
    turn = tmp_path / "n.db.writer"
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (x TEXT)"))
    # When a transaction of this process has written and not ended
    with engine.connect() as connection:
        connection.execute(text("SELECT count(*) FROM t")).one()
        assert _turn_seen_by_another_process(turn) == "free"  # a read takes no turn
        connection.execute(text("INSERT INTO t VALUES ('x')"))
        # Then another process finds the writers' turn taken (it waits for it there,
        # handed over at once, rather than sleeping in SQLite's busy handler)
        assert _turn_seen_by_another_process(turn) == "held"
        connection.commit()
        # and free again once the transaction ended
        assert _turn_seen_by_another_process(turn) == "free"
        connection.execute(text("INSERT INTO t VALUES ('y')"))
        connection.rollback()
        assert _turn_seen_by_another_process(turn) == "free"
    assert turn.stat().st_mode & 0o077 == 0  # private, as the database is
    engine.dispose()


def test_scoring_reads_the_unscored_events_by_their_own_index(engine: Engine) -> None:
    # Given 3,000 events of a lead, PostgreSQL's statistics taken while none was scored
    # (a burst of events; SQLite keeps none: nurture never asks it to), then all but 100
    # scored
    with session_scope(engine) as session:
        upsert_leads(session, [LeadChanges("ann@example.com", {})])
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO events (lead_id, type, data, occurred_at, source, machine, "
                 "scored) SELECT (SELECT id FROM leads), 'page_visited', '{}', "
                 "CURRENT_TIMESTAMP, 'api', false, false FROM (WITH RECURSIVE n(i) AS "
                 "(SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000) SELECT i FROM n) AS s")
        )  # fmt: skip
        if engine.dialect.name == "postgresql":
            connection.execute(text("ANALYZE events"))
        connection.execute(text("UPDATE events SET scored = true WHERE id <= 2900"))
    # When the database plans scoring's read of the next batch
    query = unscored_events(EVENTS_BATCH).compile(engine, compile_kwargs={"literal_binds": True})
    explain = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
    with engine.connect() as connection:
        plan = " ".join(str(row) for row in connection.execute(text(f"{explain}{query}")))
        found = connection.execute(unscored_events(EVENTS_BATCH)).all()
    # Then it reads the index of the unscored events (not every scored one, by id)
    assert "ix_events_unscored" in plan, plan
    assert len(found) == 100 and found[0].id == 2901


def test_the_advance_claims_its_batch_in_order_from_the_index(engine: Engine) -> None:
    # Given 3,000 enrollments due at the same moment, and the statistics up to date
    moment = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    with session_scope(engine) as session:
        upsert_leads(session, [LeadChanges(f"l{i}@example.com", {}) for i in range(3000)])
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO enrollments (lead_id, sequence, cycle, status, next_step, "
                 "base_at, due_at, done_steps, enrolled_by, enrolled_at, updated_at, version) "
                 "SELECT id, 'welcome', 0, 'active', 'one', :at, :at, '[]', 'auto', :at, :at, 0 "
                 "FROM leads"),
            {"at": moment},
        )  # fmt: skip
        if engine.dialect.name == "postgresql":  # as the pass does after filling a table
            connection.execute(text("ANALYZE enrollments"))
            connection.execute(text("ANALYZE leads"))
    # When the database plans the claim of a batch of 200
    query = claim_query(["welcome"], moment, 200)
    explain = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
    with engine.connect() as connection:
        sql = query.compile(engine, compile_kwargs={"literal_binds": True})
        plan = " ".join(str(row) for row in connection.execute(text(f"{explain}{sql}")))
    # Then it reads them in order from the index, never sorting every due enrollment
    assert "ix_enrollments_due" in plan, plan
    assert "Sort" not in plan and "TEMP B-TREE" not in plan, plan
