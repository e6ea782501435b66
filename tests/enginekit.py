"""The engine harness: a project, a database (SQLite or PostgreSQL), a real SMTP server
on loopback, and ticks of the engine at moments freezegun pins."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from freezegun import freeze_time
from sqlalchemy import Engine
from sqlmodel import select

from nurture import clock
from nurture.config import Config, load_settings
from nurture.engine.context import Context
from nurture.mail.pacing import DeliveryReport
from nurture.stages.passes import tick
from nurture.stages.report import PassReport
from nurture.store.database import open_engine, session_scope
from nurture.store.enrollments import Enrollment
from nurture.store.leads import Lead, LeadChanges, upsert_leads
from nurture.store.outbox import OutboxMessage
from tests.conftest import SmtpServer

LA = ZoneInfo("America/Los_Angeles")

SEQUENCE = """\
name: welcome
audience: "lead.source == 'guide'"
from: "Ana Ruiz <ana@example.com>"
reply_to: "Ana Ruiz <ana.replies@example.com>"
schedule:
  timezone: lead
  days: [mon, tue, wed, thu, fri]
  hours: "09:00-17:00"
exit_when: [replied, unsubscribed, bounced]
steps:
  - id: welcome
    email: welcome
  - id: case-study
    wait: 2 days
    email: case-study
  - id: call
    wait: 1 business day
    task: call
    timeout: 2 days
    note: "Call {{ lead.first_name }}"
  - id: breakup
    wait: 1 day
    if: "not occurred('call_completed')"
    email: breakup-short
"""


def la(*args: int) -> datetime:
    return datetime(*args, tzinfo=LA).astimezone(UTC)  # type: ignore[misc]


#: When the harness's leads are imported unless a test says otherwise.
LEADS_ARRIVE = la(2026, 11, 1, 9, 0)


@dataclass
class Harness:
    project: Path
    config: Config
    engine: Engine
    smtp: SmtpServer

    def tick(self, moment: datetime) -> tuple[PassReport, DeliveryReport]:
        with freeze_time(moment, real_asyncio=True):
            ctx = Context.open(self.engine, self.config)
            _, report, delivered = asyncio.run(tick(ctx, clock.now()))
        return report, delivered

    def add_leads(self, *rows: dict[str, Any], at: datetime | None = None) -> None:
        """Import *rows* at the moment *at* (by default before every tick of these tests:
        a test never writes at the real time, so it passes on any day)."""
        with freeze_time(at or LEADS_ARRIVE), session_scope(self.engine) as session:
            upsert_leads(session, [LeadChanges(row["email"], dict(row)) for row in rows])

    def write_sequence(self, text: str, name: str = "welcome") -> None:
        (self.project / "sequences" / f"{name}.yaml").write_text(text)

    def sent(self) -> list[Any]:
        return list(self.smtp.handler.messages)

    def outbox(self) -> list[OutboxMessage]:
        with session_scope(self.engine) as session:
            return list(session.exec(select(OutboxMessage).order_by(OutboxMessage.id)))

    def enrollments(self) -> list[Enrollment]:
        with session_scope(self.engine) as session:
            return list(session.exec(select(Enrollment).order_by(Enrollment.id)))

    def lead(self, email: str) -> Lead:
        with session_scope(self.engine) as session:
            return session.exec(select(Lead).where(Lead.email == email)).one()


@pytest.fixture
def harness(
    project: Path, db_url: str, smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Harness]:
    for path in (project / "sequences").iterdir():
        path.unlink()
    monkeypatch.setenv("NURTURE_DATABASE_URL", db_url)
    monkeypatch.setenv("NURTURE_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("NURTURE_SMTP_PORT", str(smtp_server.port))
    config = load_settings(project / "nurture.toml")
    engine = open_engine(db_url)
    h = Harness(project, config, engine, smtp_server)
    h.write_sequence(SEQUENCE)
    h.add_leads(
        {
            "email": "maria@example.com",
            "first_name": "María",
            "source": "guide",
            "timezone": "America/Los_Angeles",
            "owner": "sam@example.com",
        }
    )
    yield h
    engine.dispose()
