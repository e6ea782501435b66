"""Reply detection against a real IMAP server (dovecot on loopback): a reply stops the
sequence before its next email; an out-of-office does not; bounces and mails to the
unsubscribe address act on the lead."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import select

from nurture import clock
from nurture.config import Config, load_settings
from nurture.engine.context import Context
from nurture.mail.replies import PROCESSED
from nurture.stages.passes import tick
from nurture.store.database import open_engine, session_scope
from nurture.store.enrollments import Enrollment
from nurture.store.events import Event
from nurture.store.leads import Lead, LeadChanges, upsert_leads
from tests.conftest import Imap, SmtpServer

SEQUENCE = """\
name: nudge
audience: "lead.source == 'web'"
from: "Ana Ruiz <ana@example.com>"
exit_when: [replied, unsubscribed, bounced]
steps:
  - id: hello
    email: welcome
  - id: later
    wait: 2 days
    email: case-study
"""
START = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)


@dataclass
class Inbox:
    config: Config
    engine: Engine
    smtp: SmtpServer
    imap: Imap

    def tick(self, moment: datetime) -> None:
        with clock.pinned(moment):
            asyncio.run(tick(Context.open(self.engine, self.config), moment))

    def sent(self) -> list[EmailMessage]:
        return list(self.smtp.handler.messages)

    def answer(
        self, original: EmailMessage, body: str = "Sounds good, call me.", **headers: str
    ) -> None:
        reply = EmailMessage()
        reply["From"] = "María López <maria@example.com>"
        reply["To"] = str(original["Reply-To"] or original["From"])
        reply["Subject"] = "Re: " + str(original["Subject"])
        reply["Message-ID"] = make_msgid(domain="example.com")
        reply["In-Reply-To"] = str(original["Message-ID"])
        reply["References"] = str(original["Message-ID"])
        for name, value in headers.items():
            reply[name.replace("_", "-")] = value
        reply.set_content(body)
        self.imap.append(reply.as_bytes())

    def events(self, type: str) -> list[Event]:
        with session_scope(self.engine) as session:
            return list(session.exec(select(Event).where(Event.type == type)))

    def enrollment(self) -> Enrollment:
        with session_scope(self.engine) as session:
            return session.exec(select(Enrollment)).one()

    def lead(self) -> Lead:
        with session_scope(self.engine) as session:
            return session.exec(select(Lead).where(Lead.email == "maria@example.com")).one()


@pytest.fixture
def inbox(
    project: Path,
    db_url: str,
    smtp_server: SmtpServer,
    imap_server: Imap,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Inbox]:
    for path in (project / "sequences").iterdir():
        path.unlink()
    (project / "sequences" / "nudge.yaml").write_text(SEQUENCE)
    env = {
        "NURTURE_DATABASE_URL": db_url,
        "NURTURE_SMTP_HOST": "127.0.0.1",
        "NURTURE_SMTP_PORT": str(smtp_server.port),
        "NURTURE_REPLIES_HOST": imap_server.host,
        "NURTURE_REPLIES_PORT": str(imap_server.port),
        "NURTURE_REPLIES_TLS": "false",
        "NURTURE_REPLIES_STARTTLS": "false",
        "NURTURE_REPLIES_USERNAME": imap_server.username,
        "NURTURE_REPLIES_PASSWORD": imap_server.password,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = load_settings(project / "nurture.toml")
    engine = open_engine(db_url)
    with session_scope(engine) as session:
        upsert_leads(
            session, [LeadChanges("maria@example.com", {"first_name": "María", "source": "web"})]
        )
    yield Inbox(config, engine, smtp_server, imap_server)
    engine.dispose()


def test_a_reply_stops_the_sequence_within_one_pass(inbox: Inbox) -> None:
    inbox.tick(START)
    [hello] = inbox.sent()
    inbox.answer(hello)
    inbox.tick(START + timedelta(hours=1))
    assert inbox.enrollment().status == "exited"
    assert inbox.enrollment().reason == "replied"
    inbox.tick(START + timedelta(days=3))
    assert len(inbox.sent()) == 1  # the second email never goes
    [replied] = inbox.events("email_replied")
    assert (replied.sequence, replied.step, replied.source) == ("nudge", "hello", "imap")
    assert inbox.imap.flagged(PROCESSED) == 1


def test_a_reply_between_queueing_and_sending_cancels_the_email(inbox: Inbox) -> None:
    inbox.tick(START)
    [hello] = inbox.sent()
    inbox.smtp.stop()
    inbox.tick(START + timedelta(days=2))  # the second email is queued, the server is down
    inbox.answer(hello)
    inbox.smtp.start()
    inbox.tick(START + timedelta(days=2, minutes=5))
    assert len(inbox.sent()) == 1


def test_an_out_of_office_does_not_stop_the_sequence_it_pauses_it(inbox: Inbox) -> None:
    inbox.tick(START)
    [hello] = inbox.sent()
    inbox.answer(hello, body="I am away until Monday.", Auto_Submitted="auto-replied")
    inbox.tick(START + timedelta(hours=1))
    inbox.tick(START + timedelta(days=2))
    assert len(inbox.sent()) == 1  # paused: a week, as no day is named
    assert inbox.events("email_replied") == []
    [auto] = inbox.events("out_of_office")
    assert "Auto-Submitted" in auto.data["reason"]
    inbox.tick(datetime(2026, 12, 1, 6, 0, tzinfo=UTC))  # the business day after
    assert len(inbox.sent()) == 2


def test_a_bounce_report_bounces_the_lead(inbox: Inbox) -> None:
    inbox.tick(START)
    [hello] = inbox.sent()
    report = EmailMessage()
    report["From"] = "Mail Delivery System <MAILER-DAEMON@mx.example.com>"
    report["To"] = "ana@example.com"
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report["Message-ID"] = make_msgid(domain="mx.example.com")
    report.set_content("Your message could not be delivered.")
    status = EmailMessage()
    status.set_content(
        "Reporting-MTA: dns; mx.example.com\n\nFinal-Recipient: rfc822; maria@example.com\n"
        "Action: failed\nStatus: 5.1.1\n"
    )
    report.make_mixed()
    report.attach(status)
    original = EmailMessage()
    original["Message-ID"] = str(hello["Message-ID"])
    original["Subject"] = str(hello["Subject"])
    report.add_attachment(original)
    raw = report.as_bytes().replace(
        b"multipart/mixed", b"multipart/report; report-type=delivery-status", 1
    )
    raw = raw.replace(
        b'Content-Type: text/plain; charset="utf-8"\nContent-Transfer-Encoding: '
        b"7bit\n\nReporting-MTA",
        b"Content-Type: message/delivery-status\n\nReporting-MTA",
        1,
    )
    inbox.imap.append(raw)
    inbox.tick(START + timedelta(hours=1))
    assert inbox.lead().status == "bounced"
    assert inbox.enrollment().reason == "lead is bounced"


def test_mail_to_the_unsubscribe_address_unsubscribes(inbox: Inbox) -> None:
    inbox.tick(START)
    [hello] = inbox.sent()
    mailto = str(hello["List-Unsubscribe"]).split(",")[1].strip().strip("<>")
    address, _, query = mailto.removeprefix("mailto:").partition("?subject=")
    request = EmailMessage()
    request["From"] = "someone-else@example.org"  # forwarded: the signed subject decides
    request["To"] = address
    request["Subject"] = query
    request["Message-ID"] = make_msgid(domain="example.org")
    request.set_content("unsubscribe")
    inbox.imap.append(request.as_bytes())
    inbox.tick(START + timedelta(hours=1))
    assert inbox.lead().status == "unsubscribed"
    # Read again after a crash before flagging: still one event.
    assert len(inbox.events("unsubscribed")) == 1
