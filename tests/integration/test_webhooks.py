"""Signed outbound webhooks against a loopback receiver that checks the signature the
way the README tells receivers to, and answers 503 the first time."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select
from typer.testing import CliRunner

from nurture import clock
from nurture.cli import app
from nurture.config import load_settings
from nurture.engine.context import Context
from nurture.intake.incoming import LeadItem, Origin, take_leads
from nurture.mail.webhooks import deliver_webhooks
from nurture.store.database import open_engine, session_scope
from nurture.store.events import record_event
from nurture.store.handoffs import Webhook
from nurture.store.leads import LeadChanges

SECRET = "whsec-0123456789abcdef"


class Receiver:
    """A webhook receiver: verifies each delivery, answers 503 to the first one."""

    def __init__(self) -> None:
        self.accepted: list[dict[str, Any]] = []
        self.refused: list[str] = []
        self.bad_signatures = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                header = self.headers.get("X-Nurture-Signature", "")
                parts = dict(p.split("=", 1) for p in header.split(","))
                expected = hmac.new(SECRET.encode(), f"{parts['t']}.".encode() + body,
                                    hashlib.sha256).hexdigest()  # fmt: skip
                fresh = abs(time.time() - int(parts["t"])) < 300
                if not (fresh and hmac.compare_digest(expected, parts.get("v1", ""))):
                    outer.bad_signatures += 1
                    self.send_response(400)
                elif not outer.refused:
                    outer.refused.append(json.loads(body)["id"])
                    self.send_response(503)
                else:
                    outer.accepted.append(json.loads(body))
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.server.shutdown()


def test_signed_deliveries_each_event_once_after_a_503(
    project: Path, db_url: str, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NURTURE_DATABASE_URL", db_url)
    monkeypatch.setenv("NURTURE_DELIVERY_RETRY_AFTER", "0.2")  # backoff from 0.1-0.2 s
    config_file = project / "nurture.toml"
    with config_file.open("a") as handle:
        handle.write(f'\n[[webhooks]]\nname = "crm"\nurl = "{receiver.url}"\n'
                     f'events = ["lead.created", "lead.unsubscribed"]\nsecret = "{SECRET}"\n'
                     '\n[[webhooks]]\nname = "other"\nurl = "http://127.0.0.1:9/x"\n'
                     'events = ["handoff.answered"]\nsecret = "another-secret-012"\n')  # fmt: skip
    config = load_settings(config_file)
    engine = open_engine(db_url)
    ctx = Context.open(engine, config)
    with session_scope(engine) as session:
        [taken] = take_leads(
            session,
            [LeadItem(LeadChanges("maria@example.com", {"first_name": "María"}))],
            Origin(source="api", via_key="crm"),
        )
        record_event(session, taken.lead_id, "unsubscribed", source="api")  # type: ignore[union-attr]
        record_event(session, taken.lead_id, "page_visited", source="api")  # type: ignore[union-attr]
    # Given a first attempt that the receiver answers 503 ...
    sent, retrying = asyncio.run(deliver_webhooks(ctx))
    assert (sent, retrying) == (1, 1) and len(receiver.refused) == 1
    with session_scope(engine) as session:
        [waiting] = session.exec(select(Webhook).where(Webhook.status == "queued")).all()
        assert waiting.next_attempt_at > clock.now() - timedelta(seconds=1)
        assert waiting.last_error == "HTTP 503"
    # ... it is made again after the backoff, and each event arrives once.
    deadline = time.monotonic() + 20
    while len(receiver.accepted) < 2:
        assert time.monotonic() < deadline, receiver.accepted
        asyncio.run(deliver_webhooks(ctx))
    assert asyncio.run(deliver_webhooks(ctx)) == (0, 0)
    assert receiver.bad_signatures == 0
    ids = [body["id"] for body in receiver.accepted]
    assert len(ids) == len(set(ids)) == 2 and receiver.refused[0] in ids
    by_type = {body["type"]: body for body in receiver.accepted}
    assert set(by_type) == {"lead.created", "lead.unsubscribed"}
    created = by_type["lead.created"]
    assert created["data"]["lead"]["email"] == "maria@example.com"
    assert created["data"]["source"] == "api" and created["id"].startswith("evt_")
    with session_scope(engine) as session:
        calls = list(session.exec(select(Webhook)))
        assert {(c.endpoint, c.status) for c in calls} == {("crm", "sent")}
        assert sorted(c.attempts for c in calls) == [1, 2]

    runner = CliRunner()
    listed = runner.invoke(app, ["--config", str(config_file), "webhooks", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    shown = json.loads(listed.output)
    assert [e["name"] for e in shown["endpoints"]] == ["crm", "other"]
    assert {d["event"] for d in shown["deliveries"]} == {"lead.created", "lead.unsubscribed"}
    tested = runner.invoke(app, ["--config", str(config_file), "webhooks", "test", "crm"])
    assert tested.exit_code == 0, tested.output
    assert receiver.accepted[-1]["type"] == "webhook.test"
    refused = runner.invoke(app, ["--config", str(config_file), "webhooks", "test", "other"])
    assert refused.exit_code == 1 and "ConnectError" in str(refused.exception)
    unknown = runner.invoke(app, ["--config", str(config_file), "webhooks", "test", "nope"])
    assert getattr(unknown.exception, "exit_code", None) == 2  # main() exits 2
    engine.dispose()


def test_webhook_credentials_in_the_url_are_never_printed(
    project: Path, db_url: str, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NURTURE_DATABASE_URL", db_url)
    config_file = project / "nurture.toml"
    secret_url = receiver.url.replace("http://", "http://hookuser:pa55word@") + (
        "?token=s3cr3t-query#frag-s3cr3t")  # fmt: skip
    with config_file.open("a") as handle:
        handle.write(f'\n[[webhooks]]\nname = "crm"\nurl = "{secret_url}"\n'
                     f'events = ["*"]\nsecret = "{SECRET}"\n'
                     '\n[[webhooks]]\nname = "down"\n'
                     'url = "https://ops:hunter2@127.0.0.1:9/in?key=k3y-s3cr3t"\n'
                     'events = ["*"]\nsecret = "another-secret-012"\n')  # fmt: skip
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(app, ["--config", str(config_file), *args])
        return result.output + str(result.exception or "")

    printed = [run("webhooks", "test", "crm"), run("webhooks", "test", "down"),
               run("webhooks", "list"), run("webhooks", "list", "--json")]  # fmt: skip
    assert "answered HTTP 503" in printed[0] and "ConnectError" in printed[1]
    for output in printed:
        for secret in ("hookuser", "pa55word", "s3cr3t", "ops:", "hunter2", "k3y"):
            assert secret not in output, output
    assert receiver.url in printed[2] and "https://127.0.0.1:9/in" in printed[2]
    shown = json.loads(printed[3])
    assert [e["url"] for e in shown["endpoints"]] == [receiver.url, "https://127.0.0.1:9/in"]
