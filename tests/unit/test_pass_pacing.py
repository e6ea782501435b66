"""The pass process keeps only a few batches ahead of the daemon's senders
(:func:`nurture.stages.process._pace`): it waits while the senders go on starting what
it queued, and no longer once they stall, the pass's budget is spent or the daemon
stops. The clock and the senders are played by the test, one look at a time."""

from __future__ import annotations

import os
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from nurture.stages import process
from nurture.stages.process import PACE_AHEAD, SharedCounter, SharedFlag

BATCH = 100


class Moments:
    """``time.monotonic`` and ``time.sleep`` of the pass process: each look moves the
    clock by the look's pause, and lets the daemon start *per_look* more messages."""

    def __init__(self, started: SharedCounter, per_look: int) -> None:
        self.now = 1000.0
        self.looks = 0
        self.started, self.per_look = started, per_look

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.looks += 1
        self.now += seconds
        self.started.add(self.per_look)


@pytest.fixture
def child(monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleNamespace]:
    started = SharedCounter()
    state = SimpleNamespace(
        ctx=SimpleNamespace(batch_size=BATCH), started=started, stop=SharedFlag(),
        parent=os.getppid(), base=0, queued=0, budget=process.PACE_BUDGET,
    )  # fmt: skip
    monkeypatch.setattr(process, "_child", state)
    yield state


def _play(monkeypatch: pytest.MonkeyPatch, child: SimpleNamespace, per_look: int) -> Moments:
    moments = Moments(child.started, per_look)
    monkeypatch.setattr(process, "_monotonic", moments.monotonic)
    monkeypatch.setattr(process, "_sleep", moments.sleep)
    return moments


def test_a_pass_within_its_lead_goes_on_at_once(
    child: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    moments = _play(monkeypatch, child, per_look=0)
    process._pace(PACE_AHEAD * BATCH)  # exactly as far ahead as it may be
    assert moments.looks == 0 and child.queued == PACE_AHEAD * BATCH


def test_a_pass_too_far_ahead_waits_while_the_senders_catch_up(
    child: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given senders that start 10 messages at each look
    moments = _play(monkeypatch, child, per_look=10)
    # When a batch leaves the pass 50 messages past its lead
    process._pace(PACE_AHEAD * BATCH + 50)
    # Then it waited until they had started those 50, and no longer
    assert moments.looks == 5
    assert child.queued - child.started.value == PACE_AHEAD * BATCH


def test_a_pass_waits_no_longer_once_the_senders_stall(
    child: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given senders that start nothing (a slow server, a cap, a closed window)
    moments = _play(monkeypatch, child, per_look=0)
    process._pace(10 * BATCH)
    # Then the pass went on after PACE_STALL seconds, far ahead as it is
    assert process.PACE_STALL <= moments.now - 1000.0 <= process.PACE_STALL + 2 * process._POLL
    # and waits no more in this pass: its next batches go on at once
    looks = moments.looks
    process._pace(BATCH)
    process._pace(BATCH)
    assert moments.looks == looks


def test_a_pass_waits_at_most_its_budget_in_all(
    child: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given senders that start one message a look, far behind
    moments = _play(monkeypatch, child, per_look=1)
    monkeypatch.setattr(process, "PACE_BUDGET", 0.5)
    child.budget = 0.5
    for _ in range(3):  # three batches, each far ahead
        process._pace(10 * BATCH)
    # Then the three waited half a second in all
    assert 0.5 <= moments.now - 1000.0 <= 0.5 + 2 * process._POLL
    assert child.budget <= 0


def test_a_pass_does_not_wait_once_the_daemon_stops(
    child: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    moments = _play(monkeypatch, child, per_look=1)
    child.stop.set()
    process._pace(10 * BATCH)
    assert moments.looks == 0


def test_what_the_daemon_started_before_the_pass_does_not_count_for_it(
    child: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a daemon that had started 1,000 messages before this pass began
    child.started.add(1000)
    child.base = 1000
    moments = _play(monkeypatch, child, per_look=25)
    # When the pass is a batch past its lead
    process._pace((PACE_AHEAD + 1) * BATCH)
    # Then it waits for a batch of its own to be started
    assert moments.looks == BATCH // 25
