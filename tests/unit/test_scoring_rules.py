"""Applying scoring.yaml: decay, caps, thresholds (pure)."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from nurture.language.scoring import (
    ScoringRules,
    decayed,
    event_points,
    falls_below_at,
    implied_stage,
    load_scoring,
    stage_reached,
)

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@pytest.fixture
def rules() -> ScoringRules:
    loaded, problems = load_scoring(Path(__file__).parents[2] / "scoring.yaml")
    assert problems == [] and loaded is not None
    return loaded


def test_engagement_halves_every_half_life(rules: ScoringRules) -> None:
    assert decayed(20, NOW, NOW + timedelta(days=14), rules) == pytest.approx(10)
    assert decayed(20, NOW, NOW + timedelta(days=28), rules) == pytest.approx(5)
    assert decayed(20, NOW, NOW - timedelta(days=1), rules) == 20  # no growth backwards


def test_points_stop_at_the_daily_cap_and_machines_earn_none(rules: ScoringRules) -> None:
    assert [event_points(rules, "email_opened", False, n) for n in range(5)] == [1, 1, 1, 0, 0]
    assert event_points(rules, "email_clicked", True, 0) == 0
    assert event_points(rules, "unsubscribed", False, 0) == -100
    assert event_points(rules, "something_else", False, 0) == 0


def test_hot_needs_engagement_fit_and_someone_to_hand_it_to(rules: ScoringRules) -> None:
    assert implied_stage(rules, 5, 30, True) == "cold"
    assert implied_stage(rules, 12, 0, True) == "warm"
    assert implied_stage(rules, 35, 10, True) == "warm"  # engaged but not a fit
    assert implied_stage(rules, 35, 20, True) == "hot"
    assert implied_stage(rules, 35, 20, False) == "warm"  # nobody to hand it to


def test_decay_below_a_threshold_is_foreseen(rules: ScoringRules) -> None:
    moment = falls_below_at(rules, "hot", 40, NOW)
    assert moment is not None
    # Below 30 as sales reads it (two decimals): under 29.995.
    expected = NOW + timedelta(days=14 * math.log2(40 / 29.995))
    assert abs((moment - expected).total_seconds()) <= 1
    assert round(decayed(40, NOW, moment, rules), 2) < 30
    assert round(decayed(40, NOW, moment - timedelta(1), rules), 2) >= 30
    assert falls_below_at(rules, "cold", 40, NOW) is None


def test_a_threshold_is_crossed_at_the_event_that_reaches_it(rules: ScoringRules) -> None:
    # 20 + 10 a minute apart is 29.9999: 30 to two decimals.
    assert implied_stage(rules, 29.9999, 20, True) == "hot"
    # Decayed by the time the pass looks, the lead still crossed at the event's moment.
    assert stage_reached(rules, 29.9, 30.0, 20, True) == "hot"
    assert stage_reached(rules, 29.9, None, 20, True) == "warm"
    assert stage_reached(rules, 29.9, 12.0, 20, True) == "warm"  # the peak never lowers


def test_an_out_of_office_or_a_colleague_s_reply_earns_no_points(
    tmp_path: Path, rules: ScoringRules
) -> None:
    # Given a scoring.yaml that gives them points, then each is a problem of its line
    path = tmp_path / "scoring.yaml"
    path.write_text("engagement:\n  email_replied: 10\n  out_of_office: 5\n"
                    "  account_replied: 5\n")  # fmt: skip
    loaded, problems = load_scoring(path)
    assert [(p.line, p.message) for p in problems] == [
        (3, "out_of_office earns no points: it is not the lead's engagement"),
        (4, "account_replied earns no points: it is not the lead's engagement"),
    ]
    assert loaded is None
    # And rules that name them anyway give them none
    clicked = rules.engagement["email_clicked"]
    named = replace(rules, engagement={**rules.engagement, "out_of_office": clicked,
                                       "account_replied": clicked})  # fmt: skip
    assert event_points(named, "out_of_office", False, 0) == 0
    assert event_points(named, "account_replied", False, 0) == 0
    assert event_points(named, "email_clicked", False, 0) == clicked.points


@pytest.mark.parametrize("number", [".inf", "-.inf", ".nan", "1.0e400"])
def test_a_number_no_score_can_hold_is_refused_where_it_is(tmp_path: Path, number: str) -> None:
    path = tmp_path / "scoring.yaml"
    path.write_text(
        f"engagement:\n  email_clicked: {number}\n"
        f"fit:\n  - if: \"lead.title == 'CEO'\"\n    points: {number}\n"
        f"stages:\n  hot: {{engagement: {number}}}\n"
    )
    _, problems = load_scoring(path)
    assert [(p.line, p.message) for p in problems] == [
        (2, "email_clicked: points must be a number"),
        (4, "each fit rule needs 'if' (an expression) and 'points' (a number)"),
        (7, "hot: thresholds must be numbers"),
    ]
