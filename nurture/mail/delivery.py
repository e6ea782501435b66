"""The delivery loop: send what the outbox holds, when it may go.

Each batch is claimed (``queued`` → ``leased``) in one transaction. One sender per
connection then takes the messages one by one: a commit marks the message ``sending``
(and records how the one before went) just before it is handed over. Before a message is claimed
it is checked again: a lead who opted out or left the sequence since is not emailed;
the sending window and the daily caps hold a message back (it waits, it is not dropped).
A message whose lease ran out (its sender died mid-batch) may have reached the server:
it is held as ``uncertain`` (or queued again, ``[delivery] on_uncertain``).
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

from sqlalchemy import Connection, bindparam, insert, update
from sqlmodel import Session

from nurture import clock, logs
from nurture.engine.catalog import Catalog
from nurture.engine.context import Context
from nurture.language.scoring import ScoringRules
from nurture.mail.claim import Claimed, claim, sweep_held_mail
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
from nurture.store.enrollments import email_left
from nurture.store.events import Event, record_event
from nurture.store.outbox import (
    SENDING_PROBLEM,
    MessageKind,
    OutboxMessage,
    OutboxStatus,
)

# The statements a delivery run makes once per message, built once.
_OUTBOX = OutboxMessage.__table__  # type: ignore[attr-defined]
_START = (
    update(_OUTBOX)
    .where(_OUTBOX.c.id == bindparam("message"))
    .where(_OUTBOX.c.worker == bindparam("by_worker"))
    .where(_OUTBOX.c.status.in_([OutboxStatus.leased.value, OutboxStatus.sending.value]))
    .values(status=OutboxStatus.sending.value)
)
_MARK_SENT = (
    update(_OUTBOX)
    .where(_OUTBOX.c.id == bindparam("message"))
    .where(_OUTBOX.c.status == OutboxStatus.sending.value)
    .values(
        status=OutboxStatus.sent.value,
        sent_at=bindparam("now"),
        last_error=None,
        lease_until=None,
        attempts=_OUTBOX.c.attempts + 1,
    )
)
_EMAIL_SENT = insert(Event.__table__).values(  # type: ignore[attr-defined]
    type="email_sent", source="engine", machine=False, scored=False
)


def _start(session: Session, message_id: int, worker_id: str) -> bool:
    """Mark a message this worker leased as being handed to the server now. (Already
    ``sending`` by this worker means a commit whose answer was lost on the way: the
    message has not been handed over yet, since that comes after this returns.)"""
    result = session.connection().execute(_START, {"message": message_id, "by_worker": worker_id})
    return bool(result.rowcount)


def _step(
    ctx: Context, done: tuple[Claimed, SendResult] | None, following: Claimed | None
) -> tuple[bool, DeliveryReport]:
    """One commit per message: record how the last send went and mark the next one as
    sending. Return whether the next one may go, and what was recorded."""
    report = DeliveryReport()
    with session_scope(ctx.engine) as session:
        if done is not None:
            record(ctx, session, [done], clock.now(), report)
        return following is not None and _start(session, following.id, ctx.worker_id), report


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


def record(
    ctx: Context,
    session: Session,
    results: list[tuple[Claimed, SendResult]],
    now: datetime,
    report: DeliveryReport,
) -> None:
    """Write what happened to each message (in the caller's transaction)."""
    for item, result in results:
        if result.outcome == "sent":
            if _record_sent(session.connection(), item, now):
                report.sent += 1
            continue
        row = session.get(OutboxMessage, item.id)
        if row is None or row.status != OutboxStatus.sending:
            continue
        row.lease_until = None
        row.attempts += 1
        fields: dict[str, Any] = {
            "lead": item.recipient,
            "sequence": item.sequence,
            "step": item.step,
        }
        if result.outcome == "bounce":
            row.status, row.last_error = OutboxStatus.bounced.value, result.detail
            report.bounced += 1
            if item.kind == MessageKind.email and item.lead_id is not None:
                # the lead's status becomes bounced
                record_event(
                    session,
                    item.lead_id,
                    "email_bounced",
                    sequence=item.sequence,
                    step=item.step,
                    data={"reply": result.detail, "message_id": row.message_id},
                    at=now,
                    source="smtp",
                    source_id=row.message_id,
                )
            logs.action("email bounced", level=logging.WARNING, **fields, reply=result.detail)
        elif result.outcome == "refused":
            # The server will not send for us: no lead is at fault, each stays subscribed.
            row.status = OutboxStatus.failed.value
            row.last_error = f"{SENDING_PROBLEM}{result.detail}"
            row.next_attempt_at = now  # when it was refused: `status` reads it
            report.failed += 1
            report.refused += 1
            logs.action("mail server refuses to send for us: delivery stops",
                        level=logging.ERROR, **fields, reply=result.detail,
                        resend=f"nurture outbox resend {row.id}")  # fmt: skip
        elif result.outcome == "uncertain":
            report.uncertain += 1
            if ctx.config.settings.delivery.on_uncertain == "resend" and not result.raised:
                row.status, row.last_error = OutboxStatus.queued.value, result.detail
                row.next_attempt_at = now
            else:
                row.status, row.next_attempt_at = OutboxStatus.uncertain.value, now
                row.last_error = (
                    f"{result.detail}: it may have been delivered; held "
                    f"(`nurture outbox resend {row.id}` sends it again)"
                )
            logs.action("uncertain send", level=logging.WARNING, **fields,
                        message_id=row.message_id, error=result.detail)  # fmt: skip
        elif result.outcome == "retry" and not _given_up(row, result, now):
            row.status, row.last_error = OutboxStatus.queued.value, result.detail
            row.first_failure_at = row.first_failure_at or now
            row.next_attempt_at = now + send_backoff(ctx, row.attempts)
            report.retrying += 1
            logs.action(
                "send will be retried",
                level=logging.WARNING,
                **fields,
                attempt=row.attempts,
                at=row.next_attempt_at.isoformat(),
                error=result.detail,
            )
        else:
            row.status, row.last_error = OutboxStatus.failed.value, result.detail
            report.failed += 1
            logs.action("send failed", level=logging.ERROR, **fields, error=result.detail)
        if row.status != OutboxStatus.queued:  # settled: it will not go (or may have)
            email_left(session, item.enrollment_id, now)
        session.add(row)


def _record_sent(connection: Connection, item: Claimed, now: datetime) -> bool:
    """Mark a message sent (and record ``email_sent``) in two plain statements: the
    commonest write of a delivery run, kept off the ORM's unit of work."""
    done = connection.execute(_MARK_SENT, {"message": item.id, "now": now})
    if not done.rowcount:
        return False
    email_left(connection, item.enrollment_id, now)
    if item.kind == MessageKind.email:
        connection.execute(
            _EMAIL_SENT,
            {
                "lead_id": item.lead_id,
                "sequence": item.sequence,
                "step": item.step,
                "data": {"message_id": item.message_id},
                "occurred_at": now,
            },
        )
    logs.action(f"{item.kind} sent", lead=item.recipient, sequence=item.sequence,
                step=item.step, message_id=item.message_id)  # fmt: skip
    return True


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
        go, recorded = await retry_transient(step, "delivery", stopping=stopping)
        report.add(recorded)
        done = None
        if following is None:
            return
        if not go:
            continue
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
            batch = await asyncio.to_thread(
                claim, ctx, catalog, now, report, only_leads, only_messages, rules
            )
            if not batch:
                break
            waiting = list(reversed(batch))
            run = [
                _halting(halt, _sender(ctx, transport, waiting, now, stopping, halt, report, gate))
                for _ in range(senders)
            ]
            try:
                outcomes = await asyncio.gather(*run, return_exceptions=True)
            finally:  # whatever a sender did, the rest of the batch goes back
                await asyncio.to_thread(release_leases, ctx, [item.id for item in batch])
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
