"""The engine's pure core: one enrollment at one moment, no database, no clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from nurture.engine.advance import EMAIL_RECHECK, Position, advance, resolve_step
from nurture.language.expressions import EventSet
from nurture.language.sequence_files import load_sequence
from nurture.language.sequences import Sequence

LA = ZoneInfo("America/Los_Angeles")
LEAD = {"email": "maria@example.com", "first_name": "María", "stage": "cold",
        "status": "subscribed"}  # fmt: skip

WELCOME = """\
name: s
from: A <a@example.com>
schedule: {days: [mon, tue, wed, thu, fri], hours: "09:00-17:00"}
exit_when: [replied, hot]
steps:
  - id: welcome
    email: a
  - id: case-study
    wait: 2 days
    if: "not clicked('welcome')"
    email: b
  - id: call
    wait: 1 business day
    task: call
    timeout: 3 days
  - id: tag
    update: {stage: warm}
  - id: breakup
    wait: 4 days
    at: "10:30"
    email: a
"""


def sequence(tmp_path: Path, text: str = WELCOME) -> Sequence:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    loaded, problems = load_sequence(path, lambda name: name in ("a", "b"))
    assert problems == [] and loaded is not None
    return loaded


def la(*args: int) -> datetime:
    return datetime(*args, tzinfo=LA).astimezone(UTC)  # type: ignore[misc]


def step_ids(outcome) -> list[str]:
    return [touch.step.id for touch in outcome.touches]


def test_the_first_step_goes_at_once_and_the_next_is_due_after_its_wait(tmp_path: Path) -> None:
    seq = sequence(tmp_path)
    start = la(2026, 11, 18, 10, 0)  # a Wednesday
    outcome = advance(seq, Position("welcome", start), lead=LEAD, engagement=EventSet(),
                      now=start, tz=LA)  # fmt: skip
    assert step_ids(outcome) == ["welcome"]
    assert outcome.touches[0].template == "a"
    assert outcome.status == "active"
    assert outcome.next_step == "case-study"
    assert outcome.due_at == la(2026, 11, 20, 10, 0)
    assert outcome.done == ["welcome"]


def test_nothing_happens_before_the_due_moment(tmp_path: Path) -> None:
    seq = sequence(tmp_path)
    base = la(2026, 11, 18, 10, 0)
    position = Position("case-study", base, ("welcome",))
    outcome = advance(seq, position, lead=LEAD, engagement=EventSet(),
                      now=la(2026, 11, 20, 9, 59), tz=LA)  # fmt: skip
    assert outcome.touches == []
    assert outcome.due_at == la(2026, 11, 20, 10, 0)


def test_a_false_if_skips_the_step_and_the_next_wait_counts_from_it(tmp_path: Path) -> None:
    seq = sequence(tmp_path)
    clicked = EventSet({("email_clicked", "welcome")})
    now = la(2026, 11, 20, 10, 0)  # Friday
    position = Position("case-study", la(2026, 11, 18, 10, 0), ("welcome",))
    outcome = advance(seq, position, lead=LEAD, engagement=clicked, now=now, tz=LA)
    assert outcome.skipped == [("case-study", "if: not clicked('welcome')")]
    assert outcome.touches == []
    assert outcome.next_step == "call"
    assert outcome.due_at == la(2026, 11, 23, 10, 0)  # one business day after Friday


def test_an_exit_event_ends_the_enrollment_before_any_step(tmp_path: Path) -> None:
    seq = sequence(tmp_path)
    replied = EventSet({("email_replied", "welcome")})
    now = la(2026, 11, 20, 10, 0)
    position = Position("case-study", la(2026, 11, 18, 10, 0), ("welcome",))
    outcome = advance(seq, position, lead=LEAD, engagement=replied, now=now, tz=LA)
    assert outcome.status == "exited"
    assert outcome.reason == "replied"
    assert outcome.touches == [] and outcome.due_at is None


@pytest.mark.parametrize("status", ["unsubscribed", "bounced", "complained"])
def test_opted_out_leads_leave_every_sequence(tmp_path: Path, status: str) -> None:
    seq = sequence(tmp_path)
    now = la(2026, 11, 18, 10, 0)
    outcome = advance(seq, Position("welcome", now), lead={**LEAD, "status": status},
                      engagement=EventSet(), now=now, tz=LA)  # fmt: skip
    assert outcome.status == "exited"
    assert outcome.reason == f"lead is {status}"
    assert outcome.touches == []


def test_a_task_makes_the_next_step_wait_until_done_or_timeout(tmp_path: Path) -> None:
    seq = sequence(tmp_path)
    now = la(2026, 11, 23, 10, 0)  # Monday
    position = Position("call", la(2026, 11, 20, 10, 0), ("welcome", "case-study"))
    outcome = advance(seq, position, lead=LEAD, engagement=EventSet(), now=now, tz=LA)
    assert step_ids(outcome) == ["call"]
    assert outcome.waits_for_task
    assert outcome.next_step == "tag"
    assert outcome.due_at == la(2026, 11, 26, 10, 0) == outcome.touches[0].timeout_at

    waiting = Position("tag", now, ("welcome", "case-study", "call"), waiting_for_task=True,
                       task_timeout_at=outcome.due_at)  # fmt: skip
    early = advance(seq, waiting, lead=LEAD, engagement=EventSet(),
                    now=la(2026, 11, 25, 10, 0), tz=LA)  # fmt: skip
    assert early.touches == [] and early.waits_for_task and early.due_at == outcome.due_at

    late = advance(seq, waiting, lead=LEAD, engagement=EventSet(),
                   now=la(2026, 11, 26, 10, 0), tz=LA)  # fmt: skip
    assert late.task_expired
    assert step_ids(late) == ["tag"]  # no wait: done in the same pass
    assert late.lead_changes == {"stage": "warm"}
    assert late.next_step == "breakup"
    assert late.due_at == la(2026, 11, 30, 10, 30)


def test_a_task_without_timeout_waits_for_ever(tmp_path: Path) -> None:
    seq = sequence(tmp_path, WELCOME.replace("    timeout: 3 days\n", ""))
    position = Position("tag", la(2026, 11, 23, 10, 0), ("welcome", "case-study", "call"),
                        waiting_for_task=True)  # fmt: skip
    outcome = advance(seq, position, lead=LEAD, engagement=EventSet(),
                      now=la(2027, 1, 1, 10, 0), tz=LA)  # fmt: skip
    assert outcome.touches == [] and outcome.due_at is None and outcome.waits_for_task


def test_an_update_to_hot_ends_the_sequence_by_its_exit_rule(tmp_path: Path) -> None:
    seq = sequence(tmp_path, WELCOME.replace("{stage: warm}", "{stage: hot}"))
    now = la(2026, 11, 30, 10, 0)
    position = Position("tag", now - timedelta(days=1), ("welcome", "case-study", "call"))
    outcome = advance(seq, position, lead=LEAD, engagement=EventSet(), now=now, tz=LA)
    assert step_ids(outcome) == ["tag"]
    assert outcome.status == "exited" and outcome.reason == "lead is hot"


def test_the_last_step_completes_the_enrollment_once_its_email_has_left(
    tmp_path: Path,
) -> None:
    seq = sequence(tmp_path)
    now = la(2026, 11, 30, 10, 30)
    done = ("welcome", "case-study", "call", "tag")
    position = Position("breakup", la(2026, 11, 26, 10, 0), done)
    outcome = advance(seq, position, lead=LEAD, engagement=EventSet(), now=now, tz=LA)
    assert step_ids(outcome) == ["breakup"]
    # Queued, not gone: still active, looked at again when it leaves (or a day later).
    assert outcome.status == "active" and outcome.next_step is None and outcome.waits_for_email
    assert outcome.due_at == now + EMAIL_RECHECK
    waiting = Position(None, now, (*done, "breakup"), waiting_for_email=True)
    later = now + timedelta(hours=5)  # a daily cap held it
    still = advance(seq, waiting, lead=LEAD, engagement=EventSet(), now=later, tz=LA)
    assert still.status == "active" and still.touches == []
    gone = Position(None, later, (*done, "breakup"))
    outcome = advance(seq, gone, lead=LEAD, engagement=EventSet(), now=later, tz=LA)
    assert outcome.status == "completed" and outcome.touches == []


def test_the_wait_after_an_email_counts_from_when_it_leaves(tmp_path: Path) -> None:
    seq = sequence(tmp_path)
    start = la(2026, 11, 18, 10, 0)  # a Wednesday
    outcome = advance(seq, Position("welcome", start), lead=LEAD, engagement=EventSet(),
                      now=start, tz=LA)  # fmt: skip
    assert outcome.waits_for_email and outcome.next_step == "case-study"
    # Two days later the email has still not left (a cap, a retry): nothing happens.
    waiting = Position("case-study", start, ("welcome",), waiting_for_email=True)
    later = la(2026, 11, 20, 10, 0)
    held = advance(seq, waiting, lead=LEAD, engagement=EventSet(), now=later, tz=LA)
    assert held.touches == [] and held.due_at == later + EMAIL_RECHECK
    # It left at 11:00 that day (the delivery moved the base there): due two days on.
    sent = Position("case-study", la(2026, 11, 20, 11, 0), ("welcome",))
    outcome = advance(seq, sent, lead=LEAD, engagement=EventSet(), now=la(2026, 11, 20, 11, 1),
                      tz=LA)  # fmt: skip
    # Sunday 11:00 falls on the weekend: Monday, when the window opens.
    assert outcome.touches == [] and outcome.due_at == la(2026, 11, 23, 9, 0)


def test_a_removed_step_moves_the_lead_to_the_next_step_that_exists(tmp_path: Path) -> None:
    edited = sequence(tmp_path, WELCOME.replace(
        "  - id: case-study\n    wait: 2 days\n    if: \"not clicked('welcome')\"\n    email: b\n",
        "",
    ))  # fmt: skip
    assert resolve_step(edited, "case-study", ("welcome",)).id == "call"  # type: ignore[union-attr]
    base = la(2026, 11, 18, 10, 0)
    outcome = advance(edited, Position("case-study", base, ("welcome",)), lead=LEAD,
                      engagement=EventSet(), now=la(2026, 11, 19, 10, 0), tz=LA)  # fmt: skip
    assert step_ids(outcome) == ["call"]
    assert "step 'case-study' is gone: moved on to 'call'" in outcome.notes


def test_no_step_is_ever_done_twice_even_if_an_edit_moves_it(tmp_path: Path) -> None:
    seq = sequence(tmp_path)
    # An edit renamed 'breakup' to come back; 'welcome' (already done) must not repeat.
    assert resolve_step(seq, "welcome", ("welcome",)).id == "case-study"  # type: ignore[union-attr]
    assert resolve_step(seq, "gone", ("welcome", "case-study", "call", "tag", "breakup")) is None


def test_a_calendar_wait_keeps_the_local_time_across_the_dst_change(tmp_path: Path) -> None:
    seq = sequence(tmp_path, WELCOME.replace('hours: "09:00-17:00"', 'hours: "08:00-17:00"'))
    warsaw = ZoneInfo("Europe/Warsaw")
    sent = datetime(2026, 10, 23, 10, 0, tzinfo=warsaw)  # Friday, summer time
    position = Position("case-study", sent.astimezone(UTC), ("welcome",))
    outcome = advance(seq, position, lead=LEAD, engagement=EventSet(),
                      now=sent.astimezone(UTC), tz=warsaw)  # fmt: skip
    # Two days on is Sunday 25 October (clocks went back): it moves to Monday 08:00 local.
    assert outcome.due_at == datetime(2026, 10, 26, 8, 0, tzinfo=warsaw)
    assert outcome.due_at.astimezone(UTC).hour == 7


FADING = """\
name: s
from: A <a@example.com>
exit_when: ["engagement < 14"]
steps:
  - id: welcome
    email: a
  - id: later
    wait: 3 days
    email: b
"""


def test_simulate_checks_a_time_driven_exit_before_a_step_as_the_daemon_does(
    tmp_path: Path,
) -> None:
    from nurture.engine.simulate import simulate
    from nurture.language.expressions import LeadView, Scores
    from nurture.language.scoring import parse_scoring

    rules, problems = parse_scoring(tmp_path / "scoring.yaml", {
        "engagement": {"email_clicked": 5}, "half_life": "14 days",
        "stages": {"warm": {"engagement": 10}},
    })  # fmt: skip
    assert rules is not None and problems == []
    seq = sequence(tmp_path, FADING)
    start = la(2026, 11, 18, 10, 0)
    # 16 points now, 13.8 when `later` is due: below 14, the daemon exits instead.
    timeline = simulate(seq, LeadView({**LEAD, "stage": "warm"}), start=start, days=30,
                        assumptions=[], default_timezone="America/Los_Angeles", rules=rules,
                        scores=Scores(16.0, 0.0))  # fmt: skip
    assert [(e.kind, e.step, e.moment, e.reason) for e in timeline] == [
        ("email", "welcome", start, ""),
        ("exited", "later", start + timedelta(days=3), "engagement < 14"),
    ]
    assert timeline[-1].detail == "exits before later"
    # The daemon's step at that moment, with the lead's scores then.
    daemon = advance(seq, Position("later", start, ("welcome",)), lead=LEAD,
                     engagement=EventSet(), now=start + timedelta(days=3), tz=LA,
                     scores=Scores(16.0 * 0.5 ** (3 / 14), 0.0))  # fmt: skip
    assert (daemon.status, daemon.reason, daemon.touches) == ("exited", "engagement < 14", [])


def test_simulate_shows_an_opted_out_lead_leave_as_the_daemon_does(tmp_path: Path) -> None:
    from nurture.engine.simulate import simulate
    from nurture.language.expressions import LeadView

    start = la(2026, 11, 18, 10, 0)
    timeline = simulate(sequence(tmp_path), LeadView({**LEAD, "status": "unsubscribed"}),
                        start=start, days=30, assumptions=[],
                        default_timezone="America/Los_Angeles")  # fmt: skip
    assert [(e.kind, e.detail, e.reason) for e in timeline] == [
        ("note", "lead is unsubscribed: never emailed", ""),
        ("exited", "exits before the first step", "lead is unsubscribed"),
    ]
