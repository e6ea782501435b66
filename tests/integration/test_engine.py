"""The engine end to end in-process: passes, the outbox and a real SMTP server on
loopback, on SQLite and PostgreSQL, with time moved by freezegun."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from freezegun import freeze_time
from sqlmodel import select

from nurture import clock
from nurture.config import load_settings
from nurture.engine.context import Context
from nurture.mail.pacing import DeliveryReport, SendingPause
from nurture.stages.passes import tick
from nurture.store.database import session_scope
from nurture.store.enrollments import DeployedSequence, Enrollment
from nurture.store.events import Event, NewEvent, record_event, record_events
from nurture.store.leads import Lead
from nurture.store.outbox import OutboxMessage
from nurture.store.tasks import Task, complete_task
from tests.enginekit import LA, SEQUENCE, Harness, la


def test_the_window_is_respected_and_the_date_is_the_send_moment(harness: Harness) -> None:
    report, delivered = harness.tick(la(2026, 11, 21, 11, 0))  # Saturday
    assert report.enrolled == 1 and report.emails_queued == 0 and delivered.sent == 0
    assert harness.enrollments()[0].due_at == la(2026, 11, 23, 9, 0)
    harness.tick(la(2026, 11, 23, 8, 59))
    assert harness.sent() == []
    harness.tick(la(2026, 11, 23, 9, 0))
    [message] = harness.sent()
    assert message["To"] == "María <maria@example.com>"
    assert message["Date"].datetime == la(2026, 11, 23, 9, 0)
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    https, mailto = (part.strip() for part in message["List-Unsubscribe"].split(","))
    assert https.startswith("<http://localhost:8080/u/")
    assert mailto.startswith("<mailto:unsubscribe@example.com?subject=")
    assert message["Reply-To"] == "Ana Ruiz <ana.replies@example.com>"
    assert message["From"] == "Ana Ruiz <ana@example.com>"
    assert message["Message-ID"].endswith("@example.com>")
    assert message.get_content_type() == "multipart/alternative"


def test_two_passes_at_the_same_moment_send_nothing_twice(harness: Harness) -> None:
    moment = la(2026, 11, 23, 10, 0)
    harness.tick(moment)
    harness.tick(moment)
    harness.tick(la(2026, 11, 23, 10, 5))
    assert len(harness.sent()) == 1
    assert len(harness.outbox()) == 1


def test_a_4xx_reply_is_retried_and_then_delivered(harness: Harness) -> None:
    harness.smtp.handler.data_replies = ["451 4.3.0 try again later"]
    _, delivered = harness.tick(la(2026, 11, 23, 10, 0))
    assert delivered.retrying == 1 and harness.sent() == []
    [row] = harness.outbox()
    assert row.status == "queued" and row.last_error == "451 4.3.0 try again later"
    assert la(2026, 11, 23, 10, 0, 30) <= row.next_attempt_at <= la(2026, 11, 23, 10, 1)
    _, delivered = harness.tick(la(2026, 11, 23, 10, 2))
    assert delivered.sent == 1
    [message] = harness.sent()
    assert message["Message-ID"] == row.message_id


def test_a_5xx_to_rcpt_bounces_the_lead_out_of_every_sequence(harness: Harness) -> None:
    harness.write_sequence(SEQUENCE.replace("name: welcome", "name: other"), name="other")
    harness.smtp.handler.rcpt_replies["maria@example.com"] = "550 5.1.1 no such user"
    _, delivered = harness.tick(la(2026, 11, 23, 10, 0))
    assert delivered.bounced == 2  # one email from each sequence, in the same batch
    assert harness.lead("maria@example.com").status == "bounced"
    harness.tick(la(2026, 11, 23, 10, 1))
    statuses = {(e.sequence, e.status, e.reason) for e in harness.enrollments()}
    assert statuses == {
        ("welcome", "exited", "lead is bounced"),
        ("other", "exited", "lead is bounced"),
    }
    assert [row.status for row in harness.outbox()] == ["bounced", "bounced"]
    assert harness.sent() == []


def test_a_relay_refusal_is_a_sending_problem_not_a_bounce(harness: Harness) -> None:
    from nurture.reports.status import collect_status

    others = [f"lead{i}@example.com" for i in range(6)]
    harness.add_leads(*({"email": a, "first_name": "Al", "source": "guide"} for a in others))
    everyone = ["maria@example.com", *others]
    for address in everyone:
        harness.smtp.handler.rcpt_replies[address] = "554 5.7.1 <x>: Relay access denied"
    _, delivered = harness.tick(la(2026, 11, 23, 10, 0))
    # The first refusal stops the run: no more than one per connection failed.
    connections = harness.config.settings.smtp.max_connections
    assert 1 <= delivered.refused == delivered.failed <= connections and delivered.bounced == 0
    rows = harness.outbox()
    failed = [r for r in rows if r.status == "failed"]
    assert len(failed) == delivered.refused
    assert sorted({r.status for r in rows}) == ["failed", "queued"]
    for row in failed:
        assert row.last_error == "sending problem: 554 5.7.1 <x>: Relay access denied"
    for address in everyone:
        assert harness.lead(address).status == "subscribed"
    assert {e.status for e in harness.enrollments()} == {"active"}
    with freeze_time(la(2026, 11, 23, 10, 5)), session_scope(harness.engine) as session:
        problem = collect_status(session, clock.now())["sending_problem"]
    assert problem["reply"] == "554 5.7.1 <x>: Relay access denied"
    assert sorted(problem["failed"]) == sorted(r.id for r in failed)
    # The relay is fixed: the waiting ones go; the failed ones wait to be resent by hand.
    harness.smtp.handler.rcpt_replies.clear()
    _, delivered = harness.tick(la(2026, 11, 23, 10, 10))
    assert delivered.sent == len(rows) - len(failed)
    with freeze_time(la(2026, 11, 23, 10, 11)), session_scope(harness.engine) as session:
        assert collect_status(session, clock.now())["sending_problem"] is None


def test_after_a_sending_problem_delivery_pauses_instead_of_failing_every_message(
    harness: Harness,
) -> None:
    others = [f"lead{i}@example.com" for i in range(9)]
    harness.add_leads(*({"email": a, "first_name": "Al", "source": "guide"} for a in others))
    for address in ["maria@example.com", *others]:
        harness.smtp.handler.rcpt_replies[address] = "550 5.7.1 Authentication required"
    ctx = Context.open(harness.engine, harness.config)
    pause = SendingPause()  # one daemon: its delivery runs share it
    moment = la(2026, 11, 23, 10, 0)
    with freeze_time(moment, real_asyncio=True):
        _, _, first = asyncio.run(tick(ctx, clock.now(), pause))
    assert first.refused >= 1
    with freeze_time(moment + timedelta(seconds=5), real_asyncio=True):
        _, _, second = asyncio.run(tick(ctx, clock.now(), pause))
    assert second.refused == second.failed == 0  # paused: nothing more is failed
    assert pause.until is not None and pause.until > moment
    failed = [r for r in harness.outbox() if r.status == "failed"]
    assert len(failed) == first.refused


def test_pausing_holds_queued_and_retrying_emails_and_resuming_releases_them(
    harness: Harness,
) -> None:
    from nurture.store.pausing import set_paused

    harness.smtp.handler.data_replies = ["451 4.3.0 try again later"]
    _, delivered = harness.tick(la(2026, 11, 23, 10, 0))
    assert delivered.retrying == 1  # queued, to be retried
    with freeze_time(la(2026, 11, 23, 10, 1)), session_scope(harness.engine) as session:
        assert set_paused(session, "welcome", None, pause=True, now=clock.now()) == 1
    [row] = harness.outbox()
    assert row.status == "held"
    harness.tick(la(2026, 11, 23, 11, 0))
    harness.tick(la(2026, 11, 24, 11, 0))
    assert harness.sent() == [] and harness.outbox()[0].status == "held"
    with freeze_time(la(2026, 11, 24, 11, 5)), session_scope(harness.engine) as session:
        assert set_paused(session, "welcome", None, pause=False, now=clock.now()) == 1
    assert harness.outbox()[0].status == "queued"
    _, delivered = harness.tick(la(2026, 11, 24, 11, 6))
    assert delivered.sent == 1 and len(harness.sent()) == 1


def test_an_email_queued_before_a_pause_is_held_when_it_comes_due(harness: Harness) -> None:
    # Queued and waiting for a retry; the enrollment is then paused by something that
    # does not touch the outbox (an older nurture, a script).
    harness.smtp.handler.data_replies = ["451 4.3.0 try again later"]
    harness.tick(la(2026, 11, 23, 10, 0))
    assert harness.outbox()[0].status == "queued"
    with session_scope(harness.engine) as session:
        [enrollment] = session.exec(select(Enrollment)).all()
        enrollment.status = "paused"
        session.add(enrollment)
    _, delivered = harness.tick(la(2026, 11, 23, 10, 30))
    assert delivered.sent == 0 and harness.sent() == []
    assert harness.outbox()[0].status == "held"


def test_held_emails_of_a_lead_who_left_meanwhile_are_cancelled_on_resume(
    harness: Harness,
) -> None:
    from nurture.store.pausing import set_paused

    harness.smtp.handler.data_replies = ["451 4.3.0 try again later"]
    harness.tick(la(2026, 11, 23, 10, 0))  # queued, to be retried
    with freeze_time(la(2026, 11, 23, 10, 1)), session_scope(harness.engine) as session:
        set_paused(session, "welcome", None, pause=True, now=clock.now())
        lead = session.exec(select(Lead).where(Lead.email == "maria@example.com")).one()
        record_event(session, lead.id or 0, "unsubscribed", at=clock.now(), source="test")
    with freeze_time(la(2026, 11, 24, 9, 0)), session_scope(harness.engine) as session:
        set_paused(session, "welcome", None, pause=False, now=clock.now())
    harness.tick(la(2026, 11, 24, 9, 1))
    assert harness.sent() == [] and harness.outbox()[0].status == "cancelled"


def test_a_removed_sequence_s_queued_email_keeps_its_window_and_exit_rules(
    harness: Harness,
) -> None:
    harness.add_leads({"email": "ben@example.com", "first_name": "Ben", "source": "guide",
                       "timezone": "America/Los_Angeles"})  # fmt: skip
    harness.smtp.handler.data_replies = ["451 4.3.0 try again later"] * 2
    harness.tick(la(2026, 11, 23, 16, 58))  # both queued, to be retried
    assert [r.status for r in harness.outbox()] == ["queued", "queued"]
    (harness.project / "sequences" / "welcome.yaml").unlink()
    with freeze_time(la(2026, 11, 23, 17, 30)), session_scope(harness.engine) as session:
        ben = session.exec(select(Lead).where(Lead.email == "ben@example.com")).one()
        record_event(session, ben.id or 0, "email_replied", sequence="welcome",
                     step="welcome", at=clock.now(), source="test")  # fmt: skip
    # After hours: nothing goes, and Ben, who replied, is never emailed again.
    _, delivered = harness.tick(la(2026, 11, 23, 21, 0))
    assert harness.sent() == [] and delivered.cancelled == 1
    rows = {r.recipient: r for r in harness.outbox()}
    assert rows["ben@example.com"].status == "cancelled"
    assert rows["maria@example.com"].next_attempt_at == la(2026, 11, 24, 9, 0)
    _, delivered = harness.tick(la(2026, 11, 24, 9, 0))
    assert delivered.sent == 1 and [str(m["To"]) for m in harness.sent()] == [
        "María <maria@example.com>"
    ]


def test_a_deleted_template_holds_only_the_steps_that_use_it(harness: Harness) -> None:
    from nurture.reports.status import collect_status

    harness.tick(la(2026, 11, 23, 10, 0))  # María gets the welcome
    template = harness.project / "templates" / "case-study.html.j2"
    text = template.read_text()
    template.unlink()
    harness.add_leads({"email": "ben@example.com", "first_name": "Ben", "source": "guide",
                       "timezone": "America/Los_Angeles"}, at=la(2026, 11, 25, 9, 0))  # fmt: skip
    harness.tick(la(2026, 11, 25, 10, 30))
    # Ben still gets the welcome; María waits at the case study, active.
    assert [str(m["To"]) for m in harness.sent()] == [
        "María <maria@example.com>",
        "Ben <ben@example.com>",
    ]
    maria = next(
        e for e in harness.enrollments() if e.lead_id == harness.lead("maria@example.com").id
    )
    assert (maria.status, maria.next_step) == ("active", "case-study")
    assert maria.reason == ("held: template 'case-study' is missing (templates/case-study.html.j2)")
    with freeze_time(la(2026, 11, 25, 10, 31)), session_scope(harness.engine) as session:
        [held] = collect_status(session, clock.now())["held"]
    assert (held["sequence"], held["step"], held["enrollments"]) == ("welcome", "case-study", 1)
    template.write_text(text)  # put back: the held step goes at its next look
    harness.tick(la(2026, 11, 25, 10, 50))
    assert len(harness.sent()) == 3 and "maria@example.com" in str(harness.sent()[-1]["To"])
    maria = next(
        e for e in harness.enrollments() if e.lead_id == harness.lead("maria@example.com").id
    )
    assert maria.reason is None and maria.next_step == "call"


NUDGE = """\
name: nudge
audience: "lead.source == 'guide'"
from: "Ana Ruiz <ana@example.com>"
schedule:
  timezone: lead
  days: [mon, tue, wed, thu, fri]
  hours: "09:00-17:00"
steps:
  - id: first
    email: welcome
  - id: second
    wait: 1 hour
    email: case-study
"""


def test_a_wait_counts_from_when_the_email_left_and_completion_waits_for_the_last(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NURTURE_LIMITS_PER_LEAD_DAILY", "1")
    harness.config = load_settings(harness.project / "nurture.toml")
    harness.tick(la(2026, 11, 23, 9, 0))  # the welcome sequence's email: today's one
    harness.write_sequence(NUDGE, name="nudge")
    harness.tick(la(2026, 11, 23, 10, 0))  # nudge's first is capped to tomorrow
    harness.tick(la(2026, 11, 23, 11, 30))  # an hour after it was queued: nothing more
    nudge = [r for r in harness.outbox() if r.sequence == "nudge"]
    assert [(r.step, r.status) for r in nudge] == [("first", "queued")]
    assert nudge[0].next_attempt_at == la(2026, 11, 24, 0, 0)  # her next day
    harness.tick(la(2026, 11, 24, 9, 0))  # it leaves at 09:00
    harness.tick(la(2026, 11, 24, 9, 30))
    assert [r.step for r in harness.outbox() if r.sequence == "nudge"] == ["first"]
    harness.tick(la(2026, 11, 24, 10, 0))  # an hour after it left: the second is queued
    nudge = [r for r in harness.outbox() if r.sequence == "nudge"]
    assert [(r.step, r.status) for r in nudge] == [("first", "sent"), ("second", "queued")]
    assert nudge[1].next_attempt_at == la(2026, 11, 25, 0, 0)  # today's cap is used
    [enrollment] = [e for e in harness.enrollments() if e.sequence == "nudge"]
    assert enrollment.status == "active"  # not complete while its last email waits
    harness.tick(la(2026, 11, 25, 9, 0))
    harness.tick(la(2026, 11, 25, 9, 1))
    [enrollment] = [e for e in harness.enrollments() if e.sequence == "nudge"]
    assert enrollment.status == "completed"
    sent_days = [m["Date"].datetime.astimezone(LA).date().day for m in harness.sent()]
    assert sorted(sent_days) == [23, 24, 25]  # never two on a day


@pytest.mark.parametrize("on_uncertain", ["hold", "resend"])
def test_a_sender_that_raises_stops_the_others_and_gives_every_lease_back(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, on_uncertain: str
) -> None:
    monkeypatch.setenv("NURTURE_DELIVERY_ON_UNCERTAIN", on_uncertain)
    harness.config = load_settings(harness.project / "nurture.toml")
    from nurture.engine.catalog import load_catalog
    from nurture.mail.delivery import deliver
    from nurture.mail.transports import SendResult, SmtpTransport
    from nurture.stages.passes import run_pass

    harness.add_leads({"email": "boom@example.com", "first_name": "Bo", "source": "guide"})
    others = [f"lead{i}@example.com" for i in range(30)]
    harness.add_leads(*({"email": a, "first_name": "Al", "source": "guide"} for a in others))
    in_flight: list[int] = []
    exploded = asyncio.Event()

    class Exploding(SmtpTransport):
        """A real SMTP transport with a bug for one recipient. The others wait until it
        has gone off (at most 30 s): on a busy machine SQLite may let the other senders'
        commits pass the buggy one's again and again, and the run would end before the
        bug shows."""

        async def send(self, message: bytes, sender: str, recipient: str, key: str) -> SendResult:
            in_flight.append(1)
            try:
                if recipient == "boom@example.com":
                    exploded.set()
                    raise RuntimeError("a bug")
                await asyncio.wait_for(exploded.wait(), timeout=30)
                return await super().send(message, sender, recipient, key)
            finally:
                in_flight.pop()

    moment = la(2026, 11, 23, 10, 0)
    with freeze_time(moment, real_asyncio=True):
        ctx = Context.open(harness.engine, harness.config)
        catalog = load_catalog(harness.engine, harness.config.sequences_dir, ctx.templates, moment)
        run_pass(ctx, catalog, moment)

        async def run() -> DeliveryReport:
            transport = Exploding(harness.config.settings.smtp)
            try:
                return await deliver(ctx, catalog, transport)
            finally:
                await transport.close()

        report = asyncio.run(run())
    statuses = [row.status for row in harness.outbox()]
    assert "leased" not in statuses and "sending" not in statuses  # every lease given back
    # The one it raised on is held, even with on_uncertain = "resend": the same bug would
    # send it again and again.
    assert statuses.count("uncertain") == 1 and report.uncertain == 1
    assert report.errors == 1 and statuses.count("queued") >= 1  # the run stopped
    assert len(harness.sent()) == report.sent == statuses.count("sent")
    assert in_flight == []


def test_held_emails_are_released_or_cancelled_when_their_enrollment_moved_on(
    harness: Harness,
) -> None:
    from nurture.store.outbox import sweep_held

    harness.add_leads({"email": "ben@example.com", "first_name": "Ben", "source": "guide"})
    harness.smtp.handler.data_replies = ["451 4.3.0 try again later"] * 2
    harness.tick(la(2026, 11, 23, 10, 0))
    with session_scope(harness.engine) as session:  # both held, as by a pause...
        for row in session.exec(select(OutboxMessage)):
            row.status = "held"
            session.add(row)
        # ...then one resumed behind a delivery run's back, the other ended.
        ben, maria = sorted(session.exec(select(Enrollment)).all(), key=lambda e: e.lead_id)[::-1]
        maria.status = "exited"
        session.add(maria)
    with session_scope(harness.engine) as session:
        sweep_held(session, la(2026, 11, 23, 11, 0))
    rows = {r.enrollment_id: r for r in harness.outbox()}
    assert rows[ben.id].status == "queued" and rows[maria.id].status == "cancelled"


def test_cancelling_a_failed_email_by_hand_does_not_restart_a_wait(harness: Harness) -> None:
    from nurture.store.outbox import set_status

    harness.smtp.handler.data_replies = ["554 5.6.0 message content rejected"]
    harness.tick(la(2026, 11, 23, 10, 0))
    [row] = harness.outbox()
    assert row.status == "failed"
    [before] = harness.enrollments()
    with freeze_time(la(2026, 11, 24, 10, 0)), session_scope(harness.engine) as session:
        assert set_status(session, [row.id or 0], resend=False, now=clock.now()) == [
            (row.id, "cancelled")
        ]
    [after] = harness.enrollments()
    assert after.base_at == before.base_at  # it had already counted as gone


def test_a_refused_connection_loses_nothing_and_the_window_holds_at_send_time(
    harness: Harness,
) -> None:
    harness.smtp.stop()
    _, delivered = harness.tick(la(2026, 11, 23, 16, 59))
    assert delivered.retrying == 1
    harness.smtp.start()
    # The server is back after hours: the email waits for the next morning.
    _, delivered = harness.tick(la(2026, 11, 23, 17, 30))
    assert delivered.deferred == 1 and harness.sent() == []
    [row] = harness.outbox()
    assert row.next_attempt_at == la(2026, 11, 24, 9, 0)
    _, delivered = harness.tick(la(2026, 11, 24, 9, 0))
    assert delivered.sent == 1 and len(harness.sent()) == 1


def test_daily_caps_defer_and_later_deliver(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NURTURE_LIMITS_PER_SENDER_DAILY", "2")
    harness.config = load_settings(harness.project / "nurture.toml")
    harness.add_leads(
        *(
            {"email": f"lead{i}@example.com", "source": "guide", "timezone": "America/Los_Angeles"}
            for i in range(2)
        )
    )
    _, delivered = harness.tick(la(2026, 11, 23, 10, 0))
    assert delivered.sent == 2 and delivered.deferred == 1
    held = [row for row in harness.outbox() if row.status == "queued"]
    # The sender's day is the project's (America/New_York): it waits for its midnight.
    new_york_midnight = datetime(2026, 11, 24, tzinfo=ZoneInfo("America/New_York"))
    assert [row.next_attempt_at for row in held] == [new_york_midnight]
    assert "reached its cap of 2 emails today" in (held[0].last_error or "")
    _, delivered = harness.tick(la(2026, 11, 24, 9, 0))
    assert delivered.sent == 1
    assert len(harness.sent()) == 3


def test_per_lead_cap_holds_a_second_sequence_until_the_next_day(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NURTURE_LIMITS_PER_LEAD_DAILY", "1")
    harness.config = load_settings(harness.project / "nurture.toml")
    harness.write_sequence(SEQUENCE.replace("name: welcome", "name: other"), name="other")
    _, delivered = harness.tick(la(2026, 11, 23, 10, 0))
    assert delivered.sent == 1 and delivered.deferred == 1
    harness.tick(la(2026, 11, 23, 16, 0))
    assert len(harness.sent()) == 1
    _, delivered = harness.tick(la(2026, 11, 24, 9, 0))
    assert delivered.sent == 1 and len(harness.sent()) == 2


def test_a_task_done_lets_the_sequence_go_on_and_conditions_see_it(harness: Harness) -> None:
    harness.tick(la(2026, 11, 23, 10, 0))  # welcome, Monday
    harness.tick(la(2026, 11, 25, 10, 0))  # case-study, Wednesday
    report, _ = harness.tick(la(2026, 11, 26, 10, 0))  # call task, Thursday
    assert report.tasks_created == 1
    with session_scope(harness.engine) as session:
        task = session.exec(select(Task)).one()
        assert task.assignee == "sam@example.com" and task.note == "Call María"
    with freeze_time(la(2026, 11, 26, 15, 0)), session_scope(harness.engine) as session:
        complete_task(session, task.id or 0, "booked a demo")
    report, _ = harness.tick(la(2026, 11, 27, 15, 0))  # breakup due a day after the call
    assert report.skipped == 1 and report.completed == 1
    assert [m["Subject"] is not None for m in harness.sent()] == [True, True]


def test_a_task_not_done_times_out_and_the_sequence_goes_on(harness: Harness) -> None:
    harness.tick(la(2026, 11, 23, 10, 0))
    harness.tick(la(2026, 11, 25, 10, 0))
    harness.tick(la(2026, 11, 26, 10, 0))
    harness.tick(la(2026, 11, 28, 9, 59))  # before the timeout: nothing
    assert len(harness.sent()) == 2
    report, delivered = harness.tick(la(2026, 11, 30, 10, 0))  # timeout Sat 10:00, +1 day
    assert report.emails_queued == 1 and delivered.sent == 1
    with session_scope(harness.engine) as session:
        assert session.exec(select(Task)).one().status == "expired"


def test_a_live_edit_that_removes_a_step_moves_waiting_leads_on(harness: Harness) -> None:
    harness.tick(la(2026, 11, 23, 10, 0))
    harness.write_sequence(
        SEQUENCE.replace("  - id: case-study\n    wait: 2 days\n    email: case-study\n", "")
    )
    report, _ = harness.tick(la(2026, 11, 23, 10, 1))
    [enrollment] = harness.enrollments()
    assert enrollment.due_at == la(2026, 11, 24, 10, 0)  # the call: 1 business day on
    report, _ = harness.tick(la(2026, 11, 24, 10, 0))
    assert report.tasks_created == 1 and report.emails_queued == 0
    assert [row.step for row in harness.outbox()] == ["welcome"]


def test_renaming_every_step_keeps_a_waiting_lead_where_it_is(harness: Harness) -> None:
    harness.tick(la(2026, 11, 23, 10, 0))  # welcome sent; waits at case-study
    renamed = SEQUENCE
    for number, step_id in enumerate(("welcome", "case-study", "call", "breakup"), 1):
        renamed = renamed.replace(f"  - id: {step_id}\n", f"  - id: 0{number}-{step_id}\n")
    harness.write_sequence(renamed)
    harness.tick(la(2026, 11, 23, 10, 1))
    [enrollment] = harness.enrollments()
    assert enrollment.next_step == "02-case-study" and enrollment.done_steps == ["01-welcome"]
    harness.tick(la(2026, 11, 25, 10, 30))
    # The welcome sent before the rename is under its new id too.
    assert [row.step for row in harness.outbox()] == ["01-welcome", "02-case-study"]


def test_check_says_what_leads_in_flight_get_after_a_reorder(harness: Harness) -> None:
    from nurture.engine.catalog import edit_impact
    from nurture.language.sequence_files import load_sequence

    harness.tick(la(2026, 11, 23, 10, 0))
    harness.tick(la(2026, 11, 25, 10, 30))  # case-study sent; waits at the call
    call = "  - id: call\n    wait: 1 business day\n    task: call\n    timeout: 2 days\n"
    call += '    note: "Call {{ lead.first_name }}"\n'
    reordered = SEQUENCE.replace(call, "") + call.replace("1 business day", "1 day")
    harness.write_sequence(reordered)
    sequence, problems = load_sequence(harness.project / "sequences" / "welcome.yaml",
                                       lambda name: True)  # fmt: skip
    assert problems == [] and sequence is not None
    with session_scope(harness.engine) as session:
        lines = [str(i) for i in edit_impact(session, [sequence])]
    assert any(
        line.endswith(
            "1 lead waiting at 'call' will get 'call', then complete; 'breakup' is now "
            "before 'call' and will be skipped for them"
        )
        for line in lines
    ), lines


def _renamed_call_below_a_new_email() -> str:
    """SEQUENCE with an email inserted above the call step and the call renamed: every
    line of the call (its note's too) moves down."""
    inserted = "  - id: pricing\n    wait: 1 day\n    email: welcome\n"
    return SEQUENCE.replace("  - id: call\n", inserted + "  - id: 03-call\n")


def test_a_renamed_task_below_an_inserted_email_keeps_its_leads(harness: Harness) -> None:
    from nurture.engine.catalog import edit_impact
    from nurture.language.sequence_files import load_sequence

    harness.tick(la(2026, 11, 23, 10, 0))
    harness.tick(la(2026, 11, 25, 10, 30))  # case-study sent; waits at the call
    harness.write_sequence(_renamed_call_below_a_new_email())
    sequence, problems = load_sequence(harness.project / "sequences" / "welcome.yaml",
                                       lambda name: True)  # fmt: skip
    assert problems == [] and sequence is not None
    with session_scope(harness.engine) as session:
        lines = [str(i) for i in edit_impact(session, [sequence])]
    assert any("renamed: 'call' to '03-call'" in line for line in lines), lines
    assert any(
        line.endswith(
            "1 lead waiting at 'call' will get '03-call', then 'breakup', then complete; "
            "'pricing' is now before 'call' and will be skipped for them"
        )
        for line in lines
    ), lines
    harness.tick(la(2026, 11, 25, 10, 31))  # deployed
    [enrollment] = harness.enrollments()
    assert enrollment.next_step == "03-call"
    report, _ = harness.tick(la(2026, 11, 26, 10, 30))  # the call, as before; no new email
    assert report.tasks_created == 1 and report.emails_queued == 0
    with session_scope(harness.engine) as session:
        assert session.exec(select(Task)).one().step == "03-call"
    assert [row.step for row in harness.outbox()] == ["welcome", "case-study"]


def test_a_version_deployed_with_digests_that_counted_lines_is_compared_by_the_new_rule(
    harness: Harness,
) -> None:
    import dataclasses
    import hashlib

    from nurture.engine.catalog import _rules_of
    from nurture.store.enrollments import DeployedSequence

    def counting_lines(step: Any) -> str:  # the digest as nurture computed it before
        plain = dataclasses.replace(step, id="", line=0, condition_line=0)
        text = repr(plain) + (step.condition.source if step.condition else "")
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    harness.tick(la(2026, 11, 23, 10, 0))
    harness.tick(la(2026, 11, 25, 10, 30))  # waits at the call
    with session_scope(harness.engine) as session:
        row = session.exec(select(DeployedSequence)).one()
        deployed = _rules_of(row.path, row.source)
        assert deployed is not None
        row.steps = [[step.id, counting_lines(step)] for step in deployed.steps]
        session.add(row)
    harness.write_sequence(_renamed_call_below_a_new_email())
    harness.tick(la(2026, 11, 25, 10, 31))
    assert harness.enrollments()[0].next_step == "03-call"


CLICKED = """\
name: welcome
audience: "lead.source == 'guide'"
from: "Ana Ruiz <ana@example.com>"
steps:
  - id: hello
    email: welcome
  - id: later
    wait: 2 days
    if: "not clicked('hello')"
    email: case-study
"""


def test_a_renamed_email_keeps_its_clicks_before_and_after_the_rename(harness: Harness) -> None:
    import httpx

    from nurture.web.server import create_app

    harness.write_sequence(CLICKED)
    harness.add_leads(*({"email": f"{name}@example.com", "first_name": name.title(),
                         "source": "guide"} for name in ("ben", "cleo")))  # fmt: skip
    _, delivered = harness.tick(la(2026, 11, 23, 10, 0))
    assert delivered.sent == 3
    clicks = {}
    for message in harness.sent():
        html = message.get_body(("html",)).get_content()
        url = re.search(r'href="(http://localhost:8080/c/[^"]+)"', html).group(1)  # type: ignore[union-attr]
        clicks[message["To"].addresses[0].addr_spec] = url.removeprefix("http://localhost:8080")
    app = create_app(harness.config, harness.engine)
    browser = {"User-Agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) Version/17.5"}

    async def follow(path: str) -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return (await http.get(path, headers=browser)).status_code

    def click(email: str, moment: datetime) -> None:  # the tracking link, at *moment*
        with freeze_time(moment, real_asyncio=True):
            assert asyncio.run(follow(clicks[email])) == 302

    click("ben@example.com", la(2026, 11, 23, 11, 0))  # before the rename
    harness.write_sequence(CLICKED.replace("hello", "01-hello"))
    harness.tick(la(2026, 11, 23, 12, 0))  # deployed
    click("maria@example.com", la(2026, 11, 23, 13, 0))  # after it, in an email sent before
    report, delivered = harness.tick(la(2026, 11, 25, 10, 0))
    later = [row.recipient for row in harness.outbox() if row.step == "later"]
    assert later == ["cleo@example.com"]  # only Cleo, who did not click
    assert report.skipped == 2 and delivered.sent == 1
    with session_scope(harness.engine) as session:
        steps = {(e.type, e.step) for e in session.exec(select(Event))}
    assert steps == {("email_sent", "01-hello"), ("email_clicked", "01-hello"),
                     ("email_sent", "later")}  # fmt: skip
    assert {row.step for row in harness.outbox()} == {"01-hello", "later"}


CALLED = """\
name: welcome
audience: "lead.source == 'guide'"
from: "Ana Ruiz <ana@example.com>"
steps:
  - id: call
    task: call
    outcomes: [qualified, not_now]
    note: "Call {{ lead.first_name }}"
  - id: breakup
    wait: 1 day
    if: "outcome('call') != 'qualified'"
    email: breakup-short
"""


def test_a_task_done_after_its_step_was_renamed_counts_under_the_new_id(
    harness: Harness,
) -> None:
    harness.write_sequence(CALLED)
    report, _ = harness.tick(la(2026, 11, 23, 10, 0))
    assert report.tasks_created == 1
    harness.write_sequence(CALLED.replace("call'", "01-call'").replace("id: call", "id: 01-call"))
    harness.tick(la(2026, 11, 23, 11, 0))  # deployed
    with freeze_time(la(2026, 11, 23, 12, 0)), session_scope(harness.engine) as session:
        task = session.exec(select(Task)).one()
        complete_task(session, task.id or 0, "qualified")
    report, delivered = harness.tick(la(2026, 11, 24, 12, 0))
    assert delivered.sent == 0 and report.skipped == 1  # qualified: no breakup email
    assert harness.enrollments()[0].status == "completed"
    assert task.step == "01-call"


FADING = """\
name: fading
audience: "lead.source == 'guide'"
from: "Ana Ruiz <ana@example.com>"
exit_when: ["engagement < {threshold}"]
steps:
  - id: hello
    email: welcome
  - id: later
    wait: 3 days
    email: case-study
  - id: last
    wait: 7 days
    email: breakup-short
"""
START = la(2026, 11, 23, 10, 0)


@pytest.mark.parametrize(
    ("threshold", "emails", "exit_before", "exit_at"),
    [
        # Below 14 after 2.7 days: the daemon sees it when `later` is due, and exits then.
        (14, ["hello"], "later", START + timedelta(days=3)),
        # Below 10 after 9.5 days, which is also when María cools from warm to cold: the
        # stage change wakes the enrollment, and it exits then, before `last` is due.
        (10, ["hello", "later"], "last", None),
    ],
)
def test_a_time_driven_exit_happens_as_simulate_shows(
    harness: Harness, threshold: int, emails: list[str], exit_before: str, exit_at: datetime | None
) -> None:
    from nurture.engine.simulate import simulate
    from nurture.language.expressions import LeadView
    from nurture.language.scoring import load_scoring, scores_now
    from nurture.language.sequence_files import load_sequence

    # María earned 16 points just before; they decay by half every 14 days (scoring.yaml).
    (harness.project / "sequences" / "welcome.yaml").unlink()
    with freeze_time(START - timedelta(hours=2)), session_scope(harness.engine) as session:
        lead_id = session.exec(select(Lead)).one().id or 0
        record_event(session, lead_id, "form_submitted", source="test")
        for _ in range(3):
            record_event(session, lead_id, "page_visited", source="test")
    harness.tick(START - timedelta(hours=1))  # scored (warm); no sequence yet
    harness.write_sequence(FADING.format(threshold=threshold), name="fading")

    # What `nurture simulate fading --lead maria@example.com --start ...` shows.
    rules = load_scoring(harness.config.scoring_file)[0]
    sequence, problems = load_sequence(harness.project / "sequences" / "fading.yaml",
                                       lambda name: True)  # fmt: skip
    assert rules is not None and problems == [] and sequence is not None
    lead = harness.lead("maria@example.com")
    timeline = simulate(
        sequence, LeadView.of(lead), start=START, days=30, assumptions=[],
        default_timezone=harness.config.settings.project.default_timezone, rules=rules,
        scores=scores_now(rules, lead, START), approachable=True,
    )  # fmt: skip
    predicted = [(e.step, e.moment) for e in timeline if e.kind == "email"]
    [ending] = [e for e in timeline if e.kind in ("exited", "completed")]

    # What the daemon does: a pass at each moment simulate names, and every six hours.
    moments = {e.moment for e in timeline}
    moment = START
    while moment <= START + timedelta(days=30):
        moments.add(moment)
        moment += timedelta(hours=6)
    for moment in sorted(moments):
        harness.tick(moment)
    rows = {row.message_id: row for row in harness.outbox()}
    delivered = [(rows[m["Message-ID"]].step, m["Date"].datetime) for m in harness.sent()]
    assert delivered == predicted
    assert [step for step, _ in delivered] == emails
    [enrollment] = harness.enrollments()
    daemon = (enrollment.status, enrollment.reason, enrollment.ended_at)
    assert daemon == (ending.kind, ending.reason, ending.moment)
    expected = ("exited", exit_before, f"exits before {exit_before}")
    assert (ending.kind, ending.step, ending.detail) == expected
    if exit_at is not None:
        assert ending.moment == exit_at
    else:
        assert START + timedelta(days=9) < ending.moment < START + timedelta(days=10)


def test_an_invalid_live_edit_keeps_the_last_good_version_running(harness: Harness) -> None:
    harness.tick(la(2026, 11, 23, 10, 0))
    harness.write_sequence(SEQUENCE.replace("email: case-study", "email: no-such-template"))
    with freeze_time(la(2026, 11, 25, 10, 0), real_asyncio=True):
        ctx = Context.open(harness.engine, harness.config)
        catalog, _, delivered = asyncio.run(tick(ctx, clock.now()))
    assert catalog.kept == ["welcome"]
    assert any("no-such-template" in str(p) for p in catalog.problems)
    assert delivered.sent == 1
    assert [row.template for row in harness.outbox()] == ["welcome", "case-study"]


REENGAGE = """\
name: reengage
audience: "lead.stage == 'cold' and lead.source == 'recycled'"
from: "Ana Ruiz <ana@example.com>"
reenroll: true
exit_when: [replied, hot]
steps:
  - id: checkin
    email: reengage-checkin
  - id: nudge
    wait: 1 day
    notify: "{{ lead.name }} got the check-in: worth a call?"
"""


def test_notify_emails_the_owner_and_reenroll_starts_a_new_cycle_after_a_change(
    harness: Harness,
) -> None:
    harness.write_sequence(REENGAGE, name="reengage")
    harness.add_leads(
        {
            "email": "ben@example.com",
            "first_name": "Ben",
            "source": "recycled",
            "owner": "lee@example.com",
            "timezone": "America/Denver",
        }
    )
    harness.tick(la(2026, 11, 23, 10, 0))
    report, _ = harness.tick(la(2026, 11, 24, 10, 0))
    assert report.notifications == 1 and report.completed == 1
    note = next(m for m in harness.sent() if m["To"] == "lee@example.com")
    assert note["Subject"] == "[nurture] Ben: reengage"
    assert "Ben got the check-in: worth a call?" in note.get_content()
    assert "List-Unsubscribe" not in note
    # Nothing changed: completed stays completed.
    report, _ = harness.tick(la(2026, 11, 25, 10, 0))
    assert report.enrolled == 0
    # Sales sends the lead back (its record changes): a second cycle begins.
    harness.add_leads(
        {"email": "ben@example.com", "title": "Head of Sales"}, at=la(2026, 11, 26, 9, 0)
    )
    report, _ = harness.tick(la(2026, 11, 26, 10, 0))
    assert report.enrolled == 1
    cycles = [(e.cycle, e.status) for e in harness.enrollments() if e.sequence == "reengage"]
    assert cycles == [(1, "completed"), (2, "active")]


def test_a_lead_made_hot_or_unsubscribed_by_an_import_leaves_at_the_next_pass(
    harness: Harness,
) -> None:
    harness.add_leads(
        {"email": "tom@example.com", "source": "guide", "timezone": "America/Los_Angeles"}
    )
    harness.write_sequence(
        SEQUENCE.replace("exit_when: [replied, unsubscribed, bounced]", "exit_when: [replied, hot]")
    )
    harness.smtp.stop()  # the welcome emails stay queued
    harness.tick(la(2026, 11, 23, 10, 0))
    harness.add_leads(
        {"email": "maria@example.com", "stage": "hot"},
        {"email": "tom@example.com", "status": "unsubscribed"},
        at=la(2026, 11, 23, 10, 30),
    )
    harness.smtp.start()
    report, delivered = harness.tick(la(2026, 11, 23, 11, 0))
    assert report.exited == 2
    reasons = {e.reason for e in harness.enrollments()}
    assert reasons == {"lead is hot", "lead is unsubscribed"}
    # Neither queued welcome goes out: the lead left, or opted out.
    assert delivered.cancelled == 2 and harness.sent() == []


def test_a_reply_to_an_earlier_sequence_does_not_end_a_new_one(harness: Harness) -> None:
    with freeze_time(la(2026, 11, 1, 10, 0)), session_scope(harness.engine) as session:
        lead = session.exec(select(Lead)).one()
        record_event(
            session,
            lead.id or 0,
            "email_replied",
            sequence="welcome",
            step="welcome",
            source="imap",
            source_id="<old@example.com>",
        )
    report, delivered = harness.tick(la(2026, 11, 23, 10, 0))
    assert report.exited == 0 and delivered.sent == 1
    # A reply now, during this enrollment, ends it.
    with freeze_time(la(2026, 11, 23, 11, 0)), session_scope(harness.engine) as session:
        record_event(
            session,
            lead.id or 0,
            "email_replied",
            sequence="welcome",
            step="welcome",
            source="imap",
            source_id="<new@example.com>",
        )
    report, _ = harness.tick(la(2026, 11, 23, 11, 1))
    assert report.exited == 1


def _abandon_a_send(harness: Harness, moment: datetime, started: bool = True) -> OutboxMessage:
    """A welcome email claimed by a delivery loop that then died (its lease ran out),
    after it began handing the email to the server (*started*) or before."""
    from nurture.engine.catalog import load_catalog
    from nurture.mail.claim import caps_for, claim
    from nurture.mail.pacing import DeliveryReport
    from nurture.stages.passes import run_pass
    from nurture.store.sending import Started, start

    with freeze_time(moment):
        ctx = Context.open(harness.engine, harness.config)
        catalog = load_catalog(harness.engine, harness.config.sequences_dir, ctx.templates, moment)
        run_pass(ctx, catalog, moment)
        [claimed] = claim(ctx, catalog, moment, DeliveryReport()).claimed
        if started:
            caps = caps_for(claimed, moment, harness.config.settings.limits, ctx.default_timezone)
            with session_scope(harness.engine) as session:
                assert start(session, claimed, moment, caps) == (Started.go, "")
    [row] = harness.outbox()
    assert row.id == claimed.id and row.status == ("sending" if started else "leased")
    return row


def test_a_send_cut_off_mid_way_is_held_not_sent_twice(harness: Harness) -> None:
    row = _abandon_a_send(harness, la(2026, 11, 23, 10, 0))
    harness.tick(la(2026, 11, 23, 10, 0, 30))  # the lease still runs: nothing happens
    assert harness.outbox()[0].status == "sending"
    harness.tick(la(2026, 11, 23, 10, 30))
    [held] = harness.outbox()
    assert held.status == "uncertain" and f"outbox resend {row.id}" in (held.last_error or "")
    harness.tick(la(2026, 11, 23, 11, 0))
    assert harness.sent() == []
    with freeze_time(la(2026, 11, 23, 11, 1)), session_scope(harness.engine) as session:
        from nurture.store.outbox import set_status

        assert set_status(session, [row.id or 0], resend=True, now=clock.now()) == [
            (row.id, "queued again")
        ]
    harness.tick(la(2026, 11, 23, 11, 2))
    [message] = harness.sent()
    assert message["Message-ID"] == row.message_id


def test_an_uncertain_send_counts_toward_the_lead_s_daily_cap(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NURTURE_LIMITS_PER_LEAD_DAILY", "1")
    harness.config = load_settings(harness.project / "nurture.toml")
    _abandon_a_send(harness, la(2026, 11, 23, 10, 0))
    harness.tick(la(2026, 11, 23, 10, 30))
    assert harness.outbox()[0].status == "uncertain"  # it may have reached her today
    harness.write_sequence(SEQUENCE.replace("name: welcome", "name: other"), name="other")
    _, delivered = harness.tick(la(2026, 11, 23, 11, 0))
    assert delivered.sent == 0 and delivered.deferred == 1 and harness.sent() == []
    _, delivered = harness.tick(la(2026, 11, 24, 9, 0))
    assert delivered.sent == 1


def test_on_uncertain_resend_sends_again_with_the_same_message_id(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NURTURE_DELIVERY_ON_UNCERTAIN", "resend")
    harness.config = load_settings(harness.project / "nurture.toml")
    row = _abandon_a_send(harness, la(2026, 11, 23, 10, 0))
    harness.tick(la(2026, 11, 23, 10, 30))
    [message] = harness.sent()
    assert message["Message-ID"] == row.message_id


def test_a_claimed_email_not_yet_started_is_simply_sent_later(harness: Harness) -> None:
    row = _abandon_a_send(harness, la(2026, 11, 23, 10, 0), started=False)
    harness.tick(la(2026, 11, 23, 10, 30))
    [message] = harness.sent()
    assert message["Message-ID"] == row.message_id
    assert harness.outbox()[0].status == "sent"


def test_a_write_that_fails_fails_only_its_enrollment(harness: Harness) -> None:
    # Given two enrolled leads, one of whose welcome emails cannot be written (an outbox
    # row already holds its idempotency key)
    harness.add_leads({"email": "li@example.com", "source": "guide", "timezone": "UTC"})
    harness.tick(la(2026, 11, 21, 11, 0))  # Saturday: both enrolled, due Monday
    maria, li = harness.enrollments()
    with session_scope(harness.engine) as session:
        session.add(
            OutboxMessage(
                idempotency_key=f"{li.id}:welcome", message_id="<x@example.com>",
                lead_id=li.lead_id, sequence="welcome", step="welcome",
                sender="ana@example.com", recipient="li@example.com", timezone="UTC",
                raw="", status="cancelled",
            )
        )  # fmt: skip

    # When the pass writes the batch holding both
    report, delivered = harness.tick(la(2026, 11, 23, 10, 0))

    # Then the batch is done again one enrollment at a time: Maria gets her email, and
    # only Li's enrollment fails, with the reason
    assert report.emails_queued == 1 and report.failed == 1 and delivered.sent == 1
    [message] = harness.sent()
    assert message["To"] == "María <maria@example.com>"
    maria, li = harness.enrollments()
    assert maria.status == "active" and maria.next_step == "case-study"
    assert li.status == "failed" and "IntegrityError" in (li.reason or "")


def test_a_rehearsal_ahead_in_time_never_hides_later_leads(harness: Harness) -> None:
    # A pass pinned a month ahead (tick --now, as a rehearsal does) moves the marks there;
    harness.tick(la(2026, 12, 23, 10, 0))
    assert len(harness.enrollments()) == 1
    # leads arriving later at the real time are still enrolled, and their fit computed,
    # by the real-time passes after it.
    harness.add_leads(
        {"email": "tom@example.com", "source": "guide", "timezone": "America/Los_Angeles",
         "title": "VP Sales"},
        at=la(2026, 11, 23, 9, 0),
    )  # fmt: skip
    harness.tick(la(2026, 11, 23, 10, 0))
    enrolled = {e.lead_id for e in harness.enrollments()}
    assert harness.lead("tom@example.com").id in enrolled
    harness.add_leads(
        {"email": "ann@example.com", "source": "guide", "timezone": "America/Los_Angeles"},
        at=la(2026, 11, 24, 9, 0),
    )
    harness.tick(la(2026, 11, 24, 10, 0))
    assert len(harness.enrollments()) == 3


def test_leads_written_at_the_real_time_between_two_rehearsal_passes_are_enrolled(
    harness: Harness,
) -> None:
    # The real time is 23 November; two passes are pinned a month ahead (tick --now),
    # and a lead is imported at the real time between them.
    real = la(2026, 11, 23, 9, 0)
    ahead = la(2026, 12, 23, 10, 0)
    with freeze_time(real, real_asyncio=True), clock.pinned(ahead):
        ctx = Context.open(harness.engine, harness.config)
        asyncio.run(tick(ctx, clock.now()))
    harness.add_leads(
        {"email": "tom@example.com", "source": "guide", "timezone": "America/Los_Angeles",
         "title": "CTO"},
        at=real + timedelta(minutes=5),
    )  # fmt: skip
    with (
        freeze_time(real + timedelta(minutes=10), real_asyncio=True),
        clock.pinned(ahead + timedelta(days=1)),
    ):
        ctx = Context.open(harness.engine, harness.config)
        asyncio.run(tick(ctx, clock.now()))
    tom = harness.lead("tom@example.com")
    assert tom.id in {e.lead_id for e in harness.enrollments()}
    # Its fit was computed by the same pass (the example fit rule: a decision-maker).
    assert tom.fit == 20


def test_starttls_true_with_a_server_that_does_not_offer_it_is_a_sending_problem(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nurture.reports.status import collect_status

    monkeypatch.setenv("NURTURE_SMTP_STARTTLS", "true")
    harness.config = load_settings(harness.project / "nurture.toml")
    _, delivered = harness.tick(la(2026, 11, 23, 10, 0))
    assert delivered.sent == 0 and delivered.refused == 1
    assert harness.sent() == []  # nothing went in the clear
    [row] = harness.outbox()
    assert row.status == "failed" and (row.last_error or "").startswith(
        "sending problem: the mail server does not offer STARTTLS")  # fmt: skip
    with freeze_time(la(2026, 11, 23, 10, 5)), session_scope(harness.engine) as session:
        problem = collect_status(session, clock.now())["sending_problem"]
    assert "does not offer STARTTLS" in problem["reply"] and problem["failed"] == [row.id]
    assert harness.lead("maria@example.com").status == "subscribed"


QUIET = """\
name: quiet
audience: "lead.source == 'guide'"
from: "Ana Ruiz <ana@example.com>"
steps:
  - id: hello
    email: welcome
  - id: later
    wait: 30 days
    email: case-study
"""
#: Leaves once engagement is high: scores any event may move.
KEEN = QUIET.replace("name: quiet", "name: keen") + 'exit_when: ["engagement > 500"]\n'


def test_an_event_wakes_only_the_enrollments_it_can_move(harness: Harness) -> None:
    # Given María in three sequences, each waiting days for its next step: "welcome"
    # (exit_when: replied, unsubscribed, bounced; a call task), "quiet" (no exit rule,
    # no task) and "keen" (an exit expression on her engagement)
    harness.write_sequence(QUIET, name="quiet")
    harness.write_sequence(KEEN, name="keen")
    harness.tick(la(2026, 11, 23, 10, 0))  # the first emails go
    harness.tick(la(2026, 11, 23, 10, 5))  # and each enrollment waits for its next step
    waiting = {e.sequence: e.due_at for e in harness.enrollments()}
    assert set(waiting) == {"welcome", "quiet", "keen"}
    assert all(due is not None and due > la(2026, 11, 24) for due in waiting.values()), waiting
    lead_id = harness.lead("maria@example.com").id
    assert lead_id is not None

    def record(*types: str, at: datetime) -> dict[str, datetime | None]:
        with session_scope(harness.engine) as session:
            if len(types) == 1:
                record_event(session, lead_id, types[0], at=at, source="api")
            else:
                record_events(session, [NewEvent(lead_id, t, at, source="api") for t in types])
        return {e.sequence: e.due_at for e in harness.enrollments()}

    def settled(moment: datetime) -> None:  # a pass places the woken enrollments again
        harness.tick(moment)
        assert {e.sequence: e.due_at for e in harness.enrollments()} == waiting

    # When she visits a page: only the sequence whose exit reads her engagement wakes
    visited = la(2026, 11, 23, 11, 0)
    assert record("page_visited", at=visited) == {**waiting, "keen": visited}
    settled(la(2026, 11, 23, 11, 1))
    # And a task's completion wakes the sequence with a task step (it may wait for it)
    done = la(2026, 11, 23, 11, 30)
    assert record("call_completed", at=done) == {**waiting, "keen": done, "welcome": done}
    settled(la(2026, 11, 23, 11, 31))
    # And a batch with a reply and a visit wakes "welcome" by the reply, never "quiet"
    replied = la(2026, 11, 23, 12, 0)
    after = record("page_visited", "email_replied", at=replied)
    assert after == {**waiting, "keen": replied, "welcome": replied}
    # And the next pass ends "welcome" by its rule at once; "quiet" waits for its step
    harness.tick(la(2026, 11, 23, 12, 1))
    by_sequence = {e.sequence: e for e in harness.enrollments()}
    assert by_sequence["welcome"].status == "exited"
    assert by_sequence["quiet"].status == "active"
    assert by_sequence["quiet"].due_at == waiting["quiet"]
    # And an opt-out, a change of the lead, wakes every sequence
    unsubscribed = la(2026, 11, 23, 13, 0)
    after = record("unsubscribed", at=unsubscribed)
    assert after["quiet"] == after["keen"] == unsubscribed


def test_a_sequence_deployed_before_its_wake_types_were_kept_wakes_on_any_event(
    harness: Harness,
) -> None:
    # Given "quiet" deployed by an older nurture (no wakes_on kept), María waiting in it
    harness.write_sequence(QUIET, name="quiet")
    harness.tick(la(2026, 11, 23, 10, 0))
    harness.tick(la(2026, 11, 23, 10, 5))
    with session_scope(harness.engine) as session:
        row = session.get(DeployedSequence, "quiet")
        assert row is not None and row.wakes_on == []
        row.wakes_on = None
        session.add(row)
    lead_id = harness.lead("maria@example.com").id
    assert lead_id is not None
    # When she visits a page
    with session_scope(harness.engine) as session:
        record_event(session, lead_id, "page_visited", at=la(2026, 11, 23, 11, 0), source="api")
    # Then "quiet" woke (nothing was known of it), and the next pass keeps what it learns
    [quiet] = [e for e in harness.enrollments() if e.sequence == "quiet"]
    assert quiet.due_at == la(2026, 11, 23, 11, 0)
    harness.tick(la(2026, 11, 23, 11, 1))
    with session_scope(harness.engine) as session:
        row = session.get(DeployedSequence, "quiet")
        assert row is not None and row.wakes_on == []
