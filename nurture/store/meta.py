"""Small values the whole installation shares: the generated signing key, the marks
that say how far each incremental job of the pass has looked, and the single-use
tokens spent (:func:`use_once`)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, String, delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, col

from nurture import clock

#: The key of the generated signing secret.
SECRET_KEY = "signing_secret"
#: Since when every link names the person it was made for (migration 0011).
LINKS_BOUND_KEY = "links_bound_since"
#: How the keys of the audiences that failed for some leads begin (the value is JSON:
#: sequence, digest, leads, example, error).
AUDIENCE_FAILURE = "audience_failure:"


class Meta(SQLModel, table=True):
    """One named value."""

    __tablename__ = "meta"

    key: str = Field(primary_key=True, max_length=64)
    value: str = Field(sa_type=String(1024))


def since_mark(mark: datetime | None, now: datetime, overlap: timedelta) -> datetime | None:
    """Where a job that last looked at *mark* should look from at *now*: *mark* minus
    *overlap* (so a transaction that committed late is not missed), or ``None`` (look at
    everything) the first time, and when the mark is later than *now*: a rehearsal ran
    ahead (``tick --now`` in the future), and what changed since at the real time must
    not be skipped."""
    if mark is None or mark > now:
        return None
    return mark - overlap


def read_mark(session: Session, key: str, overlap: timedelta, now: datetime) -> datetime | None:
    """:func:`since_mark` for the mark stored under *key*."""
    stored = session.get(Meta, key)
    mark = datetime.fromisoformat(stored.value) if stored is not None else None
    return since_mark(mark, now, overlap)


def mark_for(now: datetime) -> datetime:
    """The mark a job that looked at everything up to *now* may set: never past the real
    time. A rehearsal pinned ahead (``tick --now`` next month) looks that far, but a lead
    written at the real time afterwards must still be after the mark."""
    return min(now, clock.wall())


def advance_mark(session: Session, key: str, now: datetime, overlap: timedelta) -> datetime | None:
    """Move the mark *key* to *now* (:func:`mark_for`); return :func:`read_mark` from
    before the move."""
    since = read_mark(session, key, overlap, now)
    session.merge(Meta(key=key, value=mark_for(now).isoformat()))  # updates in place
    return since


def project_secret(configured: str, engine: Engine) -> str:
    """The signing key: the configured one, else one generated once and kept in the
    database so that every worker on it signs alike."""
    if configured:
        return configured
    with Session(engine) as session:
        row = session.get(Meta, SECRET_KEY)
        if row is not None:
            return row.value
    try:
        with Session(engine) as session, session.begin():
            session.add(Meta(key=SECRET_KEY, value=secrets.token_urlsafe(32)))
    except IntegrityError:
        pass  # another worker made it first
    with Session(engine) as session:
        row = session.get(Meta, SECRET_KEY)
        assert row is not None
        return row.value


def links_bound_since(session: Session) -> datetime:
    """The moment links began to name their person: an older link (which names only an
    id) is honoured for leads that existed by then, never for a lead made later (which
    may have been given an erased person's id)."""
    row = session.get(Meta, LINKS_BOUND_KEY)
    if row is None:
        return datetime.max.replace(tzinfo=UTC)
    return datetime.fromisoformat(row.value)


def audience_failure_key(sequence: str) -> str:
    """The :class:`Meta` key of *sequence*'s audience failure (names may be long)."""
    import hashlib

    return AUDIENCE_FAILURE + hashlib.sha256(sequence.encode()).hexdigest()[:32]


def audience_failures(session: Session) -> list[dict[str, object]]:
    """The audiences that failed for some leads, as the enroll stage noted them."""
    import json

    from sqlmodel import col, select

    rows = session.exec(select(Meta).where(col(Meta.key).startswith(AUDIENCE_FAILURE)))
    found = []
    for row in rows:
        try:
            found.append(json.loads(row.value))
        except ValueError:
            continue
    return sorted(found, key=lambda item: str(item.get("sequence")))


#: The keys of spent single-use tokens start with this.
ONCE_PREFIX = "once:"


def use_once(session: Session, name: str, until: datetime, now: datetime) -> bool:
    """Spend the single-use token *name* (at most 59 characters) in the caller's
    transaction: ``True`` the first time, ``False`` ever after (until *until*, when it
    is forgotten; the token must not be accepted after it). Concurrent spenders on
    PostgreSQL wait for each other: one wins."""
    key = ONCE_PREFIX + name
    if len(key) > 64:
        raise ValueError("a single-use token name has at most 59 characters")
    session.execute(  # the forgotten ones (LIKE: ranges of text follow collations)
        delete(Meta)
        .where(col(Meta.key).startswith(ONCE_PREFIX, autoescape=True))
        .where(col(Meta.value) < _stamp(now))
    )
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(Meta).values(key=key, value=_stamp(until)).on_conflict_do_nothing()
    return session.execute(statement.returning(col(Meta.key))).first() is not None


def _stamp(moment: datetime) -> str:
    """A moment as text that sorts as moments do (UTC, whole seconds)."""
    return moment.astimezone(UTC).isoformat(timespec="seconds")
