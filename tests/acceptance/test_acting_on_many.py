"""Acting on many leads safely, and what the operator reads: the real command line, in
a subprocess, at pinned moments."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tests.acceptance.conftest import Run
from tests.acceptance.test_language import demo

__all__ = ["demo"]

NOW = ("--now", "2026-11-16T15:00Z")  # a Monday: 10:00 in New York
BULK = "lead.source | default('') == 'bulk'"


@pytest.fixture
def bulk(nurture: Run, demo: Path) -> Path:
    """The demo project with 12 more leads, from source ``bulk`` (no sequence's audience)."""
    rows = "\n".join(f"bulk{i:02d}@example.com,Bulk{i},bulk,America/New_York" for i in range(12))
    (demo / "bulk.csv").write_text("email,first_name,source,timezone\n" + rows + "\n")
    assert nurture(*NOW, "leads", "import", "bulk.csv", cwd=demo).returncode == 0
    return demo


def enrolled(nurture: Run, project: Path, sequence: str) -> list[dict[str, object]]:
    listed = nurture("enrollments", "list", "--sequence", sequence, "--json", cwd=project)
    assert listed.returncode == 0, listed.stderr
    return list(json.loads(listed.stdout))


def test_enroll_dry_run_says_who_and_what_each_gets_first_and_when(
    nurture: Run, bulk: Path
) -> None:
    result = nurture(*NOW, "enroll", "pricing-guide-welcome", "--where", BULK, "--dry-run",
                     cwd=bulk)  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "bulk00@example.com: step welcome: email welcome, Mon 2026-11-16 10:00 EST" in lines
    assert len([line for line in lines if line.startswith("bulk")]) == 12
    assert lines[-1].startswith("(dry run, nothing written) would enroll 12 leads")
    assert enrolled(nurture, bulk, "pricing-guide-welcome") == []
    one = nurture(*NOW, "enroll", "recycled-reengage", "--lead", "bulk03@example.com",
                  "--dry-run", cwd=bulk)  # fmt: skip
    assert one.returncode == 0, one.stderr
    # Two weeks later is Monday 2026-11-30, not a sending day: Tuesday at 10:00.
    assert "bulk03@example.com: step checkin: email reengage-checkin, Tue 2026-12-01 10:00 EST" in (
        one.stdout
    )
    assert enrolled(nurture, bulk, "recycled-reengage") == []


def test_a_where_over_ten_leads_asks_first_unless_yes(nurture: Run, bulk: Path) -> None:
    args = (*NOW, "enroll", "pricing-guide-welcome", "--where", BULK)
    refused = nurture(*args, cwd=bulk, input="")  # nobody answers
    assert refused.returncode == 1
    assert "Enroll 12 leads in pricing-guide-welcome now?" in refused.stdout
    assert "nothing done: 12 leads match (more than 10); --dry-run shows who" in refused.stderr
    assert enrolled(nurture, bulk, "pricing-guide-welcome") == []
    no = nurture(*args, cwd=bulk, input="n\n")
    assert no.returncode == 1 and enrolled(nurture, bulk, "pricing-guide-welcome") == []
    agreed = nurture(*args, cwd=bulk, input="y\n")
    assert agreed.returncode == 0, agreed.stderr
    assert "enrolled 12 leads in pricing-guide-welcome" in agreed.stdout
    assert len(enrolled(nurture, bulk, "pricing-guide-welcome")) == 12
    quiet = nurture(*NOW, "enroll", "outbound-first-touch", "--where", BULK, "--yes", cwd=bulk,
                    input="")  # fmt: skip
    assert quiet.returncode == 0 and "now?" not in quiet.stdout
    assert len(enrolled(nurture, bulk, "outbound-first-touch")) == 12


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_enrollments_cancel_ends_them_and_cancels_their_queued_emails(
    nurture: Run, bulk: Path
) -> None:
    unreachable = {"NURTURE_SMTP_HOST": "127.0.0.1", "NURTURE_SMTP_PORT": str(closed_port())}
    assert nurture(*NOW, "enroll", "pricing-guide-welcome", "--where", BULK, "--yes",
                   cwd=bulk).returncode == 0  # fmt: skip
    tick = nurture(*NOW, "tick", cwd=bulk, env=unreachable)
    assert tick.returncode == 0, tick.stderr
    # The mail server cannot be reached: the welcome emails wait, retrying, with why.
    later = ("--now", "2026-11-16T15:00:30Z")
    status = nurture(*later, "status", cwd=bulk).stdout
    assert "retrying: " in status and "cannot connect" in status, status
    retrying = nurture(*later, "outbox", "list", "--status", "retrying", "--json", cwd=bulk)
    assert retrying.returncode == 0, retrying.stderr
    rows = json.loads(retrying.stdout)
    assert rows and all(r["state"] == "retrying" and "cannot connect" in r["last_error"]
                        for r in rows)  # fmt: skip
    assert nurture("outbox", "list", "--status", "retryng", cwd=bulk).stderr.endswith(
        "(did you mean 'retrying'?)\n"
    )
    one = nurture(*later, "enrollments", "cancel", "pricing-guide-welcome", "--lead",
                  "bulk00@example.com", cwd=bulk)  # fmt: skip
    assert one.returncode == 0, one.stderr
    assert "cancelled 1 enrollments in pricing-guide-welcome; 1 queued emails cancelled" in (
        one.stdout
    )
    dry = nurture(*later, "enrollments", "cancel", "pricing-guide-welcome", "--where", BULK,
                  "--dry-run", cwd=bulk)  # fmt: skip
    assert "would cancel 11 enrollments" in dry.stdout
    asked = nurture(*later, "enrollments", "cancel", "pricing-guide-welcome", "--where", BULK,
                    cwd=bulk, input="")  # fmt: skip
    assert asked.returncode == 1 and "nothing done: 11 leads match" in asked.stderr
    done = nurture(*later, "enrollments", "cancel", "pricing-guide-welcome", "--where", BULK,
                   "--yes", cwd=bulk)  # fmt: skip
    assert "cancelled 11 enrollments" in done.stdout
    rows = enrolled(nurture, bulk, "pricing-guide-welcome")
    bulk_rows = [r for r in rows if str(r["lead"]).startswith("bulk")]
    assert {(r["status"], r["reason"]) for r in bulk_rows} == {("exited", "cancelled by hand")}
    outbox = json.loads(nurture("outbox", "list", "--json", cwd=bulk).stdout)
    for_bulk = [m for m in outbox if m["recipient"].startswith("bulk")]
    assert for_bulk and {m["status"] for m in for_bulk} == {"cancelled"}
    # Nothing goes later, even once the server answers.
    assert nurture("--now", "2026-11-16T16:00Z", "tick", cwd=bulk).returncode == 0
    outbox = json.loads(nurture("outbox", "list", "--json", cwd=bulk).stdout)
    assert {m["status"] for m in outbox if m["recipient"].startswith("bulk")} == {"cancelled"}
    # Cancelling a queued email by id works too (the whole schema is loaded).
    queued = [m for m in outbox if m["status"] == "queued"]
    if queued:
        by_id = nurture("outbox", "cancel", str(queued[0]["id"]), cwd=bulk)
        assert by_id.returncode == 0 and "Traceback" not in by_id.stderr


def test_preview_shows_any_variant(nurture: Run, demo: Path) -> None:
    base = ("preview", "pricing-guide-welcome", "breakup", "--lead", "maria.lopez@brightpath.io")
    for variant in ("breakup-short", "breakup-long"):
        shown = nurture(*base, "--variant", variant, cwd=demo)
        assert shown.returncode == 0, shown.stderr
        assert f"template: {variant} (variant {variant}; " in shown.stderr
    subjects = {
        line
        for variant in ("breakup-short", "breakup-long")
        for line in nurture(*base, "--variant", variant, cwd=demo).stdout.splitlines()
        if line.startswith("Subject:")
    }
    assert len(subjects) == 2
    typo = nurture(*base, "--variant", "breakup-shrt", cwd=demo)
    assert typo.returncode != 0 and "Traceback" not in typo.stderr
    assert "--variant 'breakup-shrt' is not a variant of step 'breakup' (did you mean " in (
        typo.stderr
    )


def test_the_start_up_line_says_when_the_first_email_is_due(nurture: Run, demo: Path) -> None:
    assert nurture(*NOW, "tick", cwd=demo).returncode == 0
    # Run once until idle, so that what the tick left due is done.
    assert nurture("--now", "2026-11-16T15:30Z", "run", "--until-idle", cwd=demo).returncode == 0
    started = nurture("--now", "2026-11-16T15:35Z", "run", "--until-idle", cwd=demo)
    assert started.returncode == 0, started.stderr
    first = started.stderr.splitlines()[0]
    assert "daemon started" in first and 'due="nothing now"' in first, first
    assert "first_email_due=2026-11-1" in first, first
