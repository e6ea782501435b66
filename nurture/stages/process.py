"""The pass in a process of its own, beside the daemon's delivery: the pass advances
enrollments and renders their emails on one core while the daemon sends them on the
other (one Python process runs one thread at a time).

The child is started once, with ``spawn`` (a fresh interpreter: nothing of the
daemon's threads, connections or event loop is copied into it), and makes every pass
the daemon asks of it. It reads the daemon's clock (a ``--now`` pin carries over), logs
as the daemon does, claims work as the daemon's worker, waits at the daemon's gate while
the fast lane serves new leads, keeps only a few batches ahead of the daemon's senders
(:func:`_pace`), and stops between batches when the daemon stops. It
dies with the daemon: killed at once if the daemon is killed (Linux), or, elsewhere, at
its next batch once it sees that its parent is gone. Its writes are its own
transactions, each whole or not at all, as in the daemon.
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import logging
import os
import signal
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from multiprocessing import get_context
from typing import Any

from nurture import clock, logs
from nurture.config import Config
from nurture.engine.context import Context
from nurture.mail.pacing import YIELD_MAX
from nurture.stages.passes import full_pass
from nurture.stages.reload import Reloader
from nurture.stages.report import PassReport
from nurture.store.database import open_engine

#: The start method of the pass process: a fresh interpreter (``fork`` would copy the
#: daemon's threads and open connections mid-use).
CONTEXT = get_context("spawn")

#: ``prctl`` option: the signal the kernel sends a process when its parent dies.
_PR_SET_PDEATHSIG = 1
#: Seconds between looks at a :class:`SharedFlag` that is waited for.
_POLL = 0.01
#: Between its batches, the pass process waits while the emails it queued and the
#: daemon has not started are more than this many batches, and the daemon starts more
#: (:func:`_pace`): the daemon sends on one core, and the pass process renders on the
#: other, beside the mail server's own work, rather than racing ahead of the senders
#: while they share a core with it.
PACE_AHEAD = 3
#: Seconds without a start by the daemon after which the pass process stops waiting,
#: for the rest of the pass (the senders are held up: a slow server, a paused one, a
#: closed window).
PACE_STALL = 0.5
#: Seconds a pass waits so at most, in all: its later tasks and hot-lead notices come
#: at most this much later for it.
PACE_BUDGET = 30.0


class SharedCounter:
    """A count the daemon raises and its pass process reads: eight bytes of shared
    memory, without a lock (one writer). Made before the pass process starts."""

    def __init__(self) -> None:
        self._value = CONTEXT.RawValue(ctypes.c_longlong, 0)

    @property
    def value(self) -> int:
        return int(self._value.value)

    def add(self, n: int) -> None:
        self._value.value += n


class SharedFlag:
    """A flag the daemon and its pass process both read, set by the daemon: one byte of
    shared memory, without a lock. (A ``multiprocessing.Event`` has one: a process that
    dies waiting on it leaves the next ``set()`` blocked for good, and the daemon with
    it.) Made before the pass process starts, and handed to it then."""

    def __init__(self, value: bool = False) -> None:
        self._value = CONTEXT.RawValue(ctypes.c_bool, value)

    def is_set(self) -> bool:
        return bool(self._value.value)

    def set(self) -> None:
        self._value.value = True

    def clear(self) -> None:
        self._value.value = False

    def wait(self, timeout: float) -> bool:
        """Wait until the flag is set, at most *timeout* seconds; return whether it is."""
        deadline = time.monotonic() + timeout
        while not self.is_set() and time.monotonic() < deadline:
            time.sleep(_POLL)
        return self.is_set()


class _Child:
    """What the pass process holds between passes (set up by :func:`_start`)."""

    ctx: Context
    reload: Reloader
    gate: SharedFlag
    stop: SharedFlag
    parent: int
    #: The messages the daemon started (or settled at their start); at the start of
    #: the pass, and how many the pass queued since; seconds it may still wait
    #: (:func:`_pace`; none once the senders stalled in this pass).
    started: SharedCounter
    base: int = 0
    queued: int = 0
    budget: float = PACE_BUDGET


_child: _Child | None = None


def _die_with_parent() -> None:
    """Ask Linux to kill this process when the daemon dies (kill -9 included), so that
    no pass goes on writing behind a daemon that is gone."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # no prctl: the pass stops at its next batch
        return


def _start(
    config: Config,
    worker_id: str,
    pin: Any,
    logging_as: dict[str, Any] | None,
    gate: SharedFlag,
    stop: SharedFlag,
    parent: int,
    started: SharedCounter,
) -> None:
    """The pass process's start: the daemon's clock, log and worker, a database engine
    of its own."""
    global _child
    _die_with_parent()
    if os.getppid() != parent:  # the daemon died before the line above took effect
        os._exit(1)
    # Ctrl-C and SIGTERM are the daemon's to handle: it tells this process to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    clock.carry(pin)
    if logging_as is not None:
        logs.configure(**logging_as)
    engine = open_engine(config.database_url)
    child = _Child()
    child.ctx = dataclasses.replace(Context.open(engine, config), worker_id=worker_id)
    child.reload = Reloader(child.ctx, quiet=True)
    child.gate, child.stop, child.parent, child.started = gate, stop, parent, started
    _child = child


def _stop_or_yield() -> bool:
    """Asked between batches: wait while the fast lane serves new leads (at most
    :data:`~nurture.mail.pacing.YIELD_MAX` seconds), then whether to stop."""
    child = _child
    assert child is not None
    child.gate.wait(YIELD_MAX)
    return child.stop.is_set() or os.getppid() != child.parent


def _ready() -> None:
    """Nothing: done once the pass process has started (see :meth:`PassProcess.start`)."""


#: The pass process's clock and pause, for :func:`_pace` (a test plays them).
_monotonic = time.monotonic
_sleep = time.sleep


def _pace(queued: int) -> None:
    """After a batch that queued *queued* emails, before the next: wait while more than
    :data:`PACE_AHEAD` batches of what this pass queued wait to be started, as long as
    the daemon goes on starting them (after :data:`PACE_STALL` seconds without a start,
    the pass waits no more), the pass's :data:`PACE_BUDGET` lasts, and the daemon does
    not stop."""
    child = _child
    assert child is not None
    child.queued += queued
    most = PACE_AHEAD * child.ctx.batch_size
    began = last_move = _monotonic()
    seen = child.started.value
    while child.queued - (seen - child.base) > most and child.budget > 0:
        if child.stop.is_set() or os.getppid() != child.parent:
            break
        _sleep(_POLL)
        moment = _monotonic()
        if child.started.value != seen:
            seen, last_move = child.started.value, moment
        elif moment - last_move > PACE_STALL:
            child.budget = 0.0  # the senders are held up: this pass waits no more
            break
        child.budget -= moment - began
        began = moment


def _run(now: datetime) -> PassReport:
    """One pass at *now*, in the pass process."""
    child = _child
    assert child is not None
    child.base, child.queued, child.budget = child.started.value, 0, PACE_BUDGET
    return full_pass(child.ctx, child.reload, now, _stop_or_yield, queued=_pace)[1]


class PassProcess:
    """The daemon's handle on the pass process: :meth:`run` makes a pass there.

    *gate* is the daemon's bulk gate (cleared while the fast lane serves new leads) and
    *stop* is set when the daemon stops."""

    def __init__(
        self, ctx: Context, gate: SharedFlag, stop: SharedFlag, started: SharedCounter
    ) -> None:
        self.ctx = ctx
        self.gate = gate
        self.stop = stop
        self.started = started
        self._pool: ProcessPoolExecutor | None = None
        self._started: Future[None] | None = None

    @property
    def running(self) -> bool:
        """Whether the pass process has started (and not died since)."""
        return self._pool is not None and self._started is not None and self._started.done()

    def start(self) -> Future[None]:
        """Start the pass process, if it is not running, without waiting for it (its
        start takes most of a second: it imports nurture); the future is done once it
        has started. Must be called from the daemon's main thread (see :meth:`run`)."""
        pool = self._open()
        if self._started is None:
            try:
                self._started = pool.submit(_ready)
            except BrokenProcessPool:
                self._discard(pool, "the pass process had died: a new one starts")
                self._started = self._open().submit(_ready)
        return self._started

    def _open(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=CONTEXT,
                initializer=_start,
                initargs=(
                    self.ctx.config,
                    self.ctx.worker_id,
                    clock.carried(),
                    logs.configured(),
                    self.gate,
                    self.stop,
                    os.getpid(),
                    self.started,
                ),
            )
        return self._pool

    async def run(self, now: datetime) -> PassReport:
        """One pass at *now* in the pass process (started on first use, and again after
        it died). Must be called from the daemon's main thread: the process is started
        from the calling thread, and dies with it."""
        pool = self._open()
        try:
            future: Future[PassReport] = pool.submit(_run, now)
        except BrokenProcessPool:  # it died between passes: a new one makes this pass
            self._discard(pool, "the pass process had died: a new one makes this pass")
            pool = self._open()
            future = pool.submit(_run, now)
        try:
            return await asyncio.wrap_future(future)
        except BrokenProcessPool:
            # It died in the pass (killed, out of memory): whatever it had not committed
            # was rolled back, and its claims come back to the queue.
            self._discard(pool, "the pass process died: the next pass starts a new one")
            return PassReport()

    def _discard(self, pool: ProcessPoolExecutor, why: str) -> None:
        logs.action(why, level=logging.ERROR)
        if self._pool is pool:
            self._pool, self._started = None, None
        pool.shutdown(wait=False)

    def close(self) -> None:
        """Wait for the pass in progress, if any, and end the pass process."""
        pool, self._pool, self._started = self._pool, None, None
        if pool is not None:
            pool.shutdown(wait=True)
