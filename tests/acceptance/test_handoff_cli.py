"""The hand-off and the report through the commands, on the example project."""

from __future__ import annotations

import json
from pathlib import Path

from tests.acceptance.conftest import Cli
from tests.conftest import SmtpServer

T0 = "2026-11-16T17:00:00Z"  # Monday 09:00 in Los Angeles, 12:00 in New York
MARIA = "maria.lopez@brightpath.io"
TOM = "tom.becker@harbor-analytics.com"


def engage(cli: Cli) -> None:
    cli("tick", "--now", T0)
    touch = ["--sequence", "pricing-guide-welcome", "--step", "welcome"]
    cli("event", "email_clicked", "--lead", MARIA, *touch, "--at", "2026-11-16T18:00:00Z")
    for minute in ("01", "02", "03"):
        cli("event", "form_submitted", "--lead", MARIA, "--at", f"2026-11-16T18:{minute}:00Z")
    cli("event", "email_opened", "--lead", TOM, *touch, "--at", "2026-11-16T18:00:00Z")


def test_hot_lead_notice_stop_and_recycle(cli: Cli, smtp_server: SmtpServer) -> None:
    engage(cli)
    tick = cli("tick", "--now", "2026-11-16T19:00:00Z")
    assert "turned hot 1" in tick.stdout and "exited 1" in tick.stdout
    [notice] = [m for m in smtp_server.handler.messages if m["To"] == "sam@example.com"]
    assert notice["Subject"] == "Hot lead: María López (BrightPath)"
    text = notice.get_body(("plain",)).get_content()
    assert "Filled in a form 3 times" in text and "/app/l/" in text
    assert notice["Reply-To"] == "sales@example.com"  # a person reads replies
    assert notice["From"].startswith('"Acme demo leads"') or "Acme demo leads" in notice["From"]
    week_later = ("--now", "2026-11-23T19:00:00Z")
    shown = json.loads(cli(*week_later, "leads", "show", MARIA, "--json").stdout)
    assert shown["stage"] == "hot"
    assert [e["type"] for e in shown["score"]["events"]][:1] == ["form_submitted"]
    assert shown["handoffs"][0]["status"] == "pending"
    text = cli(*week_later, "leads", "show", MARIA).stdout
    assert "hot at engagement 30 and fit 20" in text and "half-life 14 days" in text
    # Shown a week later: a week of decay since the events (35 points, half-life 14 days).
    assert 24 < shown["score"]["engagement"] < 25 and shown["score"]["fit"] == 30
    answer = ("--now", "2026-11-16T19:30:00Z", "handoff", "recycle", MARIA)
    result = cli(*answer, "--reason", "budget next quarter")
    assert "recycled" in result.stdout
    cli("tick", "--now", "2026-11-16T20:00:00Z")
    enrollments = json.loads(cli("enrollments", "list", "--lead", MARIA, "--json").stdout)
    assert {(e["sequence"], e["status"]) for e in enrollments} == {
        ("pricing-guide-welcome", "exited"),
        ("recycled-reengage", "active"),
    }
    again = cli("handoff", "accept", MARIA, ok=False)
    assert again.exit_code == 1 and "not waiting for an answer" in str(again.exception)


def test_report_numbers_match_a_hand_count(cli: Cli, tmp_path: Path) -> None:
    engage(cli)
    cli("tick", "--now", "2026-11-16T19:00:00Z")
    cli("handoff", "accept", MARIA)
    page = tmp_path / "report.html"
    data = json.loads(cli("report", "--json", "--html", str(page)).stdout)
    assert data["stages"] == {
        "cold": 9,
        "warm": 0,
        "hot": 0,
        "accepted": 1,
        "customer": 0,
        "disqualified": 0,
    }
    assert data["reached"] == {"cold": 10, "warm": 1, "hot": 1, "accepted": 1, "customer": 0}
    [welcome] = [s for s in data["steps"] if s["step"] == "welcome"]
    # Monday 09:00 in Los Angeles: Maria and Tom (New York) were in their sending hours.
    assert welcome == {
        "sequence": "pricing-guide-welcome",
        "step": "welcome",
        "sent": 2,
        "delivered": 2,
        "bounced": 0,
        "opened": 1,
        "clicked": 1,
        "replied": 0,
        "unsubscribed": 0,
        "tasks_done": 0,
        "open_rate": 0.5,
        "click_rate": 0.5,
        "reply_rate": 0.0,
        "unsubscribe_rate": 0.0,
    }
    assert data["variants"] == []  # the example sequences test no variants
    assert data["days_to_hot"] == {"leads": 1, "median": 0.08, "p90": 0.08}
    assert data["handoffs"]["total"] == 1 and data["handoffs"]["accepted"] == 1
    html = page.read_text()
    assert (
        html.startswith("<!doctype html>")
        and "<svg" in html
        and "http" not in html.split("<body>")[1].replace("http://www.w3.org/2000/svg", "")
    )
    table = cli("report").stdout
    assert "hand-offs: 1 (1 accepted" in table
    assert "None" not in table and "1 (50%)" in table


def test_a_cto_who_books_a_meeting_is_handed_off_at_once(cli: Cli, smtp_server: SmtpServer) -> None:
    priya = "priya@northwind.dev"  # CTO: the example fit rule reads titles in any case
    cli("tick", "--now", T0)
    cli("event", "meeting_booked", "--lead", priya, "--at", "2026-11-16T18:00:00Z")
    tick = cli("tick", "--now", "2026-11-16T18:05:00Z")
    assert "turned hot 1" in tick.stdout
    shown = json.loads(
        cli("--now", "2026-11-16T18:05:00Z", "leads", "show", priya, "--json").stdout
    )
    assert shown["stage"] == "hot" and shown["score"]["fit"] >= 20
    assert shown["handoffs"][0]["status"] == "pending"
    notices = [m for m in smtp_server.handler.messages if str(m["Subject"]).startswith("Hot lead")]
    assert [m["Subject"] for m in notices] == ["Hot lead: Priya Natarajan (Northwind Dev)"]
    assert "Booked a meeting" in notices[0].get_body(("plain",)).get_content()
