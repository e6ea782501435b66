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
from nurture.transports import SmtpTransport
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
    assert refused.outcome == "fail"
    assert dropped.outcome == "retry" and "dropped" in dropped.detail
    assert ok.outcome == "sent"
