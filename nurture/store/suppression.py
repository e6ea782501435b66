"""The suppression list: people who asked to be forgotten.

Erasing a person deletes everything nurture held about them, except a keyed hash of
their address (HMAC-SHA256 under a key made once and kept in the database), so that no
later import, form or API call brings them back and emails them. Only a fresh opt-in of
their own (a form's consent, an API item carrying a consent) lifts the entry.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import String, delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, col, select

from nurture import clock
from nurture.store.meta import Meta
from nurture.store.sqltypes import UTCDateTime

KEY_NAME = "suppression_key"


class Suppression(SQLModel, table=True):
    """One erased address, as a keyed hash."""

    __tablename__ = "suppressions"

    #: HMAC-SHA256 of the normalised address, hex.
    hash: str = Field(primary_key=True, sa_type=String(64))
    created_at: datetime = Field(default_factory=clock.now, sa_type=UTCDateTime)


def _key(session: Session) -> bytes:
    """The hashing key, made the first time it is needed."""
    row = session.get(Meta, KEY_NAME)
    if row is None:
        try:
            with session.begin_nested():
                session.add(Meta(key=KEY_NAME, value=secrets.token_hex(32)))
        except IntegrityError:
            pass  # another process made it first
        row = session.get(Meta, KEY_NAME)
        assert row is not None
    return row.value.encode()


def address_hash(key: bytes, email: str) -> str:
    """The keyed hash of a normalised address."""
    return hmac.new(key, email.encode(), hashlib.sha256).hexdigest()


def suppressed(session: Session, emails: Iterable[str]) -> set[str]:
    """Which of *emails* (normalised) are on the suppression list."""
    wanted = list(dict.fromkeys(emails))
    if not wanted or session.exec(select(Suppression.hash).limit(1)).first() is None:
        return set()  # the usual case: nobody was ever erased
    key = _key(session)
    by_hash = {address_hash(key, email): email for email in wanted}
    found: set[str] = set()
    hashes = list(by_hash)
    for start in range(0, len(hashes), 500):
        rows = session.exec(
            select(Suppression.hash).where(col(Suppression.hash).in_(hashes[start : start + 500]))
        )
        found.update(by_hash[row] for row in rows)
    return found


def suppress(session: Session, email: str) -> None:
    """Put a normalised address on the list (once)."""
    digest = address_hash(_key(session), email)
    if session.get(Suppression, digest) is None:
        session.add(Suppression(hash=digest, created_at=clock.now()))


def lift(session: Session, emails: Iterable[str]) -> None:
    """Take addresses off the list: they opted in anew."""
    wanted = list(emails)
    if not wanted:
        return
    key = _key(session)
    hashes = [address_hash(key, email) for email in wanted]
    session.execute(delete(Suppression).where(col(Suppression.hash).in_(hashes)))
