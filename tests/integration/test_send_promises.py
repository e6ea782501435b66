"""The send pipeline's promises where two loops meet, on SQLite and PostgreSQL, with a
real SMTP server: never to someone erased or opted out, never twice, caps that hold,
links that act on their own person only, erasure that removes everything.

Each race is made to happen in one exact order through the engine's named points
(:mod:`nurture.hooks`): the test steps in at the moment the other loop is mid-way."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time
from sqlalchemy import Engine, text
from sqlmodel import select

from nurture import clock, hooks
from nurture.config import load_settings
from nurture.engine.catalog import load_catalog
from nurture.engine.context import Context
from nurture.intake.erasure import erase
from nurture.mail.compose import person_mark, read_unsubscribe_link, unsubscribe_url
from nurture.mail.delivery import deliver
from nurture.mail.pacing import DeliveryReport
from nurture.mail.transports import open_transport
from nurture.stages.passes import run_pass
from nurture.store.database import session_scope
from nurture.store.enrollments import Enrollment, email_left
from nurture.store.events import record_event
from nurture.store.handoffs import Webhook
from nurture.store.leads import Lead
from nurture.store.outbox import OutboxMessage
from nurture.store.pausing import set_paused
from nurture.web.server import create_app
from tests.conftest import free_port
from tests.enginekit import SEQUENCE, Harness, la
from tests.web import serving

MOMENT = la(2026, 11, 23, 10, 0)  # a Monday inside the sending window


def wait_for(done: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Wait until *done* says so (progress, never a fixed time)."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def waiting_on_a_lock(engine: Engine) -> bool:
    """Whether another connection to this PostgreSQL database waits for a row lock."""
    if engine.dialect.name != "postgresql":
        return False
    with engine.connect() as connection:
        return bool(connection.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'"
        )).scalar())  # fmt: skip


class Beside:
    """Run *work* in a thread beside the loop that reached a point: the point waits
    until it is done, or (PostgreSQL) until it waits for a lock the loop holds."""

    def __init__(self, engine: Engine, work: Callable[[], Any]) -> None:
        self.engine, self.work = engine, work
        self.result: Any = None
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None

    def __call__(self, *_: Any) -> None:
        if self.thread is not None:
            return  # once
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        thread = self.thread
        wait_for(lambda: not thread.is_alive() or waiting_on_a_lock(self.engine),
                 "the work beside to finish or wait for a lock")  # fmt: skip

    def _run(self) -> None:
        try:
            self.result = self.work()
        except BaseException as exc:
            self.error = exc

    def join(self) -> Any:
        assert self.thread is not None, "the point was never reached"
        self.thread.join(60)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error
        return self.result


def ctx_and_catalog(harness: Harness, moment: Any) -> tuple[Context, Any]:
    ctx = Context.open(harness.engine, harness.config)
    return ctx, load_catalog(harness.engine, harness.config.sequences_dir, ctx.templates, moment)


def deliver_now(ctx: Context, catalog: Any, **options: Any) -> DeliveryReport:
    async def run() -> DeliveryReport:
        transport = open_transport(ctx.config.settings.smtp, ctx.config.outbox_dir)
        try:
            return await deliver(ctx, catalog, transport, **options)
        finally:
            await transport.close()

    return asyncio.run(run())


def rows_about(engine: Engine, lead_id: int) -> dict[str, int]:
    """How many rows of each table name the lead."""
    tables = ["enrollments", "events", "outbox", "tasks", "handoffs", "webhooks",
              "webhook_events", "arrivals", "access_links", "outbox_mentions"]  # fmt: skip
    with engine.connect() as connection:
        return {
            table: int(connection.execute(
                text(f"SELECT count(*) FROM {table} WHERE lead_id = :id"), {"id": lead_id}
            ).scalar() or 0)
            for table in tables
        }  # fmt: skip


# --- 1. never to someone who was erased --------------------------------------------------


def test_an_erasure_while_a_pass_queues_their_email_wins_and_nothing_reaches_them(
    harness: Harness,
) -> None:
    lead_id = harness.lead("maria@example.com").id
    assert lead_id is not None
    # Given a pass that has claimed María's enrollment and rendered her welcome, and not
    # committed yet (nor written: its writes wait for the end of the batch), when she is
    # erased at that moment
    beside = Beside(harness.engine, lambda: erase(harness.engine, "maria@example.com"))
    with hooks.at("advance.before_write", beside):
        harness.tick(MOMENT)
    erased = beside.join()
    # Then the erasure went through, and nothing about her is left or sent
    assert erased.found
    harness.tick(MOMENT + timedelta(minutes=5))
    assert harness.sent() == []
    assert not any(rows_about(harness.engine, lead_id).values())
    with session_scope(harness.engine) as session:
        assert session.get(Lead, lead_id) is None


def test_an_erasure_while_the_dispatcher_builds_deliveries_leaves_none_to_post(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nurture.mail.webhooks import deliver_webhooks
    from tests.integration.test_webhooks import SECRET, Receiver

    receiver = Receiver()
    receiver.refused.append("none: accept the first")
    try:
        with (harness.project / "nurture.toml").open("a") as handle:
            handle.write(f'\n[[webhooks]]\nname = "crm"\nurl = "{receiver.url}"\n'
                         'events = ["lead.updated"]\n'
                         f'secret = "{SECRET}"\n')  # fmt: skip
        harness.config = load_settings(harness.project / "nurture.toml")
        harness.add_leads({"email": "ana@example.com", "source": "other"}, at=MOMENT)
        with freeze_time(MOMENT), session_scope(harness.engine) as session:
            for lead in session.exec(select(Lead)).all():
                record_event(session, lead.id or 0, "lead_updated", source="api")
        ctx = Context.open(harness.engine, harness.config)
        # Given the dispatcher mid-way through building deliveries about María (and Ana),
        # when María is erased at that moment
        beside = Beside(harness.engine, lambda: erase(harness.engine, "maria@example.com"))
        with hooks.at("dispatch.before_write", beside):
            asyncio.run(deliver_webhooks(ctx))
        beside.join()
        asyncio.run(deliver_webhooks(ctx))
        # Then nothing about her was posted, and Ana's delivery was
        emails = [body["data"]["lead"]["email"] for body in receiver.accepted]
        assert "maria@example.com" not in emails
        assert "ana@example.com" in emails
        with session_scope(harness.engine) as session:
            calls = list(session.exec(select(Webhook)))
        assert all(call.lead_id != harness_lead_id(calls, "maria") for call in calls)
    finally:
        receiver.server.shutdown()


def harness_lead_id(calls: list[Webhook], name: str) -> int | None:
    for call in calls:
        if name in str(call.body):
            return call.lead_id
    return None


# --- 2. never twice ----------------------------------------------------------------------


def test_the_fast_lane_and_a_settling_bulk_run_of_one_process_never_send_one_email_twice(
    harness: Harness,
) -> None:
    for i in range(5):
        harness.add_leads({"email": f"new{i}@example.com", "source": "guide"}, at=MOMENT)
    with freeze_time(MOMENT, real_asyncio=True):
        ctx, catalog = ctx_and_catalog(harness, MOMENT)
        run_pass(ctx, catalog, MOMENT)
        lead_ids = [lead.id or 0 for lead in _leads(harness.engine)]

        # Given the fast lane mid-way through a send, when this process's first bulk run
        # settles "every message in flight" (as a worker that just took over a SQLite
        # database does) and sends what it finds
        def bulk_run(*_: Any) -> None:  # its own thread, with its own event loop
            thread = threading.Thread(target=deliver_now, args=(ctx, catalog),
                                      kwargs={"all_in_flight": True})  # fmt: skip
            thread.start()
            thread.join(60)

        with hooks.at("delivery.before_send", _once(bulk_run)):
            deliver_now(ctx, catalog, only_leads=lead_ids)
        deliver_now(ctx, catalog)
    # Then each of the six welcomes reached the server once, and the outbox says so
    ids = [str(message["Message-ID"]) for message in harness.sent()]
    assert len(ids) == 6 and len(set(ids)) == 6
    assert {row.status for row in harness.outbox()} == {"sent"}


def _leads(engine: Engine) -> list[Lead]:
    with session_scope(engine) as session:
        return list(session.exec(select(Lead).order_by(Lead.id)))


def _once(step: Callable[..., None]) -> Callable[..., None]:
    done: list[bool] = []

    def first(*args: Any) -> None:
        if not done:
            done.append(True)
            step(*args)

    return first


# --- 3. an opt-out, an exit or a pause acts at once --------------------------------------


def one_connection(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """One sender: the messages go one after the other, in the order they were queued."""
    monkeypatch.setenv("NURTURE_SMTP_MAX_CONNECTIONS", "1")
    harness.config = load_settings(harness.project / "nurture.toml")


def test_an_unsubscribe_between_two_sends_stops_the_next_one(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    one_connection(harness, monkeypatch)
    for name in ("bo", "cy"):
        harness.add_leads({"email": f"{name}@example.com", "source": "guide"})
    app = create_app(harness.config, harness.engine)
    with serving(app, free_port()) as base, freeze_time(MOMENT, real_asyncio=True):
        ctx, catalog = ctx_and_catalog(harness, MOMENT)
        run_pass(ctx, catalog, MOMENT)
        cy = harness.lead("cy@example.com")
        assert cy.id is not None
        link = unsubscribe_url(base, ctx.secret, cy.id, "welcome", "welcome", cy.email)

        # Given a delivery run whose first send is under way, when Cy unsubscribes then
        def unsubscribe(*_: Any) -> None:
            import httpx

            answer = httpx.post(link, data={"List-Unsubscribe": "One-Click"}, timeout=10)
            assert answer.status_code == 200, answer.text

        with hooks.at("delivery.before_send", _once(unsubscribe)):
            report = deliver_now(ctx, catalog)
    # Then Cy's email, already claimed, does not go
    recipients = sorted(str(message["To"]) for message in harness.sent())
    assert not any("cy@example.com" in r for r in recipients)
    assert len(recipients) == 2 and report.cancelled == 1
    [cancelled] = [row for row in harness.outbox() if row.recipient == "cy@example.com"]
    assert cancelled.status == "cancelled" and "unsubscribed" in (cancelled.last_error or "")


def test_a_pause_between_two_sends_holds_the_next_one(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    one_connection(harness, monkeypatch)
    harness.add_leads({"email": "bo@example.com", "source": "guide"})
    with freeze_time(MOMENT, real_asyncio=True):
        ctx, catalog = ctx_and_catalog(harness, MOMENT)
        run_pass(ctx, catalog, MOMENT)

        def pause_bo(sending: Any) -> None:
            assert sending.recipient != "bo@example.com"  # María's goes first
            with session_scope(harness.engine) as session:
                assert set_paused(session, "welcome", "bo@example.com", pause=True,
                                  now=clock.now()) == 1  # fmt: skip

        with hooks.at("delivery.before_send", _once(pause_bo)):
            deliver_now(ctx, catalog)
    assert [str(m["To"]) for m in harness.sent()] != [] and all(
        "bo@example.com" not in str(m["To"]) for m in harness.sent()
    )
    [held] = [row for row in harness.outbox() if row.recipient == "bo@example.com"]
    assert held.status == "held"


# --- 4. caps hold ------------------------------------------------------------------------


def test_two_workers_whose_claims_overlap_never_pass_the_sender_cap(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NURTURE_LIMITS_PER_SENDER_DAILY", "3")
    monkeypatch.setenv("NURTURE_DAEMON_BATCH_SIZE", "3")
    harness.config = load_settings(harness.project / "nurture.toml")
    for i in range(5):
        harness.add_leads({"email": f"lead{i}@example.com", "source": "guide"})
    with freeze_time(MOMENT, real_asyncio=True):
        first, catalog = ctx_and_catalog(harness, MOMENT)
        run_pass(first, catalog, MOMENT)
        second = Context.open(harness.engine, harness.config)
        assert first.worker_id != second.worker_id

        # Given worker one has read its batch (counting the cap on what is committed),
        # when worker two claims and sends at that moment
        def other_worker(*_: Any) -> None:
            thread = threading.Thread(target=deliver_now, args=(second, catalog))
            thread.start()
            thread.join(60)

        with hooks.at("claim.after_read", _once(other_worker)):
            deliver_now(first, catalog)
    # Then three emails left, each once, and the others wait for tomorrow with the reason
    ids = [str(message["Message-ID"]) for message in harness.sent()]
    assert len(ids) == 3 and len(set(ids)) == 3
    waiting = [row for row in harness.outbox() if row.status == "queued"]
    assert len(waiting) == 3
    assert all("reached its cap of 3" in (row.last_error or "") for row in waiting)


def test_the_per_lead_cap_counts_in_the_lead_s_own_day(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a lead in Los Angeles, a cap of 2 a day, and three sequences that run on
    # Warsaw's clock (their day turns at 15:00 in Los Angeles)
    monkeypatch.setenv("NURTURE_LIMITS_PER_LEAD_DAILY", "2")
    harness.config = load_settings(harness.project / "nurture.toml")
    for path in (harness.project / "sequences").iterdir():
        path.unlink()
    for name, wait in (("one", ""), ("two", "    wait: 2 hours\n"),
                       ("three", "    wait: 2 hours\n")):  # fmt: skip
        harness.write_sequence(
            f"name: {name}\naudience: \"lead.source == 'guide'\"\n"
            'from: "Ana Ruiz <ana@example.com>"\n'
            "schedule:\n  timezone: Europe/Warsaw\n"
            f"steps:\n  - id: hello\n{wait}    email: welcome\n", name=name)  # fmt: skip
    # When one emails her at 14:00 (Warsaw's Monday) and two at 16:00 (Warsaw's Tuesday)
    # of one Los Angeles day
    harness.tick(la(2026, 11, 23, 14, 0))
    assert len(harness.sent()) == 1
    harness.tick(la(2026, 11, 23, 16, 0))
    # Then she gets two that day, and the third waits for her next day
    assert len(harness.sent()) == 2
    [waiting] = [row for row in harness.outbox() if row.status == "queued"]
    assert "lead reached its cap of 2" in (waiting.last_error or "")
    assert waiting.next_attempt_at == la(2026, 11, 24, 0, 0)


# --- 5. links act only on their own person -----------------------------------------------


def test_an_erased_person_s_old_link_acts_on_no_one_else(harness: Harness) -> None:
    harness.tick(MOMENT)
    [welcome] = harness.sent()
    link = str(welcome["List-Unsubscribe"]).split("<")[1].split(">")[0]
    token = link.rsplit("/", 1)[1]
    maria = harness.lead("maria@example.com")
    secret = Context.open(harness.engine, harness.config).secret
    named = read_unsubscribe_link(secret, token)
    assert named is not None and named.person == person_mark(secret, "maria@example.com")
    # Given María erased, and a new person who arrives after her
    erase(harness.engine, "maria@example.com")
    harness.add_leads({"email": "newcomer@example.com", "source": "other"}, at=MOMENT)
    newcomer = harness.lead("newcomer@example.com")
    assert newcomer.id != maria.id  # ids are never reused
    # Even if the newcomer had been given her id, her link names her, not the id
    with session_scope(harness.engine) as session:
        session.execute(text("UPDATE leads SET id = :old WHERE email = 'newcomer@example.com'"),
                        {"old": maria.id})  # fmt: skip
    app = create_app(harness.config, harness.engine)
    with serving(app, free_port()) as base:
        import httpx

        local = f"{base}/u/{token}"
        assert httpx.get(local, timeout=10).status_code == 404
        assert httpx.post(local, data={"List-Unsubscribe": "One-Click"},
                          timeout=10).status_code == 404  # fmt: skip
    assert harness.lead("newcomer@example.com").status == "subscribed"


def test_an_erased_person_s_unsubscribe_mail_acts_on_no_one_else(harness: Harness) -> None:
    from nurture.mail.replies import PollReport, process
    from tests.integration.test_reply_attribution import plain_mail

    harness.tick(MOMENT)
    [welcome] = harness.sent()
    mailto = str(welcome["List-Unsubscribe"]).split(",")[1].strip().strip("<>")
    address, _, token = mailto.removeprefix("mailto:").partition("?subject=")
    maria = harness.lead("maria@example.com")
    # Given María erased, and someone else now holding her id
    erase(harness.engine, "maria@example.com")
    harness.add_leads({"email": "newcomer@example.com", "source": "other"}, at=MOMENT)
    with session_scope(harness.engine) as session:
        session.execute(text("UPDATE leads SET id = :old WHERE email = 'newcomer@example.com'"),
                        {"old": maria.id})  # fmt: skip
    # When her unsubscribe mail (the List-Unsubscribe mailto) arrives
    secret = Context.open(harness.engine, harness.config).secret
    report = PollReport()
    with freeze_time(MOMENT + timedelta(hours=1)), session_scope(harness.engine) as session:
        process(session, plain_mail("maria@example.com", address, token), secret=secret,
                unsubscribe_mailto=address, now=clock.now(), report=report)  # fmt: skip
    # Then it unsubscribes no one
    assert report.unmatched == 1
    assert harness.lead("newcomer@example.com").status == "subscribed"


# --- 6. erasure removes everything -------------------------------------------------------


def test_erasure_removes_the_person_s_files_and_the_mail_that_names_them(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Given mail written to a Maildir outbox: her welcome, and a digest that names her
    monkeypatch.delenv("NURTURE_SMTP_HOST")
    harness.config = load_settings(harness.project / "nurture.toml")
    outbox = harness.config.outbox_dir
    harness.tick(MOMENT)
    files = list((outbox / "new").iterdir())
    assert files and any(b"maria@example.com" in f.read_bytes() for f in files)
    with session_scope(harness.engine) as session:
        from nurture.sales.mail import queue_sales_mail
        from nurture.store.outbox import MessageKind

        lead = session.exec(select(Lead).where(Lead.email == "maria@example.com")).one()
        queue_sales_mail(session, harness.config, kind=MessageKind.digest, key="digest:sam:1",
                         to="sam@example.com", subject="Your day", template="digest",
                         values={"handoffs": [{"name": "María", "company": "BrightPath",
                                               "url": "u", "why": "w", "since": "s"}],
                                 "tasks": [], "timezone": "UTC", "home": "h"},
                         now=MOMENT, mentions={lead.id or 0})  # fmt: skip
    # When she is erased
    erased = erase(harness.engine, "maria@example.com", outbox)
    # Then no file, no message and no row anywhere names her
    assert erased.removed["files"] >= 1
    for path in outbox.rglob("*"):
        if path.is_file():
            assert b"maria@example.com" not in path.read_bytes(), path
    with session_scope(harness.engine) as session:
        raws = [row.raw for row in session.exec(select(OutboxMessage))]
    assert not any("María" in raw or "maria@example.com" in raw for raw in raws)
    with harness.engine.connect() as connection:
        if harness.engine.dialect.name == "sqlite":
            assert connection.execute(text("PRAGMA secure_delete")).scalar() == 1


# --- 9. what a reading found -------------------------------------------------------------


def test_a_pass_never_puts_back_the_wake_up_the_delivery_wrote(harness: Harness) -> None:
    # Given María's welcome queued and not sent: her enrollment waits for it to leave
    with freeze_time(MOMENT):
        ctx, catalog = ctx_and_catalog(harness, MOMENT)
        run_pass(ctx, catalog, MOMENT)
    [enrollment] = harness.enrollments()
    [welcome] = harness.outbox()
    assert welcome.status == "queued"
    later = MOMENT + timedelta(hours=1)
    with session_scope(harness.engine) as session:  # its daily look is due
        session.execute(text("UPDATE enrollments SET due_at = :t"), {"t": later})

    # When a pass looks at it and, before the pass writes, the email leaves (on
    # PostgreSQL the pass's row lock makes the delivery's write wait for the pass)
    def email_leaves() -> None:
        with session_scope(harness.engine) as other:
            other.execute(text("UPDATE outbox SET status = 'sent', sent_at = :t"), {"t": later})
            email_left(other, enrollment.id, later)

    beside = Beside(harness.engine, email_leaves)
    with freeze_time(later), hooks.at("advance.before_write", beside):
        run_pass(ctx, catalog, later)
    beside.join()
    # Then the case study's wait counts from when the welcome left: it is due two days
    # later, not put off by the pass's daily look
    with freeze_time(later):
        run_pass(ctx, catalog, later)
    [after] = harness.enrollments()
    assert after.base_at == later and after.next_step == "case-study"
    assert after.due_at == later + timedelta(days=2)


def test_an_email_that_leaves_while_its_enrollment_is_paused_moves_the_next_wait(
    harness: Harness,
) -> None:
    # Given María's welcome queued at one moment and sent an hour later
    with freeze_time(MOMENT):
        ctx, catalog = ctx_and_catalog(harness, MOMENT)
        run_pass(ctx, catalog, MOMENT)
    sent_at = MOMENT + timedelta(hours=1)
    with freeze_time(sent_at, real_asyncio=True):

        def pause(*_: Any) -> None:  # paused while the email is on its way
            with session_scope(harness.engine) as session:
                set_paused(session, "welcome", None, pause=True, now=clock.now())

        with hooks.at("delivery.before_send", _once(pause)):
            deliver_now(ctx, catalog)
    assert len(harness.sent()) == 1  # it was on its way: it went
    with session_scope(harness.engine) as session:
        [enrollment] = session.exec(select(Enrollment)).all()
    # Then the next wait counts from when it left, paused or not
    assert enrollment.status == "paused" and enrollment.base_at == sent_at


def test_a_batch_whose_emails_all_wait_does_not_end_the_run(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given batches of 2, and the first two due emails' enrollments paused behind the
    # outbox's back (their emails wait, held)
    monkeypatch.setenv("NURTURE_DAEMON_BATCH_SIZE", "2")
    harness.config = load_settings(harness.project / "nurture.toml")
    harness.add_leads({"email": "bo@example.com", "source": "guide"})
    other = SEQUENCE.replace("name: welcome", "name: other").replace("'guide'", "'other'")
    harness.write_sequence(other, name="other")
    harness.add_leads(*({"email": f"o{i}@example.com", "source": "other"} for i in range(2)))
    with freeze_time(MOMENT, real_asyncio=True):
        ctx, catalog = ctx_and_catalog(harness, MOMENT)
        run_pass(ctx, catalog, MOMENT)
        with session_scope(harness.engine) as session:
            session.execute(text("UPDATE enrollments SET status = 'paused' "
                                 "WHERE sequence = 'welcome'"))  # fmt: skip
            earlier = {"t": MOMENT - timedelta(hours=1)}
            session.execute(text("UPDATE outbox SET next_attempt_at = :t "
                                 "WHERE sequence = 'welcome'"), earlier)  # fmt: skip
        # When one delivery run goes
        report = deliver_now(ctx, catalog)
    # Then it sends the two emails due after them all the same
    assert sorted(str(m["To"]) for m in harness.sent()) == ["o0@example.com", "o1@example.com"]
    assert report.deferred == 2


def test_a_server_that_refuses_our_sender_without_an_enhanced_code_is_a_sending_problem(
    harness: Harness,
) -> None:
    # Given a server that refuses our sender at RCPT in words, with no enhanced code
    harness.smtp.handler.rcpt_replies["maria@example.com"] = "550 Sender verify failed"
    # When María's welcome is sent
    _, delivered = harness.tick(MOMENT)
    # Then it is our problem, not hers: she stays subscribed, the message failed
    assert delivered.refused == 1 and delivered.bounced == 0
    assert harness.lead("maria@example.com").status == "subscribed"
    [row] = harness.outbox()
    assert row.status == "failed" and (row.last_error or "").startswith("sending problem:")


# --- 5. the ledger: a run that stops gives back what it started and did not send -------


class _StopsWhenTheNextIsStarted:
    """The real SMTP transport; the first send waits until the connection's next message
    has been started (it is, while this one is handed over), then the run is stopped."""

    def __init__(self, inner: Any, engine: Engine, stopping: asyncio.Event) -> None:
        self.inner, self.engine, self.stopping = inner, engine, stopping
        self.sends = 0

    async def send(self, message: bytes, sender: str, recipient: str, key: str) -> Any:
        self.sends += 1
        if self.sends == 1:
            while not _sending(self.engine, other_than=recipient):  # noqa: ASYNC110 (a database state)
                await asyncio.sleep(0.01)
            self.stopping.set()
        return await self.inner.send(message, sender, recipient, key)

    async def close(self) -> None:
        await self.inner.close()


def _sending(engine: Engine, other_than: str) -> bool:
    with engine.connect() as connection:
        return bool(connection.execute(text(
            "SELECT count(*) FROM outbox WHERE status = 'sending' AND recipient != :r"
        ), {"r": other_than}).scalar())  # fmt: skip


def _counted(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {key: n for key, n in connection.execute(text("SELECT key, n FROM send_counts"))}


def test_a_run_that_stops_gives_back_the_message_it_started_and_did_not_send(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    one_connection(harness, monkeypatch)
    harness.add_leads({"email": "bo@example.com", "source": "guide"})
    with freeze_time(MOMENT, real_asyncio=True):
        ctx, catalog = ctx_and_catalog(harness, MOMENT)
        run_pass(ctx, catalog, MOMENT)

        # Given one connection whose next message is started while the first is handed
        # over, when the run is stopped at that moment
        async def run() -> DeliveryReport:
            stopping = asyncio.Event()
            inner = open_transport(ctx.config.settings.smtp, ctx.config.outbox_dir)
            transport = _StopsWhenTheNextIsStarted(inner, harness.engine, stopping)
            try:
                return await deliver(ctx, catalog, transport, stopping=stopping)
            finally:
                await transport.close()

        report = asyncio.run(run())
        # Then the first is sent; the second, started and not sent, is queued again, its
        # caps given back, and the next run sends it once
        assert report.sent == 1 and len(harness.sent()) == 1
        waiting = [row for row in harness.outbox() if row.status != "sent"]
        assert [(row.status, row.claim_token, row.attempts) for row in waiting] == [
            ("queued", None, 0)
        ]
        counts = _counted(harness.engine)
        assert sorted(counts.values()) == [0, 1, 1]  # the sender's 1, María's 1, Bo's 0
        deliver_now(ctx, catalog)
    assert len(harness.sent()) == 2
    assert sorted(_counted(harness.engine).values()) == [1, 1, 2]
