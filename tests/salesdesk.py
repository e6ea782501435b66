"""A running sales workspace for the app's tests: the example project on a real
database, served by uvicorn on a loopback port, with María López just handed to
sam@example.com (she replied and filled in forms an hour ago).

Moments are taken from the real clock (the server runs on it), never a fixed date.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from email import message_from_string, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import Engine
from sqlmodel import col, select

from nurture import clock
from nurture.config import Config, load_settings
from nurture.engine.context import Context
from nurture.intake.importer import import_csv
from nurture.stages.passes import tick
from nurture.store.database import open_engine, session_scope
from nurture.store.events import record_event
from nurture.store.leads import Lead
from nurture.store.outbox import OutboxMessage
from nurture.web import create_app
from nurture.web.state import Background
from tests.conftest import free_port

MARIA = "maria.lopez@brightpath.io"
SAM = "sam@example.com"  # María's owner
LEE = "lee@example.com"  # on the team, not her owner
BOSS = "boss@example.com"  # a manager
BROWSER = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15"


@dataclass
class Desk:
    url: str
    project: Path
    config: Config
    engine: Engine
    #: The server's background work (sign-in links are made there, after the answer).
    background: Background | None = None

    def context(self) -> Context:
        return Context.open(self.engine, self.config)

    def tick(self, moment: datetime | None = None) -> Any:
        """One pass at *moment*, in a thread of its own (a browser driver may own this
        thread's event loop)."""
        at = moment or clock.now()
        result: list[Any] = []

        def run() -> None:
            with clock.pinned(at):
                result.append(asyncio.run(tick(self.context(), at)))

        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
        assert result, "the pass failed"
        return result[0]

    def lead(self, email: str = MARIA) -> Lead:
        with session_scope(self.engine) as session:
            return session.exec(select(Lead).where(Lead.email == email)).one()

    def event(self, type_: str, at: datetime, email: str = MARIA, **fields: Any) -> None:
        with session_scope(self.engine) as session:
            lead = session.exec(select(Lead).where(Lead.email == email)).one()
            record_event(session, lead.id or 0, type_, at=at, source="test", **fields)

    def mail(self, to: str, kind: str) -> list[EmailMessage]:
        """Messages of *kind* queued to *to* in the outbox, oldest first (once the
        server's background work, which queues sign-in links, is done)."""
        if self.background is not None:
            assert self.background.wait(), "the server's background work did not finish"
        with session_scope(self.engine) as session:
            rows = session.exec(
                select(OutboxMessage.raw)
                .where(OutboxMessage.recipient == to)
                .where(OutboxMessage.kind == kind)
                .order_by(col(OutboxMessage.id))
            )
            return [message_from_string(raw, policy=policy.default) for raw in rows]  # type: ignore[misc]

    def link(self, to: str, kind: str, path: str) -> str:
        """The last link to ``/app/PATH/...`` in the text of the last *kind* mail to *to*."""
        message = self.mail(to, kind)[-1]
        body = message.get_body(("plain",))
        assert body is not None
        found = re.findall(rf"{re.escape(self.url)}/app/{path}/[A-Za-z0-9_.-]+", body.get_content())
        assert found, body.get_content()
        return str(found[-1])

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"User-Agent": BROWSER}, timeout=15)

    def sign_in(self, client: httpx.Client, email: str) -> None:
        """Sign *client* in as *email* through the emailed link."""
        ask(client, email)
        link = self.link(email, "signin", "signin")
        page = client.get(link)
        assert page.status_code == 200, page.text
        done = client.post(link, data={"csrf": csrf_of(page.text)})
        assert done.status_code == 303 and done.headers["location"] == "/app/", done.text


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def ask(client: httpx.Client, email: str) -> httpx.Response:
    """Ask for a sign-in link as a browser does (the form, then its POST)."""
    page = client.get("/app/login")
    answer = client.post("/app/login", data={"csrf": csrf_of(page.text), "email": email})
    assert answer.status_code == 200, answer.text
    return answer


@pytest.fixture
def sales_desk(project: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Desk]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("NURTURE_DATABASE_URL", db_url)
    monkeypatch.setenv("NURTURE_TRACKING_BASE_URL", url)
    monkeypatch.setenv("NURTURE_SALES_MANAGERS", f'["{BOSS}"]')
    monkeypatch.setenv("NURTURE_SALES_DIGEST_AT", "")
    config = load_settings(project / "nurture.toml")
    engine = open_engine(db_url)
    now = clock.now()
    with clock.pinned(now - timedelta(days=3)):
        import_csv(engine, project / "leads.csv")
    desk = Desk(url, project, config, engine)
    desk.tick(now - timedelta(days=2))
    touch = {"sequence": "pricing-guide-welcome", "step": "welcome"}
    desk.event(
        "email_clicked",
        now - timedelta(hours=2),
        data={"url": "https://example.com/guide"},
        **touch,
    )
    desk.event("form_submitted", now - timedelta(hours=1, minutes=50))
    desk.event(
        "email_replied",
        now - timedelta(hours=1),
        data={"first_lines": "Could we see a demo next week?\nWe are 120 people."},
        **touch,
    )
    desk.tick(now - timedelta(minutes=30))
    assert desk.lead().stage == "hot"
    app = create_app(config, engine)
    desk.background = app.state.web.background
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    yield desk
    server.should_exit = True
    thread.join(10)
    engine.dispose()
