"""``nurture report handoffs``: its JSON (a contract) on a database with known answers,
its suggestions, ``--since`` and the HTML page."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from nurture.store.database import open_engine, session_scope
from nurture.store.events import Event
from nurture.store.handoffs import Handoff
from nurture.store.leads import LeadChanges, upsert_leads
from tests.acceptance.conftest import Cli

HOT = datetime(2026, 11, 16, 15, 0, tzinfo=UTC)


def _handoffs(project: Path) -> None:
    """24 hand-offs since November and one in January:

    - 12 leads without a decision-maker title, engaged by a form: 10 rejected
      ("student"), 2 accepted;
    - 12 VPs who replied: 8 accepted (2 became customers), 2 recycled ("budget next
      quarter"), 2 waiting.
    """
    engine = open_engine(f"sqlite:///{project / 'nurture.db'}")
    plan = ([("form_submitted", "Student", "rejected", "student")] * 10
            + [("form_submitted", "Student", "accepted", "")] * 2
            + [("email_replied", "VP Sales", "accepted", "")] * 8
            + [("email_replied", "VP Sales", "recycled", "budget next quarter")] * 2
            + [("email_replied", "VP Sales", "pending", "")] * 2
            + [("form_submitted", "Student", "rejected", "old")])  # fmt: skip
    with session_scope(engine) as session:
        rows = [{"email": f"r{i}@report.example.com", "title": title, "source": "report"}
                for i, (_, title, _, _) in enumerate(plan)]  # fmt: skip
        ids = upsert_leads(session, [LeadChanges(row["email"], row) for row in rows])
    with session_scope(engine) as session:
        from sqlmodel import select

        from nurture.store.leads import Lead

        leads = {lead.email: lead for lead in session.exec(select(Lead))}
        for i, (event, _, status, reason) in enumerate(plan):
            lead = leads[f"r{i}@report.example.com"]
            hot = HOT if i < 24 else datetime(2026, 1, 5, tzinfo=UTC)
            session.add(Event(lead_id=lead.id or 0, type=event, points=10.0, scored=True,
                              occurred_at=hot - timedelta(hours=1), source="test"))  # fmt: skip
            answered = status != "pending"
            session.add(Handoff(
                lead_id=lead.id or 0, became_hot_at=hot, status=status, owner="sam@example.com",
                answered_at=hot + timedelta(hours=2) if answered else None,
                reason=reason or None, stage_event_id=10_000 + i,
            ))  # fmt: skip
            if status == "accepted" and i in (12, 13):
                lead.stage = "customer"
            session.add(lead)
    del ids
    engine.dispose()


def test_the_json_counts_answers_rules_reasons_and_suggests(cli: Cli, project: Path) -> None:
    _handoffs(project)
    data = json.loads(cli("report", "handoffs", "--since", "2026-06-01", "--json").stdout)
    assert data["handoffs"] == 24
    assert data["answers"] == {"accepted": 10, "rejected": 10, "recycled": 2, "waiting": 2}
    assert data["median_hours_to_answer"] == 2.0
    assert data["customers"] == 2
    rules = {(r["kind"], r["rule"]): r for r in data["rules"]}
    assert rules[("engagement", "form_submitted")] == {
        "rule": "form_submitted", "kind": "engagement", "handoffs": 12,
        "accepted": 2, "rejected": 10, "recycled": 0,
    }  # fmt: skip
    title = rules[("fit", "Decision-maker title")]
    assert (title["handoffs"], title["accepted"], title["recycled"]) == (12, 8, 2)
    assert rules[("hot_on", "meeting_booked")]["handoffs"] == 0
    assert data["reasons"] == [
        {"answer": "rejected", "reason": "student", "count": 10},
        {"answer": "recycled", "reason": "budget next quarter", "count": 2},
    ]
    assert (
        'Leads handed off without "Decision-maker title" were rejected 10 times out of 12 '
        "(83 %): consider requiring it for hot." in data["suggestions"]
    )
    # Without --since the January one counts too.
    everything = json.loads(cli("report", "handoffs", "--json").stdout)
    assert everything["handoffs"] == 25 and everything["answers"]["rejected"] == 11


def test_no_suggestion_without_twenty_answers_and_the_html_page(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    data = json.loads(cli("report", "handoffs", "--json").stdout)
    assert data["handoffs"] == 0 and data["suggestions"] == []
    assert data["median_hours_to_answer"] is None
    _handoffs(project)
    page = tmp_path / "handoffs.html"
    cli("report", "handoffs", "--html", str(page))
    text = page.read_text()
    assert "How our hot-lead definition is doing" in text and "<script" not in text
    assert "Answers by week" in text and "Answers by rule" in text
    assert 'name="viewport"' in text


def test_rescore_dry_run_says_what_a_change_would_do_and_writes_nothing(
    cli: Cli, project: Path
) -> None:
    import sqlite3

    from freezegun import freeze_time

    _handoffs(project)
    engine = open_engine(f"sqlite:///{project / 'nurture.db'}")
    with session_scope(engine) as session:
        from sqlmodel import select

        from nurture.store.leads import Lead

        student = session.exec(select(Lead).where(Lead.email == "r0@report.example.com")).one()
        student.stage = "hot"  # hot under the old rules; no fit for the new ones
        session.add(student)
    engine.dispose()
    scoring = project / "scoring.yaml"
    scoring.write_text(scoring.read_text().replace("hot: {engagement: 30, fit: 20}",
                                                   "hot: {engagement: 15, fit: 20}"))  # fmt: skip
    database = project / "nurture.db"

    def contents() -> list[str]:
        connection = sqlite3.connect(database)
        try:
            return list(connection.iterdump())
        finally:
            connection.close()

    before = contents()
    with freeze_time(HOT + timedelta(hours=1)):
        data = json.loads(cli("rescore", "--dry-run", "--json").stdout)
        text = cli("rescore", "--dry-run").stdout
    assert contents() == before  # nothing written, row by row
    # The ten VPs who replied (20 points) and are not customers would turn hot now.
    assert (data["would_turn_hot"], data["would_stop_being_hot"]) == (10, 1)
    # Of November's answered hand-offs (January's is past 90 days): the 10 rejected
    # students engaged by one form (10 < 15) would not have been made; the 2 students
    # accepted would have been missed.
    assert data["answered_handoffs_replayed"] == 20
    assert (data["rejected_not_made"], data["accepted_missed"]) == (10, 2)
    assert "10 leads would turn hot now, 1 would stop being hot" in text
    assert "10 hand-offs sales rejected would not have been made" in text


def test_check_says_what_a_changed_scoring_yaml_would_do(cli: Cli, project: Path) -> None:
    from freezegun import freeze_time

    _handoffs(project)
    with freeze_time(HOT + timedelta(hours=1)):
        cli("tick", "--now", (HOT + timedelta(hours=1)).isoformat())  # scores computed
        assert "changed since the scores were computed" not in cli("check").stdout
        scoring = project / "scoring.yaml"
        lower = scoring.read_text().replace("hot: {engagement: 30", "hot: {engagement: 15")
        scoring.write_text(lower)
        said = cli("check").stdout
    assert "scoring.yaml: changed since the scores were computed:" in said
    assert "would turn hot now" in said and "would not have been made" in said


def test_handoff_reasons_are_listed_and_picked_by_number(cli: Cli, project: Path) -> None:
    _handoffs(project)
    scoring = project / "scoring.yaml"
    scoring.write_text(scoring.read_text() + "reasons:\n  recycle: [budget next quarter, "
                       "wrong timing]\n")  # fmt: skip
    listed = cli("handoff", "reasons").stdout
    assert "recycle:\n  1. budget next quarter\n  2. wrong timing" in listed
    cli("handoff", "recycle", "r22@report.example.com", "--reason", "2")
    cli("handoff", "reject", "r23@report.example.com", "--reason", "moved abroad")
    data = json.loads(cli("report", "handoffs", "--json").stdout)
    reasons = {(r["answer"], r["reason"]): r["count"] for r in data["reasons"]}
    assert reasons[("recycled", "wrong timing")] == 1
    assert reasons[("rejected", "moved abroad")] == 1
    scoring.write_text(scoring.read_text() + "  reject: student\n")
    assert "reasons must map reject" in cli("check", ok=False).stdout
