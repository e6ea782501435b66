"""Who may use the sales app, and the proofs they carry: one-time sign-in links, notice
links bound to one lead and one salesperson, and signed-in sessions.

Every token is opaque (random, HMAC-signed, its purpose in the signature) and only its
SHA-256 digest is stored, so a copy of the database opens nothing. A link's GET only
shows a page; what it grants happens on the POST that follows.
"""

from __future__ import annotations

import enum
import hashlib
import re
import secrets
from datetime import datetime, timedelta

from sqlalchemy import Index, String, func
from sqlmodel import Field, Session, SQLModel, col, select

from nurture import clock
from nurture.config import SalesSection
from nurture.store.leads import Lead
from nurture.store.sqltypes import UTCDateTime
from nurture.tokens import sign, verify

#: A token as links and cookies carry it: two URL-safe base64 parts.
TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{20,64}\.[A-Za-z0-9_-]{20,40}")


class LinkPurpose(enum.StrEnum):
    #: Emailed on request from ``/app/login``; signs in once.
    signin = "signin"
    #: In a hand-off notice, a reminder or a digest: opens one lead's page for one
    #: salesperson.
    lead = "lead"


class AccessLink(SQLModel, table=True):
    """A link we emailed to a salesperson."""

    __tablename__ = "access_links"
    __table_args__ = (
        Index("ix_access_links_email", "email", "created_at"),
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, primary_key=True)
    #: SHA-256 of the token's random part.
    digest: str = Field(max_length=64, unique=True)
    purpose: str = Field(sa_type=String(16))
    email: str = Field(max_length=320)
    lead_id: int | None = Field(default=None, foreign_key="leads.id", ondelete="CASCADE")
    created_at: datetime = Field(default_factory=clock.now, sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    #: When a sign-in link was used (it works once).
    used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class AppSession(SQLModel, table=True):
    """One signed-in browser."""

    __tablename__ = "app_sessions"

    id: int | None = Field(default=None, primary_key=True)
    digest: str = Field(max_length=64, unique=True)
    email: str = Field(max_length=320)
    #: The token every form of this session carries.
    csrf: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=clock.now, sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


def _digest(random_part: str) -> str:
    return hashlib.sha256(random_part.encode()).hexdigest()


def _new_token(secret: str, purpose: str) -> tuple[str, str]:
    """A fresh token for *purpose* and the digest to store."""
    random_part = secrets.token_urlsafe(24)
    return sign(secret, f"app:{purpose}", random_part), _digest(random_part)


def _read_token(secret: str, purpose: str, token: str) -> str | None:
    """The digest a genuine *token* for *purpose* stands for; ``None`` for anything else
    (strictly: the exact shape, then the signature in constant time)."""
    if not TOKEN_SHAPE.fullmatch(token or ""):
        return None
    random_part = verify(secret, f"app:{purpose}", token)
    return _digest(random_part) if random_part else None


def issue_link(
    session: Session,
    secret: str,
    purpose: LinkPurpose,
    email: str,
    *,
    lifetime: timedelta,
    lead_id: int | None = None,
    now: datetime | None = None,
) -> str:
    """Store a new link for *email* and return its token."""
    moment = now or clock.now()
    token, digest = _new_token(secret, purpose.value)
    session.add(
        AccessLink(
            digest=digest,
            purpose=purpose.value,
            email=email,
            lead_id=lead_id,
            created_at=moment,
            expires_at=moment + lifetime,
        )
    )
    return token


def find_link(
    session: Session, secret: str, purpose: LinkPurpose, token: str, now: datetime | None = None
) -> AccessLink | None:
    """The live link behind *token*: genuine, not expired, and (a sign-in link) unused."""
    digest = _read_token(secret, purpose.value, token)
    if digest is None:
        return None
    link = session.exec(select(AccessLink).where(AccessLink.digest == digest)).first()
    moment = now or clock.now()
    if link is None or link.purpose != purpose.value or link.expires_at <= moment:
        return None
    if purpose == LinkPurpose.signin and link.used_at is not None:
        return None
    return link


def use_signin(session: Session, secret: str, token: str, now: datetime) -> AccessLink | None:
    """Spend a sign-in link: the first POST wins, any later one finds nothing."""
    link = find_link(session, secret, LinkPurpose.signin, token, now)
    if link is None:
        return None
    locked = session.get(AccessLink, link.id, with_for_update=True, populate_existing=True)
    if locked is None or locked.used_at is not None:
        return None
    locked.used_at = now
    session.add(locked)
    session.flush()
    return locked


def recent_signin_links(session: Session, email: str, since: datetime) -> int:
    """How many sign-in links *email* was sent since *since* (for the rate limit)."""
    return session.exec(
        select(func.count())
        .select_from(AccessLink)
        .where(AccessLink.email == email)
        .where(AccessLink.purpose == LinkPurpose.signin.value)
        .where(col(AccessLink.created_at) >= since)
    ).one()


def open_session(
    session: Session, secret: str, email: str, *, days: int, now: datetime
) -> tuple[str, AppSession]:
    """Sign *email* in: the cookie's token and the stored session."""
    token, digest = _new_token(secret, "session")
    row = AppSession(
        digest=digest,
        email=email,
        csrf=secrets.token_urlsafe(24),
        created_at=now,
        expires_at=now + timedelta(days=days),
    )
    session.add(row)
    session.flush()
    return token, row


def find_session(
    session: Session, secret: str, token: str, now: datetime | None = None
) -> AppSession | None:
    """The live session behind a cookie's *token*."""
    digest = _read_token(secret, "session", token)
    if digest is None:
        return None
    row = session.exec(select(AppSession).where(AppSession.digest == digest)).first()
    moment = now or clock.now()
    if row is None or row.ended_at is not None or row.expires_at <= moment:
        return None
    return row


def link_csrf(secret: str, token: str) -> str:
    """The CSRF token of the forms on a notice link's page (no session there)."""
    return sign(secret, "app:link-csrf", hashlib.sha256(token.encode()).hexdigest()[:32])


def check_link_csrf(secret: str, token: str, given: str) -> bool:
    """Whether *given* is the CSRF token of the page of link *token* (constant time)."""
    expected = link_csrf(secret, token)
    return secrets.compare_digest(expected.encode(), (given or "").encode())


class People:
    """Who the sales side is: the team, the managers, the sales inbox, and lead owners."""

    def __init__(self, sales: SalesSection) -> None:
        self.sales = sales
        self.managers = frozenset(sales.managers)
        self.desk = frozenset(a for a in (sales.notify_email.lower(),) if a)

    def is_manager(self, email: str) -> bool:
        return email in self.managers

    def sees_desk(self, email: str) -> bool:
        """The sales inbox and managers see the hot leads nobody owns."""
        return email in self.managers or email in self.desk

    def known(self, session: Session, email: str) -> bool:
        """Whether *email* may sign in."""
        if email in self.managers or email in self.desk or email in self.sales.team:
            return True
        return session.exec(select(Lead.id).where(Lead.owner == email).limit(1)).first() is not None

    def everyone(self, session: Session) -> list[str]:
        """Every address of the sales side (lead owners included), sorted."""
        owners = session.exec(select(col(Lead.owner)).where(col(Lead.owner).is_not(None)))
        found = {*self.managers, *self.desk, *self.sales.team, *(o for o in set(owners) if o)}
        return sorted(found)
