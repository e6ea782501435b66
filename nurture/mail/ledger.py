"""The one writer of a delivery run: how each send went, and which message goes next.

A run's senders (one per connection) never write to the database themselves. Each hands
the ledger how its last send went and asks for its next message; the ledger writes every
outcome that has come in and starts the next message of every sender that asked, in one
transaction (:func:`write`), then answers them. While it writes, the senders that finish
queue up behind it, so the next transaction carries them all: the busier the run, the
more messages each commit carries (group commit), and the run never has two of its own
transactions waiting for each other's lock.

The promise of the start is unchanged: a message is started (its last check, its caps)
in a transaction that commits before its hand-over begins, and a sender's next message
is started only once its current one is being handed over, so an opt-out that returned
before that stops it. The outcomes of sends that went are written in groups of up to
:data:`OUTCOME_GROUP` (or after :data:`OUTCOME_WAIT` seconds), with the starts: a crash
leaves at most :func:`in_flight_at_most` messages ``sending`` (then ``uncertain``, never
sent again on their own): per connection the one being handed over and the next one
started, and the sent ones whose outcome was not written yet.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import partial

from sqlmodel import Session

from nurture import clock, logs
from nurture.engine.context import Context
from nurture.mail.claim import caps_for
from nurture.mail.pacing import RETRY_LIFETIME, DeliveryReport, Gate, send_backoff
from nurture.mail.transports import SendResult
from nurture.retry import retry_transient
from nurture.store.database import HeldConnection, session_scope
from nurture.store.outbox import HELD_SENDER, OutboxMessage
from nurture.store.sender_health import hold_for_sender, paused
from nurture.store.sending import (
    Claimed,
    Started,
    record,
    record_sent,
    release,
    start_together,
    unstart,
)

#: How a start that did not go counts in the run's report.
_NOT_STARTED = {
    Started.lost: "",
    Started.cancelled: "cancelled",
    Started.held: "deferred",
    Started.again: "deferred",
    Started.capped: "deferred",
}

Outcome = tuple[Claimed, SendResult]

#: Outcomes after which a ``[[senders]]`` entry's health is looked at (it may pause).
_HEALTH_OUTCOMES = {"bounce", "refused"}

#: Turns of the event loop the writer waits for more senders to ask before it writes
#: (:meth:`Ledger._gather_asks`): with 4 connections, 3.7 starts a write on PostgreSQL
#: instead of 2.3, and a fifth more emails a second (bench/README.md).
GATHER_TURNS = 6

#: Seconds the writer then waits at most for the rest of the senders to ask, while
#: some have (:meth:`Ledger._gather_asks`): each of them is handing a message over and
#: needs its next one only when that ends, so one transaction can start them all. With
#: 4 connections to a local sink: 4 messages a write, where they were 2.5 on SQLite and
#: 3.3 on PostgreSQL (bench/README.md, item 11).
GATHER_WAIT = 0.003

#: Messages sent whose outcome (``sent``) the writer lets wait for a later write, at
#: most: the starts are written at once (their last check), the outcomes of the sends
#: in groups, so each write does not also pay three statements for its four outcomes
#: (:meth:`Ledger._outcomes_due`). A bounce, a refusal or any other outcome is written
#: at once, with those waiting.
OUTCOME_GROUP = 32

#: Seconds the oldest outcome waits at most for its group.
OUTCOME_WAIT = 0.1

#: The most messages one connection can leave ``sending`` when its process dies, beside
#: the :data:`OUTCOME_GROUP` sent whose outcome was not written yet: the one being handed
#: over, the next one started, and one sent while the group was being written.
IN_FLIGHT_PER_CONNECTION = 3


def in_flight_at_most(connections: int) -> int:
    """The most messages a delivery run over *connections* connections can leave
    ``sending`` when its process dies (then ``uncertain``, never sent again on their
    own)."""
    return connections * IN_FLIGHT_PER_CONNECTION + OUTCOME_GROUP


def write(
    ctx: Context,
    done: list[Outcome],
    candidates: list[Claimed],
    wanted: int,
    unsent: list[Claimed] | None = None,
    held: HeldConnection | None = None,
) -> tuple[list[Claimed], int, DeliveryReport, set[str]]:
    """In one transaction: record how the sends of *done* went, put back the *unsent*
    (started, not handed over), then start messages from the end of *candidates* (the
    next in line last) until *wanted* of them go. Return the started ones, how many
    candidates were used up (started, or settled as their start said), what was
    recorded, and the ``[[senders]]`` entries a bounce or refusal among *done* paused.
    Nothing is taken off *candidates*: a transaction that fails is tried again from the
    same line. *held*: the connection to write on (else one from the pool)."""
    report = DeliveryReport()
    settings = ctx.config.settings
    started: list[Claimed] = []
    used = 0
    with held.session() if held is not None else session_scope(ctx.engine) as session:
        now = clock.now()
        stopped: set[str] = set()
        watched = {item.pace.name for item, result in done
                   if item.pace is not None and result.outcome in _HEALTH_OUTCOMES}  # fmt: skip
        went = record_sent(session, [item for item, result in done if result.outcome == "sent"],
                           now)  # fmt: skip
        for item, result in done:
            if result.outcome == "sent":
                report.count("sent" if item.id in went else "")
                continue
            became = record(
                session, item, result.outcome, result.detail, now, raised=result.raised,
                resend_uncertain=settings.delivery.on_uncertain == "resend",
                retry_after=lambda attempts: send_backoff(ctx, attempts),
                given_up=partial(_given_up, result=result, now=now),
            )  # fmt: skip
            report.count(became)
            if became == "refused":
                report.failed += 1
        if watched:  # a bounce or a refusal may have paused its sender just now
            stopped = watched & set(paused(session.connection()))
        _put_back(session, unsent or [])
        while len(started) < wanted and used < len(candidates):
            # The next in line, as many as are still wanted, started together.
            chunk = candidates[max(0, len(candidates) - used - (wanted - len(started))) :
                               len(candidates) - used][::-1]  # fmt: skip
            used += len(chunk)
            caps = [caps_for(item, now, settings.limits, ctx.default_timezone) for item in chunk]
            for following, (outcome, why) in zip(
                chunk, start_together(session, chunk, now, caps), strict=True
            ):
                if outcome == Started.go:
                    started.append(following)
                    continue
                report.count(_NOT_STARTED[outcome])
                if outcome != Started.lost:
                    logs.action("email not started", lead=following.recipient,
                                sequence=following.sequence, step=following.step,
                                outcome=str(outcome), reason=why)  # fmt: skip
    return started, used, report, stopped


def _put_back(session: Session, unsent: list[Claimed]) -> None:
    """Started messages that were not handed over go back to their claim (``leased``),
    their counters given back; one whose ``[[senders]]`` entry is paused now waits
    ``held`` for its resume, as the next claim would hold it."""
    if not unsent:
        return
    states = paused(session.connection()) if any(i.pace for i in unsent) else {}
    for item in unsent:
        if not unstart(session, item) or item.pace is None or item.pace.name not in states:
            continue
        name = item.pace.name
        release(session, [item.id], item.token)
        reason = f"{HELD_SENDER}{name} paused: {states[name].pause_reason or ''}".rstrip(": ")
        hold_for_sender(session, item.id, reason, name)


def _given_up(row: OutboxMessage, *, result: SendResult, now: datetime) -> bool:
    """A 4xx reply for over :data:`RETRY_LIFETIME`: give up. Connection trouble never
    gives up (the message is not at fault)."""
    temporary_reply = result.detail[:1] == "4"
    began = row.first_failure_at or now
    return temporary_reply and now - began > RETRY_LIFETIME


class Ledger:
    """Writes a batch's outcomes and starts, for the senders of one delivery run.

    A sender asks for its next message (:meth:`ask`) as soon as its current one is
    being handed over, so that the next start is written while this send goes on; it
    tells how the send went (:meth:`tell`), or gives back a started message it did not
    send (:meth:`give_back`), and leaves (:meth:`leave`) when it has none.

    The line of claimed messages is kept full by *claim_next* (the next batch, or
    ``None`` when nothing more is due): the next batch is claimed while the current one
    is sent, so the senders never wait for a claim. *senders* is how many senders it
    serves; *more* says whether more may be started now (not while stopping, nor once
    the server cannot be reached); *gate*, while cleared, holds new starts back (the
    fast lane goes first) for at most *stand_aside*'s wait; *skip* names messages not
    to start in this run (their server stopped answering), and *skipping* whether it
    may name any now; *progress* is told how many claimed messages each write used up
    (started, or settled as their start said: capped, held, cancelled)."""

    def __init__(
        self,
        ctx: Context,
        claim_next: Callable[[], Awaitable[list[Claimed] | None]],
        report: DeliveryReport,
        *,
        senders: int,
        more: Callable[[], bool],
        stopping: asyncio.Event | None,
        gate: Gate | None = None,
        stand_aside: Callable[[], Awaitable[None]] | None = None,
        skip: Callable[[Claimed], bool] | None = None,
        skipping: Callable[[], bool] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.ctx, self.claim_next, self.report = ctx, claim_next, report
        self.progress = progress
        #: The claimed messages not started yet, the next one last.
        self.waiting: list[Claimed] = []
        #: Every batch claimed, for giving back what was not started.
        self.batches: list[list[Claimed]] = []
        self._claiming: asyncio.Task[None] | None = None
        self._exhausted = False
        self._claim_failed: Exception | None = None
        #: ``[[senders]]`` entries (by name) a bounce or a refusal of this run paused: a
        #: message of theirs started before it is given back, not sent.
        self.paused: set[str] = set()
        #: Claim the next batch once the line is this short.
        self._low = max(4 * senders, ctx.batch_size // 2)
        self.more, self.stopping = more, stopping
        self.gate, self.stand_aside = gate, stand_aside
        #: Messages not to start in this run (their server is stopped): left leased,
        #: given back with their batch; *skipping* says whether any may be (else the
        #: line is not looked through at each write).
        self.skip, self.skipping = skip, skipping
        self._done: list[Outcome] = []
        #: When the oldest of :attr:`_done` was told (the event loop's clock), and
        #: whether one of them is not ``sent`` (written at once).
        self._done_since = 0.0
        self._urgent = False
        #: Set when the oldest outcome's wait ran out (:meth:`_wait_for_wake`).
        self._overdue = False
        #: One future per outcome in :attr:`_done`, done once it is written.
        self._written: list[asyncio.Future[None]] = []
        self._open_writes: set[asyncio.Future[None]] = set()
        self._unsent: list[Claimed] = []
        self._asking: list[asyncio.Future[Claimed | None]] = []
        #: Every answer not given yet, whether or not a write is on it.
        self._open: set[asyncio.Future[Claimed | None]] = set()
        self._wake = asyncio.Event()
        #: Set when a sender asks, leaves, or waits for an outcome to be written.
        self._nudge = asyncio.Event()
        self._senders = senders
        self._failed: BaseException | None = None
        #: The writes go to one thread, on one connection kept for the run.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nurture-ledger")
        self._held = HeldConnection(ctx.engine)

    def ask(self) -> asyncio.Future[Claimed | None]:
        """The next message for this sender, started and ready to go, once written;
        ``None``: there is none (the run ends for this sender)."""
        answer: asyncio.Future[Claimed | None] = asyncio.get_running_loop().create_future()
        if self._failed is not None:
            answer.set_exception(self._failed)
            return answer
        self._asking.append(answer)
        self._open.add(answer)
        answer.add_done_callback(self._open.discard)
        self._wake.set()
        self._nudge.set()
        return answer

    def tell(self, done: Outcome) -> asyncio.Future[None]:
        """How a send went: written with a later transaction (the future is done then):
        at once if it did not go; if it went, with its group (:meth:`_outcomes_due`)."""
        written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._failed is not None:
            written.set_exception(self._failed)
            return written
        if not self._done:
            self._done_since = asyncio.get_running_loop().time()
        self._done.append(done)
        self._written.append(written)
        self._open_writes.add(written)
        written.add_done_callback(self._open_writes.discard)
        self._wake.set()
        if done[1].outcome != "sent":  # its sender may wait for this to be written
            self._urgent = True
            self._nudge.set()
        return written

    def give_back(self, item: Claimed) -> None:
        """A started message this sender will not hand over (stopping, or halted)."""
        self._unsent.append(item)
        self._wake.set()

    def leave(self) -> None:
        """A sender ends."""
        self._senders -= 1
        self._wake.set()
        self._nudge.set()

    async def run(self) -> None:
        """Write and start until every sender has left and all is written; if writing
        fails for good, every sender waiting (and any that asks later) gets the error."""
        try:
            await self._run()
        except BaseException as exc:
            self._failed = exc
            for answer in list(self._open):
                if not answer.done():
                    answer.set_exception(exc)
            for written in list(self._open_writes):
                if not written.done():
                    written.set_exception(exc)
            self._asking = []
            raise
        finally:
            closed = asyncio.get_running_loop().run_in_executor(self._thread, self._held.close)
            self._thread.shutdown(wait=False)
            await asyncio.shield(closed)

    async def _run(self) -> None:
        try:
            while self._senders > 0 or self._done or self._unsent:
                self._keep_line_full()
                await self._wait_for_wake()
                await self._gather_asks()
                self._wake.clear()
                if self._claim_failed is not None:
                    raise self._claim_failed
                if self._asking and self.gate is not None and not self.gate.is_set():
                    await self._write([], flush=True)  # what was sent, before standing aside
                    if self.stand_aside is not None:
                        await self.stand_aside()
                asking, self._asking = self._asking, []
                started = await self._write(asking if self.more() else [])
                for answer in asking:
                    if answer.done():
                        continue
                    if started:
                        answer.set_result(started.pop(0))
                    elif self.more() and (self.waiting or self._claiming is not None):
                        self._asking.append(answer)  # the next batch is being claimed
                    else:
                        answer.set_result(None)
        finally:
            if self._claiming is not None:
                self._claiming.cancel()
                await asyncio.wait({self._claiming})

    async def _wait_for_wake(self) -> None:
        """Wait for a sender (or the claim) to wake the writer, or for the outcomes
        waiting to be due (:data:`OUTCOME_WAIT`)."""
        if not self._done:
            await self._wake.wait()
            return
        left = self._done_since + OUTCOME_WAIT - asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(max(left, 0)):
                await self._wake.wait()
        except TimeoutError:
            self._overdue = True  # due now, whatever the clock's resolution says

    async def _gather_asks(self) -> None:
        """Let the other senders catch up before a write, so that one transaction starts
        the next message of more of them (a write costs about the same for one start as
        for four: group commit): first for a few turns of the event loop, then, while
        some asked and none waits for an outcome to be written, for at most
        :data:`GATHER_WAIT` seconds. A sender asks as soon as its current message is
        being handed over, so the wait is spent while it sends; the others are still
        handing theirs over. The cost: beside a slow server, a sender whose sends take
        less than the wait starts its next up to that much later."""
        for _ in range(GATHER_TURNS):
            if self._gathered():
                return
            await asyncio.sleep(0)
        if not self._asking or not self.more():
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GATHER_WAIT
        while not self._gathered() and (left := deadline - loop.time()) > 0:
            self._nudge.clear()
            try:
                async with asyncio.timeout(left):
                    await self._nudge.wait()
            except TimeoutError:
                return

    def _gathered(self) -> bool:
        """Every sender asked, the line holds no more than those asking take, or a
        sender waits for an outcome to be written."""
        asking = len(self._asking)
        return asking >= self._senders or asking >= len(self.waiting) or self._urgent

    def _keep_line_full(self) -> None:
        """Claim the next batch in the background once the line runs short."""
        if (
            self._claiming is None
            and not self._exhausted
            and len(self.waiting) <= self._low
            and self.more()
        ):
            self._claiming = asyncio.create_task(self._claim())

    async def _claim(self) -> None:
        try:
            batch = await self.claim_next()
        except Exception as exc:  # the run fails with it, as if the ledger had claimed
            self._claim_failed = exc
            batch = None
        try:
            if batch is None:
                self._exhausted = True
            else:
                self.batches.append(batch)
                self.waiting[:0] = reversed(batch)  # behind the line
        finally:
            self._claiming = None
            self._wake.set()

    def _outcomes_due(self, flush: bool) -> tuple[list[Outcome], list[asyncio.Future[None]]]:
        """The outcomes to write now, taken off the waiting ones: all of them when one
        is not ``sent``, when :data:`OUTCOME_GROUP` wait or the oldest has waited
        :data:`OUTCOME_WAIT` seconds, when the run ends or stops (every sender gone, or
        no more to start), or when *flush*; else none (a later write takes them)."""
        if not self._done:
            return [], []
        due = (
            flush
            or self._urgent
            or self._overdue
            or len(self._done) >= OUTCOME_GROUP
            or asyncio.get_running_loop().time() - self._done_since >= OUTCOME_WAIT
            or self._senders <= 0
            or not self.more()
        )
        if not due:
            return [], []
        done, written = self._done, self._written
        self._done, self._written, self._urgent, self._overdue = [], [], False, False
        return done, written

    async def _write(
        self, asking: list[asyncio.Future[Claimed | None]], *, flush: bool = False
    ) -> list[Claimed]:
        """One transaction: the give-backs so far, a start for each of *asking*, and the
        outcomes that are due (all of them if *flush*: :meth:`_outcomes_due`); nothing
        when there is nothing to write."""
        if self.skip is not None and (self.skipping is None or self.skipping()):
            self.waiting[:] = [item for item in self.waiting if not self.skip(item)]
        wanted = len(asking) if self.waiting else 0
        unsent, self._unsent = self._unsent, []
        done, written = self._outcomes_due(flush or bool(unsent))
        if not done and not unsent and not wanted:
            return []
        candidates = list(self.waiting)
        def step() -> asyncio.Future[tuple[list[Claimed], int, DeliveryReport, set[str]]]:
            call = partial(write, self.ctx, done, candidates, wanted, unsent, held=self._held)
            context = contextvars.copy_context()  # as asyncio.to_thread does
            return asyncio.get_running_loop().run_in_executor(
                self._thread, partial(context.run, call)
            )

        # What was sent is known only here: keep trying to write it down.
        started, used, recorded, stopped = await retry_transient(
            step, "delivery", stopping=self.stopping
        )
        self.paused |= stopped
        del self.waiting[len(self.waiting) - used :]
        self.report.add(recorded)
        for future in written:
            if not future.done():
                future.set_result(None)
        if used and self.progress is not None:
            self.progress(used)
        return started
