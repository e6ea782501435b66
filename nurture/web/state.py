"""What every part of the HTTP side shares: the project's settings, its database and
the key that signs tokens, plus the small helpers for answers."""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import Request
from fastapi.responses import HTMLResponse
from sqlalchemy import Engine

from nurture.config import Config

NO_CACHE = {"Cache-Control": "no-store, no-cache, must-revalidate, private"}
#: The inline stylesheet of :func:`page` (allowed by its hash in the pages' CSP).
PAGE_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;"
    "padding:0 1rem;line-height:1.5}button{font-size:1rem;padding:.6rem 1.2rem}"
)


@dataclass(frozen=True)
class WebState:
    """The project one server serves."""

    config: Config
    engine: Engine
    #: The key that signs tracking and unsubscribe tokens.
    secret: str
    #: Wakes the daemon of this process (``nurture run --serve``) when leads arrive.
    wake: Callable[[], None] | None = field(default=None)

    def arrived(self) -> None:
        """Tell the daemon in this process, if any, that leads arrived."""
        if self.wake is not None:
            self.wake()


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
