"""Migrations, schema checks and the lead store on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, text
from sqlmodel import SQLModel

import nurture.models  # noqa: F401
from nurture.database import check_schema, current_revision, head_revision, open_engine, upgrade
from nurture.errors import LeadNotFoundError, SchemaBehindError
from nurture.store import LeadChanges, get_lead, list_leads, session_scope, upsert_leads


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
