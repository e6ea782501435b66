"""The delivery loop: send what the outbox holds, when it may go.

Each batch is claimed (:mod:`nurture.mail.claim`: ``queued`` → ``leased`` under a claim
token). One sender per connection then takes the messages one by one from the run's
:class:`~nurture.mail.ledger.Ledger`, its one writer: one commit records how the last
sends of every connection went and starts each one's next message
(:func:`nurture.store.sending.start`: its last check and its caps, in that transaction)
just before it is handed over. A
message whose lease ran out (its sender died mid-batch) may have reached the server: it
is held as ``uncertain`` (or queued again, ``[delivery] on_uncertain``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta
from email.utils import format_datetime
from functools import lru_cache, partial
from typing import Any

from nurture import clock, hooks, logs
from nurture.engine.catalog import Catalog
from nurture.engine.context import Context
from nurture.language.scoring import ScoringRules
from nurture.mail.claim import claim, sweep_held_mail
from nurture.mail.leases import keep_leases, release_leases, settle_abandoned
from nurture.mail.ledger import Ledger
from nurture.mail.pacing import YIELD_MAX, DeliveryReport, Gate, SendingPause
from nurture.mail.transports import RoutingTransport, SendResult, Transport
from nurture.retry import retry_transient
from nurture.store.sending import Claimed

#: Seconds between looks for newly queued emails while a pass is queueing them, and
#: how long a run waits so without finding any before it ends.
MORE_COMING_POLL = 0.05
MORE_COMING_IDLE = 2.0


def _wait_for_more(more_coming: Callable[[], bool] | None, routes: _Routes, idle: int) -> bool:
    """Whether a run that found nothing due waits for more (*more_coming* says a pass may
    queue some) rather than ending: not once a server of the run is stopped, nor after
    :data:`MORE_COMING_IDLE` seconds of finding nothing (a new run then settles, sweeps
    and looks at the pauses afresh). *idle* counts the looks that found nothing in a
    row (looks, not the clock: a pinned clock does not move)."""
    if more_coming is None or routes.halted or not more_coming():
        return False
    return idle * MORE_COMING_POLL < MORE_COMING_IDLE


def with_date(raw: str, moment: datetime) -> bytes:
    """The stored message with its ``Date`` set to the moment it is sent.

    The message was built by nurture, so its header block is known to hold exactly one
    unfolded ``Date:`` line; replacing it saves parsing the whole message again.
    """
    head, sep, body = raw.partition("\n\n")
    first = head.startswith("Date: ")
    start = 0 if first else head.find("\nDate: ") + 1
    if first or start:
        end = head.find("\n", start)
        end = len(head) if end < 0 else end
        date = _date_line(moment.replace(microsecond=0), moment.utcoffset())
        head = head[:start] + date + head[end:]
    return (head + sep + body).replace("\n", "\r\n").encode("utf-8")


@lru_cache(maxsize=8)
def _date_line(second: datetime, _offset: timedelta | None) -> str:
    """The ``Date:`` line of a message sent at *second* (the same for every message of
    that second; *_offset* keys the cache: equal moments may be written in other
    zones)."""
    return f"Date: {format_datetime(second)}"


class _Routes:
    """The mail servers of one delivery run. One that cannot be reached, or refuses to
    send for us, stops its own messages for the rest of the run (they wait, leased
    messages given back); the others go on. A transport that raises stops everything."""

    def __init__(self, transport: Transport, held: set[str]) -> None:
        self.transport = transport
        self.names: dict[int, str] = {}
        if isinstance(transport, RoutingTransport):
            self.names = {id(route): address for address, route in transport.routes.items()}
        #: Routes stopped in this run (``""``: the default server); and of those, the
        #: ones that refused to send for us.
        self.halted: set[str] = set(held)
        self.refused: set[str] = set()
        self.broken = asyncio.Event()
        self._routes: dict[str, str] = {}

    def of(self, sender: str) -> str:
        """The route *sender*'s messages leave through (``""``: the default server)."""
        if not isinstance(self.transport, RoutingTransport):
            return ""
        if sender not in self._routes:  # a run has a few senders and many messages
            self._routes[sender] = self.names.get(id(self.transport.route(sender)), "")
        return self._routes[sender]

    def stop(self, sender: str, *, refused: bool) -> None:
        route = self.of(sender)
        self.halted.add(route)
        if refused:
            self.refused.add(route)

    def stopped(self, item: Claimed, paused: set[str] | None = None) -> bool:
        """Whether *item*'s route is stopped for this run, or its sender was paused by
        a bounce or a refusal of this run (*paused*: their names)."""
        if paused and item.pace is not None and item.pace.name in paused:
            return True
        if not self.halted:  # the usual run: asked of every waiting message at each write
            return self.broken.is_set()
        return self.broken.is_set() or self.of(item.sender) in self.halted

    def any_stopped(self) -> bool:
        """Whether a route is stopped for this run (else :meth:`stopped` is ``False``
        for every message whose sender no bounce of this run paused)."""
        return bool(self.halted) or self.broken.is_set()

    def all_stopped(self) -> bool:
        known = {"", *self.names.values()}
        return self.broken.is_set() or known <= self.halted


async def _sender(
    transport: Transport, ledger: Ledger, routes: _Routes,
    stopping: asyncio.Event | None, report: DeliveryReport,
) -> None:  # fmt: skip
    """Send the messages the *ledger* starts, one at a time, until it has none left for
    this connection. The next one is asked for as soon as this one is being handed over
    (its start is written while this send goes on); once its server is stopped for this
    run (*routes*), or *stopping* is set, a started message not yet sent is given back."""
    try:
        following = await ledger.ask()
        while following is not None:
            hooks.reach("delivery.before_send", following)
            message = with_date(following.raw, clock.now())
            sending = asyncio.ensure_future(
                transport.send(message, following.sender, following.recipient, following.key)
            )
            await asyncio.sleep(0)  # the hand-over begins before the next start is asked
            after = ledger.ask()
            try:
                result = await sending
            except Exception as exc:  # a transport's bug: the message may have gone
                detail = f"sending raised {type(exc).__name__}: {exc}"
                logs.action("sending raised an error: delivery stops", level=logging.ERROR,
                            lead=following.recipient, error=detail)  # fmt: skip
                result = SendResult("uncertain", detail, raised=True)
                report.errors += 1
                routes.broken.set()
            if result.unreachable:
                routes.stop(following.sender, refused=result.outcome == "refused")
            written = ledger.tell((following, result))
            previous, following = following, await after
            if (
                following is not None
                and following.pace is not None
                and previous.pace == following.pace
                and result.outcome in ("bounce", "refused")
            ):  # that may pause the sender: know it before sending the next of theirs
                await written
            if following is not None and (
                routes.stopped(following, ledger.paused)
                or (stopping is not None and stopping.is_set())
            ):
                ledger.give_back(following)
                following = await ledger.ask() if not routes.all_stopped() else None
    finally:
        ledger.leave()


async def _stand_aside(gate: Gate, stopping: asyncio.Event | None) -> None:
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
    gate: Gate | None = None,
    rules: ScoringRules | None = None,
    pause: SendingPause | None = None,
    more_coming: Callable[[], bool] | None = None,
    progress: Callable[[int], None] | None = None,
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
    that refused to send for us (a run on its own starts with none). *more_coming*: while
    it says more may be queued (a pass is under way), a run that finds nothing due
    looks again every :data:`MORE_COMING_POLL` seconds instead of ending (its
    connections stay open, and the emails the pass queues go at once), for at most
    :data:`MORE_COMING_IDLE` seconds in a row, and not once one of its servers stopped."""
    pause = pause if pause is not None else SendingPause()
    report = DeliveryReport()
    now = clock.now()
    if only_leads is None and only_messages is None:  # the bulk run tidies; a lane not
        await asyncio.to_thread(settle_abandoned, ctx, now, all_in_flight=all_in_flight)
        await asyncio.to_thread(sweep_held_mail, ctx, now)
    routes = _Routes(transport, pause.held(now))
    if routes.all_stopped():
        return report  # the server refused to send for us a moment ago
    # One sender per connection, each with at most one message "sending" at a time and
    # the next one started while it goes, so a crash leaves no more than two uncertain
    # messages per connection (and the sent ones whose outcome waits for its group:
    # ledger.in_flight_at_most).
    senders = ctx.config.settings.smtp.max_connections
    finished = asyncio.Event()

    def more() -> bool:
        return not routes.all_stopped() and not (stopping is not None and stopping.is_set())

    idle = 0  # the looks in a row that found nothing due (while waiting for more)

    async def claim_next() -> list[Claimed] | None:
        """The next batch that may go (``None``: nothing more is due)."""
        nonlocal idle
        while more():
            # A connection lost here must not end the run: the outcomes of the sends in
            # flight are written only by the run (else they wait for their lease to end,
            # then are held as uncertain).
            claimed = await retry_transient(
                lambda: asyncio.to_thread(
                    claim, ctx, catalog, clock.now(), report, only_leads, only_messages, rules
                ),
                "delivery",
                stopping=stopping,
            )
            if not claimed.looked_at:
                idle += 1
                if not _wait_for_more(more_coming, routes, idle):
                    return None
                await asyncio.sleep(MORE_COMING_POLL)
                continue
            idle = 0
            if claimed.claimed:
                return claimed.claimed
        return None

    ledger = Ledger(
        ctx, claim_next, report, senders=senders, stopping=stopping, more=more, gate=gate,
        stand_aside=None if gate is None else partial(_stand_aside, gate, stopping),
        skip=routes.stopped, skipping=routes.any_stopped, progress=progress,
    )  # fmt: skip
    keeper = asyncio.create_task(keep_leases(ctx, finished))
    try:
        run = [
            ledger.run(),
            *(_halting(routes.broken, _sender(transport, ledger, routes, stopping, report))
              for _ in range(senders)),
        ]  # fmt: skip
        try:
            outcomes = await asyncio.gather(*run, return_exceptions=True)
        finally:  # whatever a sender did, what was claimed and not started goes back
            for batch in ledger.batches:
                await asyncio.to_thread(release_leases, ctx, batch)
        failures = [o for o in outcomes if isinstance(o, BaseException)]
    finally:
        finished.set()
        await keeper
    _pace(ctx, routes, pause, report)
    if failures:
        raise failures[0]
    return report


def _pace(ctx: Context, routes: _Routes, pause: SendingPause, report: DeliveryReport) -> None:
    """After a run: pause the servers that refused to send for us (each on its own, the
    pause doubling), and say which could not be reached."""
    now = clock.now()
    for route in sorted(routes.refused):
        until = pause.refused(ctx, now, route)
        logs.action("delivery paused: the mail server refuses to send for us",
                    level=logging.ERROR, until=until.isoformat(), sender=route or None,
                    fix=f"check the {f'[[senders]] {route} smtp' if route else '[smtp]'} "
                        "settings, then nurture outbox resend")  # fmt: skip
    if report.sent:
        for route in ({""} | set(routes.names.values())) - routes.halted:
            pause.sent(route)
    unreachable = routes.halted - routes.refused - pause.held(now)
    if unreachable and not report.errors:
        logs.action("mail server unreachable: delivery waits for its next run",
                    level=logging.WARNING,
                    sender=", ".join(sorted(r for r in unreachable if r)) or None)  # fmt: skip


async def _halting(halt: asyncio.Event, sender: Coroutine[Any, Any, None]) -> None:
    """Run *sender*; if it fails, stop the others at their next message."""
    try:
        await sender
    except BaseException:
        halt.set()
        raise
