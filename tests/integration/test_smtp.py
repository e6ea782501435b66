"""The SMTP transport against real aiosmtpd servers on loopback: STARTTLS, implicit TLS,
AUTH, a pool of reused connections, and every kind of refusal."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from nurture.config import SmtpSection
from nurture.mail.transports import SmtpTransport
from tests.conftest import SmtpHandler, free_port

MESSAGE = (
    b"From: Ana <ana@example.com>\r\nTo: maria@example.com\r\nSubject: hi\r\n"
    b"Message-ID: <1@example.com>\r\n\r\nHello\r\n"
)


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(authority: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(path))
    return str(path)


def _server_context(authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str,
                   data: Any) -> AuthResult:  # fmt: skip
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"ana", b"s3cret")
    return AuthResult(success=ok, handled=False)


def _serve(handler: SmtpHandler, **options: Any) -> Iterator[int]:
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, **options)
    controller.start()
    yield port
    controller.stop()


@pytest.fixture
def starttls_server(authority: trustme.CA) -> Iterator[tuple[SmtpHandler, int]]:
    handler = SmtpHandler()
    for port in _serve(handler, tls_context=_server_context(authority), require_starttls=True,
                       auth_required=True, authenticator=_authenticator):  # fmt: skip
        yield handler, port


def send_all(settings: SmtpSection, count: int = 1, recipient: str = "maria@example.com"
             ) -> list[Any]:  # fmt: skip
    async def run() -> list[Any]:
        transport = SmtpTransport(settings)
        try:
            return list(await asyncio.gather(*(
                transport.send(MESSAGE, "ana@example.com", recipient, f"k{i}")
                for i in range(count)
            )))  # fmt: skip
        finally:
            await transport.close()

    return asyncio.run(run())


def test_starttls_and_auth_over_a_pool_of_reused_connections(
    starttls_server: tuple[SmtpHandler, int], ca_file: str
) -> None:
    handler, port = starttls_server
    settings = SmtpSection(host="127.0.0.1", port=port, username="ana", password="s3cret",
                           ca_file=ca_file, max_connections=2)  # fmt: skip
    results = send_all(settings, count=10)
    assert [r.outcome for r in results] == ["sent"] * 10
    assert len(handler.messages) == 10
    # Two connections at most, each greeting twice (before and after STARTTLS).
    assert handler.connections <= 4


def test_a_wrong_password_is_retried_not_lost(
    starttls_server: tuple[SmtpHandler, int], ca_file: str
) -> None:
    _, port = starttls_server
    settings = SmtpSection(host="127.0.0.1", port=port, username="ana", password="wrong",
                           ca_file=ca_file)  # fmt: skip
    [result] = send_all(settings)
    assert result.outcome == "retry" and result.detail.startswith("535")


def test_an_untrusted_certificate_is_refused(starttls_server: tuple[SmtpHandler, int]) -> None:
    _, port = starttls_server
    settings = SmtpSection(host="127.0.0.1", port=port, username="ana", password="s3cret")
    [result] = send_all(settings)
    assert result.outcome == "retry" and "CERTIFICATE_VERIFY_FAILED" in result.detail


def test_implicit_tls(authority: trustme.CA, ca_file: str) -> None:
    handler = SmtpHandler()
    for port in _serve(handler, ssl_context=_server_context(authority),
                       server_hostname="127.0.0.1"):  # fmt: skip
        settings = SmtpSection(host="127.0.0.1", port=port, tls=True, ca_file=ca_file)
        [result] = send_all(settings)
    assert result.outcome == "sent" and len(handler.messages) == 1


def test_replies_decide_retry_bounce_or_failure() -> None:
    handler = SmtpHandler()
    handler.rcpt_replies = {"gone@example.com": "550 5.1.1 no such user",
                            "full@example.com": "452 4.2.2 mailbox full"}  # fmt: skip
    for port in _serve(handler):
        settings = SmtpSection(host="127.0.0.1", port=port, starttls=False)
        [gone] = send_all(settings, recipient="gone@example.com")
        [full] = send_all(settings, recipient="full@example.com")
        handler.data_replies = ["554 5.7.1 message refused"]
        [refused] = send_all(settings)
        handler.drop_next = True
        [dropped] = send_all(settings)
        [ok] = send_all(settings)
    assert (gone.outcome, gone.detail) == ("bounce", "550 5.1.1 no such user")
    assert full.outcome == "retry"
    assert refused.outcome == "refused"  # 5.7.x: a sending problem, not the lead's
    # Dropped once the message was handed over: the server may have it.
    assert dropped.outcome == "uncertain" and "DATA" in dropped.detail
    assert ok.outcome == "sent"


#: RFC 3463 replies as real servers word them, and what each means.
REPLIES = {
    "550 5.1.1 <gone@example.com>: Recipient address rejected: User unknown": "bounce",
    "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found": "bounce",
    "550 5.2.1 The email account that you tried to reach is disabled": "bounce",
    "552 5.2.2 Mailbox full": "bounce",
    "550 No such user here": "bounce",
    "554 5.7.1 <gone@example.com>: Relay access denied": "refused",
    "550 5.7.1 Authentication required": "refused",
    "550 5.7.26 Unauthenticated email from example.com is not accepted": "refused",
    "553 5.1.8 Sender address rejected: Domain not found": "refused",
    "554 Relay access denied": "refused",
    "550 5.3.4 Message size exceeds fixed maximum message size": "fail",
    "554 Transaction failed": "fail",
    "450 4.2.1 Mailbox busy, try later": "retry",
}


@pytest.mark.parametrize("reply", sorted(REPLIES))
def test_recipient_replies_are_read_by_their_enhanced_code(reply: str) -> None:
    handler = SmtpHandler()
    handler.rcpt_replies = {"gone@example.com": reply}
    for port in _serve(handler):
        settings = SmtpSection(host="127.0.0.1", port=port, starttls=False)
        [result] = send_all(settings, recipient="gone@example.com")
    assert (result.outcome, result.detail) == (REPLIES[reply], reply)
    assert result.unreachable == (REPLIES[reply] == "refused")  # a refusal stops delivery


def test_any_refusal_of_our_sender_is_a_sending_problem() -> None:
    handler = SmtpHandler()
    handler.mail_reply = "550 5.1.1 Sender unknown"  # 5.1.1, but of MAIL FROM: our address
    for port in _serve(handler):
        settings = SmtpSection(host="127.0.0.1", port=port, starttls=False)
        [result] = send_all(settings)
    assert result.outcome == "refused" and result.unreachable


def test_a_drop_after_data_on_a_reused_connection_is_uncertain_not_resent() -> None:
    handler = SmtpHandler()

    async def run(settings: SmtpSection) -> list[Any]:
        transport = SmtpTransport(settings)
        try:
            first = await transport.send(MESSAGE, "ana@example.com", "a@example.com", "k1")
            handler.drop_next = True  # the reused connection drops after DATA
            second = await transport.send(MESSAGE, "ana@example.com", "b@example.com", "k2")
            return [first, second]
        finally:
            await transport.close()

    for port in _serve(handler):
        settings = SmtpSection(host="127.0.0.1", port=port, starttls=False, max_connections=1)
        first, second = asyncio.run(run(settings))
    assert first.outcome == "sent" and second.outcome == "uncertain"
    assert len(handler.messages) == 1  # not sent again on a fresh connection
    assert handler.connections == 1


def test_starttls_true_is_required_and_opportunistic_is_todays_behaviour(
    authority: trustme.CA, ca_file: str
) -> None:
    logins: list[bytes] = []

    def record(server: Any, session: Any, envelope: Any, mechanism: str,
               data: Any) -> AuthResult:  # fmt: skip
        logins.append(data.password)
        return AuthResult(success=True, handled=False)

    # A server that offers no STARTTLS (and would take a password in the clear).
    handler = SmtpHandler()
    for port in _serve(handler, auth_require_tls=False, authenticator=record):
        plain = {"host": "127.0.0.1", "port": port, "username": "ana", "password": "s3cret"}
        [required] = send_all(SmtpSection(**plain, starttls=True))
        assert required.outcome == "refused" and required.unreachable
        assert "does not offer STARTTLS" in required.detail
        assert handler.messages == [] and logins == []  # nothing, not even the password
        [chosen] = send_all(SmtpSection(**plain, starttls="opportunistic"))
        assert chosen.outcome == "sent" and len(handler.messages) == 1 and logins == [b"s3cret"]
    # A server that offers it: required works, over TLS.
    tls = SmtpHandler()
    for port in _serve(tls, tls_context=_server_context(authority), require_starttls=True):
        [secure] = send_all(SmtpSection(host="127.0.0.1", port=port, starttls=True,
                                        ca_file=ca_file))  # fmt: skip
        assert secure.outcome == "sent" and len(tls.messages) == 1


def test_starttls_unset_is_required_except_on_this_machine() -> None:
    assert SmtpSection(host="smtp.example.com").starttls_mode() == "required"
    assert SmtpSection(host="10.0.0.5").starttls_mode() == "required"
    for host in ("127.0.0.1", "::1", "localhost"):
        assert SmtpSection(host=host).starttls_mode() == "opportunistic"
    assert SmtpSection(host="127.0.0.1", starttls=True).starttls_mode() == "required"
    assert SmtpSection(host="smtp.example.com", starttls=False).starttls_mode() == "off"
    assert SmtpSection(host="x", starttls="opportunistic").starttls_mode() == "opportunistic"
