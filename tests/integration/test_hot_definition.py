"""Issue 25: the written definition of a hot lead does what it says, through the real
engine (a pass on SQLite and PostgreSQL, notices over a real SMTP server)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import col, select

from nurture.config import load_settings
from nurture.store.database import session_scope
from nurture.store.tasks import Task
from tests import enginekit
from tests.enginekit import LA, Harness, la
from tests.integration import test_handoff
from tests.integration.test_handoff import START, Sales

sales = test_handoff.sales  # the fixture: the example project, a real SMTP server
harness = enginekit.harness  # the engine harness: a project, a database, an SMTP server


def _write_scoring(sales: Sales, old: str, new: str) -> None:
    path = sales.project / "scoring.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_a_reply_and_a_form_reach_hot_at_exactly_thirty(sales: Sales) -> None:
    sales.tick(START)
    sales.event("email_replied", START + timedelta(hours=1))
    sales.event("form_submitted", START + timedelta(hours=1, minutes=1))
    # Decay runs between the events and the pass: the lead crossed at the form's moment.
    sales.tick(START + timedelta(hours=1, minutes=30))
    assert sales.lead().stage == "hot"
    assert len(sales.notices()) == 1


def test_one_form_makes_a_lead_warm_at_ten(sales: Sales) -> None:
    sales.tick(START)
    sales.event("form_submitted", START + timedelta(hours=1))
    sales.tick(START + timedelta(hours=5))
    assert sales.lead().stage == "warm"


def test_hot_on_makes_an_approachable_lead_that_fits_hot(sales: Sales) -> None:
    _write_scoring(sales, "  meeting_booked: 40\n", "")
    sales.tick(START)
    sales.event("meeting_booked", START + timedelta(hours=1))
    sales.tick(START + timedelta(hours=2))
    assert sales.lead().stage == "hot"
    assert len(sales.notices()) == 1


CALL_FIRST = """\
name: call-first
audience: "lead.source == 'event'"
from: "Ana Ruiz <ana@example.com>"
steps:
  - id: call
    task: call
    note: "Call {{ lead.email }}"
"""


@pytest.mark.parametrize("team", [True, False])
def test_a_task_of_a_lead_nobody_owns_gets_an_owner_and_shows_on_the_tasks_page(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, team: bool
) -> None:
    from nurture.web.desk import Who, home, my_tasks

    team_value = '["ana@example.com", "ben@example.com"]' if team else "[]"
    monkeypatch.setenv("NURTURE_SALES_TEAM", team_value)
    monkeypatch.setenv("NURTURE_SALES_NOTIFY_EMAIL", "inbox@example.com")
    harness.config = load_settings(harness.project / "nurture.toml")
    harness.write_sequence(CALL_FIRST, "call-first")
    harness.add_leads(*({"email": f"p{i}@example.com", "source": "event"} for i in range(2)))
    now = la(2026, 11, 2, 10, 0)
    harness.tick(now)
    with session_scope(harness.engine) as session:
        tasks = list(session.exec(select(Task).order_by(col(Task.id))))
        assignees = [t.assignee for t in tasks]
        expected = ["ana@example.com", "ben@example.com"] if team else ["inbox@example.com"] * 2
        assert assignees == expected
        owner = expected[0]
        who = Who(owner, manager=False, desk=not team, tz=LA)
        listed = [row["id"] for row in my_tasks(session, who, now)]
        assert tasks[0].id in listed  # the Tasks page says what the home page says
        assert {r["id"] for r in home(session, who, now)["tasks"]} <= set(listed) | {None}
        # Someone else on the team does not see them.
        other = Who("zed@example.com", manager=False, desk=False, tz=LA)
        assert home(session, other, now)["tasks"] == []
