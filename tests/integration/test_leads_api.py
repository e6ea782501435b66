"""The leads API over real HTTP: upserts by the import's rules, named keys recorded,
pages for incremental sync, erasure and the suppression list."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import select

from nurture.config import load_settings
from nurture.intake.importer import import_csv
from nurture.store.database import open_engine, session_scope
from nurture.store.events import Event
from nurture.store.leads import Lead
from nurture.store.outbox import OutboxMessage
from nurture.store.suppression import Suppression
from nurture.web import create_app
from tests.conftest import free_port
from tests.web import serving

WEBSITE = "website-key-0123456789"
CRM = "crm-key-abcdefghijklmnop"


@dataclass
class Api:
    http: httpx.Client
    engine: Engine
    project: Path

    def leads(self) -> dict[str, Lead]:
        with session_scope(self.engine) as session:
            return {lead.email: lead for lead in session.exec(select(Lead))}

    def events(self, type: str) -> list[Event]:
        with session_scope(self.engine) as session:
            return list(session.exec(select(Event).where(Event.type == type)))


@pytest.fixture
def api(project: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    monkeypatch.setenv("NURTURE_DATABASE_URL", db_url)
    monkeypatch.setenv("NURTURE_API_KEY", "old-single-key-0123")
    monkeypatch.setenv("NURTURE_API_KEYS", f'{{"website": "{WEBSITE}", "crm": "{CRM}"}}')
    config = load_settings(project / "nurture.toml")
    engine = open_engine(db_url)
    with serving(create_app(config, engine), free_port()) as url:
        headers = {"Authorization": f"Bearer {CRM}"}
        with httpx.Client(base_url=url, headers=headers, timeout=10) as http:
            yield Api(http, engine, project)
    engine.dispose()


def test_upsert_one_and_a_batch_by_the_import_rules_recording_the_key(api: Api) -> None:
    created = api.http.post("/api/leads", json={
        "email": "Maria.Lopez@Example.com", "first_name": "María", "company": "Brightpath",
        "attributes": {"employees": 120},
    })  # fmt: skip
    assert created.status_code == 201, created.text
    assert created.json() == {"status": 201, "email": "maria.lopez@example.com",
                              "result": "created"}  # fmt: skip
    # An unsubscribe arrives, then a CRM batch says "subscribed" and leaves a name empty.
    unsubscribed = api.http.post("/api/leads", json={"email": "maria.lopez@example.com",
                                                     "status": "unsubscribed"})  # fmt: skip
    assert unsubscribed.status_code == 200 and unsubscribed.json()["result"] == "updated"
    batch = api.http.post("/api/leads", json=[
        {"email": "MARIA.LOPEZ@example.com", "status": "subscribed", "first_name": "",
         "title": "VP Sales"},
        {"email": "ben@example.com", "first_name": "Ben"},
        {"email": "not an email"},
        {"email": "ben@example.com", "last_name": "Twice"},
        {"email": "zoe@example.com", "stage": "lukewarm"},
        {"email": "zoe@example.com", "favourite": "x"},
    ], headers={"Authorization": f"Bearer {WEBSITE}"})  # fmt: skip
    assert batch.status_code == 207, batch.text
    body = batch.json()
    assert [r["status"] for r in body["results"]] == [200, 201, 422, 422, 422, 422]
    assert "also item 1" in body["results"][3]["error"]
    assert "stage" in body["results"][4]["error"]
    assert "attributes" in body["results"][5]["error"]
    leads = api.leads()
    assert set(leads) == {"maria.lopez@example.com", "ben@example.com"}
    maria = leads["maria.lopez@example.com"]
    assert maria.status == "unsubscribed"  # never undone
    assert (maria.first_name, maria.title) == ("María", "VP Sales")  # empty kept
    assert maria.attributes == {"employees": 120}
    keys = {(e.type, e.via_key) for e in api.events("lead_created") + api.events("lead_updated")}
    assert keys == {("lead_created", "crm"), ("lead_updated", "crm"),
                    ("lead_created", "website"), ("lead_updated", "website")}  # fmt: skip
    [update] = [e for e in api.events("lead_updated") if e.via_key == "website"]
    assert update.data["fields"] == ["title"]


def test_keys_old_and_named_and_wrong(api: Api) -> None:
    item = {"email": "a@example.com"}
    assert api.http.post("/api/leads", json=item, headers={"Authorization": "Bearer nope"}
                         ).status_code == 401  # fmt: skip
    assert api.http.post("/api/leads", json=item, headers={"Authorization": ""}
                         ).status_code == 401  # fmt: skip
    old = api.http.post("/api/leads", json=item,
                        headers={"Authorization": "Bearer old-single-key-0123"})  # fmt: skip
    assert old.status_code == 201
    [event] = api.events("lead_created")
    assert event.via_key == "default"
    # The events API takes the named keys too, and records which one.
    recorded = api.http.post("/api/events", json={"type": "meeting_booked",
                                                  "lead": "a@example.com"})  # fmt: skip
    assert recorded.status_code == 201
    assert [e.via_key for e in api.events("meeting_booked")] == ["crm"]


def test_read_one_lead_with_its_timeline(api: Api) -> None:
    api.http.post(
        "/api/leads",
        json={
            "email": "a@example.com",
            "owner": "sam@example.com",
            "consent": {"text": "Email me", "version": "v2"},
        },
    )
    api.http.post("/api/events", json={"type": "page_visited", "lead": "a@example.com"})
    found = api.http.get("/api/leads/A@Example.com")
    assert found.status_code == 200
    lead = found.json()
    assert lead["owner"] == "sam@example.com" and lead["stage"] == "cold"
    assert lead["consent"]["text"] == "Email me" and lead["consent"]["key"] == "crm"
    assert {"engagement", "fit", "enrollments"} <= set(lead)
    assert [e["type"] for e in lead["timeline"]] == ["lead_created", "page_visited"]
    assert api.http.get("/api/leads/nobody@example.com").status_code == 404
    assert api.http.get("/api/leads/a@example.com", headers={"Authorization": ""}
                        ).status_code == 401  # fmt: skip


def test_pages_in_a_stable_order_for_incremental_sync(api: Api) -> None:
    for index in range(7):  # each one changed after the one before
        api.http.post(
            "/api/leads",
            json={"email": f"l{index}@example.com", "stage": "warm" if index % 2 else "cold"},
        )
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = api.http.get("/api/leads", params=params).json()
        seen += [lead["email"] for lead in page["leads"]]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
    assert seen == [f"l{index}@example.com" for index in range(7)]
    # Later: only what changed since the cursor comes back.
    api.http.post("/api/leads", json={"email": "l2@example.com", "company": "Acme"})
    later = api.http.get("/api/leads", params={"cursor": cursor}).json()
    assert [lead["email"] for lead in later["leads"]] == ["l2@example.com"]
    assert api.http.get("/api/leads", params={"cursor": cursor + "x"}).status_code == 422
    warm = api.http.get("/api/leads", params={"stage": "warm"}).json()
    assert [lead["email"] for lead in warm["leads"]] == ["l1@example.com", "l3@example.com",
                                                         "l5@example.com"]  # fmt: skip
    moment = api.leads()["l5@example.com"].updated_at
    since = api.http.get("/api/leads", params={"updated_since": moment.isoformat()}).json()
    assert [lead["email"] for lead in since["leads"]] == ["l5@example.com", "l6@example.com",
                                                          "l2@example.com"]  # fmt: skip


def test_erase_then_the_import_api_and_a_consent(api: Api, tmp_path: Path) -> None:
    api.http.post("/api/leads", json={"email": "gone@example.com", "first_name": "Gone"})
    api.http.post("/api/leads", json={"email": "kept@example.com"})
    api.http.post("/api/events", json={"type": "page_visited", "lead": "gone@example.com"})
    erased = api.http.delete("/api/leads/Gone@example.com")
    assert erased.status_code == 200 and erased.json() == {"erased": True, "suppressed": True}
    assert set(api.leads()) == {"kept@example.com"}
    with session_scope(api.engine) as session:
        [row] = session.exec(select(Suppression)).all()
        assert "gone" not in row.hash and len(row.hash) == 64
        assert session.exec(select(Event).where(Event.type == "page_visited")).all() == []
        assert session.exec(select(OutboxMessage)).all() == []
    # No import and no API call brings them back ...
    csv = tmp_path / "again.csv"
    csv.write_text("email,first_name\ngone@example.com,Gone\nnew@example.com,New\n")
    report = import_csv(api.engine, csv)
    assert report.created == 1 and len(report.rejected) == 1
    assert "erased" in report.rejected[0].message and report.rejected[0].line == 2
    again = api.http.post("/api/leads", json={"email": "gone@example.com"})
    assert again.status_code == 409 and "erased" in again.json()["error"]
    assert "gone@example.com" not in api.leads()
    # ... unless they opt in anew.
    opted = api.http.post(
        "/api/leads", json={"email": "gone@example.com", "consent": {"text": "Yes, email me"}}
    )
    assert opted.status_code == 201
    assert api.http.delete("/api/leads/nobody@example.com").json()["erased"] is False


def test_a_name_with_a_line_break_is_refused_for_that_item(api: Api) -> None:
    name = "Ann\r\nBcc: x@evil.example"
    one = api.http.post("/api/leads", json={"email": "ann@example.com", "first_name": name})
    assert one.status_code == 422 and "first_name: a line break is not allowed" in one.text
    batch = api.http.post("/api/leads", json=[
        {"email": "bob@example.com", "last_name": "Lee\nhttps://evil.example"},
        {"email": "cy@example.com", "first_name": "Cy"},
    ])  # fmt: skip
    assert batch.status_code == 207
    assert [item["status"] for item in batch.json()["results"]] == [422, 201]
    assert set(api.leads()) == {"cy@example.com"}
