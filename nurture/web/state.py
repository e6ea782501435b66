"""What every part of the HTTP side shares: the project's settings, its database and
the key that signs tokens, plus the small helpers for answers."""

from __future__ import annotations

import html
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import copy_context
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import Engine
from starlette.background import BackgroundTask
from starlette.convertors import Convertor, register_url_convertor

from nurture import logs
from nurture.config import Config


class TokenPath(Convertor[str]):
    """``{token:token}`` in a route: a signed token, taken whole to the end of the path
    whatever it holds, for its strict decoding to refuse what is not a token. (The plain
    ``{token}`` stops at a ``/``, and a trailing one was answered by a redirect to the
    URL without it; ``{token:path}`` stops before a final newline, so ``TOKEN%0A`` was
    read as ``TOKEN``.)"""

    regex = "(?s:.+)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("token", TokenPath())

NO_CACHE = {"Cache-Control": "no-store, no-cache, must-revalidate, private"}
#: The inline stylesheet of :func:`page` (allowed by its hash in the pages' CSP).
PAGE_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;"
    "padding:0 1rem;line-height:1.5}button{font-size:1rem;padding:.6rem 1.2rem}"
)


class Background:
    """One worker thread for work an answer must not wait for, so that how long the
    answer takes tells nothing about it (whether an address may sign in, say). Work is
    done in the order it was given, in the context (the clock) of who gave it; a
    failure is logged in one line, never a traceback."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nurture-bg")
        self._pending = 0
        self._idle = threading.Condition()

    def submit(self, what: str, work: Callable[..., Any], *args: Any) -> None:
        """Do ``work(*args)`` soon; *what* names it in the log if it fails."""
        with self._idle:
            self._pending += 1
        self._start(what, work, *args)

    def after(self, answer: Response, what: str, work: Callable[..., Any], *args: Any) -> None:
        """Do ``work(*args)`` once *answer* has been sent (its time then owes nothing to
        the work, even on a busy interpreter); :meth:`wait` counts it from now."""
        with self._idle:
            self._pending += 1
        answer.background = BackgroundTask(self._start, what, work, *args)

    def _start(self, what: str, work: Callable[..., Any], *args: Any) -> None:
        future = self._executor.submit(copy_context().run, work, *args)
        future.add_done_callback(lambda done: self._done(what, done))

    def _done(self, what: str, future: Future[Any]) -> None:
        error = future.exception()
        if error is not None:
            logs.action(f"{what} failed", level=logging.ERROR, error=type(error).__name__)
        with self._idle:
            self._pending -= 1
            self._idle.notify_all()

    def wait(self, timeout: float = 30.0) -> bool:
        """Wait until all the work given so far is done; ``False`` after *timeout* s."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)


@dataclass(frozen=True)
class WebState:
    """The project one server serves."""

    config: Config
    engine: Engine
    #: The key that signs tracking and unsubscribe tokens.
    secret: str
    #: Wakes the daemon of this process (``nurture run --serve``) when leads arrive.
    wake: Callable[[], None] | None = field(default=None)
    #: Work done after the answer (:class:`Background`).
    background: Background = field(default_factory=Background)

    def arrived(self) -> None:
        """Tell the daemon in this process, if any, that leads arrived."""
        if self.wake is not None:
            self.wake()


#: The largest id a table row can have on every database (PostgreSQL's ``integer``).
MAX_ID = 2**31 - 1


def record_id(text: str) -> int | None:
    """The row id a URL (or a form) names: ASCII digits from 1 to :data:`MAX_ID`;
    ``None`` for anything else (then: 404, never a database error)."""
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(MAX_ID)):
        return None
    value = int(text)
    return value if 1 <= value <= MAX_ID else None


def client(request: Request) -> tuple[str, str]:
    """The client's IP address (the peer's, or what a trusted proxy says it is: see
    ``[server] trusted_proxies``) and user agent."""
    ip = request.client.host if request.client else ""
    return ip, request.headers.get("user-agent", "")


def page(title: str, body: str, status: int = 200) -> HTMLResponse:
    """A small self-contained HTML page (*body* is HTML, already escaped)."""
    document = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title>"
        f"<style>{PAGE_STYLE}</style>"
        f"</head><body>{body}</body></html>"
    )
    return HTMLResponse(document, status_code=status, headers=NO_CACHE)


def not_found() -> HTMLResponse:
    """The answer to a link that is not valid (never a redirect)."""
    return page("Link not found", "<h1>This link is not valid</h1>", status=404)
