"""What protects every route of the server, whichever router adds it: request body
limits (413), JSON nesting limits (400), security headers on every answer, an
unexpected error answered 500 (with those headers) and logged in one line that never
carries a database statement or its parameters, and the peer's address read from
``X-Forwarded-For`` only when the peer is a trusted proxy.

A router needs nothing to get these: :func:`nurture.web.server.create_app` wraps the
whole app in :class:`Guard`. A route class with other needs gets a line in
:data:`BODY_LIMITS`; a response that sets one of the security headers itself keeps
its own value (a page meant to be framed, say).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import re
from collections.abc import Iterable
from itertools import accumulate
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from nurture import logs
from nurture.errors import InvalidValueError

KIB = 1024
#: The largest request body per route class (path prefix), in bytes: links clicked by
#: recipients take no real body, the machines' API takes batches, forms and the
#: people's app take what a person types.
BODY_LIMITS: tuple[tuple[str, int], ...] = (
    ("/o/", 4 * KIB),
    ("/c/", 4 * KIB),
    ("/u/", 4 * KIB),
    ("/api/", 1024 * KIB),
    ("/f/", 64 * KIB),
    ("/app/", 64 * KIB),
)
#: The limit of any other path.
DEFAULT_BODY_LIMIT = 64 * KIB
#: JSON nested deeper than this is refused before it is parsed.
MAX_JSON_DEPTH = 32

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def body_limit(path: str) -> int:
    """The largest body a request to *path* may send."""
    for prefix, limit in BODY_LIMITS:
        if path.startswith(prefix):
            return limit
    return DEFAULT_BODY_LIMIT


def too_deep(raw: bytes) -> bool:
    """Whether the arrays and objects of the JSON text *raw* nest deeper than
    :data:`MAX_JSON_DEPTH` (brackets inside strings do not count), without parsing it."""
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    if brackets.count(b"[") + brackets.count(b"{") <= MAX_JSON_DEPTH:
        return False
    steps = (1 if b in b"[{" else -1 for b in brackets)
    return max(accumulate(steps), default=0) > MAX_JSON_DEPTH


def read_json(raw: bytes) -> Any:
    """The JSON value of a request body; :class:`InvalidValueError` (a 400) when it is
    not JSON, not UTF-8, or nested deeper than :data:`MAX_JSON_DEPTH`."""
    if too_deep(raw):
        raise InvalidValueError(f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(raw, parse_constant=_no_constant, parse_float=_finite_float)
    except InvalidValueError:
        raise
    except (ValueError, RecursionError):
        raise InvalidValueError("the body must be JSON") from None


def _no_constant(name: str) -> Any:
    raise InvalidValueError(f"{name} is not a JSON number: send a finite number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidValueError(f"{text} is too large a number: send a finite number")
    return value


def content_security_policy(inline_styles: Iterable[str] = ()) -> str:
    """The Content-Security-Policy of every page: nothing from elsewhere, no script,
    styles from this server (and the exact inline *inline_styles*), forms posting only
    here, never framed."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(style.encode()).digest()).decode() + "'"
        for style in inline_styles
    )
    style_src = f"'self' {hashes}".strip()
    return (
        f"default-src 'none'; img-src 'self'; style-src {style_src}; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    )


def security_headers(csp: str) -> list[tuple[bytes, bytes]]:
    """The headers every answer carries (unless the route set its own)."""
    return [
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-frame-options", b"DENY"),
        (b"content-security-policy", csp.encode()),
    ]


class Guard:
    """ASGI middleware around the whole app: body limits, JSON depth, security headers.

    The body is read (up to the route's limit) before the app sees the request, so no
    route can be made to hold more than its limit in memory; a larger one, announced
    or streamed, is answered 413 at once.
    """

    def __init__(self, app: ASGIApp, csp: str) -> None:
        self.app = app
        self.headers = security_headers(csp)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = self._with_headers(send)
        path: str = scope.get("path", "")
        limit = body_limit(path)
        announced = _header(scope, b"content-length")
        if announced is not None and (not announced.isdigit() or int(announced) > limit):
            await _refuse(send, path, 413, f"the request body is larger than {limit} bytes")
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _refuse(send, path, 413, f"the request body is larger than {limit} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        kind = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
        is_json = kind == "application/json" or kind.endswith("+json")
        if body and is_json and too_deep(body):
            message_text = f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels"
            await _refuse(send, path, 400, message_text)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, replay, sending)
        except Exception as exc:  # a bug, or the database: one line, no statement
            logs.action("unexpected error answering a request", level=logging.ERROR,
                        method=scope.get("method"), path=path,
                        error=type(exc).__name__)  # fmt: skip
            if not started:
                await _refuse(send, path, 500, "internal error: see the server's log")

    def _with_headers(self, send: Send) -> Send:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(k, v) for k, v in self.headers if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        return sending


class TrustedProxies:
    """ASGI middleware: the client's address (and scheme) is read from
    ``X-Forwarded-For`` (``X-Forwarded-Proto``) only when the peer is one of
    *trusted_proxies* (addresses or networks); from anyone else these headers are
    ignored, and with none named they always are."""

    def __init__(self, app: ASGIApp, trusted_proxies: list[str]) -> None:
        self.app = app
        if trusted_proxies:
            proxied: Any = ProxyHeadersMiddleware(app, trusted_hosts=list(trusted_proxies))  # type: ignore[arg-type]
            self.app = proxied

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1").strip()
    return None


async def _refuse(send: Send, path: str, status: int, detail: str) -> None:
    if path.startswith("/api/"):
        body, kind = json.dumps({"detail": detail}).encode(), b"application/json"
    else:
        body, kind = detail.encode() + b"\n", b"text/plain; charset=utf-8"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", kind),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
