"""Where messages go: an SMTP server through a pool of connections, or a local Maildir.

A transport answers each message with a :class:`SendResult`: sent, retry later (a 4xx
reply, a dropped or refused connection), bounced (a 5xx reply to RCPT), or failed (the
server refused the message itself for good).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiosmtplib

from nurture.addresses import NO_SMTPUTF8, wire_address
from nurture.config import SmtpSection
from nurture.errors import InvalidValueError


@dataclass(frozen=True)
class SendResult:
    #: ``sent``, ``retry``, ``bounce`` or ``fail``.
    outcome: str
    detail: str = ""
    #: The server (or the Maildir) could not be reached at all: the next messages would
    #: fare no better, so the delivery run stops until its next turn.
    unreachable: bool = False


SENT = SendResult("sent")


class Transport(Protocol):
    """Sends one message to one recipient."""

    async def send(self, message: bytes, sender: str, recipient: str, key: str) -> SendResult:
        """Send *message* (RFC 5322 bytes with CRLF line ends) to *recipient*; *key* is
        its idempotency key."""
        ...

    async def close(self) -> None: ...


class MaildirTransport:
    """Writes each message into a Maildir (``outbox/``) instead of sending it.

    The file is named after the message's idempotency key, so a message written before
    a crash is not written twice.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.hostname = socket.gethostname().replace("/", "_").replace(":", "_")
        self._private = False

    def _write(self, message: bytes, key: str) -> None:
        # The messages hold personal data: the folders are the owner's only (0700), and
        # so is each message (0600).
        if not self._private:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            for folder in (self.directory, *(self.directory / p for p in ("tmp", "new", "cur"))):
                folder.mkdir(mode=0o700, exist_ok=True)
                if folder.stat().st_mode & 0o077:  # made by an older nurture, or by hand
                    folder.chmod(0o700)
            self._private = True
        name = "nurture-" + hashlib.sha256(key.encode()).hexdigest()[:24] + "." + self.hostname
        final = self.directory / "new" / name
        if final.exists() or any((self.directory / "cur").glob(name + ":*")):
            return
        temporary = self.directory / "tmp" / name
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(descriptor, "wb") as handle:
            handle.write(message.replace(b"\r\n", b"\n"))  # Maildir files use LF
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, final)

    async def send(self, message: bytes, sender: str, recipient: str, key: str) -> SendResult:
        try:
            await asyncio.to_thread(self._write, message, key)
        except OSError as exc:
            return SendResult(
                "retry", f"cannot write to {self.directory}: {exc.strerror}", unreachable=True
            )
        return SENT

    async def close(self) -> None:
        return None


class SmtpTransport:
    """aiosmtplib with up to ``max_connections`` connections, reused between messages."""

    def __init__(self, settings: SmtpSection) -> None:
        self.settings = settings
        self._idle: list[aiosmtplib.SMTP] = []
        self._slots: asyncio.Semaphore | None = None

    def _client(self) -> aiosmtplib.SMTP:
        s = self.settings
        return aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            username=s.username or None,
            password=s.password or None,
            use_tls=s.tls,
            # None: upgrade when the server offers STARTTLS.
            start_tls=False if (s.tls or not s.starttls) else None,
            timeout=s.timeout,
            cert_bundle=s.ca_file or None,
        )

    async def _acquire(self) -> tuple[aiosmtplib.SMTP, bool]:
        while self._idle:
            client = self._idle.pop()
            if client.is_connected:
                return client, True
        client = self._client()
        await client.connect()
        return client, False

    async def _discard(self, client: aiosmtplib.SMTP | None) -> None:
        if client is not None:
            client.close()

    async def _keep(self, client: aiosmtplib.SMTP, *, reset: bool) -> None:
        if reset:
            try:
                await client.rset()
            except (aiosmtplib.SMTPException, OSError):
                client.close()
                return
        self._idle.append(client)

    async def send(self, message: bytes, sender: str, recipient: str, key: str) -> SendResult:
        # The envelope carries ASCII domains; a local part (or an address header) that
        # is not ASCII needs the server's SMTPUTF8.
        try:
            sender, recipient = wire_address(sender), wire_address(recipient)
        except InvalidValueError as exc:
            return SendResult("fail", str(exc))
        utf8 = not (sender.isascii() and recipient.isascii() and message.isascii())
        options = ["SMTPUTF8"] if utf8 else []
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.settings.max_connections)
        async with self._slots:
            for _ in range(2):
                client: aiosmtplib.SMTP | None = None
                reused = False
                try:
                    try:
                        client, reused = await self._acquire()
                    except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPConnectTimeoutError,
                            ConnectionError) as exc:  # fmt: skip
                        detail = f"cannot connect: {type(exc).__name__}: {exc}"
                        return SendResult("retry", detail, unreachable=True)
                    await client.sendmail(sender, [recipient], message, mail_options=options)
                except aiosmtplib.SMTPRecipientsRefused as exc:
                    refused = exc.recipients[0]
                    await self._keep(client, reset=True)  # type: ignore[arg-type]
                    detail = f"{refused.code} {refused.message}"
                    return SendResult("bounce" if refused.code >= 500 else "retry", detail)
                except aiosmtplib.SMTPNotSupported:
                    await self._keep(client, reset=True)  # type: ignore[arg-type]
                    return SendResult("fail", NO_SMTPUTF8)
                except aiosmtplib.SMTPServerDisconnected as exc:
                    await self._discard(client)
                    if reused:
                        continue  # an idle connection the server closed: try a fresh one
                    return SendResult("retry", f"connection dropped: {exc}")
                except aiosmtplib.SMTPResponseException as exc:
                    if isinstance(exc, aiosmtplib.SMTPAuthenticationError) or client is None:
                        await self._discard(client)
                        return SendResult("retry", f"{exc.code} {exc.message}")
                    await self._keep(client, reset=True)
                    detail = f"{exc.code} {exc.message}"
                    return SendResult("fail" if exc.code >= 500 else "retry", detail)
                except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                    await self._discard(client)
                    return SendResult("retry", f"{type(exc).__name__}: {exc}")
                await self._keep(client, reset=False)
                return SENT
            return SendResult("retry", "connection dropped twice")

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for client in idle:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError):
                client.close()


def open_transport(settings: SmtpSection, outbox_dir: Path) -> Transport:
    """SMTP when ``[smtp] host`` is set, else the project's Maildir outbox."""
    if settings.host:
        return SmtpTransport(settings)
    return MaildirTransport(outbox_dir)
