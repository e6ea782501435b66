"""``nurture run``: the daemon. APScheduler (3.x, asyncio) runs the passes and the
delivery loop at their intervals; SIGTERM or SIGINT lets the work in flight finish
(the emails being sent are sent and recorded) and the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent import futures
from datetime import UTC, datetime
from functools import partial
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import Engine

from nurture import clock, logs
from nurture.config import Config
from nurture.engine.catalog import Catalog
from nurture.engine.context import Context
from nurture.mail.delivery import deliver
from nurture.mail.pacing import YIELD_MAX, SendingPause
from nurture.mail.transports import Transport, open_transport
from nurture.mail.webhooks import deliver_webhooks
from nurture.retry import is_transient, retry_transient
from nurture.stages.passes import (
    first_email_due,
    full_pass,
    has_work_due,
    poll_replies,
    reload_stage,
    reply_mailboxes,
    serve_arrivals,
)
from nurture.stages.process import PassProcess, SharedCounter, SharedFlag
from nurture.stages.reload import Reloader
from nurture.stages.report import PassReport
from nurture.store.arrivals import Listener, drain, waiting
from nurture.store.outbox import due_waiting
from nurture.store.workers import HEARTBEAT, SqliteLock, beat, register, sqlite_file
from nurture.web import background_server

#: Seconds between a standby's attempts to take over the SQLite database.
STANDBY_POLL = 2.0
#: While a pass runs, seconds between looks for what it has queued so far.
PIPELINE_POLL = 0.2
#: Arrivals served at once beyond which the fast lane no longer holds the bulk work back
#: (a form's visitors come a few at a time; an API import by the thousand).
FIRST_IN_LINE = 50
#: Seconds between looks for arrived leads on SQLite (a cheap query), and on PostgreSQL
#: (where a NOTIFY wakes the daemon at once; the look catches one that was missed).
ARRIVALS_POLL = 0.25
ARRIVALS_POLL_PG = 5.0
#: The interpreter's switch interval in the daemon (seconds; Python's default is 0.005).
SWITCH_INTERVAL = 0.001
#: While the pass process starts, the pass made here stops this many batches ahead of
#: the senders (at the start of a big pass it rendered 1,500 emails while 200 went).
AHEAD_WHILE_STARTING = 2
#: Seconds after which the pass made while the pass process starts stops waiting for
#: the senders (and goes on alone) if the process has still not started.
START_WAIT_MAX = 30.0


class Daemon:
    """The long-running process behind ``nurture run``."""

    def __init__(
        self, engine: Engine, config: Config, *, until_idle: bool = False, serve: bool = False
    ) -> None:
        self.ctx = Context.open(engine, config)
        self.serve = serve
        self.settings = config.settings.daemon
        self.reload = Reloader(self.ctx)
        #: Delivery's memory of a mail server that refused to send for us.
        self.sending_pause = SendingPause()
        self.transport: Transport = open_transport(
            config.settings.smtp, config.outbox_dir, config.settings.senders
        )
        self.until_idle = until_idle
        self.catalog: Catalog | None = None
        self.stopping = asyncio.Event()
        self._pass_lock = asyncio.Lock()
        self._delivery_lock = asyncio.Lock()
        self._arrivals_lock = asyncio.Lock()
        #: Set (from any thread, through :meth:`wake`) when leads arrived.
        self._arrived = asyncio.Event()
        #: Cleared while the fast lane serves arrived leads: the pass (between batches)
        #: and the bulk delivery (between messages) wait for it, so that a new lead's
        #: writes do not queue behind theirs for the database (SQLite has one writer).
        self._bulk_gate = SharedFlag(True)
        #: Set when the daemon stops, for the pass to see between batches (in its own
        #: process, when ``[daemon] pass_process``).
        self._stop_flag = SharedFlag()
        #: The messages the bulk delivery started (or settled at their start): the pass
        #: process keeps only a few batches ahead of them.
        self._started = SharedCounter()
        self.pass_process = (
            PassProcess(self.ctx, self._bulk_gate, self._stop_flag, self._started)
            if self.settings.pass_process
            else None
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self.passes = 0
        #: Set while this worker holds a SQLite database: whatever a delivery loop left
        #: in flight there was left by a process that is gone.
        self._settle_all = False

    def _loaded(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def stop(self, why: str) -> None:
        if not self.stopping.is_set():
            logs.action("stopping", reason=why)
            self._stop_flag.set()
            self.stopping.set()

    async def pass_job(self) -> None:
        if self.stopping.is_set():
            return
        async with self._pass_lock:
            now = clock.now()
            passing = asyncio.ensure_future(self._pass(now))
            # Send what the pass queues while it goes on (it commits batch by batch),
            # rather than after it.
            try:
                while not passing.done():
                    await asyncio.wait({passing}, timeout=PIPELINE_POLL)
                    if not passing.done():  # the run goes on while the pass may queue more
                        await self.delivery_job(more_coming=lambda: not passing.done())
            finally:  # never leave the pass running behind the lock
                await asyncio.wait({passing})
            catalog, report = passing.result()
            self.catalog = catalog
            self.passes += 1
            if any(vars(report).values()):
                logs.action("pass done", **vars(report))
        await self.delivery_job()
        if self.until_idle and not self.stopping.is_set():
            idle = not await asyncio.to_thread(has_work_due, self.ctx, catalog, clock.now())
            if idle:
                self.stop("nothing more is due (--until-idle)")

    async def _pass(self, now: datetime) -> tuple[Catalog, PassReport]:
        """One pass at *now*: in the pass process (the daemon reloads the files first,
        for its own delivery and its log), or in a thread of this one."""
        if self.pass_process is None:
            return await asyncio.to_thread(
                full_pass, self.ctx, self.reload, now, self._stop_or_yield, self._loaded
            )
        if not self.pass_process.running:
            return await self._pass_while_starting(now)
        catalog = await asyncio.to_thread(reload_stage, self.ctx, self.reload, now)
        self._loaded(catalog)  # delivery sends what the pass queues with it
        return catalog, await self.pass_process.run(now)

    async def _pass_while_starting(self, now: datetime) -> tuple[Catalog, PassReport]:
        """The pass process takes most of a second to start (it imports nurture): the
        pass begins here, in a thread, while it starts, so that delivery has emails to
        send at once; once the process has started, the advance stops between two
        batches (before its first, when the process is up by then) and the process
        makes the rest of the pass (a whole pass, which finds the rest of what is
        due)."""
        assert self.pass_process is not None
        starting = self.pass_process.start()
        handed_over = False
        ahead = AHEAD_WHILE_STARTING * self.ctx.batch_size
        # A process that never starts (it should not) holds this pass back no longer.
        give_up = time.monotonic() + START_WAIT_MAX

        def stop() -> bool:
            nonlocal handed_over
            if self._stop_or_yield():
                return True
            # This interpreter also sends: rendering far ahead of the senders would take
            # its time from them, and the pass process renders the rest on the other core.
            while (
                not starting.done()
                and not self.stopping.is_set()
                and time.monotonic() < give_up
                and self._ahead(ahead)
            ):
                futures.wait([starting], timeout=PIPELINE_POLL / 4)
            if self.stopping.is_set():  # stopped while waiting: no further batch
                return True
            handed_over = starting.done()
            return handed_over

        catalog, report = await asyncio.to_thread(
            full_pass, self.ctx, self.reload, now, stop, self._loaded, self._stop_or_yield
        )
        if handed_over and not self.stopping.is_set():
            report.add(await self.pass_process.run(now))
        return catalog, report

    def _ahead(self, enough: int) -> bool:
        """Whether *enough* emails are queued and due, waiting for the senders (``False``
        when the database cannot say: the pass then goes on rather than fail)."""
        try:
            with self.ctx.engine.connect() as connection:
                return due_waiting(connection, clock.now(), enough) >= enough
        except Exception as exc:
            logs.action("could not count the emails waiting to be sent", level=logging.WARNING,
                        error=f"{type(exc).__name__}: {exc}")  # fmt: skip
            return False

    def _stop_or_yield(self) -> bool:
        """Asked by the pass between batches (and between the enrollments of a batch not
        written yet): whether to stop; first, wait while the fast lane serves arrived
        leads (at most :data:`YIELD_MAX` seconds)."""
        self._bulk_gate.wait(YIELD_MAX)
        return self.stopping.is_set()

    async def delivery_job(self, more_coming: Callable[[], bool] | None = None) -> None:
        """A delivery run; *more_coming*: while it says so (a pass is queueing emails), the
        run waits for them rather than ending when it finds nothing due."""
        if self.stopping.is_set() or self.catalog is None:
            return
        async with self._delivery_lock:
            report = await deliver(
                self.ctx,
                self.catalog,
                self.transport,
                stopping=self.stopping,
                all_in_flight=self._settle_all,
                gate=self._bulk_gate,
                rules=self.reload.rules,
                pause=self.sending_pause,
                more_coming=more_coming,
                progress=self._started.add,
            )
            self._settle_all = False
            await deliver_webhooks(self.ctx)
            if any(vars(report).values()):
                logs.action("delivery done", **vars(report))

    def wake(self) -> None:
        """Leads arrived (the server in this process, or a ``NOTIFY``): serve them now.
        Safe to call from any thread."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._arrived.set)

    async def arrivals_job(self) -> None:
        """Speed to lead: enroll the leads that just arrived and send what is due for
        them, without waiting for the pass (nor for a long one in progress)."""
        if self.stopping.is_set() or self.catalog is None:
            return
        async with self._arrivals_lock:
            try:
                await self._serve_arrivals()
            finally:
                self._bulk_gate.set()

    async def _serve_arrivals(self) -> None:
        engine = self.ctx.engine
        while not self.stopping.is_set() and await asyncio.to_thread(waiting, engine):
            self._bulk_gate.clear()  # the bulk work waits while new leads are served
            lead_ids = await asyncio.to_thread(drain, engine, self.ctx.batch_size)
            if not lead_ids:
                return
            if len(lead_ids) > FIRST_IN_LINE:  # an import through the API, not a visitor:
                self._bulk_gate.set()  # no reason to hold everything else back
            catalog = self.catalog
            assert catalog is not None
            started = time.perf_counter()
            serve = partial(serve_arrivals, self.ctx, catalog, lead_ids, clock.now(),
                            rules=self.reload.rules)  # fmt: skip
            report = await asyncio.to_thread(serve)
            queued = time.perf_counter()
            delivered = await deliver(self.ctx, catalog, self.transport, stopping=self.stopping,
                                      only_leads=lead_ids, rules=self.reload.rules,
                                      pause=self.sending_pause)  # fmt: skip
            logs.action("arrivals served", leads=len(lead_ids), enrolled=report.enrolled,
                        queued=report.emails_queued, sent=delivered.sent,
                        queue_ms=round((queued - started) * 1000),
                        send_ms=round((time.perf_counter() - queued) * 1000))  # fmt: skip

    async def _fast_lane(self) -> None:
        """Wait for arrivals: woken at once in this process or by ``NOTIFY``, and
        looking a few times a second on SQLite (once in a while on PostgreSQL, in case
        a notification was missed)."""
        poll = ARRIVALS_POLL if sqlite_file(self.ctx.engine) is not None else ARRIVALS_POLL_PG
        while not self.stopping.is_set():
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout=poll)
            except TimeoutError:
                pass
            self._arrived.clear()
            await self._guarded("arrivals")

    async def replies_job(self) -> None:
        if self.stopping.is_set():
            return
        await asyncio.to_thread(poll_replies, self.ctx)

    async def _guarded(self, job: str) -> None:
        jobs = {
            "pass": self.pass_job,
            "deliver": self.delivery_job,
            "replies": self.replies_job,
            "arrivals": self.arrivals_job,
        }
        try:
            # A lost database connection is waited out (with backoff) and the job runs
            # again: what it had not committed was rolled back, so nothing is lost.
            await retry_transient(jobs[job], job, stopping=self.stopping)
        except Exception as exc:
            if is_transient(exc):
                logs.action("database unavailable while stopping", level=logging.WARNING,
                            job=job)  # fmt: skip
            else:
                logs.logger.exception("%s job failed; it runs again at its next interval", job)

    def _heartbeat(self, worker_id: str) -> None:
        try:
            beat(self.ctx.engine, worker_id)
        except Exception as exc:
            if not is_transient(exc):
                raise
            logs.action("heartbeat missed: database unavailable", level=logging.WARNING)

    async def _standby(self, lock: SqliteLock, worker_id: str) -> bool:
        """Wait until this process holds the SQLite database; ``False`` if told to stop
        first."""
        engine = self.ctx.engine
        logs.action(
            "another nurture run works on this SQLite database: waiting as a standby",
            holder=lock.holder(),
        )
        await asyncio.to_thread(beat, engine, worker_id, role="standby")
        while not lock.acquire():
            try:
                await asyncio.wait_for(self.stopping.wait(), timeout=STANDBY_POLL)
                return False
            except TimeoutError:
                await asyncio.to_thread(beat, engine, worker_id)
        logs.action("the other worker stopped: taking over")
        await asyncio.to_thread(beat, engine, worker_id, role="active")
        return True

    async def main(self) -> None:
        # The delivery loop's one writer works in a thread beside the event loop that
        # talks SMTP: at Python's default switch interval (5 ms) each statement waits up
        # to that long for the interpreter once its answer is back, and the senders wait
        # for the writer (a fifth more emails a second with 1 ms, bench/README.md).
        sys.setswitchinterval(SWITCH_INTERVAL)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop, signal.Signals(sig).name)
        engine = self.ctx.engine
        worker_id = await asyncio.to_thread(register, engine, "active", self.ctx.worker_id)
        database = sqlite_file(engine)
        lock = SqliteLock(database) if database is not None else None
        try:
            if lock is not None and not lock.acquire():
                if not await self._standby(lock, worker_id):
                    logs.action("daemon stopped", passes=0)
                    return
            self._settle_all = lock is not None
            await self._work(worker_id)
        finally:
            await asyncio.to_thread(beat, engine, worker_id, stopped=True)
            if lock is not None:
                lock.release()

    def _due_at_start(self) -> dict[str, Any]:
        """For the start-up line: work due now, else when the first email is due."""
        from nurture.language.sequence_files import load_sequences
        from nurture.language.templates import TemplateSet

        config = self.ctx.config
        now = clock.now()
        sequences, _ = load_sequences(
            config.sequences_dir, TemplateSet(config.templates_dir).exists
        )
        by_name = {sequence.name: sequence for sequence in sequences}
        if has_work_due(self.ctx, Catalog(by_name), now):
            return {"due": "now"}
        first = first_email_due(self.ctx, by_name, now)
        if first is None:
            return {"due": "nothing now", "first_email_due": "none scheduled"}
        return {"due": "nothing now", "first_email_due": first.isoformat(timespec="minutes")}

    async def _work(self, worker_id: str) -> None:
        scheduler = AsyncIOScheduler(timezone=UTC)
        common = {"max_instances": 1, "coalesce": True, "misfire_grace_time": None}
        scheduler.add_job(
            self._guarded,
            "interval",
            args=["pass"],
            id="pass",
            seconds=self.settings.interval,
            next_run_time=datetime.now(UTC),
            **common,
        )
        scheduler.add_job(
            self._guarded,
            "interval",
            args=["deliver"],
            id="deliver",
            seconds=self.settings.delivery_interval,
            **common,
        )
        scheduler.add_job(
            self._heartbeat,
            "interval",
            args=[worker_id],
            id="heartbeat",
            seconds=HEARTBEAT.total_seconds(),
            **common,
        )
        mailboxes = reply_mailboxes(self.ctx.config.settings)
        if mailboxes:  # one job reads them all, as often as the most eager one asks
            scheduler.add_job(
                self._guarded,
                "interval",
                args=["replies"],
                id="replies",
                seconds=min(mailbox.interval for _, mailbox in mailboxes),
                next_run_time=datetime.now(UTC),
                **common,
            )
        self._loop = asyncio.get_running_loop()
        lane = asyncio.create_task(self._fast_lane())
        listener = None
        if self.ctx.engine.dialect.name == "postgresql":
            listener = await asyncio.to_thread(Listener(self.ctx.engine, self.wake).start)
        server, thread = None, None
        if self.serve:
            settings = self.ctx.config.settings.server
            server = background_server(
                self.ctx.config, self.ctx.engine, settings.host, settings.port, wake=self.wake
            )
            thread = threading.Thread(target=server.run, name="nurture-server", daemon=True)
            thread.start()
            logs.action("server listening", url=f"http://{settings.host}:{settings.port}")
        due = await asyncio.to_thread(self._due_at_start)
        scheduler.start()
        logs.action(
            "daemon started",
            interval=self.settings.interval,
            transport=type(self.transport).__name__,
            **due,
        )
        try:
            await self.stopping.wait()
        finally:
            scheduler.pause()  # no new jobs; the running ones see `stopping` and wind down
            self._arrived.set()  # the fast lane sees `stopping` and ends
            await lane
            async with self._pass_lock, self._delivery_lock, self._arrivals_lock:
                pass  # the work in flight is finished and recorded
            if self.pass_process is not None:
                await asyncio.to_thread(self.pass_process.close)
            if listener is not None:
                await asyncio.to_thread(listener.stop)
            # Only now: shutting down cancels the jobs still running.
            scheduler.shutdown(wait=False)
            await self.transport.close()
            if server is not None and thread is not None:
                server.should_exit = True
                await asyncio.to_thread(thread.join, 10)
        logs.action("daemon stopped", passes=self.passes)
