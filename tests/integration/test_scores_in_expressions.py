"""The lead's scores in expressions: ``fit`` and ``engagement`` (decayed to the moment)
in ``audience``, ``if`` and ``exit_when``, through the real engine on SQLite and
PostgreSQL."""

from __future__ import annotations

from nurture.store.database import session_scope
from nurture.store.events import record_event
from tests.enginekit import Harness, la

SCORED = """\
name: welcome
audience: "lead.source == 'guide' and fit >= 20"
from: "Ana Ruiz <ana@example.com>"
exit_when: ["engagement >= 30"]
steps:
  - id: welcome
    email: welcome
  - id: case-study
    wait: 1 day
    if: "engagement > 0"
    email: case-study
  - id: breakup
    wait: 1 day
    email: breakup-short
"""


def _lead(email: str, title: str) -> dict[str, str]:
    return {"email": email, "source": "guide", "title": title,
            "timezone": "America/Los_Angeles"}  # fmt: skip


def test_fit_and_engagement_reach_audience_if_and_exit_when(harness: Harness) -> None:
    # Given the shipped scoring.yaml (a decision-maker gets fit 20; a click earns 5, a reply 20,
    # a meeting 40) and a sequence whose audience, `if` and `exit_when` use the scores
    harness.write_sequence(SCORED)
    harness.add_leads(
        _lead("vp@example.com", "VP Sales"),
        _lead("clicker@example.com", "Head of IT"),
        _lead("intern@example.com", "Intern"),
    )
    # When a pass runs: only the leads with fit 20 are enrolled
    report, delivered = harness.tick(la(2026, 11, 23, 10, 0))
    assert report.enrolled == 2 and delivered.sent == 2
    assert sorted(m["To"] for m in harness.sent()) == ["clicker@example.com", "vp@example.com"]
    # And when one clicks, its `if: engagement > 0` holds the next day; the other's does not
    clicker = harness.lead("clicker@example.com")
    with session_scope(harness.engine) as session:
        record_event(session, clicker.id or 0, "email_clicked", sequence="welcome",
                     step="welcome", at=la(2026, 11, 23, 11, 0), source="test")  # fmt: skip
    report, delivered = harness.tick(la(2026, 11, 24, 10, 30))
    assert report.skipped == 1 and delivered.sent == 1
    assert harness.sent()[-1]["To"] == "clicker@example.com"
    # And when the vp books a meeting (40 points), `exit_when: engagement >= 30` ends it
    vp = harness.lead("vp@example.com")
    with session_scope(harness.engine) as session:
        record_event(session, vp.id or 0, "meeting_booked", at=la(2026, 11, 24, 12, 0),
                     source="test")  # fmt: skip
    report, _ = harness.tick(la(2026, 11, 24, 12, 5))
    assert report.exited == 1
    [vp_enrollment] = [e for e in harness.enrollments() if e.lead_id == vp.id]
    assert vp_enrollment.status == "exited" and vp_enrollment.reason == "engagement >= 30"


def test_engagement_in_an_expression_is_decayed_to_the_moment(harness: Harness) -> None:
    # Given a sequence that exits leads whose engagement is at least 15, and a lead whose
    # reply earned 20 points long ago (half-life 14 days: 5 after 28 days)
    harness.write_sequence(SCORED.replace('["engagement >= 30"]', '["engagement >= 15"]'))
    harness.add_leads(_lead("old@example.com", "VP Sales"))
    old = harness.lead("old@example.com")
    with session_scope(harness.engine) as session:
        record_event(session, old.id or 0, "email_replied", at=la(2026, 10, 26, 10, 0),
                     source="test")  # fmt: skip
    # When a pass scores it (20 points as of then) and runs the sequence 28 days later
    report, delivered = harness.tick(la(2026, 11, 23, 10, 0))
    # Then the decayed engagement (5) does not end the enrollment: the welcome goes
    assert report.enrolled == 1 and report.exited == 0 and delivered.sent == 1
