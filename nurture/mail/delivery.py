"""The delivery loop: send what the outbox holds, when it may go.

Each batch is claimed (:mod:`nurture.mail.claim`: ``queued`` → ``leased`` under a claim
token). One sender per connection then takes the messages one by one: one commit
records how the last one went and starts the next (:func:`nurture.store.sending.start`:
its last check and its caps, in that transaction) just before it is handed over. A
message whose lease ran out (its sender died mid-batch) may have reached the server: it
is held as ``uncertain`` (or queued again, ``[delivery] on_uncertain``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Coroutine
from datetime import datetime
from email.utils import format_datetime
from functools import partial
from typing import Any

from nurture import clock, hooks, logs
from nurture.engine.catalog import Catalog
from nurture.engine.context import Context
from nurture.language.scoring import ScoringRules
from nurture.mail.claim import caps_for, claim, sweep_held_mail
from nurture.mail.leases import keep_leases, release_leases, settle_abandoned
from nurture.mail.pacing import (
    RETRY_LIFETIME,
    YIELD_MAX,
    DeliveryReport,
    SendingPause,
    send_backoff,
)
from nurture.mail.transports import SendResult, Transport
from nurture.retry import retry_transient
from nurture.store.database import session_scope
from nurture.store.outbox import OutboxMessage
from nurture.store.sending import Claimed, Started, record, start

#: How a start that did not go counts in the run's report.
_NOT_STARTED = {
    Started.lost: "",
    Started.cancelled: "cancelled",
    Started.held: "deferred",
    Started.again: "deferred",
    Started.capped: "deferred",
}


def _step(
    ctx: Context, done: tuple[Claimed, SendResult] | None, following: Claimed | None
) -> tuple[Started | None, DeliveryReport]:
    """One commit per message: record how the last send went and start the next one
    (its last check, and its caps counted). Return what the start did (``None``: nothing
    to start), and what was recorded."""
    report = DeliveryReport()
    settings = ctx.config.settings
    with session_scope(ctx.engine) as session:
        now = clock.now()
        if done is not None:
            item, result = done
            became = record(
                session, item, result.outcome, result.detail, now, raised=result.raised,
                resend_uncertain=settings.delivery.on_uncertain == "resend",
                retry_after=lambda attempts: send_backoff(ctx, attempts),
                given_up=lambda row: _given_up(row, result, now),
            )  # fmt: skip
            report.count(became)
            if became == "refused":
                report.failed += 1
        if following is None:
            return None, report
        caps = caps_for(following, now, settings.limits, ctx.default_timezone)
        started, why = start(session, following, now, caps)
        if started != Started.go:
            report.count(_NOT_STARTED[started])
            if started != Started.lost:
                logs.action("email not started", lead=following.recipient,
                            sequence=following.sequence, step=following.step,
                            outcome=str(started), reason=why)  # fmt: skip
        return started, report


def with_date(raw: str, moment: datetime) -> bytes:
    """The stored message with its ``Date`` set to the moment it is sent.

    The message was built by nurture, so its header block is known to hold exactly one
    unfolded ``Date:`` line; replacing it saves parsing the whole message again.
    """
    head, sep, body = raw.partition("\n\n")
    lines = [
        f"Date: {format_datetime(moment)}" if line.startswith("Date: ") else line
        for line in head.split("\n")
    ]
    return ("\n".join(lines) + sep + body).replace("\n", "\r\n").encode("utf-8")


def _given_up(row: OutboxMessage, result: SendResult, now: datetime) -> bool:
    """A 4xx reply for over :data:`RETRY_LIFETIME`: give up. Connection trouble never
    gives up (the message is not at fault)."""
    temporary_reply = result.detail[:1] == "4"
    started = row.first_failure_at or now
    return temporary_reply and now - started > RETRY_LIFETIME


async def _sender(
    ctx: Context,
    transport: Transport,
    waiting: list[Claimed],
    moment: datetime,
    stopping: asyncio.Event | None,
    halt: asyncio.Event,
    report: DeliveryReport,
    gate: threading.Event | None = None,
) -> None:
    """Send messages from *waiting* one at a time until it is empty (or stopping, or
    *halt*: the server cannot be reached); while *gate* is cleared, wait before the next
    (at most :data:`YIELD_MAX` seconds each time)."""
    done: tuple[Claimed, SendResult] | None = None
    while True:
        if gate is not None and not gate.is_set():
            if done is not None:  # write down the last send before standing aside
                step = partial(asyncio.to_thread, _step, ctx, done, None)
                report.add((await retry_transient(step, "delivery", stopping=stopping))[1])
                done = None
            await _stand_aside(gate, stopping)
        stop = halt.is_set() or (stopping is not None and stopping.is_set())
        following = waiting.pop() if waiting and not stop else None
        step = partial(asyncio.to_thread, _step, ctx, done, following)
        # What was sent is known only here: keep trying to write it down.
        started, recorded = await retry_transient(step, "delivery", stopping=stopping)
        report.add(recorded)
        done = None
        if following is None:
            return
        if started != Started.go:
            continue
        hooks.reach("delivery.before_send", following)
        message = with_date(following.raw, moment)
        try:
            result = await transport.send(
                message, following.sender, following.recipient, following.key
            )
        except Exception as exc:  # a transport's bug: the message may have gone
            logs.action("sending raised an error: delivery stops", level=logging.ERROR,
                        lead=following.recipient, error=f"{type(exc).__name__}: {exc}")  # fmt: skip
            detail = f"sending raised {type(exc).__name__}: {exc}"
            result = SendResult("uncertain", detail, raised=True)
            report.errors += 1
            halt.set()
        if result.unreachable:
            halt.set()
        done = (following, result)


async def _stand_aside(gate: threading.Event, stopping: asyncio.Event | None) -> None:
    """Wait (without a thread) until *gate* is set again, *stopping*, or
    :data:`YIELD_MAX` seconds."""
    deadline = time.monotonic() + YIELD_MAX
    while not gate.is_set() and time.monotonic() < deadline:
        if stopping is not None and stopping.is_set():
            return
        await asyncio.sleep(0.01)


async def deliver(
    ctx: Context,
    catalog: Catalog,
    transport: Transport,
    *,
    stopping: asyncio.Event | None = None,
    all_in_flight: bool = False,
    only_leads: list[int] | None = None,
    only_messages: list[int] | None = None,
    gate: threading.Event | None = None,
    rules: ScoringRules | None = None,
    pause: SendingPause | None = None,
) -> DeliveryReport:
    """Send every message that may go now, batch by batch, until none is left (or until
    *stopping* is set: the messages being sent are finished and recorded, the rest of the
    batch is given back). A server that cannot be reached ends the run: the rest waits
    for the next one. *all_in_flight*: settle every message another loop left in flight
    (see :func:`settle_abandoned`). *only_leads*: send only the messages to these leads
    (the arrivals' fast lane, beside a delivery run that may be long). *only_messages*:
    send only these messages (a test send). *gate*: wait between messages while it is
    cleared (the fast lane serving arrived leads goes first). *rules*: the scoring rules
    the exit rules see engagement decayed by. *pause*: the daemon's memory of a server
    that refused to send for us (a run on its own starts with none)."""
    pause = pause if pause is not None else SendingPause()
    report = DeliveryReport()
    now = clock.now()
    if only_leads is None and only_messages is None:  # the bulk run tidies; a lane not
        await asyncio.to_thread(settle_abandoned, ctx, now, all_in_flight=all_in_flight)
        await asyncio.to_thread(sweep_held_mail, ctx, now)
    if pause.holds(now):
        return report  # the server refused to send for us a moment ago
    # One sender per connection, each with at most one message "sending" at a time, so
    # a crash leaves no more uncertain messages than there were connections.
    senders = ctx.config.settings.smtp.max_connections
    halt, finished = asyncio.Event(), asyncio.Event()
    failures: list[BaseException] = []
    keeper = asyncio.create_task(keep_leases(ctx, finished))
    try:
        while not halt.is_set() and (stopping is None or not stopping.is_set()):
            now = clock.now()
            claimed = await asyncio.to_thread(
                claim, ctx, catalog, now, report, only_leads, only_messages, rules
            )
            if not claimed.looked_at:
                break  # nothing more is due
            batch = claimed.claimed
            waiting = list(reversed(batch))
            run = [
                _halting(halt, _sender(ctx, transport, waiting, now, stopping, halt, report, gate))
                for _ in range(senders)
            ]
            try:
                outcomes = await asyncio.gather(*run, return_exceptions=True)
            finally:  # whatever a sender did, the rest of the batch goes back
                await asyncio.to_thread(release_leases, ctx, batch)
            failures = [o for o in outcomes if isinstance(o, BaseException)]
            if failures:
                break
    finally:
        finished.set()
        await keeper
    if report.refused:
        until = pause.refused(ctx, clock.now())
        logs.action("delivery paused: the mail server refuses to send for us",
                    level=logging.ERROR, until=until.isoformat(),
                    fix="check [smtp] settings, then nurture outbox resend")  # fmt: skip
    else:
        if report.sent:
            pause.sent()
        if halt.is_set() and not report.errors:
            logs.action("mail server unreachable: delivery waits for its next run",
                        level=logging.WARNING)  # fmt: skip
    if failures:
        raise failures[0]
    return report


async def _halting(halt: asyncio.Event, sender: Coroutine[Any, Any, None]) -> None:
    """Run *sender*; if it fails, stop the others at their next message."""
    try:
        await sender
    except BaseException:
        halt.set()
        raise
