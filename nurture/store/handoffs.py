"""The hand-off to sales: a lead that turns hot is handed to one salesperson with the
reasons, once per transition; sales accepts, rejects or recycles it.

A hand-off is ``pending`` until answered: ``accepted`` (stage ``accepted``),
``rejected`` (stage ``disqualified``, kept with the reason), or ``recycled`` (back to
nurture: stage ``cold``, engagement reset, enrolled again by the audiences that match).
Notices go out by email through the outbox and, with ``[sales] webhook_url``, as a
Slack-compatible webhook; one reminder follows if nobody answers in time.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Index, String, Text
from sqlmodel import Field, Session, SQLModel, col, select

from nurture import clock
from nurture.errors import InvalidValueError
from nurture.store.leads import Lead
from nurture.store.sqltypes import JSONType, UTCDateTime


class HandoffStatus(enum.StrEnum):
    pending = "pending"
    accepted = "accepted"
    rejected = "rejected"
    recycled = "recycled"
    #: Still unanswered when the lead turned hot again: the newer hand-off stands.
    superseded = "superseded"


ANSWERS = {"accept": "accepted", "reject": "rejected", "recycle": "recycled"}


class Handoff(SQLModel, table=True):
    """One hot lead handed to sales."""

    __tablename__ = "handoffs"
    __table_args__ = (
        Index("ix_handoffs_lead", "lead_id"),
        Index("ix_handoffs_status_remind", "status", "remind_at"),
        Index("ux_handoffs_stage_event", "stage_event_id", unique=True),
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, primary_key=True)
    lead_id: int = Field(foreign_key="leads.id", ondelete="CASCADE")
    became_hot_at: datetime = Field(default_factory=clock.now, sa_type=UTCDateTime)
    #: The salesperson it went to; ``None`` when it went to ``[sales] notify_email``.
    owner: str | None = Field(default=None, max_length=320)
    status: str = Field(default=HandoffStatus.pending.value, sa_type=String(16))
    #: Scores when it turned hot.
    engagement: float = 0.0
    fit: float = 0.0
    #: Why it is hot: top events and fit rules, thresholds, timeline, sequences.
    why: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONType, nullable=False))
    remind_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    reminded_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    answered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    #: How the answer came: ``cli``, ``api``, ``app`` (signed in) or ``link`` (a notice's).
    answered_via: str | None = Field(default=None, max_length=32)
    #: Who gave it: the salesperson's address (the app, a notice link), else the system
    #: user running the command, or ``api``.
    answered_by: str | None = Field(default=None, max_length=320)
    #: The ``stage_changed`` event it answers; ``None`` for a claim (a manual hand-off).
    stage_event_id: int | None = None


class WebhookStatus(enum.StrEnum):
    queued = "queued"
    sent = "sent"
    failed = "failed"


class Webhook(SQLModel, table=True):
    """One webhook call, stored before it is made; made until it succeeds, once."""

    __tablename__ = "webhooks"
    __table_args__ = (
        Index("ix_webhooks_due", "status", "next_attempt_at"),
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, primary_key=True)
    idempotency_key: str = Field(max_length=300, unique=True)
    url: str = Field(max_length=2000)
    body: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONType, nullable=False))
    status: str = Field(default=WebhookStatus.queued.value, sa_type=String(16))
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=clock.now, sa_type=UTCDateTime)
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(default_factory=clock.now, sa_type=UTCDateTime)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    #: The ``[[webhooks]]`` entry it goes to (signed); ``None``: the Slack-compatible
    #: hand-off notice of ``[sales] webhook_url``.
    endpoint: str | None = Field(default=None, max_length=64)
    #: The event it delivers (``lead.created``...), for ``[[webhooks]]`` deliveries.
    event_type: str | None = Field(default=None, max_length=40)
    #: The lead it is about: erasing the lead erases its deliveries.
    lead_id: int | None = Field(
        default=None, index=True, foreign_key="leads.id", ondelete="CASCADE"
    )


def pending_handoff(session: Session, lead_id: int) -> Handoff | None:
    query = (
        select(Handoff)
        .where(Handoff.lead_id == lead_id)
        .where(Handoff.status == HandoffStatus.pending.value)
        .order_by(col(Handoff.id).desc())
    )
    return session.exec(query).first()


def parse_answer(word: str) -> str:
    if word not in ANSWERS:
        raise InvalidValueError(f"answer {word!r}: use accept, reject or recycle")
    return word


def answer_handoff(
    session: Session,
    email: str,
    answer: str,
    reason: str | None,
    *,
    via: str,
    by: str | None = None,
    via_key: str | None = None,
    now: datetime | None = None,
) -> Handoff:
    """Record sales' answer for the lead with *email* (which must have been handed off),
    with who gave it (*by*), how (*via*) and, through the API, with which key."""
    from nurture.store.events import record_event
    from nurture.store.leads import get_lead

    parse_answer(answer)
    if answer in ("reject", "recycle") and not (reason or "").strip():
        raise InvalidValueError(f"{answer} needs a reason (--reason TEXT)")
    moment = now or clock.now()
    lead = get_lead(session, email)
    assert lead.id is not None
    handoff = pending_handoff(session, lead.id)
    if handoff is None:
        raise InvalidValueError(f"{lead.email} is not waiting for an answer (no pending hand-off)")
    handoff.status = ANSWERS[answer]
    handoff.answered_at = moment
    handoff.reason = (reason or "").strip() or None
    handoff.answered_via = via
    handoff.answered_by = by
    session.add(handoff)
    if answer == "accept":
        lead.stage = "accepted"
    elif answer == "reject":
        lead.stage = "disqualified"
    else:
        lead.stage = "cold"
        lead.score_stage = "cold"
        lead.engagement = 0.0
        lead.scored_at = moment
        lead.score_reset_at = moment
        lead.stage_review_at = None
        lead.attributes = {
            **(lead.attributes or {}),
            "recycled_at": moment.isoformat(),
            "recycle_reason": handoff.reason,
        }
    lead.updated_at = moment
    session.add(lead)
    record_event(
        session,
        lead.id,
        f"handoff_{ANSWERS[answer]}",
        data={"reason": handoff.reason or "", "via": via, "by": by or "", "handoff": handoff.id},
        at=moment,
        source=via,
        via_key=via_key,
    )
    return handoff


def claim_lead(
    session: Session, lead: Lead, email: str, *, via: str, now: datetime | None = None
) -> Handoff:
    """A manual hand-off of a lead nobody handed off, to *email*, accepted at once: the
    lead becomes theirs and its stage ``accepted`` (sequences that exit on it stop)."""
    from nurture.store.events import record_event

    moment = now or clock.now()
    assert lead.id is not None
    if pending_handoff(session, lead.id) is not None:
        raise InvalidValueError(f"{lead.email} is already handed off: answer it instead")
    if lead.stage in ("accepted", "customer"):
        raise InvalidValueError(f"{lead.email} is already {lead.stage}")
    if lead.owner and lead.owner != email:
        raise InvalidValueError(f"{lead.email} belongs to {lead.owner}")
    handoff = Handoff(
        lead_id=lead.id,
        became_hot_at=moment,
        owner=email,
        status=HandoffStatus.accepted.value,
        engagement=lead.engagement,
        fit=lead.fit,
        why={"claimed": True, "stage": lead.stage},
        answered_at=moment,
        answered_via=via,
        answered_by=email,
    )
    session.add(handoff)
    session.flush()
    lead.owner = email
    lead.stage = "accepted"
    lead.updated_at = moment
    session.add(lead)
    record_event(
        session, lead.id, "handoff_claimed",
        data={"via": via, "by": email, "handoff": handoff.id}, at=moment, source=via,
    )  # fmt: skip
    return handoff


def remind_due(session: Session, now: datetime) -> list[Handoff]:
    """Pending hand-offs whose answer is overdue and not reminded yet."""
    query = (
        select(Handoff)
        .where(Handoff.status == HandoffStatus.pending.value)
        .where(col(Handoff.remind_at) <= now)
        .where(col(Handoff.reminded_at).is_(None))
    )
    return list(session.exec(query))


def business_days_after(moment: datetime, days: int, tz_name: str) -> datetime:
    """*days* working days (Monday to Friday) after *moment*, at the same local time."""
    from nurture.language.timing import Duration, Window, add_wait, zone

    return add_wait(moment, Duration(days, "business_days"), zone(tz_name), Window())
