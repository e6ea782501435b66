"""A delivery run beside a pass: while the pass may queue more, the run that finds
nothing due waits for what it queues instead of ending (the daemon's pipelining)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from freezegun import freeze_time

from nurture.mail import delivery
from nurture.mail import ledger as ledger_module
from nurture.mail.ledger import Ledger
from nurture.mail.pacing import DeliveryReport
from nurture.mail.transports import SENT, SendResult, open_transport
from nurture.stages.passes import run_pass
from nurture.store.sending import Claimed
from tests.enginekit import Harness, la
from tests.integration.test_send_promises import ctx_and_catalog, deliver_now
from tests.integration.test_start_together import _claimed as claimed_welcomes

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


# --- the writer gathers the senders' asks --------------------------------------------------


def _ledger_of(harness: Harness, monkeypatch: pytest.MonkeyPatch, *extra: str) -> Any:
    """The claimed welcomes of María and *extra*, a spy on the ledger's writes (the
    number started by each), and a long gathering wait: a write that waited for it
    would make the test fail by its timeout rather than by chance."""
    monkeypatch.setattr(ledger_module, "GATHER_WAIT", 60.0)
    writes: list[int] = []
    real_write = ledger_module.write

    def spy(*args: Any, **kwargs: Any) -> Any:
        outcome = real_write(*args, **kwargs)
        writes.append(len(outcome[0]))
        return outcome

    monkeypatch.setattr(ledger_module, "write", spy)
    ctx, claimed = claimed_welcomes(harness, *extra)
    batches = [claimed]

    async def claim_next() -> list[Claimed] | None:
        return batches.pop() if batches else None

    return ctx, claim_next, writes


async def _writer_waiting(
    ctx: Any, claim_next: Any, writes: list[int], senders: int
) -> tuple[Ledger, asyncio.Task[None], asyncio.Future[Claimed | None]]:
    """A ledger of *senders* running, one of them asking, and many turns of the event
    loop later nothing written yet: the writer waits for the others."""
    ledger = Ledger(ctx, claim_next, DeliveryReport(), senders=senders, more=lambda: True,
                    stopping=None)  # fmt: skip
    running = asyncio.create_task(ledger.run())
    first = ledger.ask()
    for _ in range(10 * ledger_module.GATHER_TURNS):
        await asyncio.sleep(0)
    assert writes == [] and not first.done()
    return ledger, running, first


async def _all_sent(ledger: Ledger, running: asyncio.Task[None], sent: list[Any]) -> None:
    """Each sender tells that its message went and leaves; the writer writes and ends."""
    for message in sent:
        assert message is not None
        ledger.tell((message, SENT))
        ledger.leave()
    await asyncio.wait_for(running, 30)


def test_the_writer_waits_for_every_sender_to_ask_and_starts_them_in_one_write(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx, claim_next, writes = _ledger_of(harness, monkeypatch, "bo@example.com",
                                         "cy@example.com", "di@example.com")  # fmt: skip

    async def run() -> list[Claimed | None]:
        # Given one of four senders asking, and the writer waiting for the others
        ledger, running, first = await _writer_waiting(ctx, claim_next, writes, 4)
        # When the three others ask
        answers = await asyncio.wait_for(
            asyncio.gather(first, *(ledger.ask() for _ in range(3))), 30
        )
        await _all_sent(ledger, running, answers)
        return answers

    with freeze_time(MOMENT, real_asyncio=True):
        answers = asyncio.run(run())
    # Then one write started all four, and one more wrote that they went
    assert writes == [4, 0]
    assert len({answer.id for answer in answers if answer is not None}) == 4
    assert {row.status for row in harness.outbox()} == {"sent"}


def test_the_writer_waits_for_no_one_once_a_sender_waits_for_its_bounce_to_be_written(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx, claim_next, writes = _ledger_of(harness, monkeypatch, "bo@example.com",
                                         "cy@example.com")  # fmt: skip

    async def run() -> None:
        ledger = Ledger(ctx, claim_next, DeliveryReport(), senders=2, more=lambda: True,
                        stopping=None)  # fmt: skip
        running = asyncio.create_task(ledger.run())
        # Given two senders each sending a message
        one, two = await asyncio.wait_for(asyncio.gather(ledger.ask(), ledger.ask()), 30)
        assert one is not None and two is not None
        # When one asks for its next, and the other's send bounced (before its next,
        # it waits to know whether the bounce paused its sender)
        following = ledger.ask()
        ledger.tell((one, SENT))
        bounced = ledger.tell((two, SendResult("bounce", "550 5.1.1 no such user")))
        # Then both are written at once, not after the gathering wait
        await asyncio.wait_for(asyncio.gather(following, bounced), 30)
        assert following.result() is not None
        ledger.tell((following.result(), SENT))
        ledger.leave()
        ledger.leave()
        await asyncio.wait_for(running, 30)

    with freeze_time(MOMENT, real_asyncio=True):
        asyncio.run(run())
    assert writes[0] == 2 and writes[1] == 1
    assert sorted(row.status for row in harness.outbox()) == ["bounced", "sent", "sent"]


def test_the_writer_waits_for_no_one_once_the_others_leave(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx, claim_next, writes = _ledger_of(harness, monkeypatch, "bo@example.com",
                                         "cy@example.com")  # fmt: skip

    async def run() -> Claimed | None:
        # Given one of three senders asking, and the writer waiting for the others
        ledger, running, first = await _writer_waiting(ctx, claim_next, writes, 3)
        # When the two others end (nothing more for them)
        ledger.leave()
        ledger.leave()
        # Then the one asking is started at once, not after the gathering wait
        message = await asyncio.wait_for(first, 30)
        await _all_sent(ledger, running, [message])
        return message

    with freeze_time(MOMENT, real_asyncio=True):
        assert asyncio.run(run()) is not None
    assert writes[0] == 1
    assert sorted(row.status for row in harness.outbox()) == ["leased", "leased", "sent"]


# --- the writer writes the sends' outcomes in groups -----------------------------------


def test_the_writer_writes_what_was_sent_in_groups_with_the_starts_and_never_late(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx, claim_next, _ = _ledger_of(harness, monkeypatch, "bo@example.com", "cy@example.com",
                                    "di@example.com")  # fmt: skip
    # Given groups of 3 outcomes, and an outcome's wait for its group long enough never
    # to end while the sender goes on (only the last part of the test waits for it)
    monkeypatch.setattr(ledger_module, "OUTCOME_GROUP", 3)
    monkeypatch.setattr(ledger_module, "OUTCOME_WAIT", 60.0)
    writes: list[tuple[int, int]] = []  # (outcomes written, messages started) a write
    real_write = ledger_module.write

    def spy(*args: Any, **kwargs: Any) -> Any:
        outcome = real_write(*args, **kwargs)
        writes.append((len(args[1]), len(outcome[0])))
        return outcome

    monkeypatch.setattr(ledger_module, "write", spy)

    used: list[int] = []  # what the ledger tells the pass process, a write at a time

    async def run() -> list[str]:
        ledger = Ledger(ctx, claim_next, DeliveryReport(), senders=1, more=lambda: True,
                        stopping=None, progress=used.append)  # fmt: skip
        running = asyncio.create_task(ledger.run())
        current = await asyncio.wait_for(ledger.ask(), 30)
        # When one sender sends four messages, asking for each next one as its current
        # one is handed over, and telling that the current one went
        told = []
        for _ in range(3):
            following = ledger.ask()
            assert current is not None
            told.append(ledger.tell((current, SENT)))
            current = await asyncio.wait_for(following, 30)
        # Then each next one was started at once, and the outcomes waited for their
        # group of three
        assert writes == [(0, 1), (0, 1), (0, 1), (3, 1)]
        await asyncio.wait_for(asyncio.gather(*told), 30)
        # And an outcome with no start to go with waits no longer than OUTCOME_WAIT
        ledger_module.OUTCOME_WAIT = 0.05
        assert current is not None
        last = ledger.tell((current, SENT))
        await asyncio.wait_for(last, 30)
        assert writes[-1] == (1, 0)
        statuses = sorted(row.status for row in harness.outbox())
        ledger.leave()
        await asyncio.wait_for(running, 30)
        return statuses

    with freeze_time(MOMENT, real_asyncio=True):
        statuses = asyncio.run(run())
    # (written while the sender was still there: by the wait, not by its leaving)
    assert statuses == ["sent", "sent", "sent", "sent"]
    assert used == [1, 1, 1, 1]  # each start told as it was written
