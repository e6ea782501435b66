"""Scoring in batches: each lead's engagement is stored as its events earn it, however
the events fall into the pass's transactions; and the fast lane takes the leads a batch
of events may make hot (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from freezegun import freeze_time
from sqlalchemy import update
from sqlmodel import col

from nurture import clock
from nurture.language.scoring import decayed, load_scoring
from nurture.sales import scorer
from nurture.store.database import session_scope
from nurture.store.events import NewEvent, record_events
from nurture.store.leads import Lead
from nurture.web.api import CurrentRules, may_turn_hot
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


def test_the_fast_lane_takes_the_leads_an_event_may_make_hot(sales: Sales) -> None:
    # Given the fits computed by a pass, a lead taken out of scoring's hands, one that
    # opted out, and one changed since (its stored fit is old)
    sales.tick(START)
    emails = {
        "maria": MARIA, "jan": JAN, "lucas": "lucas.martin@atelier-nord.fr",
        "olivia": "olivia.grant@fernleaf.co.uk", "aiko": "aiko.tanaka@sakura-foods.jp",
        "tom": "tom.becker@harbor-analytics.com", "grace": "grace.obi@lagoslabs.ng",
    }  # fmt: skip
    ids = {name: sales.lead(email).id or 0 for name, email in emails.items()}
    old = START - timedelta(days=1)
    with session_scope(sales.engine) as session:
        for name, values in (
            ("olivia", {"status": "unsubscribed", "updated_at": old}),
            ("aiko", {"stage": "customer", "updated_at": old}),
            ("tom", {"title": "VP Data", "updated_at": START + timedelta(hours=1)}),
        ):
            session.execute(update(Lead).where(col(Lead.id) == ids[name]).values(**values))
    # When each gets an event through the API (one that earns nothing for Jan)
    kinds = {"jan": "webinar_attended", "grace": "meeting_booked"}
    rules = CurrentRules(sales.project / "scoring.yaml")()
    with freeze_time(START + timedelta(hours=2)), session_scope(sales.engine) as session:
        new = record_events(session, [
            NewEvent(lead_id=ids[name], type=kinds.get(name, "page_visited"),
                     occurred_at=clock.now(), source="api")
            for name in emails
        ])  # fmt: skip
        chosen = may_turn_hot(session, rules, new)
    # Then the fast lane takes the subscribed, scored leads whose fit may make them hot
    # (or whose fit is not known yet), for an event that earns points or is a signal
    assert sorted(chosen) == sorted(ids[name] for name in ("maria", "tom", "grace"))
    assert sales.lead(emails["lucas"]).fit < 20 <= sales.lead(MARIA).fit
