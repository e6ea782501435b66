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
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import format_datetime
from functools import partial
from typing import Any

from sqlalchemy import Connection, and_, bindparam, insert, or_, update
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from nurture import clock, logs
from nurture.catalog import Catalog
from nurture.engine import leaves_because
from nurture.enrollments import Enrollment, EnrollmentStatus, email_left
from nurture.events import Event, LeadEvents, events_by_lead, record_event
from nurture.expressions import LeadView
from nurture.leads import ContactStatus, Lead
from nurture.outbox import (
    HELD_PAUSED,
    SENDING_PROBLEM,
    MessageKind,
    OutboxMessage,
    OutboxStatus,
    sweep_held,
)
from nurture.retry import backoff, is_transient, retry_transient
from nurture.runner import Context
from nurture.sequences import Sequence
from nurture.store import session_scope
from nurture.timing import day_start, next_allowed, zone
from nurture.transports import SendResult, Transport

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
#: Longest the pass (between batches) and a bulk sender (between messages) wait for
#: the fast lane before going on.
YIELD_MAX = 5.0
#: A message the server keeps answering with 4xx is given up after this long.
RETRY_LIFETIME = timedelta(days=5)


@dataclass
class DeliveryReport:
    sent: int = 0
    deferred: int = 0
    retrying: int = 0
    bounced: int = 0
    failed: int = 0
    cancelled: int = 0
    #: Failed because the server refuses to send for us (a sending problem).
    refused: int = 0
    #: The connection was lost while the message was handed over: it may have gone.
    uncertain: int = 0
    #: Sends that raised an unexpected error (held as uncertain; the run stopped).
    errors: int = 0

    def add(self, other: DeliveryReport) -> None:
        for name, value in vars(other).items():
            setattr(self, name, getattr(self, name) + value)


def send_backoff(ctx: Context, attempts: int, rng: random.Random | None = None) -> timedelta:
    """The wait before attempt *attempts* + 1 of a send (or a webhook call):
    ``[delivery] retry_after`` doubling up to ``retry_max``, with jitter."""
    settings = ctx.config.settings.delivery
    first = timedelta(seconds=settings.retry_after)
    return backoff(attempts, first, max(first, timedelta(seconds=settings.retry_max)), rng)


@dataclass(frozen=True)
class Claimed:
    id: int
    key: str
    kind: str
    raw: str
    sender: str
    recipient: str
    #: ``None`` for mail to sales that names no lead.
    lead_id: int | None
    sequence: str
    step: str
    message_id: str
    #: The enrollment whose next step waits for this email to leave.
    enrollment_id: int | None = None


class _Caps:
    """Emails sent today per sender mailbox and per lead, read in two queries per batch
    and counted on as the batch is claimed."""

    def __init__(
        self, session: Session, ctx: Context, rows: list[OutboxMessage], now: datetime
    ) -> None:
        self.now = now
        self.limits = ctx.config.settings.limits
        self.project_tz = zone(ctx.default_timezone)
        # Sent, or being sent by any worker right now (counted as sent now), so that
        # workers sending side by side do not pass a cap between them; and uncertain
        # (it may have gone: counted at the moment it was tried).
        in_flight = [OutboxStatus.leased.value, OutboxStatus.sending.value]
        uncertain = OutboxStatus.uncertain.value
        counted = (
            sa_select(
                col(OutboxMessage.sender),
                col(OutboxMessage.lead_id),
                col(OutboxMessage.sent_at),
                col(OutboxMessage.status),
                col(OutboxMessage.next_attempt_at),
            )
            .where(col(OutboxMessage.kind) == MessageKind.email.value)
            .where(col(OutboxMessage.status).in_([OutboxStatus.sent.value, uncertain, *in_flight]))
        )

        def since(moment: datetime) -> Any:
            return or_(
                col(OutboxMessage.sent_at) >= moment,
                col(OutboxMessage.status).in_(in_flight),
                and_(
                    col(OutboxMessage.status) == uncertain,
                    col(OutboxMessage.next_attempt_at) >= moment,
                ),
            )

        today = day_start(now, self.project_tz)
        self.senders: Counter[str] = Counter(
            sender
            for sender, *_ in session.execute(
                counted.where(col(OutboxMessage.sender).in_({r.sender for r in rows})).where(
                    since(today)
                )
            )
        )
        # A lead's day is its own: read two days back, count from its midnight.
        self.lead_sends: defaultdict[int, list[datetime]] = defaultdict(list)
        for _, lead_id, sent_at, status, tried_at in session.execute(
            counted.where(col(OutboxMessage.lead_id).in_(_lead_ids(rows))).where(
                since(now - timedelta(days=2))
            )
        ):
            if lead_id is not None:
                moment = sent_at or (tried_at if status == uncertain else now)
                self.lead_sends[lead_id].append(moment)
        self.claimed: Counter[int] = Counter()

    def hold(self, row: OutboxMessage) -> tuple[datetime, str] | None:
        """When *row* may go instead of now, and why; ``None`` if it may go now."""
        if self.senders[row.sender] >= self.limits.per_sender_daily:
            return (
                day_start(self.now, self.project_tz, days_on=1),
                f"{row.sender} reached its cap of {self.limits.per_sender_daily} emails today",
            )
        assert row.lead_id is not None  # only a lead's email is capped
        lead_tz = zone(row.timezone)
        midnight = day_start(self.now, lead_tz)
        today = sum(1 for moment in self.lead_sends[row.lead_id] if moment >= midnight)
        if today + self.claimed[row.lead_id] >= self.limits.per_lead_daily:
            return (
                day_start(self.now, lead_tz, days_on=1),
                f"lead reached its cap of {self.limits.per_lead_daily} emails today",
            )
        self.senders[row.sender] += 1
        self.claimed[row.lead_id] += 1
        return None


def settle_abandoned(ctx: Context, now: datetime, *, all_in_flight: bool = False) -> int:
    """Messages of a delivery loop that died (their lease ran out, or *all_in_flight*:
    the caller knows no other loop is alive, as a worker that holds a SQLite database
    does). Those it had not started are queued again. Those it was handing to the server
    may have gone: held as ``uncertain`` for review, or queued again with the same
    Message-ID when ``[delivery] on_uncertain = "resend"``. Return how many were
    uncertain."""
    resend = ctx.config.settings.delivery.on_uncertain == "resend"
    expired = (
        col(OutboxMessage.lease_until).is_not(None)
        if all_in_flight
        else col(OutboxMessage.lease_until) < now
    )
    with session_scope(ctx.engine) as session:
        session.execute(
            update(OutboxMessage)
            .where(col(OutboxMessage.status) == OutboxStatus.leased.value)
            .where(expired)
            .values(status=OutboxStatus.queued.value, lease_until=None)
        )
        rows = list(
            session.exec(
                select(OutboxMessage)
                .where(OutboxMessage.status == OutboxStatus.sending.value)
                .where(expired)
                .with_for_update(skip_locked=True)
            )
        )
        for row in rows:
            row.lease_until = None
            if resend:
                row.status = OutboxStatus.queued.value
            else:
                row.status, row.next_attempt_at = OutboxStatus.uncertain.value, now
                if row.kind == MessageKind.email:
                    email_left(session, row.enrollment_id, now)
                row.last_error = (
                    "the sending process stopped mid-send: it may have been delivered; held "
                    f"(`nurture outbox resend {row.id}` sends it again)"
                )
            session.add(row)
            logs.action(
                "uncertain send",
                level=logging.WARNING,
                lead=row.recipient,
                sequence=row.sequence,
                step=row.step,
                message_id=row.message_id,
                action="resent" if resend else "held",
            )
        return len(rows)


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


def extend_leases(ctx: Context, now: datetime) -> int:
    """Push back the lease of every message this worker holds (its heartbeat): a lease
    runs out only when its worker stopped beating."""
    with session_scope(ctx.engine) as session:
        result = session.execute(
            update(OutboxMessage)
            .where(col(OutboxMessage.worker) == ctx.worker_id)
            .where(
                col(OutboxMessage.status).in_(
                    [OutboxStatus.leased.value, OutboxStatus.sending.value]
                )
            )
            .values(lease_until=now + timedelta(seconds=ctx.config.settings.delivery.lease))
        )
        return int(getattr(result, "rowcount", 0) or 0)


async def _keep_leases(ctx: Context, finished: asyncio.Event) -> None:
    """Extend this worker's leases three times per lease until *finished*."""
    period = ctx.config.settings.delivery.lease / 3
    while True:
        try:
            await asyncio.wait_for(finished.wait(), timeout=period)
            return
        except TimeoutError:
            pass
        try:
            await asyncio.to_thread(extend_leases, ctx, clock.now())
        except Exception as exc:
            if not is_transient(exc):
                raise
            logs.action("lease not extended: database unavailable", level=logging.WARNING)


def _release(ctx: Context, ids: list[int]) -> None:
    """Give back leased messages that were not started (the loop is stopping)."""
    with session_scope(ctx.engine) as session:
        session.execute(
            update(OutboxMessage)
            .where(col(OutboxMessage.id).in_(ids))
            .where(col(OutboxMessage.status) == OutboxStatus.leased.value)
            .values(status=OutboxStatus.queued.value, lease_until=None)
        )


def _lead_ids(rows: list[OutboxMessage]) -> set[int]:
    return {r.lead_id for r in rows if r.lead_id is not None}


def claim(
    ctx: Context,
    catalog: Catalog,
    now: datetime,
    report: DeliveryReport,
    only_leads: list[int] | None = None,
    only_messages: list[int] | None = None,
) -> list[Claimed]:
    """Lease the next batch of messages that may go now (to *only_leads*, if given);
    hold back or cancel the others."""
    claimed: list[Claimed] = []
    query = (
        select(OutboxMessage)
        .where(OutboxMessage.status == OutboxStatus.queued.value)
        .where(col(OutboxMessage.next_attempt_at) <= now)
        .order_by(col(OutboxMessage.next_attempt_at), col(OutboxMessage.id))
        .limit(ctx.batch_size)
        .with_for_update(skip_locked=True)
    )
    if only_leads is not None:
        query = query.where(col(OutboxMessage.lead_id).in_(only_leads))
    if only_messages is not None:
        query = query.where(col(OutboxMessage.id).in_(only_messages))
    with session_scope(ctx.engine) as session:
        rows = list(session.exec(query))
        if not rows:
            return []
        leads = {
            lead.id: lead
            for lead in session.exec(select(Lead).where(col(Lead.id).in_(_lead_ids(rows))))
        }
        enrollment_ids = {r.enrollment_id for r in rows if r.enrollment_id is not None}
        enrollments = {
            e.id: e
            for e in session.exec(select(Enrollment).where(col(Enrollment.id).in_(enrollment_ids)))
        }
        events = events_by_lead(session, _lead_ids(rows))
        caps = _Caps(session, ctx, rows, now)
        for row in rows:
            if row.kind == MessageKind.email and row.lead_id is not None:
                lead = leads[row.lead_id]
                enrollment = enrollments.get(row.enrollment_id or -1)
                sequence = catalog.for_delivery(row.sequence)
                why_not = _cancelled_because(ctx, lead, enrollment, sequence, events[row.lead_id],
                                             now)  # fmt: skip
                if (
                    why_not is None
                    and enrollment is not None
                    and (enrollment.status == EnrollmentStatus.paused)
                ):  # paused after this one was queued: it waits for the resume
                    row.status, row.last_error = OutboxStatus.held.value, HELD_PAUSED
                    report.deferred += 1
                    session.add(row)
                    continue
                if why_not:
                    row.status, row.last_error = OutboxStatus.cancelled.value, why_not
                    email_left(session, row.enrollment_id, now)
                    report.cancelled += 1
                    logs.action(
                        "email cancelled",
                        lead=row.recipient,
                        sequence=row.sequence,
                        step=row.step,
                        reason=why_not,
                    )
                    session.add(row)
                    continue
                hold = _window_hold(catalog, row, now) or caps.hold(row)
                if hold is not None:
                    row.next_attempt_at, row.last_error = hold
                    report.deferred += 1
                    logs.action(
                        "email deferred",
                        lead=row.recipient,
                        sequence=row.sequence,
                        step=row.step,
                        until=hold[0].isoformat(),
                        reason=hold[1],
                    )
                    session.add(row)
                    continue
            row.status = OutboxStatus.leased.value
            row.worker = ctx.worker_id
            row.lease_until = now + timedelta(seconds=ctx.config.settings.delivery.lease)
            session.add(row)
            assert row.id is not None
            claimed.append(
                Claimed(
                    row.id,
                    row.idempotency_key,
                    row.kind,
                    row.raw,
                    row.sender,
                    row.recipient,
                    row.lead_id,
                    row.sequence,
                    row.step,
                    row.message_id,
                    row.enrollment_id if row.kind == MessageKind.email else None,
                )
            )
    return claimed


def _sweep_held(ctx: Context, now: datetime) -> None:
    with session_scope(ctx.engine) as session:
        sweep_held(session, now)


def _cancelled_because(
    ctx: Context,
    lead: Lead,
    enrollment: Enrollment | None,
    sequence: Sequence | None,
    events: list[Event],
    now: datetime,
) -> str | None:
    """Why an email queued earlier must not go now: the lead opted out, left the
    sequence, or did something since that ends it (a reply is seen before the pass)."""
    if lead.status != ContactStatus.subscribed:
        return f"lead is {lead.status}"
    if enrollment is not None and enrollment.status == EnrollmentStatus.exited:
        return f"lead left the sequence: {enrollment.reason}"
    if sequence is not None:
        since = enrollment.enrolled_at if enrollment is not None else None
        engagement = LeadEvents.of(events, sequence.name, since=since)
        view = LeadView.of(lead).as_dict()
        reason = leaves_because(sequence, view, engagement, now, ctx.scores(lead, now))
        if reason:
            return f"lead left the sequence: {reason}"
    return None


def _window_hold(
    catalog: Catalog, row: OutboxMessage, now: datetime
) -> tuple[datetime, str] | None:
    sequence = catalog.for_delivery(row.sequence)
    if sequence is None:
        return None
    placement = next_allowed(now, sequence.schedule.window, zone(row.timezone))
    if placement.moment <= now:
        return None
    return placement.moment, f"outside the sending window: {placement.moved_because}"


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
) -> DeliveryReport:
    """Send every message that may go now, batch by batch, until none is left (or until
    *stopping* is set: the messages being sent are finished and recorded, the rest of the
    batch is given back). A server that cannot be reached ends the run: the rest waits
    for the next one. *all_in_flight*: settle every message another loop left in flight
    (see :func:`settle_abandoned`). *only_leads*: send only the messages to these leads
    (the arrivals' fast lane, beside a delivery run that may be long). *only_messages*:
    send only these messages (a test send). *gate*: wait between messages while it is
    cleared (the fast lane serving arrived leads goes first)."""
    report = DeliveryReport()
    now = clock.now()
    if only_leads is None and only_messages is None:  # the bulk run tidies; a lane not
        await asyncio.to_thread(settle_abandoned, ctx, now, all_in_flight=all_in_flight)
        await asyncio.to_thread(_sweep_held, ctx, now)
    if ctx.sending_paused_until is not None and now < ctx.sending_paused_until:
        return report  # the server refused to send for us a moment ago
    # One sender per connection, each with at most one message "sending" at a time, so
    # a crash leaves no more uncertain messages than there were connections.
    senders = ctx.config.settings.smtp.max_connections
    halt, finished = asyncio.Event(), asyncio.Event()
    failures: list[BaseException] = []
    keeper = asyncio.create_task(_keep_leases(ctx, finished))
    try:
        while not halt.is_set() and (stopping is None or not stopping.is_set()):
            now = clock.now()
            batch = await asyncio.to_thread(
                claim, ctx, catalog, now, report, only_leads, only_messages
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
                await asyncio.to_thread(_release, ctx, [item.id for item in batch])
            failures = [o for o in outcomes if isinstance(o, BaseException)]
            if failures:
                break
    finally:
        finished.set()
        await keeper
    if report.refused:
        ctx.sending_refusals += 1
        pause = send_backoff(ctx, ctx.sending_refusals)
        ctx.sending_paused_until = clock.now() + pause
        logs.action("delivery paused: the mail server refuses to send for us",
                    level=logging.ERROR, until=ctx.sending_paused_until.isoformat(),
                    fix="check [smtp] settings, then nurture outbox resend")  # fmt: skip
    else:
        if report.sent:
            ctx.sending_refusals, ctx.sending_paused_until = 0, None
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
