"""A delivery run beside a pass: while the pass may queue more, the run that finds
nothing due waits for what it queues instead of ending (the daemon's pipelining)."""

from __future__ import annotations

import asyncio

import pytest
from freezegun import freeze_time

from nurture.mail import delivery
from nurture.mail.pacing import DeliveryReport
from nurture.mail.transports import open_transport
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


def test_a_run_told_more_is_coming_ends_after_a_while_of_finding_nothing(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a pass that never ends and never queues anything, and a short idle limit
    monkeypatch.setattr(delivery, "MORE_COMING_IDLE", 0.2)
    looks: list[int] = []

    def more_coming() -> bool:
        looks.append(len(looks))
        return True

    async def run() -> DeliveryReport:
        ctx, catalog = ctx_and_catalog(harness, MOMENT)
        transport = open_transport(ctx.config.settings.smtp, ctx.config.outbox_dir)
        try:
            # (a run that never ended would fail here rather than hang the suite)
            return await asyncio.wait_for(
                delivery.deliver(ctx, catalog, transport, more_coming=more_coming), 60
            )
        finally:
            await transport.close()

    # When a delivery run is told more is coming
    with freeze_time(MOMENT, real_asyncio=True):
        report = asyncio.run(run())
    # Then it looked again for a while (0.2 s at 0.05 s a look), then ended (the next
    # run starts afresh)
    assert report.sent == 0 and 3 <= len(looks) <= 5
