"""What writing in batches must not break: the import's and the events API's rules
hold for one row or item inside a batch of 1,000 (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

from freezegun import freeze_time
from sqlalchemy import Engine, insert
from sqlmodel import Session, select

from nurture import clock, hooks
from nurture.intake.importer import import_csv
from nurture.store.arrivals import Arrival
from nurture.store.database import session_scope
from nurture.store.leads import Lead
from tests.integration.test_leads_api import Api, api  # noqa: F401  (the fixture)

ROWS = 1000


def write_csv(path: Path, rows: list[str], header: str = "email,first_name,company") -> Path:
    path.write_text(header + "\n" + "".join(row + "\n" for row in rows), encoding="utf-8")
    return path


def people(n: int = ROWS) -> list[str]:
    return [f"p{i}@example.com,P{i},Co {i % 7}" for i in range(n)]


def leads(engine: Engine) -> dict[str, Lead]:
    with session_scope(engine) as session:
        return {lead.email: lead for lead in session.exec(select(Lead))}


def test_a_bad_row_inside_a_batch_fails_alone_by_its_line(engine: Engine, tmp_path: Path) -> None:
    # Given 1,000 rows (one batch) whose 500th has an email that is not one
    rows = people()
    rows[499] = "not-an-email,Bad,Co"
    path = write_csv(tmp_path / "leads.csv", rows)
    # When it is imported
    with freeze_time("2026-11-20 10:00"):
        report = import_csv(engine, path)
    # Then that row alone is rejected, by its line (the header is line 1) and column
    assert (report.rows, report.created, report.updated) == (ROWS, ROWS - 1, 0)
    [problem] = report.rejected
    assert problem.line == 501
    assert problem.message.startswith("invalid email 'not-an-email'")
    stored = leads(engine)
    assert len(stored) == ROWS - 1 and "p498@example.com" in stored
    assert stored["p500@example.com"].first_name == "P500"


def test_repeated_emails_inside_one_batch_make_one_lead(engine: Engine, tmp_path: Path) -> None:
    # Given a batch in which three rows name one person, in other cases, each adding a field
    rows = people()
    rows[10] = "Ann@Example.com,Ann,"
    rows[600] = "ann@example.com,,Acme"
    rows[900] = "ANN@EXAMPLE.COM,Annie,"
    path = write_csv(tmp_path / "leads.csv", rows)
    with freeze_time("2026-11-20 10:00"):
        report = import_csv(engine, path)
    # Then one lead, with the later rows merged over the first, and a warning per repeat
    assert (report.created, report.duplicates, report.rejected) == (ROWS - 2, 2, [])
    ann = leads(engine)["ann@example.com"]
    assert (ann.first_name, ann.company) == ("Annie", "Acme")
    assert [(w.line, w.message.split(" is also")[0]) for w in report.warnings] == [
        (602, "ann@example.com"), (902, "ann@example.com"),
    ]  # fmt: skip


def test_the_same_file_again_changes_nothing(engine: Engine, tmp_path: Path) -> None:
    # Given 1,000 leads imported, with custom attributes, owners and timezones
    header = "email,first_name,company,owner,timezone,employees,industry"
    rows = [f"p{i}@example.com,P{i},Co {i % 7},Rep{i % 3}@Example.com,"
            f"{'Europe/Warsaw' if i % 2 else ''},{i},{'SaaS' if i % 3 else ''}"
            for i in range(ROWS)]  # fmt: skip
    path = write_csv(tmp_path / "leads.csv", rows, header)
    with freeze_time("2026-11-20 10:00"):
        import_csv(engine, path)
    before = {email: lead.to_dict() for email, lead in leads(engine).items()}
    # When the very same file comes again a day later
    with freeze_time("2026-11-21 10:00"):
        again = import_csv(engine, path)
    # Then every row is unchanged and no lead moved (not even its updated_at)
    assert (again.created, again.updated, again.unchanged) == (0, 0, ROWS)
    assert {email: lead.to_dict() for email, lead in leads(engine).items()} == before
    assert before["p1@example.com"]["owner"] == "rep1@example.com"


def test_a_lead_stored_meanwhile_by_another_writer_is_updated(
    engine: Engine, tmp_path: Path
) -> None:
    # Given a batch, and another writer (the API) that stores one of its people between
    # the batch's read of the stored leads and its write
    path = write_csv(tmp_path / "leads.csv", people())
    done: list[bool] = []

    def api_writes(_session: Session) -> None:
        if done:
            return
        done.append(True)
        with engine.begin() as connection:
            moment = clock.now()
            connection.execute(insert(Lead), [{
                "email": "p321@example.com", "first_name": "From the API", "attributes": {},
                "created_at": moment, "updated_at": moment,
            }])  # fmt: skip

    # When it is imported
    with freeze_time("2026-11-20 10:00"), hooks.at("leads.before_write", api_writes):
        report = import_csv(engine, path)
    # Then no row is lost: the batch is written again row by row, and the file's
    # values update the lead the other writer made
    assert done and report.rejected == []
    assert (report.created, report.updated) == (ROWS - 1, 1)
    stored = leads(engine)
    assert len(stored) == ROWS and stored["p321@example.com"].first_name == "P321"


def test_one_bad_event_among_1000_is_refused_by_its_index(api: Api, tmp_path: Path) -> None:  # noqa: F811
    # Given 1,000 leads, one of them erased and one unsubscribed
    import_csv(api.engine, write_csv(tmp_path / "leads.csv", people()))
    assert api.http.delete("/api/leads/p7@example.com").json()["erased"] is True
    api.http.post("/api/leads", json={"email": "p8@example.com", "status": "unsubscribed"})
    with session_scope(api.engine) as session:
        session.execute(Arrival.__table__.delete())  # type: ignore[attr-defined]
    # When a batch of 1,000 events comes, one for each lead, one of a type only nurture
    # records, and one asking again for an event of the batch (same id)
    items = [{"type": "page_visited", "lead": f"p{i}@example.com", "id": f"v{i}"}
             for i in range(ROWS)]  # fmt: skip
    items[637]["type"] = "email_opened"
    items[999] = dict(items[998])
    answer = api.http.post("/api/events", json=items)
    # Then each bad one has its own status at its index, and the others are stored
    assert answer.status_code == 207, answer.text
    results = answer.json()["results"]
    assert [r["index"] for r in results] == list(range(ROWS))
    bad = {r["index"]: (r["status"], r.get("error", "")) for r in results
           if r["status"] not in (200, 201)}  # fmt: skip
    assert set(bad) == {7, 637}
    assert bad[7][0] == 404 and "p7@example.com" in bad[7][1]
    assert bad[637][0] == 422 and "email_opened" in bad[637][1]
    assert results[999]["status"] == 200 and results[999]["id"] == results[998]["id"]
    stored = api.events("page_visited")
    assert len(stored) == ROWS - 3
    assert {e.id for e in stored} == {r["id"] for r in results if r["status"] == 201}
    assert all(e.via_key == "crm" and e.source == "api" for e in stored)
    # The erased person is not brought back; the unsubscribed one stays so
    now = leads(api.engine)
    assert "p7@example.com" not in now and now["p8@example.com"].status == "unsubscribed"
    # And each lead a new event may make hot is on the fast lane, once (no pass computed
    # their fit yet; the one who opted out cannot be hot)
    with session_scope(api.engine) as session:
        arrived = list(session.exec(select(Arrival.lead_id)))
        by_email = dict(session.exec(select(Lead.id, Lead.email)).all())
    assert len(arrived) == len(set(arrived)) == ROWS - 4
    assert {by_email[i] for i in arrived} == {
        f"p{i}@example.com" for i in range(ROWS - 1) if i not in (7, 8, 637)
    }
