"""Signed tokens for tracking and unsubscribe links: HMAC-SHA256, compared in constant
time. A token names what it is for, so an open-pixel token cannot unsubscribe anyone."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from nurture.meta import Meta
from nurture.store import session_scope

_SEPARATOR = "."
SECRET_KEY = "signing_secret"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, purpose: str, payload: bytes) -> bytes:
    message = purpose.encode() + b"\x00" + payload
    return hmac.new(secret.encode(), message, hashlib.sha256).digest()[:18]


def sign(secret: str, purpose: str, payload: str) -> str:
    """A URL-safe token carrying *payload*, valid only for *purpose*."""
    data = payload.encode()
    return _b64(data) + _SEPARATOR + _b64(_mac(secret, purpose, data))


def verify(secret: str, purpose: str, token: str) -> str | None:
    """The payload of a genuine *token* for *purpose*, else ``None``."""
    try:
        body, _, mac = token.partition(_SEPARATOR)
        data, given = _unb64(body), _unb64(mac)
    except (ValueError, UnicodeEncodeError):
        return None
    if not hmac.compare_digest(given, _mac(secret, purpose, data)):
        return None
    try:
        return data.decode()
    except UnicodeDecodeError:
        return None


def project_secret(configured: str, engine: Engine) -> str:
    """The signing key: the configured one, else one generated once and kept in the
    database so that every worker on it signs alike."""
    if configured:
        return configured
    with session_scope(engine) as session:
        row = session.get(Meta, SECRET_KEY)
        if row is not None:
            return row.value
    try:
        with session_scope(engine) as session:
            session.add(Meta(key=SECRET_KEY, value=secrets.token_urlsafe(32)))
    except IntegrityError:
        pass  # another worker made it first
    with session_scope(engine) as session:
        row = session.get(Meta, SECRET_KEY)
        assert row is not None
        return row.value
