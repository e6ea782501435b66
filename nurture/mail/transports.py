"""Where messages go: an SMTP server through a pool of connections, or a local Maildir.

A transport answers each message with a :class:`SendResult`: sent, retry later (a 4xx
reply, a dropped or refused connection), bounced (the recipient's mailbox is gone),
refused (the server will not send for us: relay, authentication, policy), failed (the
server refused this message for good), or uncertain (the connection dropped while the
message was handed over). :mod:`nurture.mail.smtpreply` reads the replies.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiosmtplib

from nurture.config import SenderEntry, SmtpSection
from nurture.config.sections import sender_key
from nurture.errors import InvalidValueError
from nurture.mail.addresses import NO_SMTPUTF8, wire_address
from nurture.mail.smtpreply import Stage, classify


@dataclass(frozen=True)
class SendResult:
    #: ``sent``, ``retry``, ``bounce``, ``fail``, ``refused`` (a sending problem: the
    #: server refuses to send for us; see :mod:`nurture.mail.smtpreply`) or ``uncertain``
    #: (the connection was lost while the message was handed over).
    outcome: str
    detail: str = ""
    #: The server (or the Maildir) could not be reached at all: the next messages would
    #: fare no better, so the delivery run stops until its next turn.
    unreachable: bool = False
    #: The send raised an unexpected error: an uncertain message is then always held for
    #: review, never resent on its own (the same bug would send it again and again).
    raised: bool = False


SENT = SendResult("sent")
#: Why nothing goes to a server that does not offer STARTTLS when it is required.
NO_STARTTLS = (
    "the mail server does not offer STARTTLS, and [smtp] starttls requires it: nothing "
    'is sent in the clear (starttls = "opportunistic" sends without it)'
)


class StarttlsMissing(Exception):
    """The server does not offer STARTTLS, which the settings require."""


class Transport(Protocol):
    """Sends one message to one recipient."""

    async def send(self, message: bytes, sender: str, recipient: str, key: str) -> SendResult:
        """Send *message* (RFC 5322 bytes with CRLF line ends) to *recipient*; *key* is
        its idempotency key."""
        ...

    async def close(self) -> None: ...


def maildir_stem(key: str) -> str:
    """The start of the Maildir file name of the message with idempotency *key*."""
    return "nurture-" + hashlib.sha256(key.encode()).hexdigest()[:24]


def remove_from_maildir(directory: Path, keys: Iterable[str]) -> int:
    """Delete the Maildir files of the messages with *keys* (an erasure: their words
    and the person's address go with the rest); return how many went."""
    stems = {maildir_stem(key) + "." for key in keys}
    removed = 0
    for folder in ("new", "cur", "tmp"):
        try:
            entries = list(os.scandir(directory / folder))
        except OSError:
            continue
        for entry in entries:
            if any(entry.name.startswith(stem) for stem in stems):
                try:
                    os.unlink(entry.path)
                    removed += 1
                except FileNotFoundError:
                    pass
    return removed


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
        name = maildir_stem(key) + "." + self.hostname
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
        #: ``required``, ``opportunistic`` or ``off`` (:meth:`SmtpSection.starttls_mode`).
        self.starttls = "off" if settings.tls else settings.starttls_mode()

    def _client(self) -> aiosmtplib.SMTP:
        s = self.settings
        return aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            use_tls=s.tls,
            # None: upgrade when the server offers STARTTLS (whether it must, and the
            # login, are for _acquire: never a password before that is settled).
            start_tls=False if self.starttls == "off" else None,
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
        try:
            encrypted = client.get_transport_info("sslcontext") is not None
            if self.starttls == "required" and not encrypted:
                raise StarttlsMissing(NO_STARTTLS)
            if self.settings.username:
                await client.login(self.settings.username, self.settings.password)
        except BaseException:
            client.close()
            raise
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
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.settings.max_connections)
        async with self._slots:
            for _ in range(2):
                result = await self._attempt(message, sender, recipient)
                if result is not None:
                    return result
            return SendResult("retry", "connection dropped twice")

    async def _attempt(self, message: bytes, sender: str, recipient: str) -> SendResult | None:
        """One transaction; ``None``: an idle connection had been closed by the server
        before it began (try again on a fresh one)."""
        utf8 = not (sender.isascii() and recipient.isascii() and message.isascii())
        encoding = "utf-8" if utf8 else "ascii"
        client: aiosmtplib.SMTP | None = None
        reused = False
        stage: Stage = "mail"
        try:
            try:
                client, reused = await self._acquire()
            except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPConnectTimeoutError,
                    ConnectionError) as exc:  # fmt: skip
                detail = f"cannot connect: {type(exc).__name__}: {exc}"
                return SendResult("retry", detail, unreachable=True)
            except StarttlsMissing as exc:  # a sending problem: `status` says it
                return SendResult("refused", str(exc), unreachable=True)
            if client.is_ehlo_or_helo_needed:
                await client.ehlo()
            if utf8 and not client.supports_extension("smtputf8"):
                await self._keep(client, reset=False)
                return SendResult("fail", NO_SMTPUTF8)
            options = ["SMTPUTF8"] if utf8 else []
            if client.supports_extension("size"):
                options.insert(0, f"SIZE={len(message)}")
            await client.mail(sender, options=options, encoding=encoding)
            stage = "rcpt"
            await client.rcpt(recipient, encoding=encoding)
            stage = "data"
            await client.data(message)
        except aiosmtplib.SMTPResponseException as exc:
            detail = f"{exc.code} {exc.message}"
            verdict = classify(exc.code, exc.message, stage)
            if client is None or isinstance(exc, aiosmtplib.SMTPAuthenticationError):
                # Our login was refused: no message is at fault, each waits for a fix.
                await self._discard(client)
                return SendResult("retry", detail, unreachable=True)
            await self._keep(client, reset=True)
            if verdict == "refused":
                return SendResult("refused", detail, unreachable=True)
            return SendResult(verdict, detail)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError,
                TimeoutError, aiosmtplib.SMTPException) as exc:  # fmt: skip
            await self._discard(client)
            if stage == "data":
                # The message was being handed over: the server may have taken it.
                return SendResult("uncertain", f"connection lost during DATA: {exc}")
            if reused and isinstance(exc, aiosmtplib.SMTPServerDisconnected):
                return None  # an idle connection the server closed: try a fresh one
            return SendResult("retry", f"{type(exc).__name__}: {exc}")
        await self._keep(client, reset=False)
        return SENT

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for client in idle:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError):
                client.close()


class RoutingTransport:
    """Each message through its sender's own server: one transport per ``[[senders]]``
    entry with an SMTP account of its own, chosen by the envelope sender; every other
    message through the default one (``[smtp]``, or the Maildir)."""

    def __init__(self, default: Transport, routes: dict[str, Transport]) -> None:
        self.default = default
        #: By envelope sender (:func:`~nurture.config.sections.sender_key`).
        self.routes = {sender_key(sender): transport for sender, transport in routes.items()}

    def route(self, sender: str) -> Transport:
        """The transport the envelope sender *sender*'s messages leave through."""
        return self.routes.get(sender_key(sender), self.default)

    async def send(self, message: bytes, sender: str, recipient: str, key: str) -> SendResult:
        return await self.route(sender).send(message, sender, recipient, key)

    async def close(self) -> None:
        for transport in [self.default, *self.routes.values()]:
            await transport.close()


def open_transport(
    settings: SmtpSection, outbox_dir: Path, senders: Iterable[SenderEntry] = ()
) -> Transport:
    """SMTP when ``[smtp] host`` is set, else the project's Maildir outbox; a
    ``[[senders]]`` entry with an SMTP account of its own sends through it."""
    default: Transport = SmtpTransport(settings) if settings.host else MaildirTransport(outbox_dir)
    routes: dict[str, Transport] = {
        entry.email: SmtpTransport(entry.smtp_settings(settings))
        for entry in senders
        if entry.smtp is not None and entry.smtp.host
    }
    return RoutingTransport(default, routes) if routes else default
