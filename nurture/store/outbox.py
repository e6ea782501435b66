"""The outbox: every email is stored here, in the transaction that advances its
enrollment, before anything tries to send it.

A message is ``queued`` → ``leased`` (claimed by one delivery loop) → ``sending`` (its
transmission began; at most one per connection) → ``sent``; or
``bounced`` (5xx to RCPT), ``failed`` (permanently refused, or retried too long), or
``cancelled`` (the lead opted out or exited before it went), or ``uncertain`` (the
process sending it died mid-send: held for review rather than risk a second copy). A
queued email whose enrollment is paused is ``held`` until it resumes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from email.message import Message
from typing import Any

from sqlalchemy import Column, Connection, Index, String, Text, and_, func, or_, update
from sqlalchemy import select as sa_select
from sqlmodel import Field, Session, SQLModel, col, select

from nurture import clock
from nurture.store.enrollments import Enrollment, EnrollmentStatus, email_left
from nurture.store.sqltypes import JSONType, UTCDateTime


class OutboxStatus(enum.StrEnum):
    queued = "queued"
    #: Claimed by a delivery loop, not started yet: safe to give back.
    leased = "leased"
    #: Being handed to the server right now.
    sending = "sending"
    sent = "sent"
    bounced = "bounced"
    failed = "failed"
    cancelled = "cancelled"
    #: Its sender died mid-send: it may have gone. Held for review (``[delivery]
    #: on_uncertain = "hold"``).
    uncertain = "uncertain"
    #: Its enrollment is paused: it waits, and goes back to ``queued`` on resume.
    held = "held"


class MessageKind(enum.StrEnum):
    #: A sequence email to a lead: unsubscribe headers, caps, the sending window.
    email = "email"
    #: A ``notify`` step's message to a salesperson.
    notify = "notify"
    #: A hot lead handed to sales, or a reminder about one.
    handoff = "handoff"
    #: A double opt-in form's confirmation link, to a ``pending`` lead.
    confirm = "confirm"
    #: A sign-in link to the sales app.
    signin = "signin"
    #: A marketer's test send (``nurture preview --send-to``): about no lead, never
    #: counted in reports; its links redirect and record nothing.
    test = "test"
    #: A salesperson's daily digest.
    digest = "digest"


#: Why a ``held`` message waits.
HELD_PAUSED = "held: its enrollment is paused"
#: How the reason of a message held for a paused sender begins (then its name): it
#: waits for that sender's resume (:mod:`nurture.store.senders`), not its enrollment's.
HELD_SENDER = "held: sender "
#: How the ``last_error`` of a message failed by a sending problem (the server refused
#: to send for us) begins.
SENDING_PROBLEM = "sending problem: "


class OutboxMessage(SQLModel, table=True):
    """One email waiting to go, or gone."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_due", "status", "next_attempt_at"),
        Index("ix_outbox_sender_sent", "sender", "sent_at"),
        Index("ix_outbox_lead_sent", "lead_id", "sent_at"),
        # Replies and reports name the Message-ID they answer.
        Index("ix_outbox_message_id", "message_id"),
        Index("ix_outbox_sequence_step", "sequence", "step"),
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(default=MessageKind.email.value, sa_type=String(16))
    #: ``enrollment id:step id``: one message per step of an enrollment, ever.
    idempotency_key: str = Field(max_length=300, unique=True)
    message_id: str = Field(max_length=300)
    #: The lead it is about; ``None`` for mail to sales that names no lead (a sign-in
    #: link, a digest).
    lead_id: int | None = Field(default=None, foreign_key="leads.id", ondelete="CASCADE")
    enrollment_id: int | None = Field(
        default=None, foreign_key="enrollments.id", ondelete="CASCADE"
    )
    sequence: str = Field(max_length=200)
    step: str = Field(max_length=200)
    template: str | None = Field(default=None, max_length=200)
    #: The sending mailbox (for its daily cap) and the recipient.
    sender: str = Field(max_length=320)
    recipient: str = Field(max_length=320)
    #: The IANA timezone the sending window and the lead's daily cap are counted in.
    timezone: str = Field(max_length=64)
    #: The random id its tracking links and open pixel name (``None``: not tracked).
    tracking_id: str | None = Field(default=None, max_length=32, unique=True)
    #: The original URLs of its tracked links, in order: all a click may redirect to.
    links: list[str] = Field(default_factory=list, sa_column=Column(JSONType, nullable=False))
    #: The whole RFC 5322 message.
    raw: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(default=OutboxStatus.queued.value, sa_type=String(16))
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=clock.now, sa_type=UTCDateTime)
    #: While ``leased`` or ``sending``: the moment after which its worker is taken to
    #: have died (the worker's heartbeat keeps pushing it back).
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    #: The worker that claimed it last (and so sent it, once ``sent``).
    worker: str | None = Field(default=None, max_length=64)
    #: The token of the claim that holds it (``leased`` or ``sending``): only its holder
    #: may start it or record how it went, whatever else runs in the same process.
    claim_token: str | None = Field(default=None, max_length=32)
    #: The daily cap counters its start took (space-separated keys of ``send_counts``),
    #: given back if it turns out not to have gone.
    counted: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    #: Why the last attempt did not send it, or why it waits (cap, window).
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(default_factory=clock.now, sa_type=UTCDateTime)
    #: The first attempt that failed for a temporary reason; retries stop after a while.
    first_failure_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "message_id": self.message_id,
            "sequence": self.sequence,
            "step": self.step,
            "recipient": self.recipient,
            "status": self.status,
            "attempts": self.attempts,
            "next_attempt_at": self.next_attempt_at.isoformat(),
            "last_error": self.last_error,
            "sent_at": self.sent_at.isoformat() if self.sent_at else None,
        }


@dataclass(frozen=True, slots=True)
class Queued:
    """A message due to go, as a claim reads it (:func:`read_due`): what its checks
    and its send need, as a plain row (no ORM object)."""

    id: int
    idempotency_key: str
    kind: str
    raw: str
    sender: str
    recipient: str
    lead_id: int | None
    enrollment_id: int | None
    sequence: str
    step: str
    message_id: str
    timezone: str


_OUTBOX = OutboxMessage.__table__  # type: ignore[attr-defined]
_QUEUED_COLUMNS = tuple(Queued.__dataclass_fields__)


def _due(now: datetime) -> Any:
    """Queued and due by *now*: the start of ``ix_outbox_due``."""
    o = _OUTBOX.c
    return and_(o.status == OutboxStatus.queued.value, o.next_attempt_at <= now)


def read_due(
    session: Session,
    now: datetime,
    limit: int,
    only_leads: list[int] | None = None,
    only_messages: list[int] | None = None,
) -> list[Queued]:
    """The next *limit* queued messages due by *now* (to *only_leads*, or of
    *only_messages*, if given), oldest due first, as :class:`Queued`; rows other workers
    hold locked are skipped (PostgreSQL)."""
    o = _OUTBOX.c
    query = (
        sa_select(*(o[name] for name in _QUEUED_COLUMNS))
        .where(_due(now))
        .order_by(o.next_attempt_at, o.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    if only_leads is not None:
        query = query.where(o.lead_id.in_(only_leads))
    if only_messages is not None:
        query = query.where(o.id.in_(only_messages))
    return [Queued(*row) for row in session.connection().execute(query)]


def due_waiting(connection: Connection, now: datetime, enough: int) -> int:
    """How many queued messages are due by *now*, counted up to *enough* (a look at
    the start of ``ix_outbox_due``, however long the queue)."""
    due = sa_select(_OUTBOX.c.id).where(_due(now)).limit(enough).subquery()
    return int(connection.execute(sa_select(func.count()).select_from(due)).scalar_one())


class OutboxMention(SQLModel, table=True):
    """A lead that a message to someone else names (a digest lists the leads a
    salesperson should call): when the lead is erased, the message goes too."""

    __tablename__ = "outbox_mentions"
    __table_args__ = (Index("ix_outbox_mentions_lead", "lead_id"),)

    outbox_id: int = Field(foreign_key="outbox.id", ondelete="CASCADE", primary_key=True)
    lead_id: int = Field(foreign_key="leads.id", ondelete="CASCADE", primary_key=True)


def mention(session: Session, row: OutboxMessage, lead_ids: Any) -> None:
    """Record that *row* names the leads *lead_ids* (it is erased with any of them)."""
    session.flush()
    assert row.id is not None
    for lead_id in sorted(set(lead_ids)):
        session.add(OutboxMention(outbox_id=row.id, lead_id=lead_id))


def message_row(
    message: Message,
    *,
    kind: MessageKind,
    key: str,
    lead_id: int | None,
    sequence: str,
    step: str,
    sender: str,
    recipient: str,
    timezone: str,
    now: datetime,
    raw: str | None = None,
    enrollment_id: int | None = None,
    template: str | None = None,
    tracking_id: str | None = None,
    links: list[str] | None = None,
) -> dict[str, Any]:
    """The outbox row of *message*, due now: every column but the id and those a
    delivery fills (a batch of them is stored by one ``executemany``). *raw*: the
    message already serialised (done before the transaction, it keeps it short)."""
    return {
        "kind": kind.value,
        "idempotency_key": key,
        "message_id": str(message["Message-ID"]),
        "lead_id": lead_id,
        "enrollment_id": enrollment_id,
        "sequence": sequence,
        "step": step,
        "template": template,
        "sender": sender,
        "recipient": recipient,
        "timezone": timezone,
        "tracking_id": tracking_id,
        "links": list(links or []),
        "raw": raw if raw is not None else message.as_string(),
        "status": OutboxStatus.queued.value,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }


def queue_message(
    session: Session,
    message: Message,
    *,
    kind: MessageKind,
    key: str,
    lead_id: int | None,
    sequence: str,
    step: str,
    sender: str,
    recipient: str,
    timezone: str,
    now: datetime,
    raw: str | None = None,
    **extra: Any,
) -> OutboxMessage:
    """Store *message* in the outbox, due now, in the caller's transaction (see
    :func:`message_row` for the arguments)."""
    values = message_row(message, kind=kind, key=key, lead_id=lead_id, sequence=sequence,
                         step=step, sender=sender, recipient=recipient, timezone=timezone,
                         now=now, raw=raw, **extra)  # fmt: skip
    row = OutboxMessage(**values)
    session.add(row)
    return row


def list_messages(session: Session, status: str | None, limit: int = 200) -> list[OutboxMessage]:
    """Messages (in *status*, or all), newest first."""
    query = select(OutboxMessage)
    if status is not None:
        query = query.where(col(OutboxMessage.status) == status)
    return list(session.exec(query.order_by(col(OutboxMessage.id).desc()).limit(limit)))


def set_status(
    session: Session, ids: list[int], *, resend: bool, now: datetime
) -> list[tuple[int, str]]:
    """Queue again (*resend*) or cancel held and failed messages; return what became of
    each id (an id in another state is left alone and says why)."""
    results: list[tuple[int, str]] = []
    allowed = (OutboxStatus.uncertain, OutboxStatus.failed, OutboxStatus.queued, OutboxStatus.held)
    for message_id in ids:
        row = session.get(OutboxMessage, message_id, with_for_update=True)
        if row is None:
            results.append((message_id, "no such message"))
            continue
        if row.status not in allowed or (
            resend and row.status in (OutboxStatus.queued, OutboxStatus.held)
        ):
            results.append((message_id, f"left as it is: it is {row.status}"))
            continue
        if resend:
            row.status, row.next_attempt_at, row.first_failure_at = (
                OutboxStatus.queued.value,
                now,
                None,
            )
        else:
            waited_for = row.status in (OutboxStatus.queued, OutboxStatus.held)
            row.status = OutboxStatus.cancelled.value
            row.last_error = "cancelled by hand"
            if waited_for and row.kind == MessageKind.email:  # its enrollment goes on now
                email_left(session, row.enrollment_id, now)
        session.add(row)
        results.append((message_id, "queued again" if resend else "cancelled"))
    return results


def hold_for_pause(session: Session, enrollment_ids: Any, *, pause: bool, now: datetime) -> int:
    """Hold the queued emails of the enrollments *enrollment_ids* (a list or a subquery)
    while they are paused, or release them on resume (due at once: the sending window and
    the caps are checked again when they go). Return how many changed."""
    query = update(OutboxMessage).where(col(OutboxMessage.enrollment_id).in_(enrollment_ids))
    if pause:
        query = query.where(col(OutboxMessage.status) == OutboxStatus.queued.value).values(
            status=OutboxStatus.held.value, last_error=HELD_PAUSED
        )
    else:
        # Only what the pause held: a paused sender's emails wait for its own resume.
        query = (
            query.where(col(OutboxMessage.status) == OutboxStatus.held.value)
            .where(or_(col(OutboxMessage.last_error).is_(None),
                       ~col(OutboxMessage.last_error).startswith(HELD_SENDER)))
            .values(status=OutboxStatus.queued.value, next_attempt_at=now, last_error=None)
        )  # fmt: skip
    result = session.execute(query)
    return int(getattr(result, "rowcount", 0) or 0)


#: States of an email that has not left yet, nor been given up.
NOT_LEFT = (
    OutboxStatus.queued.value,
    OutboxStatus.leased.value,
    OutboxStatus.sending.value,
    OutboxStatus.held.value,
)


def sweep_held(session: Session, now: datetime) -> None:
    """Held emails whose enrollment is no longer paused: released if it is active again
    (a resume that crossed a delivery run), cancelled if it ended."""

    def of(*statuses: str) -> Any:
        return select(Enrollment.id).where(col(Enrollment.status).in_(statuses))

    is_held = col(OutboxMessage.status) == OutboxStatus.held.value
    if session.exec(select(OutboxMessage.id).where(is_held).limit(1)).first() is None:
        return  # the usual case: a read, no write lock taken
    hold_for_pause(session, of(EnrollmentStatus.active.value), pause=False, now=now)
    ended = of(EnrollmentStatus.exited.value, EnrollmentStatus.completed.value)
    session.execute(
        update(OutboxMessage)
        .where(is_held)
        .where(col(OutboxMessage.enrollment_id).in_(ended))
        .values(status=OutboxStatus.cancelled.value, last_error="its enrollment ended while held")
    )
