from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from freezegun import freeze_time

from nurture import clock, logs
from nurture.errors import InvalidValueError


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


def test_one_rule_for_typed_moments() -> None:
    # Without an offset: wall-clock time in the given (project) timezone, DST included.
    assert clock.parse_moment("2026-07-01T09:00", "Europe/Warsaw") == datetime(
        2026, 7, 1, 7, tzinfo=UTC
    )
    assert clock.parse_moment("2026-12-01T09:00", "Europe/Warsaw") == datetime(
        2026, 12, 1, 8, tzinfo=UTC
    )
    # A date alone is its midnight there; an offset or Z is kept whatever the timezone.
    assert clock.parse_moment("2026-12-01", "America/New_York") == datetime(
        2026, 12, 1, 5, tzinfo=UTC
    )
    assert clock.parse_moment("2026-12-01T09:00Z", "Asia/Tokyo") == datetime(
        2026, 12, 1, 9, tzinfo=UTC
    )
    with pytest.raises(InvalidValueError, match=r"--at 'soon': not an ISO 8601 moment"):
        clock.parse_moment("soon", "UTC", what="--at")


def test_a_running_pin_starts_at_its_moment_and_goes_on() -> None:
    start = datetime(2040, 1, 1, 12, tzinfo=UTC)
    with freeze_time("2026-03-08 06:59:00") as frozen:
        with clock.pinned(start, running=True):
            assert clock.is_pinned()
            assert clock.now() == start
            frozen.tick(90)
            assert clock.now() == start + timedelta(seconds=90)
        with clock.pinned(start):
            frozen.tick(90)
            assert clock.now() == start
        assert not clock.is_pinned()


def test_log_lines_carry_the_pinned_moment(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure()
    with clock.pinned(datetime(2040, 1, 1, 12, 30, tzinfo=UTC)):
        logs.action("email sent", lead="a@b.c")
    assert capsys.readouterr().err.startswith("2040-01-01T12:30:00Z INFO email sent lead=a@b.c")


@pytest.mark.parametrize(
    "text", ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59-14:00", "1969-12-31T23:59", "2101-01-01"]
)
def test_typed_moments_outside_1970_to_2100_are_refused_by_name(text: str) -> None:
    with pytest.raises(InvalidValueError, match=r"^--at: .* is outside the years 1970 to 2100"):
        clock.parse_moment(text, "Europe/Warsaw", what="--at")


def test_a_process_pin_is_read_by_every_thread_and_a_threads_own_pin_wins() -> None:
    import threading

    start = datetime(2040, 1, 1, 12, tzinfo=UTC)
    seen: list[datetime] = []

    def read() -> None:
        seen.append(clock.now())

    with clock.pinned(start, process=True):
        thread = threading.Thread(target=read)  # a fresh context, as a server's thread
        thread.start()
        thread.join()
        assert seen == [start] and clock.is_pinned()
        with clock.pinned(start + timedelta(days=1)):
            assert clock.now() == start + timedelta(days=1)
    assert not clock.is_pinned()
    thread = threading.Thread(target=read)
    thread.start()
    thread.join()
    assert seen[1] != start
