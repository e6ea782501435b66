"""A delivery run beside a pass: while the pass may queue more, the run that finds
nothing due waits for what it queues instead of ending (the daemon's pipelining)."""

from __future__ import annotations

from freezegun import freeze_time

from nurture.stages.passes import run_pass
from tests.enginekit import Harness, la
from tests.integration.test_send_promises import ctx_and_catalog, deliver_now

MOMENT = la(2026, 11, 23, 10, 0)


def test_a_run_told_more_is_coming_sends_what_is_queued_after_it_found_nothing(
    harness: Harness,
) -> None:
    harness.add_leads({"email": "bo@example.com", "first_name": "Bo", "source": "guide"})
    with freeze_time(MOMENT, real_asyncio=True):
        ctx, catalog = ctx_and_catalog(harness, MOMENT)
        asked: list[int] = []

        def more_coming() -> bool:
            # Asked each time the run finds nothing due: the first time, the pass queues
            # the two welcomes; the next time (they are claimed), the pass is over.
            asked.append(len(harness.sent()))
            if len(asked) == 1:
                run_pass(ctx, catalog, MOMENT)
                return True
            return False

        report = deliver_now(ctx, catalog, more_coming=more_coming)
        # Without it, a run that finds nothing ends at once
        assert deliver_now(ctx, catalog).sent == 0
    assert len(asked) == 2 and asked[0] == 0 and report.sent == 2
    assert sorted(str(m["To"]) for m in harness.sent()) == [
        "Bo <bo@example.com>",
        "María <maria@example.com>",
    ]
