"""What a delivery run reports, and how it paces itself: the backoff between attempts, the
pause after the server refused to send for us, the limits of waiting for the fast lane."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from nurture.engine.context import Context
from nurture.retry import backoff

#: Longest the pass (between batches) and a bulk sender (between messages) wait for
#: the fast lane before going on.
YIELD_MAX = 5.0


class Gate(Protocol):
    """The daemon's bulk gate, cleared while the fast lane serves new leads: a
    ``threading.Event``, or a ``multiprocessing`` one when the pass runs in a process
    of its own."""

    def is_set(self) -> bool: ...


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

    def count(self, name: str) -> None:
        """One more message became *name* (a field; ``""``: nothing to count)."""
        if name:
            setattr(self, name, getattr(self, name) + 1)

    def add(self, other: DeliveryReport) -> None:
        for name, value in vars(other).items():
            setattr(self, name, getattr(self, name) + value)


@dataclass
class SendingPause:
    """After a mail server refused to send for us: no delivery through it before
    :attr:`until`, and how many delivery runs in a row met a refusal (the pause doubles).
    Kept by the daemon from one delivery run to the next. :attr:`until` and
    :attr:`refusals` are the default server's (``[smtp]``); a ``[[senders]]`` entry's own
    server (its *route*, named by its address) is paused on its own, in :attr:`routes`."""

    until: datetime | None = None
    refusals: int = 0
    #: The other servers' pauses: until when, and after how many refusals in a row.
    routes: dict[str, tuple[datetime, int]] = field(default_factory=dict)

    def holds(self, now: datetime, route: str = "") -> bool:
        """Whether delivery through *route* (``""``: the default server) waits at *now*."""
        if not route:
            return self.until is not None and now < self.until
        paused = self.routes.get(route)
        return paused is not None and now < paused[0]

    def held(self, now: datetime) -> set[str]:
        """The routes that wait at *now* (``""``: the default server)."""
        held = {route for route, (until, _) in self.routes.items() if now < until}
        return held | ({""} if self.holds(now) else set())

    def refused(self, ctx: Context, now: datetime, route: str = "") -> datetime:
        """A run met a refusal through *route*: pause it longer than the last time;
        return until when."""
        if not route:
            self.refusals += 1
            self.until = now + send_backoff(ctx, self.refusals)
            return self.until
        refusals = self.routes.get(route, (now, 0))[1] + 1
        until = now + send_backoff(ctx, refusals)
        self.routes[route] = (until, refusals)
        return until

    def sent(self, route: str = "") -> None:
        """A message went through *route*: its server sends for us again."""
        if not route:
            self.refusals, self.until = 0, None
        else:
            self.routes.pop(route, None)


def send_backoff(ctx: Context, attempts: int, rng: random.Random | None = None) -> timedelta:
    """The wait before attempt *attempts* + 1 of a send (or a webhook call):
    ``[delivery] retry_after`` doubling up to ``retry_max``, with jitter."""
    settings = ctx.config.settings.delivery
    first = timedelta(seconds=settings.retry_after)
    return backoff(attempts, first, max(first, timedelta(seconds=settings.retry_max)), rng)
