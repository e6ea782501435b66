"""CSV import into a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

from freezegun import freeze_time
from sqlalchemy import Engine, func, select

from nurture.importer import import_csv
from nurture.leads import Lead
from nurture.store import get_lead, session_scope


def count(engine: Engine) -> int:
    with session_scope(engine) as session:
        return int(session.execute(select(func.count()).select_from(Lead)).scalar_one())


def test_bad_rows_are_reported_and_good_rows_imported(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "leads.csv"
    path.write_text(
        "email,first_name,timezone,employees\n"
        "ann@example.com,Ann,Europe/Warsaw,40\n"
        "not-an-email,Bob,UTC,3\n"
        "cy@example.com,Cy,Nowhere/Land,10\n"
        "dee@example.com,Dee,,\n",
        encoding="utf-8",
    )
    report = import_csv(engine, path)
    assert (report.rows, report.created, report.updated) == (4, 2, 0)
    assert [(p.line, p.message.split(" ")[0]) for p in report.rejected] == [
        (3, "invalid"),
        (4, "unknown"),
    ]
    with session_scope(engine) as session:
        ann = get_lead(session, "ann@example.com")
    assert ann.timezone == "Europe/Warsaw"
    assert ann.attributes == {"employees": "40"}


def test_reimport_updates_and_never_duplicates(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "leads.csv"
    path.write_text("email,company\nAnn@Example.com,Acme\nbob@example.com,Beta\n")
    with freeze_time("2026-11-20 10:00"):
        first = import_csv(engine, path)
    with freeze_time("2026-11-21 10:00"):
        second = import_csv(engine, path)
    path.write_text("email,company\nann@example.com,Acme Corp\n")
    third = import_csv(engine, path)
    assert (first.created, second.created, second.unchanged) == (2, 0, 2)
    assert (third.created, third.updated) == (0, 1)
    assert count(engine) == 2
    with session_scope(engine) as session:
        assert get_lead(session, "ann@example.com").company == "Acme Corp"


def test_duplicates_in_one_file_merge_across_batches(engine: Engine, tmp_path: Path) -> None:
    # Given a file where an email appears again in the same batch and in a later batch
    path = tmp_path / "leads.csv"
    path.write_text(
        "email,company,title\n"
        "ann@example.com,Acme,\n"
        "ANN@example.com,,CTO\n"
        "bob@example.com,Beta,\n"
        "cy@example.com,Cyan,\n"
        "ann@example.com,Acme Corp,\n"
    )
    # When imported in batches of two
    report = import_csv(engine, path, batch_size=2)
    # Then each lead exists once with the latest values, and the counts add up
    assert (report.created, report.updated, report.duplicates) == (3, 0, 2)
    assert [w.line for w in report.warnings] == [3, 6]
    assert count(engine) == 3
    with session_scope(engine) as session:
        ann = get_lead(session, "ann@example.com")
    assert (ann.company, ann.title) == ("Acme Corp", "CTO")
