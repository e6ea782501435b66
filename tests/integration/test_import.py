"""CSV import into a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

from freezegun import freeze_time
from sqlalchemy import Engine, func, select

from nurture.intake.importer import import_csv
from nurture.store.database import session_scope
from nurture.store.leads import Lead, get_lead


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
    with freeze_time("2026-11-20 10:00"):
        report = import_csv(engine, path)
    assert (report.rows, report.created, report.updated) == (4, 3, 0)
    assert [(p.line, p.message.split(" ")[0]) for p in report.rejected] == [(3, "invalid")]
    # An unknown timezone keeps the lead, on the project's timezone, with a warning.
    assert [(p.line, p.message.split(" ")[0]) for p in report.warnings] == [(4, "unknown")]
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
    with freeze_time("2026-11-22 10:00"):
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


def test_a_dry_run_writes_nothing_and_rejects_go_to_a_private_file(
    engine: Engine, tmp_path: Path
) -> None:
    path = tmp_path / "export.csv"
    path.write_text(
        "E-mail Address,First Name,Notes\n"
        "ann@example.com,Ann,hello\n"
        "not-an-email,Bob,x\n"
        "cy@example.com,Cy,a\x00b\n"
        "dee@example.com,Dee,\n",
        encoding="utf-8",
    )
    with freeze_time("2026-11-20 10:00"):
        dry = import_csv(engine, path, dry_run=True)
    assert (dry.created, dry.updated, len(dry.rejected)) == (2, 0, 2)
    assert "would be created" in dry.summary() and "dry run" in dry.summary()
    assert count(engine) == 0
    rejects = tmp_path / "rejects.csv"
    assert dry.write_rejects(rejects) == 2
    assert rejects.stat().st_mode & 0o777 == 0o600
    rows = rejects.read_text(encoding="utf-8").splitlines()
    assert rows[0] == "E-mail Address,First Name,Notes,reject_reason"
    assert rows[1].startswith("not-an-email,Bob,x,line 3: invalid email")
    assert rows[2].startswith("cy@example.com,Cy,")
    assert rows[2].endswith("line 4: Notes: the NUL character (U+0000) is not allowed")
    # Fixed and imported again: the reason column is ignored, the rows come in.
    rejects.write_text(rows[0] + "\nbob@example.com,Bob,x,line 3: whatever\n", encoding="utf-8")
    with freeze_time("2026-11-20 11:00"):
        again = import_csv(engine, rejects)
    assert (again.created, again.rejected) == (1, [])
    assert "(from --rejects) is ignored" in again.warnings[0].message
    with session_scope(engine) as session:
        assert get_lead(session, "bob@example.com").attributes == {"notes": "x"}
