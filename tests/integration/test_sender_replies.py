"""A sender's own reply mailbox, against a real IMAP server (dovecot on loopback, two
users: ``replies`` for the project's ``[replies]``, ``sam`` for Sam's own): a reply that
lands in Sam's mailbox stops the lead's sequence, the project's mailbox is read in the
same poll, and a sender mailbox that cannot be read is named while the others are read."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import select

from nurture import clock, logs
from nurture.config import Config, Settings, load_settings
from nurture.engine.context import Context
from nurture.errors import ConfigError
from nurture.mail.replies import PROCESSED
from nurture.stages.passes import poll_replies, reply_mailboxes, tick
from nurture.store.database import open_engine, session_scope
from nurture.store.enrollments import Enrollment
from nurture.store.events import Event
from nurture.store.leads import Lead, LeadChanges, upsert_leads
from tests.acceptance.conftest import worker
from tests.conftest import Imap, SmtpServer

SEQUENCE = """\
name: welcome
audience: "lead.source == 'guide'"
from: owner
fallback_from: "Team <team@example.com>"
exit_when: [replied]
steps:
  - id: hello
    email: welcome
  - id: later
    wait: 2 days
    email: case-study
"""
#: Sam's entry: its mailbox is on the ``[replies]`` server (host, port, TLS left out),
#: under its own login.
SAM = """
[[senders]]
name = "sam"
address = "Sam Patel <sam@example.com>"
replies = {{ username = "sam", password = "{password}" }}
"""
T0 = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)


class Records(logging.Handler):
    """What nurture logged, as records (its logger may not propagate to pytest's)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Desk:
    project: Path
    engine: Engine
    smtp: SmtpServer
    #: The project's ``[replies]`` mailbox.
    shared: Imap
    #: Sam's own.
    sam: Imap

    def configure(self, sam_password: str = "s4m") -> Config:
        toml = self.project / "nurture.toml"
        toml.write_text(toml.read_text() + SAM.format(password=sam_password))
        return load_settings(toml)

    def tick(self, config: Config, moment: datetime) -> None:
        with clock.pinned(moment):
            asyncio.run(tick(Context.open(self.engine, config), moment))

    def email_to(self, address: str) -> EmailMessage:
        [message] = [m for m in self.smtp.handler.messages if m["To"] == address]
        return message

    def answer(self, original: EmailMessage, mailbox: Imap) -> None:
        """The lead answers *original*; the answer arrives in *mailbox*."""
        reply = EmailMessage()
        reply["From"] = str(original["To"])
        reply["To"] = str(original["Reply-To"] or original["From"])
        reply["Subject"] = "Re: " + str(original["Subject"])
        reply["Message-ID"] = make_msgid(domain="example.net")
        reply["In-Reply-To"] = str(original["Message-ID"])
        reply["References"] = str(original["Message-ID"])
        reply.set_content("Sounds good, call me.")
        mailbox.append(reply.as_bytes())

    def enrollment(self, email: str) -> Enrollment:
        with session_scope(self.engine) as session:
            lead = session.exec(select(Lead).where(Lead.email == email)).one()
            return session.exec(select(Enrollment).where(Enrollment.lead_id == lead.id)).one()


@pytest.fixture
def desk(
    project: Path,
    db_url: str,
    smtp_server: SmtpServer,
    imap_server: Imap,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Desk]:
    for path in (project / "sequences").iterdir():
        path.unlink()
    (project / "sequences" / "welcome.yaml").write_text(SEQUENCE)
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
    engine = open_engine(db_url)
    with session_scope(engine) as session:
        upsert_leads(session, [
            LeadChanges("maria@example.net", {"source": "guide", "owner": "sam@example.com"}),
            LeadChanges("noah@example.net", {"source": "guide"}),  # no owner: the team's
        ])  # fmt: skip
    yield Desk(project, engine, smtp_server, imap_server, imap_server.user("sam", "s4m"))
    engine.dispose()


def test_a_reply_in_the_sender_s_own_mailbox_stops_the_lead_s_sequence(desk: Desk) -> None:
    config = desk.configure()
    desk.tick(config, T0)
    to_maria = desk.email_to("maria@example.net")
    assert to_maria["From"] == "Sam Patel <sam@example.com>"
    # Given Maria's answer to Sam's email, in Sam's own mailbox (not the project's)
    desk.answer(to_maria, desk.sam)
    # When one tick reads the mailboxes first
    desk.tick(config, T0 + timedelta(hours=1))
    # Then her sequence stops, and the message is marked processed in Sam's mailbox
    enrollment = desk.enrollment("maria@example.net")
    assert (enrollment.status, enrollment.reason) == ("exited", "replied")
    assert desk.sam.flagged(PROCESSED) == 1
    assert desk.shared.flagged(PROCESSED) == 0
    assert desk.enrollment("noah@example.net").status == "active"
    desk.tick(config, T0 + timedelta(days=3))
    assert [m["To"] for m in desk.smtp.handler.messages].count("maria@example.net") == 1


def test_the_project_s_mailbox_is_read_in_the_same_poll(desk: Desk) -> None:
    config = desk.configure()
    desk.tick(config, T0)
    desk.answer(desk.email_to("maria@example.net"), desk.sam)
    desk.answer(desk.email_to("noah@example.net"), desk.shared)
    with clock.pinned(T0 + timedelta(minutes=30)):
        report = poll_replies(Context.open(desk.engine, config))
    assert report is not None and report.replies == 2
    assert (desk.sam.flagged(PROCESSED), desk.shared.flagged(PROCESSED)) == (1, 1)
    desk.tick(config, T0 + timedelta(hours=1))
    for lead in ("maria@example.net", "noah@example.net"):
        enrollment = desk.enrollment(lead)
        assert (enrollment.status, enrollment.reason) == ("exited", "replied"), lead


def test_an_unreadable_sender_mailbox_is_named_and_the_others_are_read(desk: Desk) -> None:
    config = desk.configure(sam_password="wrong")
    desk.tick(config, T0)
    desk.answer(desk.email_to("maria@example.net"), desk.sam)
    desk.answer(desk.email_to("noah@example.net"), desk.shared)
    records = Records()
    logs.logger.addHandler(records)
    try:
        desk.tick(config, T0 + timedelta(hours=1))
    finally:
        logs.logger.removeHandler(records)
    [failed] = [r for r in records.records if r.getMessage() == "reply mailbox unreadable"]
    assert failed.levelno == logging.ERROR
    assert vars(failed)["mailbox"] == "[[senders]] sam replies"
    assert "wrong" not in vars(failed)["error"]
    assert desk.enrollment("noah@example.net").reason == "replied"
    assert desk.enrollment("maria@example.net").status == "active"  # left for later
    assert desk.sam.flagged(PROCESSED) == 0


SAM_ALONE = """
[[senders]]
name = "sam"
address = "Sam Patel <sam@example.com>"
[senders.replies]
host = "{host}"
port = {port}
tls = false
starttls = false
username = "sam"
password = "s4m"
interval = 0.5
"""


def test_the_daemon_reads_a_sender_s_mailbox_without_a_replies_section(
    desk: Desk, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given no [replies] mailbox at all, and Sam's own, written out in full
    for name in list(os.environ):
        if name.startswith("NURTURE_REPLIES_"):
            monkeypatch.delenv(name)
    toml = desk.project / "nurture.toml"
    toml.write_text(toml.read_text() + SAM_ALONE.format(host=desk.sam.host, port=desk.sam.port))
    (desk.project / "sequences" / "welcome.yaml").write_text(
        SEQUENCE.split("  - id: later")[0]  # one email: nothing else is ever due
    )
    config = load_settings(toml)
    assert config.settings.replies.host == ""
    desk.tick(config, T0)
    desk.answer(desk.email_to("maria@example.net"), desk.sam)
    # When `nurture run` runs
    env = {"NURTURE_DATABASE_URL": db_url, "NURTURE_SMTP_HOST": "127.0.0.1",
           "NURTURE_SMTP_PORT": str(desk.smtp.port)}  # fmt: skip
    daemon = worker(desk.project, env, log=desk.project / "run.log")
    try:
        # Then it reads Sam's mailbox: the reply is recorded and marked processed there
        deadline = time.monotonic() + 60
        while desk.sam.flagged(PROCESSED) == 0:
            assert daemon.poll() is None, (desk.project / "run.log").read_text()
            assert time.monotonic() < deadline, (desk.project / "run.log").read_text()
            time.sleep(0.2)
    finally:
        daemon.terminate()
        daemon.wait(30)
    with session_scope(desk.engine) as session:
        [replied] = session.exec(select(Event).where(Event.type == "email_replied")).all()
    assert (replied.sequence, replied.step, replied.source) == ("welcome", "hello", "imap")


def test_each_mailbox_is_read_once_by_its_name() -> None:
    shared = {"host": "imap.example.com", "port": 993, "username": "replies", "password": "p"}
    settings = Settings(
        replies=shared,
        senders=[
            # Sam's own login on the same server, read every 20 seconds
            {"name": "sam", "address": "sam@example.com",
             "replies": {"username": "sam", "password": "q", "interval": 20}},
            {"name": "lee", "address": "lee@example.com"},  # no table: [replies]
            # the project's mailbox again, written out in full (another case)
            {"name": "kim", "address": "kim@example.com",
             "replies": {**shared, "host": "IMAP.example.com"}},
            # a mailbox of its own on another server
            {"name": "ivy", "address": "ivy@example.com",
             "replies": {"host": "mail.example.org", "username": "ivy", "password": "r"}},
        ],
    )  # fmt: skip
    found = reply_mailboxes(settings)
    assert [label for label, _ in found] == [
        "[replies]", "[[senders]] sam replies", "[[senders]] ivy replies"]  # fmt: skip
    _, sam = found[1]
    assert (sam.host, sam.port, sam.username, sam.interval) == (
        "imap.example.com", 993, "sam", 20)  # fmt: skip
    _, ivy = found[2]
    assert (ivy.host, ivy.port, ivy.tls, ivy.mailbox) == ("mail.example.org", 993, True, "INBOX")
    # Without [replies], only the senders that name a host have a mailbox.
    alone = Settings(senders=settings.senders)
    assert [label for label, _ in reply_mailboxes(alone)] == [
        "[[senders]] kim replies", "[[senders]] ivy replies"]  # fmt: skip
    assert reply_mailboxes(Settings()) == []


@pytest.mark.parametrize(
    ("table", "line"),
    [
        ("{ port = 0 }", "[[senders]] entry 1: replies port: Input should be greater"),
        ("{ interval = 0 }", "[[senders]] entry 1: replies interval: Input should be greater"),
        ("{ hots = 'x' }", "[[senders]] entry 1: replies hots: unknown setting"),
        ("{ password = 98765432123 }", "[[senders]] entry 1: replies password: Input should"),
        ("'imap.example.com'", "[[senders]] entry 1: replies: Input should be"),
    ],
)
def test_a_bad_replies_table_is_one_line_naming_the_key(
    tmp_path: Path, table: str, line: str
) -> None:
    path = tmp_path / "nurture.toml"
    path.write_text(f'[[senders]]\nname = "sam"\naddress = "sam@example.com"\nreplies = {table}\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert str(caught.value).startswith(f"{path}: {line}")
    assert "\n" not in str(caught.value) and "98765432123" not in str(caught.value)


def test_a_sender_s_reply_password_is_a_secret(tmp_path: Path) -> None:
    path = tmp_path / "nurture.toml"
    path.write_text('[[senders]]\nname = "sam"\naddress = "sam@example.com"\n'
                    'replies = { username = "sam", password = "s4m" }\n')  # fmt: skip
    os.chmod(path, 0o644)
    [warning] = load_settings(path).warnings
    assert "[[senders]] replies password" in warning
    os.chmod(path, 0o600)
    assert load_settings(path).warnings == []
