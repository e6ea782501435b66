"""The start of several messages in one statement (what the delivery loop's writer does
with the messages its connections ask for at once), on SQLite and PostgreSQL: the same
last check and the same caps as each started on its own, and the planner's statistics
kept fresh so that these statements find their rows by primary key."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pytest
from freezegun import freeze_time
from sqlalchemy import Engine, event, text, update
from sqlalchemy.dialects import postgresql
from sqlmodel import select

from nurture.config import load_settings
from nurture.engine.context import Context
from nurture.mail.claim import caps_for, claim
from nurture.mail.pacing import DeliveryReport
from nurture.stages.advance import FIRST_BATCH
from nurture.stages.passes import run_pass
from nurture.store import database
from nurture.store.counters import Cap, SendCount, counting, take_together
from nurture.store.database import refresh_statistics, session_scope
from nurture.store.leads import Lead
from nurture.store.sending import Claimed, Started, start_together
from tests.enginekit import Harness
from tests.integration.test_send_promises import MOMENT, ctx_and_catalog, deliver_now, wait_for


def _claimed(harness: Harness, *extra: str) -> tuple[Context, list[Claimed]]:
    """The welcome emails of María and of *extra* leads, queued and claimed at MOMENT."""
    harness.add_leads(*({"email": email, "source": "guide"} for email in extra))
    ctx, catalog = ctx_and_catalog(harness, MOMENT)
    with freeze_time(MOMENT):
        run_pass(ctx, catalog, MOMENT)
        claimed = claim(ctx, catalog, MOMENT, DeliveryReport()).claimed
    assert len(claimed) == 1 + len(extra)
    return ctx, claimed


def _start(ctx: Context, items: list[Claimed]) -> list[tuple[Started, str]]:
    limits = ctx.config.settings.limits
    caps = [caps_for(item, MOMENT, limits, ctx.default_timezone) for item in items]
    with freeze_time(MOMENT), session_scope(ctx.engine) as session:
        return start_together(session, items, MOMENT, caps)


def _counts(engine: Engine) -> dict[str, int]:
    with session_scope(engine) as session:
        return {row.key: row.n for row in session.exec(select(SendCount))}


def _statuses(harness: Harness) -> dict[str, str]:
    return {row.recipient: row.status for row in harness.outbox()}


def test_a_group_starts_together_and_counts_each_send(harness: Harness) -> None:
    # Given three welcome emails claimed
    ctx, claimed = _claimed(harness, "ivy@example.net", "kim@example.net")
    # When they are started together
    outcomes = _start(ctx, claimed)
    # Then each goes, each counts once on the sender's day and once on its lead's
    assert outcomes == [(Started.go, "")] * 3
    assert set(_statuses(harness).values()) == {"sending"}
    counts = _counts(harness.engine)
    assert counts["sender:ana@example.com:2026-11-23"] == 3
    assert sorted(n for key, n in counts.items() if key.startswith("lead:")) == [1, 1, 1]
    # And each row names the counters to give back should its send not go
    for row in harness.outbox():
        assert f"lead:{row.lead_id}:" in (row.counted or "")


def test_a_cap_with_room_for_some_starts_those_and_defers_the_rest(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a sender's cap of 3 a day, and three emails of that sender claimed
    monkeypatch.setenv("NURTURE_LIMITS_PER_SENDER_DAILY", "3")
    harness.config = load_settings(harness.project / "nurture.toml")
    ctx, claimed = _claimed(harness, "ivy@example.net", "kim@example.net")
    # And another worker has counted a send of that sender since the claim
    sender = Cap("sender:ana@example.com:2026-11-23", "2026-11-23", 3, MOMENT, "other")
    with session_scope(harness.engine) as session:
        assert take_together(session.connection(), [sender])
    # When the three are started together
    outcomes = _start(ctx, claimed)
    # Then two go and the third waits for the sender's next day, saying why
    assert [outcome for outcome, _ in outcomes] == [Started.go, Started.go, Started.capped]
    assert "reached its cap of 3 emails today" in outcomes[2][1]
    assert sorted(_statuses(harness).values()) == ["queued", "sending", "sending"]
    # And the counter holds the other worker's send and these two: not four, nor one;
    # the third lead's day counts nothing (a counter at 0 is one given back)
    assert _counts(harness.engine)[sender.key] == 3
    leads = [n for key, n in _counts(harness.engine).items() if key.startswith("lead:")]
    assert sorted(n for n in leads if n) == [1, 1]


def test_a_lead_who_opted_out_after_the_claim_is_not_started_and_the_others_are(
    harness: Harness,
) -> None:
    # Given three welcome emails claimed, and then Ivy unsubscribes
    ctx, claimed = _claimed(harness, "ivy@example.net", "kim@example.net")
    with session_scope(harness.engine) as session:
        session.execute(
            update(Lead).where(Lead.email == "ivy@example.net").values(status="unsubscribed")
        )
    # When the three are started together
    outcomes = dict(zip((item.recipient for item in claimed), _start(ctx, claimed), strict=True))
    # Then Ivy's is cancelled, and counts on no cap; the others go
    assert outcomes["ivy@example.net"] == (Started.cancelled, "lead is unsubscribed")
    assert outcomes["maria@example.com"] == outcomes["kim@example.net"] == (Started.go, "")
    assert _statuses(harness)["ivy@example.net"] == "cancelled"
    counts = _counts(harness.engine)
    assert counts["sender:ana@example.com:2026-11-23"] == 2
    ivy = harness.lead("ivy@example.net")
    assert counts.get(f"lead:{ivy.id}:2026-11-23", 0) == 0
    assert sorted(n for key, n in counts.items() if key.startswith("lead:") and n) == [1, 1]


@pytest.mark.parametrize("pipeline", [True, False], ids=["pipeline", "one-after-another"])
def test_a_group_starts_alike_with_and_without_postgresql_s_pipeline(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, pipeline: bool
) -> None:
    # Given a driver without pipeline mode (psycopg on an old libpq), or with it
    monkeypatch.setattr(database, "_pipeline_supported", lambda: pipeline)
    ctx, claimed = _claimed(harness, "ivy@example.net", "kim@example.net")
    # When three are started together
    outcomes = _start(ctx, claimed)
    # Then all go, each counted once, either way
    assert outcomes == [(Started.go, "")] * 3
    counts = _counts(harness.engine)
    assert counts["sender:ana@example.com:2026-11-23"] == 3
    assert sorted(n for key, n in counts.items() if key.startswith("lead:")) == [1, 1, 1]


def test_a_message_started_by_a_commit_whose_answer_was_lost_goes_and_counts_once(
    harness: Harness,
) -> None:
    # Given two emails started together by a write that committed
    ctx, claimed = _claimed(harness, "ivy@example.net")
    assert _start(ctx, claimed) == [(Started.go, "")] * 2
    before = _counts(harness.engine)
    # When the writer, which did not learn it committed, starts them again
    outcomes = _start(ctx, claimed)
    # Then they go (they are handed over only now), and no cap counts them twice
    assert outcomes == [(Started.go, "")] * 2
    assert _counts(harness.engine) == before


DAY = "2026-11-23"


def _cap(key: str, limit: int) -> Cap:
    """A counter of *key* on :data:`DAY` within *limit*."""
    return Cap(f"{key}:{DAY}", DAY, limit, datetime(2026, 11, 24), key.split(":")[0])


def test_counters_are_taken_together_all_or_none(harness: Harness) -> None:
    sender, lead = _cap("sender:ana@example.com", 3), _cap("lead:1", 1)
    with session_scope(harness.engine) as session:
        # Two sends of one sender and one lead's: they fit
        assert take_together(session.connection(), [sender, sender, lead])
    assert _counts(harness.engine) == {sender.key: 2, lead.key: 1}
    with session_scope(harness.engine) as session:
        # Two more of the sender (room for one), another of the lead (room for none)
        assert not take_together(session.connection(), [sender, sender])
        assert not take_together(session.connection(), [sender, lead])
        assert not take_together(session.connection(), [lead, lead])
    # Then nothing was counted by the sends that did not all fit
    assert _counts(harness.engine) == {sender.key: 2, lead.key: 1}


def test_counters_taken_together_each_keep_their_own_limit(harness: Harness) -> None:
    sender, lead = _cap("sender:ana@example.com", 5), _cap("lead:1", 2)
    with session_scope(harness.engine) as session:
        assert take_together(session.connection(), [sender, sender, sender, lead])
    # Given the sender at 3 of 5 and the lead at 1 of 2: two more of the sender fit
    # under its limit (not the lead's), one more of the lead under its own
    with session_scope(harness.engine) as session:
        assert take_together(session.connection(), [sender, sender, lead])
    assert _counts(harness.engine) == {sender.key: 5, lead.key: 2}
    # And then neither has room
    with session_scope(harness.engine) as session:
        assert not take_together(session.connection(), [sender])
        assert not take_together(session.connection(), [lead])
    assert _counts(harness.engine) == {sender.key: 5, lead.key: 2}


def test_counters_are_locked_sender_first_whatever_the_limits() -> None:
    # Given a group whose sender and lead caps have the same limit (one sort of all
    # keys would put the leads' first), two sends of one sender
    sender = _cap("sender:zed@example.com", 9)
    plan = counting(postgresql.dialect(), [sender, _cap("lead:2", 9), sender, _cap("lead:1", 9)])
    # Then the rows are locked as a start on its own takes them: the sender's, then the
    # leads' in the order of their keys
    assert not isinstance(plan, bool)
    assert list(plan.sends.items()) == [
        (f"sender:zed@example.com:{DAY}", 2), (f"lead:1:{DAY}", 1), (f"lead:2:{DAY}", 1)
    ]  # fmt: skip


@pytest.fixture
def pg_only(harness: Harness) -> Iterator[Harness]:
    if harness.engine.dialect.name != "postgresql":
        pytest.skip("SQLite's planner keeps no statistics unless asked to")
    yield harness


def test_tables_a_pass_filled_are_analyzed_at_once(pg_only: Harness) -> None:
    harness = pg_only
    # Given 200 new leads in the sequence's audience, and tables never analyzed
    harness.add_leads(*({"email": f"lead{i}@example.net", "source": "guide"} for i in range(200)))
    # When a pass enrolls them and queues their emails (in batches of 25, 100 and 75)
    ctx, catalog = ctx_and_catalog(harness, MOMENT)
    with freeze_time(MOMENT):
        run_pass(ctx, catalog, MOMENT)
    # Then the planner knows the rows it wrote, without waiting for autovacuum: every
    # table as it was first filled (the outbox by the pass's first batch; PostgreSQL
    # counts the later changes up to a second late, so a later batch's analyze is the
    # next pass's when it came within that second)
    planned = _planned(harness.engine)
    assert planned["leads"] == planned["enrollments"] == 201
    assert FIRST_BATCH <= planned["outbox"] <= planned["enrollments"]
    # And a table analyzed is analyzed again once a tenth of it has changed (and 50
    # rows: autovacuum's threshold), and not before
    harness.add_leads(*({"email": f"new{i}@example.net", "source": "guide"} for i in range(100)))
    wait_for(lambda: "leads" in refresh_statistics(harness.engine), "the new leads analyzed")
    assert _planned(harness.engine)["leads"] == 301
    assert "leads" not in refresh_statistics(harness.engine)


def _planned(engine: Engine) -> dict[str, float]:
    """The rows the planner believes the lead, enrollment and outbox tables hold."""
    with engine.connect() as connection:
        return dict(
            connection.execute(
                text("SELECT relname, reltuples FROM pg_class WHERE relname IN "
                     "('leads', 'enrollments', 'outbox')")
            ).all()
        )  # fmt: skip


def test_on_sqlite_nothing_is_analyzed(harness: Harness) -> None:
    if harness.engine.dialect.name != "sqlite":
        pytest.skip("SQLite only")
    harness.add_leads(*({"email": f"lead{i}@example.net", "source": "guide"} for i in range(60)))
    assert refresh_statistics(harness.engine) == []


def test_a_database_that_refuses_to_analyze_fails_no_pass(
    pg_only: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    harness = pg_only
    # Given a server that rejects what refreshing the statistics asks of it
    monkeypatch.setattr(database, "_STALE_TABLES", "SELECT relname FROM no_such_view "
                        "WHERE %(names)s IS NOT NULL")  # fmt: skip
    # When a pass enrolls and queues
    ctx, catalog = ctx_and_catalog(harness, MOMENT)
    with freeze_time(MOMENT):
        report = run_pass(ctx, catalog, MOMENT)
    # Then the pass did its work, and the refusal is one warning
    assert report.enrolled == 1 and [row.status for row in harness.outbox()] == ["queued"]
    assert "could not refresh the database's statistics" in caplog.text


def test_on_sqlite_a_pass_and_a_delivery_run_find_their_rows_by_id_not_by_status(
    harness: Harness,
) -> None:
    if harness.engine.dialect.name != "sqlite":
        pytest.skip("SQLite only: PostgreSQL plans by the statistics kept fresh above")
    harness.add_leads(*({"email": f"lead{i}@example.net", "source": "guide"} for i in range(199)))
    ctx, catalog = ctx_and_catalog(harness, MOMENT)
    ran: list[tuple[str, object]] = []

    def keep(_c: object, _cur: object, statement: str, parameters: object, *_: object) -> None:
        ran.append((statement, parameters))

    # When a pass queues 200 welcomes (its batches name many leads), and a delivery run
    # leases, starts and records them
    event.listen(harness.engine, "before_cursor_execute", keep)
    try:
        with freeze_time(MOMENT):
            run_pass(ctx, catalog, MOMENT)
        with freeze_time(MOMENT, real_asyncio=True):
            assert deliver_now(ctx, catalog).sent == 200
    finally:
        event.remove(harness.engine, "before_cursor_execute", keep)
    # Then each statement that names its rows by id or by lead finds them so: SQLite's
    # planner (no statistics) would rather walk every row of a status (every email ever
    # sent or queued, every enrollment running) at each batch and each write
    by_id = [(s, p) for s, p in ran if "outbox.id IN" in s or "enrollments.id IN" in s]
    by_lead = [(s, p) for s, p in ran if "FROM outbox" in s and "outbox.lead_id IN" in s]
    assert len(by_id) >= 4
    assert any("outbox.enrollment_id" in s for s, _ in by_lead)  # the advance's unsent
    assert any("outbox.sent_at, outbox.status" in s for s, _ in by_lead)  # a lead's sends
    with harness.engine.connect() as connection:
        for statement, parameters in by_id + by_lead:
            plan = [row[3] for row in connection.exec_driver_sql(
                f"EXPLAIN QUERY PLAN {statement}", parameters)]  # type: ignore[arg-type]  # fmt: skip
            # (the first step that reads the table itself; subqueries come after it)
            [first, *_] = [step for step in plan if step.startswith(("SEARCH", "SCAN"))
                           and step.split()[1] in ("outbox", "enrollments")]  # fmt: skip
            assert "INTEGER PRIMARY KEY" in first or "ix_outbox_lead_sent" in first, (
                statement, plan)  # fmt: skip
            assert not any("ix_enrollments_due" in step for step in plan), (statement, plan)
