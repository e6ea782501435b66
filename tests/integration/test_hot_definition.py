"""Issue 25: the written definition of a hot lead does what it says, through the real
engine (a pass on SQLite and PostgreSQL, notices over a real SMTP server)."""

from __future__ import annotations

from datetime import timedelta

from tests.integration import test_handoff
from tests.integration.test_handoff import START, Sales

sales = test_handoff.sales  # the fixture: the example project, a real SMTP server


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
