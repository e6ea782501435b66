"""The advance stage writes a batch in a few statements, whatever its size, and an
enrollment that changed between its claim and the batch's write holds back itself
alone: the rest of the batch advances. Same outcomes on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from freezegun import freeze_time
from sqlalchemy import Engine, event, func, select, text
from sqlmodel import Session

from nurture import hooks
from nurture.config import load_settings
from nurture.engine.catalog import Catalog, load_catalog
from nurture.engine.context import Context
from nurture.stages.advance import FIRST_BATCH, advance_due
from nurture.stages.enroll import enroll_stage
from nurture.stages.report import PassReport
from nurture.store.advancing import DueEnrollment
from nurture.store.database import open_engine, session_scope
from nurture.store.enrollments import Enrollment
from nurture.store.leads import Lead, LeadChanges, upsert_leads
from nurture.store.outbox import OutboxMessage
from tests.enginekit import LEADS_ARRIVE, SEQUENCE, la

_ENROLLMENTS = Enrollment.__table__  # type: ignore[attr-defined]
_LEADS = Lead.__table__  # type: ignore[attr-defined]
_OUTBOX = OutboxMessage.__table__  # type: ignore[attr-defined]

MOMENT = la(2026, 11, 23, 10, 0)  # a Monday inside the sending window


def setting_up(project: Path, url: str, leads: int) -> tuple[Context, Catalog]:
    """The harness's sequence on the database at *url*, with *leads* leads enrolled
    (their welcome is due)."""
    for path in (project / "sequences").iterdir():
        path.unlink()
    (project / "sequences" / "welcome.yaml").write_text(SEQUENCE)
    config = load_settings(project / "nurture.toml")
    engine = open_engine(url)
    rows = [{"email": f"lead{i:03}@example.com", "first_name": f"Lead {i}", "source": "guide",
             "timezone": "America/Los_Angeles"} for i in range(leads)]  # fmt: skip
    with freeze_time(LEADS_ARRIVE), session_scope(engine) as session:
        upsert_leads(session, [LeadChanges(row["email"], dict(row)) for row in rows])
    ctx = Context.open(engine, config)
    with freeze_time(MOMENT):
        catalog = load_catalog(engine, config.sequences_dir, ctx.templates, MOMENT)
        enroll_stage(ctx, catalog, None, MOMENT)
    return ctx, catalog


class Statements(list[str]):
    """The statements an engine ran (an ``executemany`` is one)."""

    def append_statement(self, *args: Any) -> None:
        self.append(args[2])


def counting(engine: Engine) -> Statements:
    """The statements *engine* runs from now on."""
    statements = Statements()
    event.listen(engine, "before_cursor_execute", statements.append_statement)
    return statements


def engine_of(ctx: Context) -> Engine:
    return ctx.engine


def outcomes(engine: Engine) -> list[tuple[Any, ...]]:
    """Each enrollment's state and how many messages it queued, by lead (no ids,
    versions or random parts)."""
    e, lead, o = _ENROLLMENTS.c, _LEADS.c, _OUTBOX.c
    queued = select(func.count()).where(o.enrollment_id == e.id).scalar_subquery()
    query = (
        select(lead.email, e.status, e.next_step, e.done_steps, e.reason, queued)
        .join_from(_ENROLLMENTS, _LEADS, lead.id == e.lead_id)
        .order_by(lead.email)
    )
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(query)]


def versions(engine: Engine) -> dict[str, int]:
    e, lead = _ENROLLMENTS.c, _LEADS.c
    query = select(lead.email, e.version).join_from(_ENROLLMENTS, _LEADS, lead.id == e.lead_id)
    with engine.connect() as connection:
        return {email: int(version) for email, version in connection.execute(query)}


def test_a_batch_advances_in_a_few_statements_whatever_its_size(
    project: Path, db_url: str
) -> None:
    ctx, catalog = setting_up(project, db_url, 43)
    with engine_of(ctx).connect() as connection:
        ids = sorted(connection.execute(select(_LEADS.c.id)).scalars())
    counts = []
    # A batch of 3, then one of 25 (the first batch of a pass is never larger)
    for batch in (ids[:3], ids[3 : 3 + FIRST_BATCH]):
        statements = counting(ctx.engine)
        with freeze_time(MOMENT):
            report = advance_due(ctx, catalog, MOMENT, lead_ids=batch)
        event.remove(ctx.engine, "before_cursor_execute", statements.append_statement)
        assert report.emails_queued == len(batch)
        counts.append(len(statements))
    ctx.engine.dispose()
    # claim, facts (events, unsent emails), outbox rows, enrollments, and the claim
    # that finds nothing more
    assert counts[0] == counts[1] <= 6


def _bump(name: str, *, own_transaction: bool) -> Any:
    """A point that changes *name*'s enrollment between its claim and the batch's write,
    as another writer would (the delivery's wake-up: a new version)."""

    def step(session: Session, due: list[DueEnrollment]) -> None:
        [enrollment] = [d for d in due if d.lead.email == name]
        bump = text("UPDATE enrollments SET version = version + 1 WHERE id = :id")
        if own_transaction:
            # PostgreSQL: the claim locks the row, so another writer would wait for the
            # pass to end; the change is made where the pass's write will meet it.
            session.connection().execute(bump, {"id": enrollment.id})
        else:
            with session.get_bind().connect() as other:  # SQLite: another connection
                other.execute(bump, {"id": enrollment.id})
                other.commit()

    return step


def run_with_a_bump(project: Path, url: str) -> tuple[PassReport, list[tuple[Any, ...]],
                                                      dict[str, int], dict[str, int]]:  # fmt: skip
    ctx, catalog = setting_up(project, url, 3)
    before = versions(ctx.engine)
    sqlite = ctx.engine.dialect.name == "sqlite"
    # Given a batch of three whose middle enrollment changes between the claim and the
    # write, in the batch and again when the batch is done one by one
    bump = _bump("lead001@example.com", own_transaction=not sqlite)
    with freeze_time(MOMENT), hooks.at("advance.before_write", bump):
        report = advance_due(ctx, catalog, MOMENT)
    result = outcomes(ctx.engine), versions(ctx.engine)
    # And the next pass carries the one held back
    with freeze_time(MOMENT):
        advance_due(ctx, catalog, MOMENT)
    after = outcomes(ctx.engine)
    ctx.engine.dispose()
    bumped = {email: result[1][email] - before[email] for email in before}
    return report, result[0], bumped, {row[0]: int(row[5]) for row in after}


def test_an_enrollment_changed_between_claim_and_write_holds_back_itself_alone(
    project: Path, sqlite_url: str, pg_url: str
) -> None:
    runs = {name: run_with_a_bump(project, url)
            for name, url in (("sqlite", sqlite_url), ("postgresql", pg_url))}  # fmt: skip
    for name, (report, rows, bumped, queued_later) in runs.items():
        # Then the other two advanced (their welcome queued, written once), the changed
        # one is left as it is, neither failed nor advanced, and the next pass carries it
        assert report.emails_queued == 2 and report.failed == 0, name
        by_lead = {row[0]: row for row in rows}
        assert by_lead["lead000@example.com"][1:] == ("active", "case-study", ["welcome"],
                                                      None, 1), name  # fmt: skip
        assert by_lead["lead002@example.com"][1:] == by_lead["lead000@example.com"][1:]
        assert by_lead["lead001@example.com"][1:] == ("active", "welcome", [], None, 0)
        assert bumped["lead000@example.com"] == bumped["lead002@example.com"] == 1
        assert queued_later == {f"lead00{i}@example.com": 1 for i in range(3)}, name
    # And both databases came to the same outcome
    assert runs["sqlite"][1] == runs["postgresql"][1]


def test_an_enrollment_whose_write_fails_fails_alone_with_its_reason(
    project: Path, db_url: str
) -> None:
    ctx, catalog = setting_up(project, db_url, 3)
    # Given the middle enrollment's welcome already in the outbox (its key is taken)
    with ctx.engine.begin() as connection:
        [enrollment_id] = connection.execute(
            select(_ENROLLMENTS.c.id)
            .join_from(_ENROLLMENTS, _LEADS, _LEADS.c.id == _ENROLLMENTS.c.lead_id)
            .where(_LEADS.c.email == "lead001@example.com")
        ).scalars()
        connection.execute(_OUTBOX.insert().values(
            idempotency_key=f"{enrollment_id}:welcome", message_id="<x@example.com>",
            sequence="welcome", step="welcome", sender="ana@example.com",
            recipient="someone@example.com", timezone="UTC", links=[], raw="",
        ))  # fmt: skip
    # When the pass advances the batch
    with freeze_time(MOMENT):
        report = advance_due(ctx, catalog, MOMENT)
    # Then that enrollment failed, saying why, and the other two queued their welcome
    assert (report.emails_queued, report.failed) == (2, 1)
    by_lead = {row[0]: row for row in outcomes(ctx.engine)}
    ctx.engine.dispose()
    assert by_lead["lead000@example.com"][1:] == ("active", "case-study", ["welcome"], None, 1)
    assert by_lead["lead002@example.com"][1:] == by_lead["lead000@example.com"][1:]
    status, step, done, reason, _ = by_lead["lead001@example.com"][1:]
    assert (status, step, done) == ("failed", "welcome", [])
    assert reason.startswith("internal error: IntegrityError")
