"""Rows written by one statement (``nurture.store.bulk``), on SQLite and PostgreSQL: what
is read back is what was written, every column type included (JSON, aware moments,
NULLs, booleans), and a row whose key is missing is not matched."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine, insert, select

from nurture.store.bulk import insert_rows, one_of, update_rows
from nurture.store.enrollments import Enrollment
from nurture.store.events import Event
from nurture.store.leads import Lead

EVENTS = Event.__table__  # type: ignore[attr-defined]
LEADS = Lead.__table__  # type: ignore[attr-defined]
ENROLLMENTS = Enrollment.__table__  # type: ignore[attr-defined]
MOMENT = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def _lead(engine: Engine) -> int:
    with engine.begin() as connection:
        row = {
            "email": "ana@example.com", "source": "test", "stage": "cold",
            "status": "subscribed", "score_stage": "cold", "attributes": {},
            "engagement": 0.0, "fit": 0.0, "created_at": MOMENT, "updated_at": MOMENT,
        }  # fmt: skip
        return int(connection.execute(insert(LEADS).values(row).returning(LEADS.c.id)).scalar_one())


def test_inserted_rows_read_back_as_written(engine: Engine) -> None:
    lead = _lead(engine)
    paris = timezone(timedelta(hours=1))
    rows = [
        {
            "lead_id": lead, "type": "page_visited", "sequence": None, "step": None,
            "data": {"url": "/pricing", "nested": {"n": [1, 2]}, "ünï": "çødé"},
            "occurred_at": MOMENT, "source": "api", "source_id": "a-1", "machine": False,
            "via_key": None,
        },
        {
            "lead_id": lead, "type": "call_completed", "sequence": "welcome", "step": "call",
            "data": {}, "occurred_at": (MOMENT + timedelta(hours=1)).astimezone(paris),
            "source": "tasks", "source_id": None, "machine": True, "via_key": "crm",
        },
    ]  # fmt: skip
    with engine.begin() as connection:
        insert_rows(connection, EVENTS, rows)
        insert_rows(connection, EVENTS, [])  # nothing to write: no statement
    with engine.connect() as connection:
        read = connection.execute(select(EVENTS).order_by(EVENTS.c.id)).mappings().all()
    assert len(read) == 2
    for written, row in zip(rows, read, strict=True):
        for name, value in written.items():
            assert row[name] == value, name
    assert read[1]["occurred_at"].utcoffset() == timedelta(0)  # stored as UTC
    assert [row["scored"] for row in read] == [False, False]  # the columns' defaults


def test_updated_rows_and_the_fixed_values(engine: Engine) -> None:
    lead = _lead(engine)
    base = {"lead_id": lead, "type": "page_visited", "data": {}, "occurred_at": MOMENT,
            "source": "api", "machine": False}  # fmt: skip
    with engine.begin() as connection:
        insert_rows(connection, EVENTS, [{**base, "source_id": f"s{i}"} for i in range(3)])
        ids = list(connection.execute(select(EVENTS.c.id).order_by(EVENTS.c.id)).scalars())
        matched = update_rows(
            connection, EVENTS,
            [{"id": ids[0], "points": 2.5}, {"id": ids[2], "points": 0.0},
             {"id": 999_999, "points": 1.0}],
            scored=True,
        )  # fmt: skip
        assert matched == 2  # the missing id matched nothing
        later = MOMENT + timedelta(days=1)
        assert (
            update_rows(connection, LEADS, [{"id": lead, "engagement": 7.0, "scored_at": later}])
            == 1
        )
        assert update_rows(connection, LEADS, []) == 0
    with engine.connect() as connection:
        events = connection.execute(
            select(EVENTS.c.points, EVENTS.c.scored).order_by(EVENTS.c.id)
        ).all()
        scores = connection.execute(
            select(LEADS.c.engagement, LEADS.c.scored_at).where(LEADS.c.id == lead)
        ).one()
    assert [tuple(row) for row in events] == [(2.5, True), (None, False), (0.0, True)]
    assert scores.engagement == 7.0 and scores.scored_at == MOMENT + timedelta(days=1)


def test_a_value_matches_only_itself_never_a_stored_value_it_begins_with(engine: Engine) -> None:
    lead = _lead(engine)
    stored = "s" * 300  # the longest source id a column holds
    with engine.begin() as connection:
        insert_rows(connection, EVENTS, [{
            "lead_id": lead, "type": "page_visited", "data": {}, "occurred_at": MOMENT,
            "source": "api", "source_id": stored, "machine": False,
        }])  # fmt: skip
    with engine.connect() as connection:

        def found(values: list[str]) -> list[str]:
            among = one_of(connection.dialect, EVENTS.c.source_id, values)
            return list(connection.execute(select(EVENTS.c.source_id).where(among)).scalars())

        assert found([stored + "x", "other"]) == []
        assert found([stored]) == [stored]
        assert found([]) == []


def test_rows_that_give_different_columns_are_refused(engine: Engine) -> None:
    lead = _lead(engine)
    with engine.begin() as connection, pytest.raises(ValueError, match="same columns"):
        update_rows(connection, LEADS, [{"id": lead, "engagement": 1.0}, {"id": lead}])


def test_rows_written_under_their_version_only_while_it_holds(engine: Engine) -> None:
    # Given two enrollments of a lead, read at version 0, one changed since (version 1)
    lead = _lead(engine)
    base = {"lead_id": lead, "cycle": 0, "status": "active", "next_step": "a",
            "base_at": MOMENT, "due_at": MOMENT, "done_steps": [], "enrolled_by": "auto",
            "enrolled_at": MOMENT, "updated_at": MOMENT}  # fmt: skip
    with engine.begin() as connection:
        ids = [
            connection.execute(
                insert(ENROLLMENTS).values({**base, "sequence": name, "version": version})
                .returning(ENROLLMENTS.c.id)
            ).scalar_one()
            for name, version in (("one", 0), ("two", 1))
        ]  # fmt: skip
    later = MOMENT + timedelta(days=2)
    written = [{"id": i, "version": 0, "next_step": "b", "due_at": later, "done_steps": ["a"]}
               for i in ids]  # fmt: skip
    # When both are written under the version they were read at
    with engine.begin() as connection:
        matched = update_rows(connection, ENROLLMENTS, written, version="version")
    # Then only the unchanged one is written, and its version moved on
    assert matched == 1
    with engine.connect() as connection:
        rows = connection.execute(
            select(ENROLLMENTS.c.next_step, ENROLLMENTS.c.due_at, ENROLLMENTS.c.done_steps,
                   ENROLLMENTS.c.version).order_by(ENROLLMENTS.c.id)
        ).all()  # fmt: skip
    assert [tuple(row) for row in rows] == [("b", later, ["a"], 1), ("a", MOMENT, [], 1)]
