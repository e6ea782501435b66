"""Scoring in batches: each lead's engagement is stored as its events earn it, however
the events fall into the pass's transactions (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from nurture.language.scoring import decayed, load_scoring
from nurture.sales import scorer
from tests.integration import test_handoff
from tests.integration.test_handoff import MARIA, START, Sales

sales = test_handoff.sales  # the fixture: the example project, a real SMTP server
JAN = "jkowalski@vistula-logistics.pl"


def test_each_lead_keeps_what_its_events_earned_across_batches(
    sales: Sales, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a pass that scores three events a transaction, and seven events of two leads
    monkeypatch.setattr(scorer, "EVENTS_BATCH", 3)
    sales.tick(START)
    happened = [
        (MARIA, "form_submitted", timedelta(hours=1)),
        (JAN, "page_visited", timedelta(hours=1, minutes=10)),
        (MARIA, "page_visited", timedelta(hours=2)),
        (JAN, "email_replied", timedelta(hours=2, minutes=30)),
        (MARIA, "page_visited", timedelta(hours=3)),
        (JAN, "webinar_attended", timedelta(hours=3, minutes=5)),  # worth nothing
        (MARIA, "page_visited", timedelta(days=2)),
    ]
    for email, kind, after in happened:
        sales.event(kind, START + after, email=email)
    # When one pass scores them
    sales.tick(START + timedelta(days=2, hours=1))
    # Then each lead's engagement is what its events earned, decayed to its last scoring
    rules, _ = load_scoring(sales.project / "scoring.yaml")
    assert rules is not None
    for email in (MARIA, JAN):
        engagement, last = 0.0, None
        for who, kind, after in happened:
            points = rules.engagement[kind].points if kind in rules.engagement else 0.0
            if who != email or not points:
                continue
            moment: datetime = START + after
            engagement = (decayed(engagement, last, moment, rules) if last else 0.0) + points
            last = moment
        lead = sales.lead(email)
        assert lead.scored_at == last
        assert lead.engagement == pytest.approx(engagement, abs=1e-9)
    assert sales.lead(MARIA).engagement > 14 and sales.lead(JAN).engagement > 20
