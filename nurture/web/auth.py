"""Who is asking, in the sales app: the signed-in session (an HttpOnly, SameSite cookie
naming a stored session), the CSRF token every form carries, and the rate limit of
sign-in requests.

Forms shown before signing in (the login form, a sign-in link's button) have no stored
session: the browser gets a random pre-session id in an HttpOnly, SameSite=Strict
cookie, and the form's CSRF token is an HMAC of that id under the project's key
(:func:`form_csrf`). Knowing or setting the cookie is not enough to forge the token."""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import Response

from nurture import clock
from nurture.store.access import AppSession, People, find_session
from nurture.store.database import session_scope
from nurture.tokens import sign
from nurture.web.state import WebState

SESSION_COOKIE = "nurture_session"
#: The double-submit token of forms shown before signing in (login, sign-in link).
FORM_COOKIE = "nurture_form"
CSRF_FIELD = "csrf"


@dataclass(frozen=True)
class Viewer:
    """A signed-in salesperson."""

    email: str
    csrf: str


def secure(state: WebState) -> bool:
    """Cookies are Secure when the app is served over https."""
    return state.config.settings.tracking.base_url.startswith("https://")


def viewer(state: WebState, request: Request) -> Viewer | None:
    """The signed-in salesperson of *request*, if any."""
    token = request.cookies.get(SESSION_COOKIE, "")
    if not token:
        return None
    with session_scope(state.engine) as session:
        row: AppSession | None = find_session(session, state.secret, token, clock.now())
        if row is None:
            return None
        if not People(state.config.settings.sales).known(session, row.email):
            # Taken off the sales side since signing in: the session ends now.
            row.ended_at = clock.now()
            session.add(row)
            return None
        return Viewer(row.email, row.csrf)


def set_session_cookie(state: WebState, response: Response, token: str) -> None:
    days = state.config.settings.app.session_days
    response.set_cookie(
        SESSION_COOKIE, token, max_age=days * 86400, path="/app", httponly=True,
        samesite="lax", secure=secure(state),
    )  # fmt: skip


#: A pre-session id as the cookie carries it (``secrets.token_urlsafe(24)``).
_FORM_ID = re.compile(r"[A-Za-z0-9_-]{32}")


def form_token(request: Request) -> str:
    """The pre-session id of a form shown before signing in: the browser's, or a new one
    (set it with :func:`set_form_cookie`; the form carries :func:`form_csrf` of it)."""
    given = request.cookies.get(FORM_COOKIE, "")
    return given if _FORM_ID.fullmatch(given) else secrets.token_urlsafe(24)


def form_csrf(secret: str, form_id: str) -> str:
    """The CSRF token of the forms of pre-session *form_id*: bound to it by an HMAC."""
    return sign(secret, "app:form-csrf", hashlib.sha256(form_id.encode()).hexdigest()[:32])


def set_form_cookie(state: WebState, response: Response, token: str) -> None:
    response.set_cookie(
        FORM_COOKIE, token, max_age=3600, path="/app", httponly=True, samesite="strict",
        secure=secure(state),
    )  # fmt: skip


def same(expected: str, given: str) -> bool:
    """Constant-time comparison of two tokens; an empty one never matches."""
    return bool(expected) and secrets.compare_digest(expected.encode(), (given or "").encode())


def form_csrf_ok(secret: str, request: Request, given: str) -> bool:
    """Whether a pre-sign-in form came back with the token of the browser's own
    pre-session (constant time)."""
    form_id = request.cookies.get(FORM_COOKIE, "")
    return bool(_FORM_ID.fullmatch(form_id)) and same(form_csrf(secret, form_id), given)


def cross_site(request: Request) -> bool:
    """A browser that says the request comes from another site (``Sec-Fetch-Site``)."""
    return request.headers.get("sec-fetch-site", "") == "cross-site"


class RateLimit:
    """At most *limit* hits per key in a sliding *window* of seconds (in this process)."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self._hits: defaultdict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        with self._lock:
            hits = self._hits[key]
            while hits and hits[0] <= now - self.window:
                hits.popleft()
            if len(hits) >= self.limit:
                return False
            hits.append(now)
            if len(self._hits) > 10000:  # forget idle keys
                for idle in [k for k, v in self._hits.items() if not v]:
                    del self._hits[idle]
            return True
