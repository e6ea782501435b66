"""The tracking and API server over real HTTP (uvicorn on a loopback port), following
the links of emails the engine delivered to a real SMTP server."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import select

from nurture import clock
from nurture.config import Config, load_settings
from nurture.engine.context import Context
from nurture.stages.passes import tick
from nurture.store.database import open_engine, session_scope
from nurture.store.events import Event
from nurture.store.leads import Lead, LeadChanges, upsert_leads
from nurture.web import background_server
from tests.conftest import SmtpServer, free_port

SEQUENCE = """\
name: tracked
audience: "lead.source == 'web'"
from: "Ana Ruiz <ana@example.com>"
exit_when: [replied, unsubscribed]
steps:
  - id: hello
    email: welcome
  - id: later
    wait: 2 days
    email: case-study
"""
BROWSER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Version/17.5"
API_KEY = "test-key-0123456789"


@dataclass
class Site:
    url: str
    project: Path
    config: Config
    engine: Engine
    smtp: SmtpServer

    def deliver(self, ago: timedelta = timedelta(minutes=1)) -> EmailMessage:
        """Send the next due email as if *ago* before now; return it as received."""
        moment = clock.now() - ago
        before = len(self.smtp.handler.messages)
        with clock.pinned(moment):
            asyncio.run(tick(Context.open(self.engine, self.config), moment))
        assert len(self.smtp.handler.messages) == before + 1
        return self.smtp.handler.messages[-1]

    def events(self, type: str) -> list[Event]:
        with session_scope(self.engine) as session:
            return list(session.exec(select(Event).where(Event.type == type)))

    def lead(self, email: str = "maria@example.com") -> Lead:
        with session_scope(self.engine) as session:
            return session.exec(select(Lead).where(Lead.email == email)).one()

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"User-Agent": BROWSER}, timeout=10)


@pytest.fixture
def site(
    project: Path, db_url: str, smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Site]:
    port = free_port()
    for path in (project / "sequences").iterdir():
        path.unlink()
    (project / "sequences" / "tracked.yaml").write_text(SEQUENCE)
    monkeypatch.setenv("NURTURE_DATABASE_URL", db_url)
    monkeypatch.setenv("NURTURE_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("NURTURE_SMTP_PORT", str(smtp_server.port))
    monkeypatch.setenv("NURTURE_TRACKING_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("NURTURE_API_KEY", API_KEY)
    config = load_settings(project / "nurture.toml")
    engine = open_engine(db_url)
    with session_scope(engine) as session:
        upsert_leads(
            session, [LeadChanges("maria@example.com", {"first_name": "María", "source": "web"})]
        )
    with running_server(config, engine, port) as url:
        yield Site(url, project, config, engine, smtp_server)
    engine.dispose()


@contextmanager
def running_server(config: Config, engine: Engine, port: int) -> Iterator[str]:
    """The server as ``nurture serve`` runs it, on a loopback *port*; yields its URL."""
    server = background_server(config, engine, "127.0.0.1", port)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        assert thread.is_alive(), "server stopped"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def links(message: EmailMessage) -> dict[str, Any]:
    body = message.get_body(("html",))
    assert body is not None
    html = body.get_content()
    hrefs = re.findall(r'href="([^"]+)"', html)
    return {
        "pixel": re.search(r'<img src="([^"]+/o/[^"]+)"', html).group(1),  # type: ignore[union-attr]
        "clicks": [h.replace("&amp;", "&") for h in hrefs if "/c/" in h],
        "unsubscribe": next(h for h in hrefs if "/u/" in h),
        "header": message["List-Unsubscribe"].split(",")[0].strip().strip("<>"),
    }


def test_open_click_and_unsubscribe_through_the_links_of_a_delivered_email(site: Site) -> None:
    found = links(site.deliver())
    assert len(found["clicks"]) == 2 and found["unsubscribe"] == found["header"]
    with site.client() as http:
        pixel = http.get(found["pixel"])
        assert pixel.status_code == 200 and pixel.headers["content-type"] == "image/gif"
        http.get(found["pixel"])  # a second look at the same email is the same open
        click = http.get(found["clicks"][0], follow_redirects=False)
        assert click.status_code == 302
        assert click.headers["location"] == "https://example.com/guides/pricing.pdf"
        page = http.get(found["unsubscribe"])
        assert page.status_code == 200 and '<form method="post">' in page.text
        assert site.lead().status == "subscribed"  # a GET never unsubscribes
        done = http.post(found["unsubscribe"])
        assert done.status_code == 200 and "You are unsubscribed" in done.text
        http.post(found["unsubscribe"])  # twice is still one unsubscribe
    [opened] = site.events("email_opened")
    assert (opened.sequence, opened.step, opened.machine) == ("tracked", "hello", False)
    [clicked] = site.events("email_clicked")
    assert clicked.data["url"] == "https://example.com/guides/pricing.pdf" and not clicked.machine
    [unsubscribed] = site.events("unsubscribed")
    assert unsubscribed.data["via"] == "page"
    assert site.lead().status == "unsubscribed"


def test_tampered_or_unknown_click_tokens_get_404_and_no_redirect(site: Site) -> None:
    found = links(site.deliver())
    click = found["clicks"][0]
    token = click.rsplit("/", 1)[1]
    body, mac = token.split(".")
    # The same signature over another link index, another email, or no signature.
    tampered = [
        click[: -len(mac)] + ("A" if mac[0] != "A" else "B") + mac[1:],
        click.rsplit("/", 1)[0] + "/" + body,
        click.rsplit("/", 1)[0] + "/bm90LWEtdG9rZW4.AAAAAAAAAAAAAAAAAAAAAAAA",
        found["unsubscribe"].replace("/u/", "/c/"),
    ]
    with site.client() as http:
        for url in tampered:
            response = http.get(url, follow_redirects=False)
            assert response.status_code == 404 and "location" not in response.headers
        assert http.get(found["unsubscribe"] + "x").status_code == 404
        assert http.post(found["unsubscribe"] + "x").status_code == 404
    assert site.events("email_clicked") == []
    assert site.lead().status == "subscribed"


def test_one_click_unsubscribe_post(site: Site) -> None:
    found = links(site.deliver())
    with site.client() as http:
        response = http.post(
            found["header"],
            content="List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert response.status_code == 200
    [event] = site.events("unsubscribed")
    assert event.data["via"] == "one-click"
    assert site.lead().status == "unsubscribed"


def test_machine_engagement_is_flagged_and_not_counted(site: Site) -> None:
    found = links(site.deliver(ago=timedelta(seconds=0)))
    with site.client() as http:
        http.get(found["pixel"])  # at once after delivery: a scanner
        http.head(found["clicks"][1], follow_redirects=False)
        http.get(
            found["clicks"][0],
            headers={"User-Agent": "Barracuda Sentinel (EE)"},
            follow_redirects=False,
        )
    events = site.events("email_opened") + site.events("email_clicked")
    assert len(events) == 3 and all(e.machine for e in events)
    reasons = {e.data["machine_reason"] for e in events}
    assert reasons >= {"within seconds of delivery", "HEAD request", "scanner user agent"}


def test_clicking_every_link_at_once_is_a_scanner(site: Site) -> None:
    found = links(site.deliver())
    with site.client() as http:
        for url in found["clicks"]:
            http.get(url, follow_redirects=False)
    clicks = site.events("email_clicked")
    assert len(clicks) == 2 and all(e.machine for e in clicks)


def test_events_api_keys_batches_and_unknown_leads(site: Site) -> None:
    url = f"{site.url}/api/events"
    good = {"type": "meeting_booked", "lead": "maria@example.com", "id": "cal-1"}
    with httpx.Client(timeout=10) as http:
        assert http.post(url, json=good).status_code == 401
        assert http.post(url, json=good, headers={"X-API-Key": "wrong"}).status_code == 401
        auth = {"Authorization": f"Bearer {API_KEY}"}
        first = http.post(url, json=good, headers=auth)
        assert first.status_code == 201, first.text
        again = http.post(url, json=good, headers=auth)
        assert again.status_code == 200 and again.json()["duplicate"] is True
        unknown = http.post(
            url, json={"type": "form_submitted", "lead": "who@example.com"}, headers=auth
        )
        assert unknown.status_code == 404 and "no lead with email" in unknown.json()["error"]
        batch = http.post(
            url,
            headers=auth,
            json=[
                {"type": "page_visited", "lead": "maria@example.com", "data": {"path": "/pricing"}},
                {"type": "Bad Type", "lead": "maria@example.com"},
                {"lead": "maria@example.com"},
                {"type": "form_submitted", "lead": "maria@example.com", "at": "yesterday"},
                {"type": "form_submitted", "lead": "nobody@example.com"},
                "not an object",
                {"type": "webinar_attended", "lead": "MARIA@example.com", "colour": "red"},
            ],
        )
        assert batch.status_code == 207
        body = batch.json()
        assert [r["status"] for r in body["results"]] == [201, 422, 422, 422, 404, 422, 422]
        assert "type" in body["results"][2]["error"] and "colour" in body["results"][6]["error"]
        assert body["recorded"] == 1 and body["refused"] == 6
        assert http.post(url, content=b"{not json", headers=auth).status_code == 400
        assert http.get(f"{site.url}/healthz").json()["status"] == "ok"
        schema = http.get(f"{site.url}/api/openapi.json").json()
        assert list(schema["paths"]) == [
            "/healthz",
            "/api/events",
            "/api/handoff",
            "/api/leads",
            "/api/leads/{email}",
        ]
    assert len(site.events("meeting_booked")) == 1
    assert len(site.events("page_visited")) == 1


def test_handoff_answers_over_the_api(site: Site) -> None:
    from nurture.store.handoffs import Handoff

    with session_scope(site.engine) as session:
        lead = session.exec(select(Lead)).one()
        lead.stage = "hot"
        session.add(lead)
        session.add(Handoff(lead_id=lead.id or 0, owner="sam@example.com"))
    url = f"{site.url}/api/handoff"
    auth = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(timeout=10) as http:
        assert (
            http.post(url, json={"lead": "maria@example.com", "answer": "accept"}).status_code
            == 401
        )
        no_reason = http.post(
            url, headers=auth, json={"lead": "maria@example.com", "answer": "reject"}
        )
        assert no_reason.status_code == 422 and "needs a reason" in no_reason.json()["detail"]
        wrong = http.post(url, headers=auth, json={"lead": "maria@example.com", "answer": "maybe"})
        assert wrong.status_code == 422
        nobody = http.post(url, headers=auth, json={"lead": "x@example.com", "answer": "accept"})
        assert nobody.status_code == 404
        done = http.post(
            url,
            headers=auth,
            json={"lead": "maria@example.com", "answer": "recycle", "reason": "next year"},
        )
        assert done.status_code == 200 and done.json()["status"] == "recycled"
        again = http.post(url, headers=auth, json={"lead": "maria@example.com", "answer": "accept"})
        assert again.status_code == 422 and "not waiting" in again.json()["detail"]
    lead = site.lead()
    assert lead.stage == "cold" and lead.attributes["recycle_reason"] == "next year"
    [answered] = site.events("handoff_recycled")
    assert answered.data["via"] == "api" and answered.via_key == "default"


def test_a_batch_stores_each_event_once_and_acts_on_it(site: Site) -> None:
    # Given an event recorded before, under its id
    url = f"{site.url}/api/events"
    auth = {"Authorization": f"Bearer {API_KEY}"}
    first = {"type": "form_submitted", "lead": "maria@example.com", "id": "crm-1"}
    with httpx.Client(timeout=10) as http:
        assert http.post(url, json=first, headers=auth).status_code == 201
        # When a batch repeats it, repeats one of its own items, and unsubscribes the lead
        batch = http.post(
            url,
            headers=auth,
            json=[
                first,
                {"type": "page_visited", "lead": "maria@example.com", "id": "crm-2"},
                {"type": "page_visited", "lead": "Maria@Example.com", "id": "crm-2"},
                {"type": "unsubscribed", "lead": "maria@example.com", "id": "crm-3"},
            ],
        )
    # Then each event is stored once, the repeats point at the stored ones, and the
    # unsubscribe acts at once
    assert batch.status_code == 200, batch.text
    results = batch.json()["results"]
    assert [(r["status"], r["duplicate"]) for r in results] == [
        (200, True), (201, False), (200, True), (201, False),
    ]  # fmt: skip
    assert results[1]["id"] == results[2]["id"] and results[1]["id"] is not None
    assert len(site.events("form_submitted")) == 1 and len(site.events("page_visited")) == 1
    assert site.lead().status == "unsubscribed"
