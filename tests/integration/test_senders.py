"""Senders with real parts: one aiosmtpd server with SMTP AUTH per sender, the default
server beside them, and ticks of the engine at pinned moments. ``from: owner`` mail
leaves through the owner's server with the owner's From; each cap and the warm-up
defer with their reasons; a bounce burst pauses a sender until it is resumed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from freezegun import freeze_time
from sqlalchemy import Engine
from sqlmodel import select
from typer.testing import CliRunner

from nurture import clock, hooks
from nurture.cli import app
from nurture.config import Config, load_settings
from nurture.engine.catalog import load_catalog
from nurture.engine.context import Context
from nurture.mail.compose import Sender
from nurture.mail.delivery import deliver
from nurture.mail.pacing import DeliveryReport, SendingPause
from nurture.mail.transports import open_transport
from nurture.stages.passes import run_pass, tick
from nurture.stages.report import PassReport
from nurture.store.database import open_engine, session_scope
from nurture.store.events import record_event
from nurture.store.leads import Lead, LeadChanges, upsert_leads
from nurture.store.outbox import OutboxMessage
from tests.conftest import SmtpHandler, SmtpServer, free_port
from tests.integration.test_send_promises import Beside

#: A Tuesday morning, in UTC (the sequences send at any hour).
T0 = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)
#: The loopback test servers ask for a login without TLS (aiosmtpd warns of it).
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
OWNER_SEQUENCE = """\
name: welcome
audience: "lead.source == 'guide'"
from: owner
fallback_from: "Team <team@example.com>"
steps:
  - id: welcome
    email: welcome
"""


class AuthHandler(SmtpHandler):
    """A server that wants one login, and records who logged in for each message."""

    def __init__(self, login: str, password: str) -> None:
        super().__init__()
        self.login, self.password = login.encode(), password.encode()
        self.logins: list[str] = []

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str,
                     data: Any) -> AuthResult:  # fmt: skip
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            self.login, self.password)  # fmt: skip
        if ok:
            self.logins.append(data.login.decode())
        return AuthResult(success=ok, handled=False)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes = [*getattr(self, "envelopes", []), envelope.mail_from]
        assert session.authenticated, "a message without a login"
        return await super().handle_DATA(server, session, envelope)


def _auth_server(login: str, password: str) -> tuple[AuthHandler, Controller, int]:
    handler = AuthHandler(login, password)
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, auth_required=True,
                            auth_require_tls=False, authenticator=handler.authenticate)  # fmt: skip
    controller.start()
    return handler, controller, port


@dataclass
class Office:
    project: Path
    engine: Engine
    default: SmtpServer
    sam: AuthHandler
    lee: AuthHandler
    sam_port: int
    lee_port: int
    db_url: str

    def configure(self, senders: str, sequence: str = OWNER_SEQUENCE, limits: str = "") -> Config:
        toml = self.project / "nurture.toml"
        text = toml.read_text()
        if limits:
            text = text.replace("[limits]\n", f"[limits]\n{limits}\n")
        ports = senders.replace("SAM_PORT", str(self.sam_port))
        toml.write_text(text + "\n" + ports.replace("LEE_PORT", str(self.lee_port)))
        (self.project / "sequences" / "welcome.yaml").write_text(sequence)
        return load_settings(toml)

    def tick(self, config: Config, moment: datetime) -> tuple[PassReport, DeliveryReport]:
        with freeze_time(moment, real_asyncio=True):
            ctx = Context.open(self.engine, config)
            _, report, delivered = asyncio.run(tick(ctx, clock.now()))
        return report, delivered

    def add_leads(self, *rows: dict[str, Any], at: datetime = T0 - timedelta(hours=1)) -> None:
        with freeze_time(at), session_scope(self.engine) as session:
            upsert_leads(session, [LeadChanges(r["email"], {"source": "guide", **r}) for r in rows])

    def outbox(self) -> list[OutboxMessage]:
        with session_scope(self.engine) as session:
            return list(session.exec(select(OutboxMessage).order_by(OutboxMessage.id)))

    def emails(self) -> list[OutboxMessage]:
        return [m for m in self.outbox() if m.kind == "email"]


@pytest.fixture
def office(
    project: Path, db_url: str, smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Office]:
    for path in (project / "sequences").iterdir():
        path.unlink()
    monkeypatch.setenv("NURTURE_DATABASE_URL", db_url)
    monkeypatch.setenv("NURTURE_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("NURTURE_SMTP_PORT", str(smtp_server.port))
    # One message at a time: the order of sends (and of the bounces) is the claim's.
    monkeypatch.setenv("NURTURE_SMTP_MAX_CONNECTIONS", "1")
    sam, sam_controller, sam_port = _auth_server("sam@example.com", "sam-secret")
    lee, lee_controller, lee_port = _auth_server("lee", "lee-secret")
    engine = open_engine(db_url)
    yield Office(project, engine, smtp_server, sam, lee, sam_port, lee_port, db_url)
    engine.dispose()
    sam_controller.stop()
    lee_controller.stop()


def senders(sam: str = "", lee: str = "") -> str:
    """Two ``[[senders]]`` entries, each with its own server, and their pacing."""
    return f"""
[[senders]]
name = "sam"
address = "Sam Patel <sam@example.com>"
{sam}
[senders.smtp]
host = "127.0.0.1"
port = SAM_PORT
username = "sam@example.com"
password = "sam-secret"

[[senders]]
name = "lee"
address = "Lee Chen <lee@example.com>"
smtp = {{ host = "127.0.0.1", port = LEE_PORT, username = "lee", password = "lee-secret" }}
{lee}
"""


SENDERS = senders()


def test_from_owner_mail_leaves_through_the_owners_server_with_the_owners_from(
    office: Office,
) -> None:
    config = office.configure(SENDERS)
    office.add_leads({"email": "maria@example.net", "owner": "sam@example.com"},
                     {"email": "kim@example.net", "owner": "lee@example.com"},
                     {"email": "noah@example.net"},  # no owner: the fallback
                     # an owner without a sender: the fallback too
                     {"email": "ivy@example.net", "owner": "ana@example.com"})  # fmt: skip
    _, delivered = office.tick(config, T0)
    assert delivered.sent == 4
    [to_sam] = office.sam.messages
    assert to_sam["To"] == "maria@example.net" and to_sam["From"] == "Sam Patel <sam@example.com>"
    assert office.sam.envelopes == ["sam@example.com"]
    assert office.sam.logins == ["sam@example.com"]
    [to_lee] = office.lee.messages
    assert to_lee["To"] == "kim@example.net" and to_lee["From"] == "Lee Chen <lee@example.com>"
    assert office.lee.logins == ["lee"]
    fallback = sorted((m["To"], m["From"]) for m in office.default.handler.messages)
    assert fallback == [("ivy@example.net", "Team <team@example.com>"),
                        ("noah@example.net", "Team <team@example.com>")]  # fmt: skip
    # Gmail's feedback loop names the step, the sequence and the sender.
    assert to_sam["Feedback-ID"] == "welcome:welcome:sam:nurture"
    assert office.default.handler.messages[0]["Feedback-ID"] == (
        "welcome:welcome:team@example.com:nurture"
    )


ROTATION = """\
name: welcome
audience: "lead.source == 'guide'"
senders: [sam, lee]
steps:
  - id: welcome
    email: welcome
  - id: again
    wait: 1 day
    email: case-study
"""


def test_a_rotation_takes_the_sender_with_most_room_and_keeps_it_for_the_lead(
    office: Office,
) -> None:
    config = office.configure(senders("daily = 4", "daily = 3"), ROTATION)
    office.add_leads(*({"email": f"lead{i}@example.net"} for i in range(6)))
    office.tick(config, T0)
    first = {m.recipient: m.sender for m in office.emails()}
    # sam has room for 4, lee for 3: sam, then sam (a tie goes to the first named),
    # lee, sam, lee, sam: each pick goes where the most room is left.
    senders_used = sorted(first.values())
    assert senders_used == ["lee@example.com"] * 2 + ["sam@example.com"] * 4
    assert len(office.sam.messages) == 4 and len(office.lee.messages) == 2
    office.tick(config, T0 + timedelta(days=1, hours=1))
    second = {m.recipient: m.sender for m in office.emails() if m.step == "again"}
    assert second == first  # each lead keeps its sender: replies thread


def _deferred(office: Office) -> list[str]:
    return [m.last_error or "" for m in office.emails() if m.status == "queued"]


@pytest.mark.parametrize(
    ("pacing", "later", "reason"),
    [
        # The times are the project's (America/New_York: T0 is 04:00 there).
        ("hourly = 2", timedelta(minutes=61), "sender sam: hourly cap 2 reached, next at 05:00"),
        (
            "daily = 2",
            timedelta(hours=24, minutes=1),
            "sender sam: daily cap 2 reached, next at 04:00",
        ),
        (
            'min_gap = "10 minutes"',
            timedelta(minutes=16),
            "sender sam: min_gap 600 seconds, next at 04:",
        ),
        (
            "warmup = { start = 2, increase = 1 }\ndaily = 50",
            timedelta(days=1, minutes=1),
            "sender sam: warming up: 2 of 2 today, next at 04:00",
        ),
    ],
)
def test_each_cap_defers_with_its_reason(
    office: Office, pacing: str, later: timedelta, reason: str
) -> None:
    config = office.configure(senders(pacing))
    office.add_leads(*({"email": f"lead{i}@example.net", "owner": "sam@example.com"}
                       for i in range(3)))  # fmt: skip
    office.tick(config, T0)
    sent_first = len(office.sam.messages)
    assert sent_first == (1 if "min_gap" in pacing else 2)
    waiting = sorted(_deferred(office))
    assert waiting and all(w.startswith(reason) for w in waiting), waiting
    if "min_gap" in pacing:  # each waits a gap after the one before it
        assert [w[-5:] for w in waiting] == ["04:10", "04:20"], waiting
    # Deferred, never dropped: shown by `nurture outbox list`, and sent when there is room.
    listed = CliRunner().invoke(app, ["--config", str(office.project / "nurture.toml"),
                                      "outbox", "list", "--json"])  # fmt: skip
    assert reason in listed.output
    office.tick(config, T0 + timedelta(minutes=1))
    assert len(office.sam.messages) == sent_first  # the cap still holds a minute on
    office.tick(config, T0 + later)
    assert len(office.sam.messages) > sent_first


def test_a_bounce_burst_pauses_the_sender_until_it_is_resumed(office: Office) -> None:
    config = office.configure(SENDERS, limits='max_bounce_rate = "5%"')
    bouncing = [f"gone{i}@example.net" for i in range(6)]
    for address in bouncing:
        office.sam.rcpt_replies[address] = "550 5.1.1 no such user"
    office.add_leads(*({"email": a, "owner": "sam@example.com"} for a in bouncing),
                     {"email": "good@example.net", "owner": "sam@example.com"},
                     {"email": "kim@example.net", "owner": "lee@example.com"})  # fmt: skip
    office.tick(config, T0)
    by_recipient = {m.recipient: m for m in office.emails()}
    assert [by_recipient[a].status for a in bouncing] == ["bounced"] * 6
    held = by_recipient["good@example.net"]
    assert held.status == "held"
    assert held.last_error == "held: sender sam paused: 6 hard bounces in the last 6"
    assert office.sam.messages == []
    assert [m["To"] for m in office.lee.messages] == ["kim@example.net"]  # lee goes on
    # The next run tells the operator and the sender's owner, once.
    office.tick(config, T0 + timedelta(minutes=5))
    office.tick(config, T0 + timedelta(minutes=10))
    notices = [m for m in office.outbox() if m.sequence == "senders"]
    assert sorted(m.recipient for m in notices) == sorted(
        {config.settings.sales.notify_email or "sam@example.com", "sam@example.com"}
    )
    assert "held: sender sam paused" in _status(office)
    listed = _cli(office, "senders", "list", "--json")
    assert '"pause_reason": "6 hard bounces in the last 6"' in listed
    assert office.sam.messages == []  # held: never sent while paused
    # Resumed: the held email goes, and the old bounces no longer count.
    with freeze_time(T0 + timedelta(minutes=20)):
        assert "sender sam resumed: 1 held emails released" in _cli(
            office, "senders", "resume", "sam"
        )
    office.tick(config, T0 + timedelta(minutes=21))
    assert [m["To"] for m in office.sam.messages] == ["good@example.net"]


def deliver_now(ctx: Context, catalog: Any) -> DeliveryReport:
    """One delivery run of *ctx*'s worker, through every sender's own server."""

    async def run() -> DeliveryReport:
        settings = ctx.config.settings
        transport = open_transport(settings.smtp, ctx.config.outbox_dir, settings.senders)
        try:
            return await deliver(ctx, catalog, transport)
        finally:
            await transport.close()

    return asyncio.run(run())


def _cli(office: Office, *args: str) -> str:
    result = CliRunner().invoke(app, ["--config", str(office.project / "nurture.toml"), *args])
    assert result.exit_code == 0, result.output
    return result.output


def _status(office: Office) -> str:
    with freeze_time(T0 + timedelta(minutes=11)):
        return _cli(office, "status")


def test_two_workers_never_pass_a_sender_s_cap_between_them(
    office: Office, monkeypatch: pytest.MonkeyPatch
) -> None:
    if office.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: two starts cannot overlap there")
    monkeypatch.setenv("NURTURE_DAEMON_BATCH_SIZE", "1")
    config = office.configure(senders("daily = 2"))
    office.add_leads({"email": "ivy@example.net", "owner": "sam@example.com"})
    office.tick(config, T0 - timedelta(minutes=30))  # sam has sent one: one more today
    assert len(office.sam.messages) == 1
    office.add_leads({"email": "maria@example.net", "owner": "sam@example.com"},
                     {"email": "kim@example.net", "owner": "sam@example.com"},
                     at=T0 - timedelta(minutes=10))  # fmt: skip
    with freeze_time(T0, real_asyncio=True):
        first = Context.open(office.engine, config)
        catalog = load_catalog(office.engine, config.sequences_dir, first.templates, T0)
        run_pass(first, catalog, T0)
        second = Context.open(office.engine, config)
        # Given worker one has counted its send against sam's daily cap and not
        # committed, when worker two starts the other email of sam's at that moment
        beside = Beside(office.engine, lambda: deliver_now(second, catalog))
        with hooks.at("start.after_caps", beside):
            deliver_now(first, catalog)
        beside.join()
    # Then one more email left through sam's server, and the other waits with the reason
    assert len(office.sam.messages) == 2
    [waiting] = [m for m in office.emails() if m.status == "queued"]
    assert (waiting.last_error or "").startswith("sender sam: daily cap 2 reached")


def test_complaints_or_a_policy_refusal_pause_a_sender(office: Office) -> None:
    config = office.configure(SENDERS)
    office.add_leads(*({"email": f"lead{i}@example.net", "owner": "sam@example.com"}
                       for i in range(4)),
                     {"email": "kim@example.net", "owner": "lee@example.com"},
                     {"email": "ivy@example.net", "owner": "lee@example.com"})  # fmt: skip
    # Given lee's server refuses to send for lee by policy (5.7.x)
    office.lee.mail_reply = "550 5.7.1 Sender blocked by policy"
    office.tick(config, T0)
    assert len(office.sam.messages) == 4
    # Then lee is paused with the reason, and its other email waits for the resume
    listed = _cli(office, "senders", "list", "--json")
    assert "its server refused to send for it: 550 5.7.1 Sender blocked by policy" in listed
    # Given three of sam's leads complain within a day (feedback-loop reports)
    with session_scope(office.engine) as session:
        for i in range(3):
            lead = session.exec(select(Lead).where(Lead.email == f"lead{i}@example.net")).one()
            assert lead.id is not None
            record_event(session, lead.id, "complained", sequence="welcome",
                         step="welcome", at=T0 + timedelta(hours=1), source="imap",
                         source_id=f"arf{i}")  # fmt: skip
    # When the next delivery run looks at the senders' health, then sam is paused
    office.tick(config, T0 + timedelta(hours=2))
    listed = _cli(office, "senders", "list", "--json")
    assert '"pause_reason": "3 complaints in 24 hours"' in listed
    # ... and lee's other email is held, never sent while lee is paused
    [ivy] = [m for m in office.emails() if m.recipient == "ivy@example.net"]
    assert ivy.status == "held" and (ivy.last_error or "").startswith("held: sender lee paused")
    assert office.lee.messages == []


def test_one_sender_s_server_in_trouble_stops_only_that_sender(office: Office) -> None:
    # Given lee's emails first in line, and lee's server refusing lee's login
    config = office.configure(SENDERS.replace('password = "lee-secret"', 'password = "wrong"'))
    office.add_leads({"email": "kim@example.net", "owner": "lee@example.com"},
                     {"email": "ivy@example.net", "owner": "lee@example.com"},
                     at=T0 - timedelta(hours=2))  # fmt: skip
    office.add_leads(*({"email": f"lead{i}@example.net", "owner": "sam@example.com"}
                       for i in range(4)))  # fmt: skip
    # When one delivery run goes
    _, delivered = office.tick(config, T0)
    # Then sam's four emails leave through sam's server all the same; lee's wait
    assert len(office.sam.messages) == 4 and office.lee.messages == []
    assert delivered.sent == 4
    waiting = {m.recipient: m.status for m in office.emails() if m.status != "sent"}
    assert set(waiting) == {"kim@example.net", "ivy@example.net"}
    assert set(waiting.values()) <= {"queued", "retrying"}


def test_a_sender_whose_server_refuses_to_send_is_paused_alone(office: Office) -> None:
    # Given lee's emails first in line, and lee's server refusing lee as a sender (no
    # enhanced code: a sending problem, not a health pause)
    config = office.configure(SENDERS)
    office.lee.mail_reply = "553 Sender address rejected"
    office.add_leads({"email": "kim@example.net", "owner": "lee@example.com"},
                     {"email": "ivy@example.net", "owner": "lee@example.com"},
                     at=T0 - timedelta(hours=2))  # fmt: skip
    office.add_leads(*({"email": f"lead{i}@example.net", "owner": "sam@example.com"}
                       for i in range(2)))  # fmt: skip
    with freeze_time(T0, real_asyncio=True):
        ctx = Context.open(office.engine, config)
        catalog = load_catalog(office.engine, config.sequences_dir, ctx.templates, T0)
        run_pass(ctx, catalog, T0)
        pause = SendingPause()
        first = asyncio.run(_deliver(ctx, catalog, pause))
    # Then sam's emails went; one of lee's failed with the reply, and lee's server waits
    assert len(office.sam.messages) == 2 and first.refused == 1
    assert pause.held(T0) == {"lee@example.com"} and not pause.holds(T0)
    # When sam has another lead and the next run comes 20 seconds later (the pause is
    # [delivery] retry_after, 60 seconds, less some jitter)
    office.add_leads({"email": "new@example.net", "owner": "sam@example.com"}, at=T0)
    later = T0 + timedelta(seconds=20)
    with freeze_time(later, real_asyncio=True):
        run_pass(ctx, catalog, later)
        asyncio.run(_deliver(ctx, catalog, pause))
    # Then sam's goes, and lee's server is not tried again while it is paused
    assert len(office.sam.messages) == 3
    tried = [m for m in office.emails() if m.recipient in {"kim@example.net", "ivy@example.net"}]
    assert sorted(m.status for m in tried) == ["failed", "queued"]


async def _deliver(ctx: Context, catalog: Any, pause: SendingPause) -> DeliveryReport:
    transport = open_transport(ctx.config.settings.smtp, ctx.config.outbox_dir,
                               ctx.config.settings.senders)  # fmt: skip
    try:
        return await deliver(ctx, catalog, transport, pause=pause)
    finally:
        await transport.close()


@pytest.mark.parametrize("address", ["sam@xn--bcher-kva.de", "sam@Bu\u0308cher.de"])
def test_an_idn_sender_address_is_one_sender_whatever_its_form(
    office: Office, address: str
) -> None:
    # Given sam's address written with its domain's ASCII form, or in NFD Unicode
    config = office.configure(f"""
[[senders]]
name = "sam"
address = "Sam Patel <{address}>"
daily = 2
smtp = {{ host = "127.0.0.1", port = SAM_PORT, username = "sam@example.com", password = "sam-secret" }}
""")  # noqa: E501
    office.sam.rcpt_replies["lead0@example.net"] = "550 5.1.1 no such user"
    office.add_leads(*({"email": f"lead{i}@example.net", "owner": "sam@bücher.de"}
                       for i in range(3)))  # fmt: skip
    office.tick(config, T0)
    # Then its emails leave through its own server, paced by its daily cap
    assert office.default.handler.messages == []
    assert [m["To"] for m in office.sam.messages] == ["lead1@example.net"]
    assert office.sam.envelopes == ["sam@xn--bcher-kva.de"]
    assert sorted(_deferred(office)) == ["sender sam: daily cap 2 reached, next at 04:00"]
    assert {m.sender for m in office.emails()} == {"sam@bücher.de"}
    # ... and its bounce counts in its health
    listed = _cli(office, "senders", "list", "--json")
    assert '"hard_bounces": 1' in listed and '"of_sends": 2' in listed


def test_the_backlog_a_resume_releases_counts_in_the_sender_s_health(office: Office) -> None:
    config = office.configure(SENDERS, limits='max_bounce_rate = "5%"')
    bouncing = [f"gone{i}@example.net" for i in range(6)]
    later = [f"gone-later{i}@example.net" for i in range(12)]
    for address in bouncing + later:
        office.sam.rcpt_replies[address] = "550 5.1.1 no such user"
    office.add_leads(*({"email": a, "owner": "sam@example.com"} for a in bouncing))
    office.tick(config, T0)
    # Given sam paused by a bounce burst, and 12 more of its emails held meanwhile
    office.add_leads(*({"email": a, "owner": "sam@example.com"} for a in later),
                     at=T0 + timedelta(minutes=1))  # fmt: skip
    office.tick(config, T0 + timedelta(minutes=2))
    assert sum(m.status == "held" for m in office.emails()) == 12
    # When it is resumed and the released backlog bounces
    with freeze_time(T0 + timedelta(minutes=20)):
        _cli(office, "senders", "resume", "sam")
    office.tick(config, T0 + timedelta(minutes=21))
    office.tick(config, T0 + timedelta(minutes=22))
    # Then the old bounces stayed behind, the new ones count: paused again after 6 (a
    # send already started as the sixth bounced may go too), the rest held
    statuses = [m.status for m in office.emails() if m.recipient in later]
    bounced, held = statuses.count("bounced"), statuses.count("held")
    assert bounced in (6, 7) and bounced + held == 12, statuses
    listed = _cli(office, "senders", "list", "--json")
    assert '"pause_reason": "6 hard bounces in the last 6"' in listed


ONE_STEP_ROTATION = """\
name: welcome
audience: "lead.source == 'guide'"
senders: [sam, lee]
steps:
  - id: welcome
    email: welcome
"""


def test_a_rotation_gives_no_new_lead_to_a_paused_sender(office: Office) -> None:
    from nurture.store.sender_health import pause

    HOUR = timedelta(hours=1)
    config = office.configure(senders("daily = 100", "daily = 3"), ONE_STEP_ROTATION)
    # Given sam, with the most room, paused
    with session_scope(office.engine) as session:
        pause(session.connection(), "sam", "7 hard bounces in the last 100", T0 - HOUR)
    office.add_leads(*({"email": f"new{i}@example.net"} for i in range(4)))
    office.tick(config, T0)
    # Then every new lead goes to lee (its room runs out: the fourth waits), none is held
    emails = office.emails()
    assert {m.sender for m in emails} == {"lee@example.com"}
    assert sorted(m.status for m in emails) == ["queued", "sent", "sent", "sent"]
    assert len(office.lee.messages) == 3 and office.sam.messages == []


def test_a_resume_that_crosses_a_claim_strands_no_email(office: Office) -> None:
    from nurture.store.sender_health import pause, resume

    config = office.configure(SENDERS)
    with session_scope(office.engine) as session:
        pause(session.connection(), "sam", "6 hard bounces in the last 6", T0 - timedelta(hours=1))
    office.add_leads({"email": "good@example.net", "owner": "sam@example.com"})

    def resume_now() -> None:
        with session_scope(office.engine) as session:
            resume(session, "sam", "sam@example.com", T0)

    # Given the claim has read sam paused, when sam is resumed before it holds the email
    beside = Beside(office.engine, resume_now)
    with hooks.at("claim.after_read", beside):
        office.tick(config, T0)
    beside.join()
    # Then the email is not left held: the next run sends it
    office.tick(config, T0 + timedelta(minutes=5))
    assert [(m.recipient, m.status) for m in office.emails()] == [("good@example.net", "sent")]
    assert [m["To"] for m in office.sam.messages] == ["good@example.net"]


def test_the_sweep_releases_an_email_held_for_a_sender_no_longer_paused(
    office: Office,
) -> None:
    from sqlalchemy import text

    from nurture.store.sender_health import pause

    config = office.configure(SENDERS)
    with session_scope(office.engine) as session:
        pause(session.connection(), "sam", "6 hard bounces in the last 6", T0 - timedelta(hours=1))
    office.add_leads({"email": "good@example.net", "owner": "sam@example.com"},
                     {"email": "kim@example.net", "owner": "lee@example.com"})  # fmt: skip
    office.tick(config, T0)
    assert [m.status for m in office.emails()] == ["held", "sent"]
    # Given sam's pause ended without releasing its held email (as a crossed resume)
    with session_scope(office.engine) as session:
        session.execute(text("UPDATE sender_state SET paused_at = NULL WHERE name = 'sam'"))
    # Then the next run releases and sends it
    office.tick(config, T0 + timedelta(minutes=5))
    assert [m.status for m in office.emails()] == ["sent", "sent"]
    assert [m["To"] for m in office.sam.messages] == ["good@example.net"]


def test_an_unknown_sender_name_in_fallback_from_falls_to_the_default_sender(
    office: Office, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nurture.mail import senders as picking

    monkeypatch.setattr(picking, "_UNKNOWN_LOGGED", set(), raising=False)  # once a process
    config = office.configure(SENDERS, OWNER_SEQUENCE.replace(
        'fallback_from: "Team <team@example.com>"', "fallback_from: tema"))  # fmt: skip
    office.add_leads({"email": "noah@example.net"}, {"email": "ivy@example.net"})
    with caplog.at_level("WARNING", logger="nurture"):
        office.tick(config, T0)
    # Then no email is From: "tema": each comes from [sales] from_address, logged once
    default = Sender.parse(config.settings.sales.from_address)
    assert {m.sender for m in office.emails()} == {default.email}
    assert sorted(m["To"] for m in office.default.handler.messages) == [
        "ivy@example.net", "noah@example.net"]  # fmt: skip
    assert all(default.email in m["From"] for m in office.default.handler.messages)
    told = [r for r in caplog.records if "fallback_from names no [[senders]]" in r.getMessage()]
    assert len(told) == 1


class LoginRecorder(AuthHandler):
    """A server that offers a login and needs none: it records every login tried."""

    def __init__(self) -> None:
        super().__init__("", "")
        self.tried: list[tuple[str, str]] = []

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str,
                     data: Any) -> AuthResult:  # fmt: skip
        if isinstance(data, LoginPassword):
            self.tried.append((data.login.decode(), data.password.decode()))
        return AuthResult(success=False, handled=False)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return await SmtpHandler.handle_DATA(self, server, session, envelope)


def test_a_sender_s_own_server_never_gets_the_default_server_s_login(
    office: Office, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given [smtp] with a login, and ana's own server named without one
    monkeypatch.setenv("NURTURE_SMTP_USERNAME", "company")
    monkeypatch.setenv("NURTURE_SMTP_PASSWORD", "company-secret")
    recorder, port = LoginRecorder(), free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port, auth_required=False,
                            auth_require_tls=False,
                            authenticator=recorder.authenticate)  # fmt: skip
    controller.start()
    try:
        config = office.configure(f"""
[[senders]]
name = "ana"
address = "Ana <ana@example.com>"
smtp = {{ host = "127.0.0.1", port = {port} }}
""")
        office.add_leads({"email": "maria@example.net", "owner": "ana@example.com"})
        office.tick(config, T0)
    finally:
        controller.stop()
    # Then its message went through its server, and no login was tried there
    assert [m["To"] for m in recorder.messages] == ["maria@example.net"]
    assert recorder.tried == []
    settings = config.settings
    [ana] = settings.senders
    assert (ana.smtp_settings(settings.smtp).username, ana.smtp_settings(settings.smtp).password) \
        == ("", "")  # fmt: skip


def test_a_rotation_s_notification_comes_from_the_default_sender(office: Office) -> None:
    from nurture.store.sender_health import pause

    notify = ONE_STEP_ROTATION + '  - id: heads-up\n    notify: "{{ lead.email }} got it"\n'
    config = office.configure(SENDERS, notify)
    # Given sam, the rotation's first sender, paused
    with session_scope(office.engine) as session:
        pause(session.connection(), "sam", "6 hard bounces in the last 6", T0 - timedelta(hours=1))
    office.add_leads({"email": "noah@example.net", "owner": "ana@example.com"})
    office.tick(config, T0)
    office.tick(config, T0 + timedelta(minutes=5))  # the step after the sent email
    # Then the notice to the owner comes from [sales] from_address, through [smtp], and goes
    [notice] = [m for m in office.outbox() if m.kind == "notify" and m.sequence == "welcome"]
    default = Sender.parse(config.settings.sales.from_address)
    assert (notice.sender, notice.status) == (default.email, "sent")
    assert "ana@example.com" in [m["To"] for m in office.default.handler.messages]
    assert office.sam.messages == []
