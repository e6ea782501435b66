from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from freezegun import freeze_time

from nurture import clock


def test_now_is_aware_utc_and_follows_freezegun() -> None:
    with freeze_time("2026-03-08 06:59:00"):
        assert clock.now() == datetime(2026, 3, 8, 6, 59, tzinfo=UTC)
        assert clock.now().tzinfo is UTC


def test_pinned_moment_wins_and_is_converted_to_utc() -> None:
    warsaw_noon = datetime(2026, 7, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    with clock.pinned(warsaw_noon):
        assert clock.now() == datetime(2026, 7, 1, 10, 0, tzinfo=UTC)
    assert clock.now() != datetime(2026, 7, 1, 10, 0, tzinfo=UTC)


def test_naive_moments_are_taken_as_utc() -> None:
    assert clock.as_utc(datetime(2026, 1, 1, 9)) == datetime(2026, 1, 1, 9, tzinfo=UTC)
