"""Scoring and the hand-off with the example project: leads turn hot from their events,
sales hears once per transition (email over a real SMTP server, webhook over real HTTP),
sequences stop, and a recycled lead goes back to nurture."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from freezegun import freeze_time
from sqlalchemy import Engine
from sqlmodel import select

from nurture.config import Config, load_settings
from nurture.engine.context import Context
from nurture.intake.importer import import_csv
from nurture.stages.passes import tick
from nurture.store.database import open_engine, session_scope
from nurture.store.enrollments import Enrollment
from nurture.store.events import record_event
from nurture.store.handoffs import Handoff, answer_handoff
from nurture.store.leads import Lead
from tests.conftest import SmtpServer

START = datetime(2026, 11, 20, 23, 30, tzinfo=UTC)  # Friday 15:30 in Los Angeles
MARIA = "maria.lopez@brightpath.io"


@dataclass
class Sales:
    project: Path
    config: Config
    engine: Engine
    smtp: SmtpServer

    def tick(self, moment: datetime) -> Any:
        with freeze_time(moment, real_asyncio=True):
            _, report, _ = asyncio.run(tick(Context.open(self.engine, self.config), moment))
        return report

    def event(self, type: str, at: datetime, email: str = MARIA, **fields: Any) -> None:
        with session_scope(self.engine) as session:
            lead = session.exec(select(Lead).where(Lead.email == email)).one()
            record_event(session, lead.id or 0, type, at=at, source="test", **fields)

    def lead(self, email: str = MARIA) -> Lead:
        with session_scope(self.engine) as session:
            return session.exec(select(Lead).where(Lead.email == email)).one()

    def notices(self, prefix: str = "Hot lead") -> list[Any]:
        return [m for m in self.smtp.handler.messages if str(m["Subject"]).startswith(prefix)]

    def enrollments(self, email: str = MARIA) -> list[tuple[str, str, str | None]]:
        lead = self.lead(email)
        with session_scope(self.engine) as session:
            rows = session.exec(select(Enrollment).where(Enrollment.lead_id == lead.id))
            return [(e.sequence, e.status, e.reason) for e in rows]

    def engaged(self, at: datetime, email: str = MARIA) -> None:
        """Clicks the welcome email and submits three forms: 35 points."""
        self.event("email_clicked", at, email, sequence="pricing-guide-welcome", step="welcome")
        for minutes in (1, 2, 3):
            self.event("form_submitted", at + timedelta(minutes=minutes), email)


@pytest.fixture
def sales(
    project: Path, db_url: str, smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Sales]:
    monkeypatch.setenv("NURTURE_DATABASE_URL", db_url)
    monkeypatch.setenv("NURTURE_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("NURTURE_SMTP_PORT", str(smtp_server.port))
    monkeypatch.setenv("NURTURE_SALES_NOTIFY_EMAIL", "sales@example.com")
    config = load_settings(project / "nurture.toml")
    engine = open_engine(db_url)
    with freeze_time(START - timedelta(days=1)):
        import_csv(engine, project / "leads.csv")
    yield Sales(project, config, engine, smtp_server)
    engine.dispose()


def test_an_engaged_lead_turns_hot_in_one_pass_and_sales_hears_once(sales: Sales) -> None:
    sales.tick(START)
    sales.engaged(START + timedelta(hours=1))
    report = sales.tick(START + timedelta(hours=1, minutes=5))
    assert report.hot == 1
    lead = sales.lead()
    assert lead.stage == "hot" and lead.fit == 30
    [notice] = sales.notices()
    assert notice["To"] == "sam@example.com"
    body = notice.get_body(("plain",)).get_content()
    assert "María López at BrightPath is a hot lead for you" in body
    assert "Filled in a form 3 times, last on Fri 19:33: +30" in body
    assert 'Clicked a link in "María, your Acme pricing guide" on Fri 19:30' in body
    assert "Decision-maker title: +20 fit" in body  # the fit rule that matched, by its label
    assert "/app/l/" in body and f"nurture handoff accept {MARIA}" in body
    # Her marketing sequence stops.
    assert ("pricing-guide-welcome", "exited", "lead is hot") in sales.enrollments()
    # More events and more passes: still one notice.
    sales.event("page_visited", START + timedelta(hours=2))
    sales.tick(START + timedelta(hours=2, minutes=1))
    sales.tick(START + timedelta(hours=3))
    assert len(sales.notices()) == 1
    with session_scope(sales.engine) as session:
        [handoff] = session.exec(select(Handoff)).all()
    assert handoff.owner == "sam@example.com" and handoff.status == "pending"


def test_the_notice_reads_well_in_html_and_text_and_reaches_a_person(sales: Sales) -> None:
    sales.tick(START)
    sales.event("email_replied", START + timedelta(hours=1), sequence="pricing-guide-welcome",
                step="welcome", data={"first_lines": "Could we see a demo next week?\n"
                                      "We are <b>120</b> people."})  # fmt: skip
    sales.engaged(START + timedelta(hours=1, minutes=2))
    sales.tick(START + timedelta(hours=1, minutes=5))
    [notice] = sales.notices()
    text = notice.get_body(("plain",)).get_content()
    html = notice.get_body(("html",)).get_content()
    # The reply's first lines, in both parts (escaped in the HTML one).
    assert "Could we see a demo next week?" in text and "We are <b>120</b> people." in text
    assert "Could we see a demo next week?" in html and "&lt;b&gt;120&lt;/b&gt;" in html
    assert "<b>120</b>" not in html
    # The sequences as this very pass left them: stopped by her reply, not "next step".
    assert "Sequences:\r\n  pricing-guide-welcome: stopped: replied" in text
    # A link into the app in the HTML part; replies go to a person, not the robot.
    assert 'href="http://' in html and "/app/l/" in html
    assert str(notice["Reply-To"]) == "sales@example.com"
    assert "nurture@example.com" in str(notice["From"])


def test_daily_caps_and_decay_move_a_lead_down_then_up_again(sales: Sales) -> None:
    for minutes in range(6):
        sales.event("email_opened", START + timedelta(minutes=minutes), sequence="x", step="y")
    sales.tick(START + timedelta(minutes=10))
    assert sales.lead().engagement == pytest.approx(3, abs=0.01)  # 3 opens a day count
    sales.engaged(START + timedelta(hours=1))
    sales.tick(START + timedelta(hours=1, minutes=5))
    assert sales.lead().stage == "hot"
    # Two weeks later the engagement has halved (about 19): warm, no new notice.
    report = sales.tick(START + timedelta(days=14, hours=2))
    assert report.stage_changes == 1 and sales.lead().stage == "warm"
    assert len(sales.notices()) == 1
    # New engagement crosses hot again: a new transition, a new notice.
    sales.event("email_replied", START + timedelta(days=15))
    sales.tick(START + timedelta(days=15, minutes=1))
    assert sales.lead().stage == "hot" and len(sales.notices()) == 2


def test_recycle_sends_the_lead_back_into_the_reengagement_sequence(sales: Sales) -> None:
    sales.tick(START)
    sales.engaged(START + timedelta(hours=1))
    sales.tick(START + timedelta(hours=1, minutes=5))
    with session_scope(sales.engine) as session:
        answer_handoff(
            session,
            MARIA,
            "recycle",
            "budget next quarter",
            via="test",
            now=START + timedelta(hours=2),
        )
    lead = sales.lead()
    assert (lead.stage, lead.engagement) == ("cold", 0)
    assert lead.attributes["recycle_reason"] == "budget next quarter"
    sales.tick(START + timedelta(hours=2, minutes=1))
    assert ("recycled-reengage", "active", None) in sales.enrollments()
    # Old events no longer count: a rescore agrees.
    assert sales.lead().stage == "cold"


def test_reject_and_accept_are_kept(sales: Sales) -> None:
    sales.tick(START)
    sales.engaged(START + timedelta(hours=1))
    sales.tick(START + timedelta(hours=1, minutes=5))
    with session_scope(sales.engine) as session:
        with pytest.raises(Exception, match="needs a reason"):
            answer_handoff(session, MARIA, "reject", None, via="test")
        answer_handoff(session, MARIA, "reject", "student, no budget", via="test")
    assert sales.lead().stage == "disqualified"
    # Scores never move a lead out of sales' stages.
    sales.event("email_replied", START + timedelta(hours=3))
    sales.tick(START + timedelta(hours=3, minutes=1))
    assert sales.lead().stage == "disqualified"


def test_nobody_answers_one_reminder_goes_to_the_owner_and_the_sales_inbox(
    sales: Sales,
) -> None:
    sales.tick(START)
    sales.engaged(START + timedelta(hours=1))
    sales.tick(START + timedelta(hours=1, minutes=5))  # Friday evening: hot
    sales.tick(START + timedelta(days=3))  # Monday: one business day later, not yet
    assert sales.notices("Reminder") == []
    sales.tick(START + timedelta(days=4, hours=2))  # past Tuesday's deadline
    sales.tick(START + timedelta(days=5))
    reminders = sales.notices("Reminder")
    assert sorted(str(m["To"]) for m in reminders) == ["sales@example.com", "sam@example.com"]


def test_unowned_leads_go_round_the_team(sales: Sales, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NURTURE_SALES_TEAM", '["ana@example.com", "ben@example.com"]')
    sales.config = load_settings(sales.project / "nurture.toml")
    unowned = ["tom.becker@harbor-analytics.com", "lucas.martin@atelier-nord.fr"]
    for email in unowned:
        for minutes in range(4):
            sales.event("form_submitted", START + timedelta(minutes=minutes), email)
    # Tom has 80 employees but no VP title: fit 10. Make both fit.
    with session_scope(sales.engine) as session:
        for email in unowned:
            lead = session.exec(select(Lead).where(Lead.email == email)).one()
            lead.title, lead.updated_at = "Head of Data", START
            session.add(lead)
    sales.tick(START + timedelta(minutes=10))
    owners = {sales.lead(email).owner for email in unowned}
    assert owners == {"ana@example.com", "ben@example.com"}


class _Hook(BaseHTTPRequestHandler):
    answers: ClassVar[list[int]] = []
    received: ClassVar[list[tuple[dict[str, Any], str]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        status = self.answers.pop(0) if self.answers else 200
        self.received.append((body, self.headers["Idempotency-Key"]))
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


@dataclass
class HookServer:
    url: str
    handler: type[_Hook]
    server: ThreadingHTTPServer
    calls: list[Any] = field(default_factory=list)


@pytest.fixture
def hook() -> Iterator[HookServer]:
    handler = type("Hook", (_Hook,), {"answers": [], "received": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield HookServer(f"http://127.0.0.1:{server.server_address[1]}/hook", handler, server)
    server.shutdown()


def test_the_webhook_is_retried_until_it_succeeds_and_never_sent_twice(
    sales: Sales, hook: HookServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NURTURE_SALES_WEBHOOK_URL", hook.url)
    sales.config = load_settings(sales.project / "nurture.toml")
    hook.handler.answers = [503]
    sales.tick(START)
    sales.engaged(START + timedelta(hours=1))
    sales.tick(START + timedelta(hours=1, minutes=5))
    assert len(hook.handler.received) == 1  # refused
    sales.tick(START + timedelta(hours=1, minutes=5, seconds=20))  # the retry is not due yet
    assert len(hook.handler.received) == 1
    sales.tick(START + timedelta(hours=1, minutes=8))
    sales.tick(START + timedelta(hours=2))
    assert len(hook.handler.received) == 2
    (first, key1), (second, key2) = hook.handler.received
    assert first == second and key1 == key2
    assert second["text"] == "María López at BrightPath is a hot lead for sam@example.com"
    assert second["nurture"]["lead"] == MARIA


def test_changing_scoring_yaml_rescores_every_lead_in_the_next_pass(sales: Sales) -> None:
    sales.tick(START)
    sales.engaged(START + timedelta(hours=1))
    sales.tick(START + timedelta(hours=1, minutes=5))
    assert sales.lead().stage == "hot"
    scoring = sales.project / "scoring.yaml"
    scoring.write_text(scoring.read_text().replace("form_submitted: 10", "form_submitted: 2"))
    report = sales.tick(START + timedelta(hours=2))
    lead = sales.lead()
    assert report.stage_changes == 1 and lead.stage == "warm"
    assert lead.engagement == pytest.approx(11, abs=0.1)  # 5 for the click, 3 x 2 for forms


def test_the_daily_digest_goes_once_per_business_morning_to_who_has_work(sales: Sales) -> None:
    sales.tick(START)
    sales.engaged(START + timedelta(hours=1))
    sales.tick(START + timedelta(hours=1, minutes=5))  # Friday evening: hot, sam's
    monday = START + timedelta(days=2, hours=14)  # Monday 08:30 in New York
    sales.tick(START + timedelta(days=1, hours=9))  # Sunday morning: no digest
    assert sales.notices("Your day") == []
    sales.tick(monday)
    sales.tick(monday + timedelta(hours=1))
    [digest] = sales.notices("Your day")
    assert digest["To"] == "sam@example.com" and "1 hot lead" in digest["Subject"]
    text = digest.get_body(("plain",)).get_content()
    assert "María López, BrightPath" in text and "/app/l/" in text
    sales.tick(monday + timedelta(days=1, hours=9))  # Tuesday 17:30: too late for one
    assert len(sales.notices("Your day")) == 1
