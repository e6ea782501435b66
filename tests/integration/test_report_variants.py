"""The report reads A/B variants: per step and variant, sent to unsubscribed with rates,
and how sure the difference is (a two-proportion test), in the data, the terminal and
the HTML page; steps come in the sequence's order."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlmodel import select

from nurture.reports.report import confidence, funnel, to_html, two_proportion_p
from nurture.store.database import session_scope
from nurture.store.enrollments import DeployedSequence
from nurture.store.events import Event
from nurture.store.leads import Lead, LeadChanges, upsert_leads
from nurture.store.outbox import MessageKind, OutboxMessage, OutboxStatus

MOMENT = datetime(2026, 11, 16, 17, 0, tzinfo=UTC)


def _email(lead_id: int, step: str, template: str, n: int) -> OutboxMessage:
    return OutboxMessage(
        kind=MessageKind.email.value, idempotency_key=f"{lead_id}:{step}",
        message_id=f"<{lead_id}.{step}@example.com>", lead_id=lead_id, sequence="welcome",
        step=step, sender="ana@example.com", recipient=f"lead{n}@example.com",
        timezone="UTC", raw="", next_attempt_at=MOMENT, created_at=MOMENT,
        status=OutboxStatus.sent.value, template=template, sent_at=MOMENT,
    )  # fmt: skip


def test_variants_are_counted_with_rates_and_a_confidence(engine: Engine) -> None:
    with session_scope(engine) as session:
        upsert_leads(session, [LeadChanges(f"lead{n}@example.com") for n in range(200)])
    with session_scope(engine) as session:
        ids = [lead.id for lead in session.exec(select(Lead).order_by(Lead.id))]
        session.add(DeployedSequence(name="welcome", path="welcome.yaml", source="", digest="x",
                                     steps=[["welcome", "a"], ["follow-up", "b"]]))  # fmt: skip
        for n, lead_id in enumerate(ids):
            assert lead_id is not None
            template = "welcome" if n % 2 == 0 else "welcome-b"
            session.add(_email(lead_id, "welcome", template, n))
            session.add(_email(lead_id, "follow-up", "follow-up", n))
            # Variant b draws many more clicks: 40 of 100 against 10 of 100.
            clicked = (n % 2 == 1 and n < 80) or (n % 2 == 0 and n < 20)
            if clicked:
                session.add(Event(lead_id=lead_id, type="email_clicked", sequence="welcome",
                                  step="welcome", occurred_at=MOMENT, source="click"))  # fmt: skip
            if n < 4:  # a scanner's click never counts
                session.add(Event(lead_id=lead_id, type="email_clicked", sequence="welcome",
                                  step="welcome", occurred_at=MOMENT, source="click",
                                  machine=True))  # fmt: skip
    with session_scope(engine) as session:
        report = funnel(session, since=None, now=MOMENT)
    # In the sequence's order, not alphabetical ("follow-up" < "welcome").
    assert [row["step"] for row in report["steps"]] == ["welcome", "follow-up"]
    assert report["steps"][0]["click_rate"] == 0.25
    first, second = report["variants"]
    assert (first["variant"], first["delivered"], first["clicked"]) == ("welcome", 100, 10)
    assert (second["variant"], second["delivered"], second["clicked"]) == ("welcome-b", 100, 40)
    assert second["click_rate"] == 0.4 and second["compared_with"] == "welcome"
    assert second["clicked_p_value"] is not None and second["clicked_p_value"] < 0.001
    assert second["replied_p_value"] is None  # nobody replied to either: nothing to tell
    assert confidence(second["clicked_p_value"]).startswith("very likely real")
    page = to_html(report, "demo")
    assert "<h2>A/B variants</h2>" in page and "welcome-b" in page and "None" not in page
    # The weekly trend: twelve ISO weeks, this one last, with what happened in each.
    assert len(report["weekly"]) == 12 and report["weekly"][-1]["week"] == "2026-W47"
    assert report["weekly"][-1]["sent"] == 400 and report["weekly"][-1]["clicked"] == 50
    assert sum(w["sent"] for w in report["weekly"][:-1]) == 0
    assert "Weekly trend: emails sent" in page and "2026-W47" in page


def test_the_two_proportion_test_against_a_known_value() -> None:
    # 10/100 against 40/100: z = 4.9, p about 1e-6 (two-sided).
    p = two_proportion_p(40, 100, 10, 100)
    assert p is not None and p < 1e-5
    assert two_proportion_p(5, 50, 5, 50) == 1.0
    assert two_proportion_p(1, 0, 1, 10) is None
    assert confidence(0.3) == "could be chance (p=0.30)"
