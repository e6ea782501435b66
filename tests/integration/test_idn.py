"""Internationalised addresses end to end: ASCII (A-label) domains in headers and the
envelope, SMTPUTF8 for non-ASCII local parts against real aiosmtpd servers with and
without it, the Maildir outbox, and a non-ASCII owner's hand-off notice."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from email import message_from_bytes, message_from_string, policy
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from freezegun import freeze_time
from sqlmodel import select

from nurture.config import SmtpSection
from nurture.language.fields import normalize_email
from nurture.language.templates import RenderedEmail
from nurture.mail.addresses import NO_SMTPUTF8, header_address, wire_address
from nurture.mail.compose import Sender, build_message
from nurture.mail.transports import MaildirTransport, SmtpTransport
from nurture.store.database import session_scope
from nurture.store.leads import LeadChanges, upsert_leads
from nurture.store.outbox import OutboxMessage
from tests.conftest import SmtpHandler, SmtpServer, free_port
from tests.enginekit import LEADS_ARRIVE, Harness, la
from tests.integration.test_handoff import MARIA, START, Sales, sales  # noqa: F401

ZOE = "zoë.ünal@example.com"
ANNA_A_LABEL = "anna@xn--bcher-kva.de"


class RawHandler(SmtpHandler):
    """Keeps each accepted message's envelope and raw bytes too."""

    def __init__(self) -> None:
        super().__init__()
        self.envelopes: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(
            (envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.original_content))
        )
        return await super().handle_DATA(server, session, envelope)


def _start(handler: SmtpHandler, port: int, utf8: bool) -> Controller:
    controller = Controller(handler, hostname="127.0.0.1", port=port, enable_SMTPUTF8=utf8)
    controller.start()
    return controller


def _restart(server: SmtpServer, utf8: bool) -> None:
    """Restart a test's server with SMTPUTF8 offered or not (aiosmtpd's Controller
    offers it unless told otherwise)."""
    server.stop()
    server.controller = _start(server.handler, server.port, utf8)


@pytest.fixture(params=[True, False], ids=["smtputf8", "ascii-only"])
def idn_server(request: pytest.FixtureRequest) -> Iterator[tuple[RawHandler, int, bool]]:
    """A real aiosmtpd server that offers SMTPUTF8, or one that does not."""
    handler, port = RawHandler(), free_port()
    controller = _start(handler, port, request.param)
    yield handler, port, request.param
    controller.stop()


def _message(to_email: str, to_name: str = "Zoë Ünal", from_: str = "Ana <ana@example.com>"
             ) -> bytes:  # fmt: skip
    rendered = RenderedEmail(subject="Grüße", preheader="", html="<p>Hallo</p>", text="Hallo")
    message = build_message(
        rendered, sender=Sender.parse(from_), to_email=to_email, to_name=to_name,
        date=LEADS_ARRIVE, unsubscribe="https://t.example.com/u/tok",
        unsubscribe_mailto="unsub@bücher.de",
    )  # fmt: skip
    return message.as_string().replace("\n", "\r\n").encode("utf-8")


def _send(port: int, message: bytes, sender: str, recipient: str) -> Any:
    async def run() -> Any:
        transport = SmtpTransport(SmtpSection(host="127.0.0.1", port=port))
        try:
            return await transport.send(message, sender, recipient, "k1")
        finally:
            await transport.close()

    return asyncio.run(run())


def test_headers_use_the_ascii_domain_and_keep_encoded_names() -> None:
    assert wire_address("anna@bücher.de") == ANNA_A_LABEL
    assert wire_address(ANNA_A_LABEL) == ANNA_A_LABEL
    assert header_address("Anna", "anna@bücher.de") == f"Anna <{ANNA_A_LABEL}>"
    raw = _message("anna@bücher.de", to_name="Zoë Ünal", from_="Ana <ana@bücher.de>")
    head = raw.partition(b"\r\n\r\n")[0]
    assert head.isascii()  # nothing here needs SMTPUTF8
    parsed = message_from_bytes(raw, policy=policy.default)
    assert parsed["To"].addresses[0].display_name == "Zoë Ünal"  # RFC 2047, as before
    assert parsed["To"].addresses[0].addr_spec == ANNA_A_LABEL
    assert parsed["From"].addresses[0].domain == "xn--bcher-kva.de"
    assert parsed["Message-ID"].endswith("@xn--bcher-kva.de>")
    assert "<mailto:unsub@xn--bcher-kva.de?subject=tok>" in parsed["List-Unsubscribe"]


def test_an_idn_domain_is_delivered_with_or_without_smtputf8(
    idn_server: tuple[RawHandler, int, bool],
) -> None:
    handler, port, _ = idn_server
    result = _send(port, _message("anna@bücher.de"), "ana@bücher.de", "anna@bücher.de")
    assert result.outcome == "sent", result
    [(mail_from, rcpt_tos, _)] = handler.envelopes
    assert (mail_from, rcpt_tos) == ("ana@xn--bcher-kva.de", [ANNA_A_LABEL])


def test_a_non_ascii_local_part_needs_smtputf8(idn_server: tuple[RawHandler, int, bool]) -> None:
    handler, port, utf8 = idn_server
    result = _send(port, _message(ZOE), "ana@example.com", ZOE)
    if not utf8:
        assert (result.outcome, result.detail) == ("fail", NO_SMTPUTF8)
        assert handler.envelopes == []
        return
    assert result.outcome == "sent", result
    [(_, rcpt_tos, raw)] = handler.envelopes
    assert rcpt_tos == [ZOE]
    # RFC 6532: the address is UTF-8 in the header, the display name still encoded.
    assert f"To: =?utf-8?b?Wm/DqyDDnG5hbA==?= <{ZOE}>".encode() in raw
    parsed = message_from_string(raw.decode(), policy=policy.default)
    assert parsed["To"].addresses[0].addr_spec == ZOE


def test_the_maildir_outbox_writes_internationalised_messages(tmp_path: Path) -> None:
    transport = MaildirTransport(tmp_path / "outbox")
    result = asyncio.run(transport.send(_message(ZOE), "ana@example.com", ZOE, "k1"))
    assert result.outcome == "sent"
    [written] = (tmp_path / "outbox" / "new").iterdir()
    parsed = message_from_string(written.read_text(), policy=policy.default)
    assert parsed["To"].addresses[0].addr_spec == ZOE
    assert parsed.get_body(("plain",)).get_content().strip() == "Hallo"


@pytest.mark.parametrize("utf8", [True, False], ids=["smtputf8", "ascii-only"])
def test_one_lead_that_needs_smtputf8_fails_alone(harness: Harness, utf8: bool) -> None:
    # Given a server with or without SMTPUTF8, and three leads of the same sequence
    _restart(harness.smtp, utf8)
    harness.add_leads(
        {"email": ZOE, "first_name": "Zoë", "source": "guide", "owner": "zoë@example.com",
         "timezone": "America/Los_Angeles"},
        {"email": normalize_email(ANNA_A_LABEL), "first_name": "Anna", "source": "guide",
         "timezone": "America/Los_Angeles"},
    )  # fmt: skip
    assert normalize_email(ANNA_A_LABEL) == "anna@bücher.de"  # as an import stores it
    # When the welcome emails go out
    report, delivered = harness.tick(la(2026, 11, 23, 10, 0))
    assert report.enrolled == 3
    # Then the IDN domain is delivered as A-labels in any case; the non-ASCII local part
    # only with SMTPUTF8, else that one message fails with the reason, and no other.
    received = sorted(str(m["To"].addresses[0].addr_spec) for m in harness.sent())
    if utf8:
        assert received == sorted([ANNA_A_LABEL, "maria@example.com", ZOE])
        assert delivered.sent == 3 and delivered.failed == 0
        return
    assert received == sorted([ANNA_A_LABEL, "maria@example.com"])
    assert delivered.sent == 2 and delivered.failed == 1
    with session_scope(harness.engine) as session:
        [failed] = session.exec(select(OutboxMessage).where(OutboxMessage.status == "failed"))
        assert (failed.recipient, failed.last_error) == (ZOE, NO_SMTPUTF8)
    # And the next pass goes on as usual.
    report, _ = harness.tick(la(2026, 11, 25, 10, 0))
    assert report.emails_queued == 3


def test_a_hot_lead_with_a_non_ascii_owner_is_handed_off_and_the_pass_goes_on(
    sales: Sales,  # noqa: F811
) -> None:
    # Given a lead owned by zoë@example.com, and a mail server without SMTPUTF8
    _restart(sales.smtp, utf8=False)
    with freeze_time(START - timedelta(days=1)), session_scope(sales.engine) as session:
        upsert_leads(session, [LeadChanges(MARIA, {"owner": "zoë@example.com"})])
    sales.tick(START)
    # When she turns hot
    sales.engaged(START + timedelta(hours=1))
    report = sales.tick(START + timedelta(hours=1, minutes=5))
    # Then the pass hands her off; only the notice to the owner fails, with the reason
    assert report.hot == 1 and sales.lead().stage == "hot"
    with session_scope(sales.engine) as session:
        [notice] = session.exec(select(OutboxMessage).where(OutboxMessage.kind == "handoff"))
        assert (notice.recipient, notice.status) == ("zoë@example.com", "failed")
        assert notice.last_error == NO_SMTPUTF8
    report = sales.tick(START + timedelta(hours=2))  # and the next pass runs as usual
    assert report is not None
