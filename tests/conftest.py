"""Shared fixtures: a migrated database on SQLite and on PostgreSQL, and a project.

PostgreSQL tests get a fresh database each, cloned from a template migrated once per
run. Without a reachable server they skip locally and fail under ``CI=true``.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text

from bench.smtp_sink import SinkProcess
from nurture.store.database import open_engine, upgrade

PG_ADMIN_URL = os.environ.get(
    "NURTURE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _missing(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (required under CI=true)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[Engine]:
    """A connection to the PostgreSQL server's maintenance database, autocommitting."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _missing("psycopg is not installed")
    engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text("select 1"))
    except Exception as exc:
        engine.dispose()
        _missing(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {type(exc).__name__}")
    yield engine
    engine.dispose()


def _pg_url(name: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(scope="session")
def pg_template(pg_admin: Engine) -> Iterator[str]:
    """A database at the newest schema, used as the template of each test's database."""
    name = f"nurture_tpl_{uuid.uuid4().hex[:10]}"
    with pg_admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    engine = open_engine(_pg_url(name))
    upgrade(engine)
    engine.dispose()
    yield name
    with pg_admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _fresh_database(pg_admin: Engine, prefix: str, template: str | None = None) -> Iterator[str]:
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    clause = f' TEMPLATE "{template}"' if template else ""
    with pg_admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"{clause}'))
    yield _pg_url(name)
    with pg_admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def pg_url(pg_admin: Engine, pg_template: str) -> Iterator[str]:
    """The URL of a fresh, migrated PostgreSQL database for one test."""
    yield from _fresh_database(pg_admin, "nurture_t", pg_template)


@pytest.fixture
def empty_pg_url(pg_admin: Engine) -> Iterator[str]:
    """The URL of a fresh PostgreSQL database without any schema."""
    yield from _fresh_database(pg_admin, "nurture_e")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """The URL of a fresh, migrated SQLite database for one test."""
    url = f"sqlite:///{tmp_path / 'nurture.db'}"
    engine = open_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def db_url(request: pytest.FixtureRequest) -> str:
    """A fresh, migrated database: each test using it runs on SQLite and on PostgreSQL."""
    fixture = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(fixture))


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = open_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh copy of the example project, with no NURTURE_* variables leaking in."""
    from nurture.project import init_project

    for name in list(os.environ):
        if name.startswith("NURTURE_"):
            monkeypatch.delenv(name)
    directory = tmp_path / "project"
    init_project(directory)
    return directory


class SmtpHandler:
    """An aiosmtpd handler whose replies a test can script.

    ``rcpt_replies[address]`` answers RCPT for that address; ``data_replies`` answers the
    next DATA commands in turn; ``delay`` slows every DATA down. Accepted messages land
    in ``messages`` as parsed :class:`~email.message.EmailMessage` objects.
    """

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.rcpt_replies: dict[str, str] = {}
        self.data_replies: list[str] = []
        self.delay = 0.0
        self.connections = 0
        #: Drop the connection at the next DATA, without a reply.
        self.drop_next = False
        #: Answer MAIL FROM with this (``None``: accept the sender).
        self.mail_reply: str | None = None

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:  # fmt: skip
        self.connections += 1
        session.host_name = hostname
        return responses

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:  # fmt: skip
        if self.mail_reply:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:  # fmt: skip
        reply = self.rcpt_replies.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        import asyncio
        from email import message_from_string, policy

        if self.delay:
            await asyncio.sleep(self.delay)
        if self.drop_next:
            self.drop_next = False
            server.transport.close()
            return "421 closing"
        if self.data_replies:
            return self.data_replies.pop(0)
        # Headers may be UTF-8 (RFC 6532, with SMTPUTF8): read them as such.
        raw = envelope.original_content.decode("utf-8", "surrogateescape")
        message = message_from_string(raw, policy=policy.default)
        self.messages.append(message)
        return "250 Message accepted"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class SmtpServer:
    handler: SmtpHandler
    port: int
    controller: Any

    def stop(self) -> None:
        self.controller.stop()

    def start(self) -> None:
        """Start again on the same port (a stopped controller cannot be restarted)."""
        from aiosmtpd.controller import Controller

        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
        self.controller.start()


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """A real SMTP server (aiosmtpd) on a loopback port."""
    from aiosmtpd.controller import Controller

    handler = SmtpHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    server = SmtpServer(handler, port, controller)
    yield server
    try:
        server.controller.stop()
    except (AssertionError, RuntimeError):
        pass  # already stopped by the test


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[SinkProcess]:
    """A real SMTP server in a process of its own (:mod:`bench.smtp_sink`), answering
    each message after 5 ms; what it accepted is read from its log."""
    server = SinkProcess(free_port(), tmp_path / "sink.log", delay=0.005).start()
    yield server
    server.stop()


@dataclass
class Imap:
    host: str
    port: int
    username: str
    password: str

    def append(self, raw: bytes, mailbox: str = "INBOX") -> None:
        """Drop a message into the mailbox, as a mail server delivering it would."""
        import imaplib

        imap = imaplib.IMAP4(self.host, self.port)
        try:
            imap.login(self.username, self.password)
            status, detail = imap.append(mailbox, "", None, raw)
            assert status == "OK", detail
        finally:
            imap.logout()

    def flagged(self, keyword: str, mailbox: str = "INBOX") -> int:
        """How many messages carry *keyword*."""
        import imaplib

        imap = imaplib.IMAP4(self.host, self.port)
        try:
            imap.login(self.username, self.password)
            imap.select(mailbox)
            status, found = imap.search(None, "KEYWORD", keyword)
            return len(found[0].split()) if status == "OK" and found[0] else 0
        finally:
            imap.logout()

    def user(self, username: str, password: str) -> Imap:
        """The same server, as another of its users (``sam``, password ``s4m``)."""
        return replace(self, username=username, password=password)


@pytest.fixture
def imap_server() -> Iterator[Imap]:
    """A real IMAP server (Debian's dovecot-imapd) on a loopback port, as the user
    ``replies``; a second user, ``sam``, has a mailbox of its own (:meth:`Imap.user`)."""
    import pwd
    import shutil
    import subprocess
    import tempfile
    import time

    binary = shutil.which("dovecot") or ("/usr/sbin/dovecot" if os.path.exists(
        "/usr/sbin/dovecot") else None)  # fmt: skip
    if binary is None:
        _missing("dovecot is not installed (apt-get install dovecot-imapd)")
    root = tempfile.mkdtemp(prefix="nurture-dovecot-")
    os.chmod(root, 0o755)
    if os.getuid() == 0:
        mail_user = pwd.getpwnam("nobody")
        login_user, internal_user = "dovenull", "dovecot"
    else:
        mail_user = pwd.getpwuid(os.getuid())
        login_user = internal_user = mail_user.pw_name
    mail = os.path.join(root, "mail")
    os.makedirs(mail)
    if os.getuid() == 0:
        os.chown(mail, mail_user.pw_uid, mail_user.pw_gid)
    port = free_port()
    with open(os.path.join(root, "passwd"), "w") as handle:
        handle.write("replies:{PLAIN}s3cret::::::\nsam:{PLAIN}s4m::::::\n")
    config = os.path.join(root, "dovecot.conf")
    with open(config, "w") as handle:
        handle.write(f"""\
protocols = imap
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{mail}/%u
first_valid_uid = 1
last_valid_uid = 0
default_login_user = {login_user}
default_internal_user = {internal_user}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={mail_user.pw_uid} gid={mail_user.pw_gid} home={mail}/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
""")
    process = subprocess.Popen([binary, "-F", "-c", config], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)  # fmt: skip
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                output = process.stdout.read().decode() if process.stdout else ""
                log = open(os.path.join(root, "dovecot.log")).read() if os.path.exists(
                    os.path.join(root, "dovecot.log")) else ""  # fmt: skip
                process.kill()
                pytest.fail(f"dovecot did not start: {output} {log}")
            time.sleep(0.1)
    yield Imap("127.0.0.1", port, "replies", "s3cret")
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
    shutil.rmtree(root, ignore_errors=True)
