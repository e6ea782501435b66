"""Work that one worker at a time must do (reloading the sequences, scoring, the
audience scan, reminders): a PostgreSQL advisory lock held on its own connection.

The shared work (due enrollments, the outbox) is claimed row by row with ``FOR UPDATE
SKIP LOCKED`` instead, so every worker takes a share. A worker that dies loses the lock
with its connection. SQLite serves one worker, so there the lock is a no-op.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError


def lock_key(name: str) -> int:
    """The 64-bit advisory lock key for *name*."""
    digest = hashlib.blake2b(f"nurture:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@contextmanager
def exclusive(engine: Engine, name: str) -> Iterator[None]:
    """Hold the lock *name* (waiting for it) while the block runs."""
    if engine.dialect.name != "postgresql":
        yield
        return
    key = lock_key(name)
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
        connection.commit()
        try:
            yield
        finally:
            try:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                connection.commit()
            except DBAPIError:
                connection.invalidate()  # closing the connection releases the lock
