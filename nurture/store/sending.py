"""A message's life: one state machine, every transition one conditional statement.

::

    queued ──lease──▶ leased ──start──▶ sending ──record──▶ sent | bounced | failed
      ▲ │               │ │                │                 uncertain | queued (retry)
      │ ├─defer─▶ queued │ └─release─▶ queued └─settle (holder died)─▶ uncertain | queued
      │ ├─cancel─▶ cancelled  (start refused: cancelled | held | queued again)
      │ └─hold──▶ held ──release on resume──┘

A claim leases messages under a **claim token** of its own (not the worker's id: two
loops of one process never share one). Only the holder of the token may start a
message or record how it went; a transition that finds the row in another state, or
under another token, changes nothing, and the caller learns it from the row count.

**Start** is the last check, in the send's own transaction: a message becomes
``sending`` only if, at that moment, its lead exists and may be contacted, its
enrollment is active, nothing happened to the lead since the claim looked (a reply, a
click, an opt-out: the message is then looked at again), and the daily caps have room
(:mod:`nurture.store.counters`). An erasure deletes the lead and, by the schema's
cascades, every message about them: a start after it finds nothing to start.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import (
    Connection,
    Dialect,
    Engine,
    and_,
    bindparam,
    case,
    exists,
    false,
    func,
    literal,
    or_,
    update,
)
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from nurture import clock, hooks, logs
from nurture.store.bulk import unindexed
from nurture.store.counters import (
    Cap,
    counting,
    give_back,
    is_plain,
    take,
    take_together,
)
from nurture.store.database import can_pipeline, pipelined
from nurture.store.enrollments import (
    Enrollment,
    EnrollmentStatus,
    email_left,
    emails_left,
    telling_email_left,
)
from nurture.store.events import Event, record_event
from nurture.store.leads import Lead
from nurture.store.outbox import (
    HELD_PAUSED,
    SENDING_PROBLEM,
    MessageKind,
    OutboxMessage,
    OutboxStatus,
)
from nurture.store.sender_health import check_health
from nurture.store.senders import Refusal, SenderPace, reservation_key, take_pace
from nurture.store.sqltypes import UTCDateTime

_OUTBOX = OutboxMessage.__table__  # type: ignore[attr-defined]
_LEADS = Lead.__table__  # type: ignore[attr-defined]
_ENROLLMENTS = Enrollment.__table__  # type: ignore[attr-defined]
_EVENTS = Event.__table__  # type: ignore[attr-defined]
HELD_BY_CLAIM = (OutboxStatus.leased.value, OutboxStatus.sending.value)


def _changed(result: Any) -> int:
    """How many rows an UPDATE changed: what tells a transition that it happened."""
    return int(getattr(result, "rowcount", 0) or 0)


@dataclass(frozen=True)
class Claimed:
    """A leased message, with everything its send needs."""

    id: int
    key: str
    kind: str
    raw: str
    sender: str
    recipient: str
    #: ``None`` for mail to sales that names no lead.
    lead_id: int | None
    sequence: str
    step: str
    message_id: str
    #: The enrollment whose next step waits for this email to leave.
    enrollment_id: int | None
    #: The claim's token: only its holder starts the message and records its outcome.
    token: str
    #: The lead's own timezone (its day is the one the per-lead cap counts in).
    lead_timezone: str | None = None
    #: The newest event the claim's checks saw: a newer one of the lead's makes the
    #: start look at the message again.
    seen_event: int = 0
    #: Its ``[[senders]]`` entry's pacing (``None``: the sender has no entry): the start
    #: checks it last, and how the send went tells the sender's health.
    pace: SenderPace | None = None


# --- claiming ----------------------------------------------------------------------------


def lease(
    session: Session, message_ids: Sequence[int], *, token: str, worker: str, until: datetime
) -> set[int]:
    """``queued`` → ``leased`` under *token*, in one statement; return the ids it leased
    (the others were taken by another claim first)."""
    if not message_ids:
        return set()
    result = session.connection().execute(
        update(_OUTBOX)
        .where(_OUTBOX.c.id.in_(list(message_ids)))
        .where(unindexed(_OUTBOX.c.status) == OutboxStatus.queued.value)
        .values(
            status=OutboxStatus.leased.value, claim_token=token, worker=worker, lease_until=until
        )
        .returning(_OUTBOX.c.id)
    )
    return {row[0] for row in result}


def defer(session: Session, message_id: int, until: datetime, reason: str) -> bool:
    """A ``queued`` message waits until *until* (a window, a cap), saying why."""
    result = session.execute(
        update(OutboxMessage)
        .where(col(OutboxMessage.id) == message_id)
        .where(col(OutboxMessage.status) == OutboxStatus.queued.value)
        .values(next_attempt_at=until, last_error=reason)
    )
    return bool(_changed(result))


def _settle_unsent(session: Session, message_id: int, token: str | None, **values: Any) -> bool:
    """Move a message that has not gone (``queued``, or held by the claim *token*) to
    *values*, giving up its claim; ``False`` if it is in another state."""
    query = update(OutboxMessage).where(col(OutboxMessage.id) == message_id)
    if token is None:
        query = query.where(col(OutboxMessage.status) == OutboxStatus.queued.value)
    else:
        query = query.where(col(OutboxMessage.status).in_(HELD_BY_CLAIM)).where(
            col(OutboxMessage.claim_token) == token
        )
    return bool(_changed(session.execute(query.values(claim_token=None, lease_until=None,
                                                      **values))))  # fmt: skip


def cancel(
    session: Session, message_id: int, reason: str, now: datetime, token: str | None = None
) -> bool:
    """A message that must not go (``queued``, or held by the claim *token*) is
    ``cancelled``; its enrollment goes on."""
    if not _settle_unsent(session, message_id, token, status=OutboxStatus.cancelled.value,
                          last_error=reason):  # fmt: skip
        return False
    row = session.exec(select(OutboxMessage.enrollment_id, OutboxMessage.kind)
                       .where(col(OutboxMessage.id) == message_id)).first()  # fmt: skip
    if row is not None and row[1] == MessageKind.email:
        email_left(session, row[0], now)
    return True


def hold(session: Session, message_id: int, token: str | None = None) -> bool:
    """A message whose enrollment is paused waits, ``held``, until it resumes."""
    return _settle_unsent(session, message_id, token, status=OutboxStatus.held.value,
                          last_error=HELD_PAUSED)  # fmt: skip


def release(session: Session, ids: Sequence[int], token: str, now: datetime | None = None) -> int:
    """Give back what the claim *token* leased and did not start (``leased`` →
    ``queued``); with *now*, also a message it held that must be looked at again."""
    if not ids:
        return 0
    statuses = [OutboxStatus.leased.value] if now is None else list(HELD_BY_CLAIM)
    values: dict[str, Any] = {"status": OutboxStatus.queued.value, "lease_until": None,
                              "claim_token": None}  # fmt: skip
    if now is not None:
        values["next_attempt_at"] = now
    result = session.execute(
        update(OutboxMessage)
        .where(col(OutboxMessage.id).in_(list(ids)))
        .where(unindexed(col(OutboxMessage.status)).in_(statuses))
        .where(col(OutboxMessage.claim_token) == token)
        .values(**values)
        .execution_options(synchronize_session=False)  # no objects of these rows are held
    )
    return _changed(result)


# --- starting ----------------------------------------------------------------------------

def _contactable(seen_event: Any) -> Any:
    """May the message go to its lead now? Nothing happened to the lead since the event
    *seen_event* (the claim's last look). Mail to sales only needs its row: an erasure
    deletes what is about the person."""
    return or_(
        _OUTBOX.c.kind != MessageKind.email.value,
        and_(
            exists().where(_LEADS.c.id == _OUTBOX.c.lead_id)
            .where(_LEADS.c.status == "subscribed"),
            or_(
                _OUTBOX.c.enrollment_id.is_(None),
                exists().where(_ENROLLMENTS.c.id == _OUTBOX.c.enrollment_id)
                .where(_ENROLLMENTS.c.status == EnrollmentStatus.active.value),
            ),
            ~exists().where(_EVENTS.c.lead_id == _OUTBOX.c.lead_id)
            .where(_EVENTS.c.id > seen_event)
            .where(_EVENTS.c.type != "email_sent")
            .where(_EVENTS.c.machine.is_(False)),
        ),
    )  # fmt: skip


_CONTACTABLE = _contactable(bindparam("seen_event"))
_START = (
    update(_OUTBOX)
    .where(_OUTBOX.c.id == bindparam("message"))
    .where(_OUTBOX.c.claim_token == bindparam("token"))
    .where(_OUTBOX.c.status == OutboxStatus.leased.value)
    .where(_CONTACTABLE)
    .values(status=OutboxStatus.sending.value, counted=bindparam("counted"))
)


@dataclass(frozen=True)
class PaceCheck:
    """A sender's pacing, checked in the start like a cap (:func:`take_pace`): paused,
    ``min_gap``, ``hourly``, the warm-up, ``daily``."""

    pace: SenderPace
    outbox_id: int

    @property
    def key(self) -> str:
        """What the message's ``counted`` names, to give the send back if it did not go."""
        return reservation_key(self.outbox_id)


def _take(connection: Any, cap: Cap | PaceCheck, now: datetime) -> Refusal | None:
    """Count one send against *cap*; why not, if it may not."""
    if isinstance(cap, PaceCheck):
        return take_pace(connection, cap.pace, cap.outbox_id, now)
    return None if take(connection, cap) else Refusal(cap.reason, cap.resets_at)


class Started(enum.StrEnum):
    """What a start did."""

    #: ``sending``: hand it to the server now.
    go = "go"
    #: Not this claim's any more (or gone with an erasure): nothing to do.
    lost = "lost"
    #: The lead may not be contacted, or left the sequence: ``cancelled``.
    cancelled = "cancelled"
    #: Its enrollment is paused: ``held``.
    held = "held"
    #: Something happened to the lead since the claim: ``queued``, looked at again.
    again = "again"
    #: A daily cap is reached: ``queued`` until the cap's next day.
    capped = "capped"


def start(
    session: Session, item: Claimed, now: datetime, caps: Sequence[Cap | PaceCheck] = ()
) -> tuple[Started, str]:
    """Mark *item* ``sending`` if it may go now, taking its caps' counters, in the
    caller's transaction; else settle it as the check says. Return what happened and,
    when it does not go, why."""
    connection = session.connection()
    params = {"message": item.id, "token": item.token, "seen_event": item.seen_event,
              "counted": " ".join(cap.key for cap in caps) or None}  # fmt: skip
    if not connection.execute(_START, params).rowcount:
        return _why_not(session, item, now)
    for index, cap in enumerate(caps):
        refused = _take(connection, cap, now)
        if refused is not None:  # give back what this start took, and wait
            give_back(connection, [taken.key for taken in caps[:index]])
            session.execute(
                update(OutboxMessage)
                .where(col(OutboxMessage.id) == item.id)
                .where(col(OutboxMessage.claim_token) == item.token)
                .values(
                    status=(OutboxStatus.held if refused.held else OutboxStatus.queued).value,
                    next_attempt_at=refused.until,
                    last_error=refused.reason,
                    claim_token=None,
                    lease_until=None,
                    counted=None,
                )
            )
            return (Started.held if refused.held else Started.capped), refused.reason
    hooks.reach("start.after_caps", item)
    return Started.go, ""


def _by_claim(size: int, column: str) -> Any:
    """``CASE outbox.id WHEN :id_0 THEN :{column}_0 …``: one value per message of a
    group of *size*, looked up by its id."""
    return case(
        {bindparam(f"id_{i}"): bindparam(f"{column}_{i}") for i in range(size)},
        value=_OUTBOX.c.id,
    )


def _claimed(size: int) -> Any:
    """The rows of a group of *size* messages (``:id_0`` …), each under its own claim's
    token (``:token_0`` …): found by primary key, so that no planner (SQLite's with a
    row-value ``IN``, PostgreSQL's with stale statistics) walks every row of a status."""
    return and_(_OUTBOX.c.id.in_([bindparam(f"id_{i}") for i in range(size)]),
                _OUTBOX.c.claim_token == _by_claim(size, "token"))  # fmt: skip


def _claims(items: Sequence[Claimed]) -> dict[str, Any]:
    """The parameters of :func:`_claimed` for *items*."""
    params: dict[str, Any] = {}
    for i, item in enumerate(items):
        params[f"id_{i}"], params[f"token_{i}"] = item.id, item.token
    return params


@lru_cache(maxsize=64)
def _start_group(size: int) -> Any:
    """The start of a group of *size* messages as one statement (built once per size:
    a statement built with its values each time is compiled each time)."""
    return (
        update(_OUTBOX)
        .where(_claimed(size))
        .where(unindexed(_OUTBOX.c.status) == OutboxStatus.leased.value)
        .where(_contactable(_by_claim(size, "seen")))
        .values(status=OutboxStatus.sending.value, counted=_by_claim(size, "counted"))
        .returning(_OUTBOX.c.id)
    )


def start_together(
    session: Session,
    items: Sequence[Claimed],
    now: datetime,
    caps: Sequence[Sequence[Cap | PaceCheck]],
) -> list[tuple[Started, str]]:
    """:func:`start` for each of *items* (*caps*: each one's), in the caller's
    transaction, in two statements however many: one marks every startable message
    ``sending`` (the same last check, each against its own claim's look), one counts
    them (:func:`~nurture.store.counters.take_together`). On PostgreSQL both go in one
    round trip, the count taken for the whole group before it is known which start
    (:func:`_start_and_count`): where one did not, the count is given back and taken
    for those that did, in the same transaction. Where a cap has no room for all, or a
    message has a sender's pacing or a counter of different leads, what was done is
    undone and each is started on its own, to learn which waits. Return what happened
    to each, in order."""
    if (len(items) < 2 or len({item.id for item in items}) < len(items)
            or not all(is_plain(cap) for own in caps for cap in own)):
        return [start(session, item, now, own) for item, own in zip(items, caps, strict=True)]
    connection = session.connection()
    params = _claims(items)
    for i, (item, own) in enumerate(zip(items, caps, strict=True)):
        params[f"seen_{i}"] = item.seen_event
        params[f"counted_{i}"] = " ".join(cap.key for cap in own) or None
    at_once = _start_and_count(connection, items, params, caps)
    if at_once is None:
        went = set(connection.execute(_start_group(len(items)), params).scalars())
    else:
        went, counted = at_once
        if counted:
            return _all_went(items)
    taking = [cap for item, own in zip(items, caps, strict=True) if item.id in went
              for cap in own]  # fmt: skip
    if not take_together(connection, cast(list[Cap], taking)):
        connection.execute(
            update(_OUTBOX).where(_OUTBOX.c.id.in_(went))
            .values(status=OutboxStatus.leased.value, counted=None)
        )  # fmt: skip
        return [start(session, item, now, own) for item, own in zip(items, caps, strict=True)]
    outcomes: list[tuple[Started, str]] = []
    for item in items:
        if item.id in went:
            hooks.reach("start.after_caps", item)
            outcomes.append((Started.go, ""))
        else:
            outcomes.append(_why_not(session, item, now))
    return outcomes


def _all_went(items: Sequence[Claimed]) -> list[tuple[Started, str]]:
    for item in items:
        hooks.reach("start.after_caps", item)
    return [(Started.go, "")] * len(items)


@lru_cache(maxsize=64)
def _start_group_sql(dialect: Dialect, size: int) -> tuple[str, dict[str, Any]]:
    """:func:`_start_group` as the driver's SQL, with the values it binds itself."""
    compiled = _start_group(size).compile(dialect=dialect)
    return str(compiled), dict(compiled.params)


def _start_and_count(
    connection: Connection,
    items: Sequence[Claimed],
    params: dict[str, Any],
    caps: Sequence[Sequence[Cap | PaceCheck]],
) -> tuple[set[int], bool] | None:
    """On PostgreSQL (:func:`~nurture.store.database.can_pipeline`), the start of
    *items* (*params*: :func:`_start_group`'s) and the count of all their caps, in one
    round trip, as if all of them go (they nearly always do): return the ids started,
    and whether their caps are counted: only if all of them went and all fitted (else
    nothing is counted, and the caller counts those that went). ``None`` elsewhere, or
    when the caps cannot all fit: the caller starts them first, then counts."""
    if not can_pipeline(connection):
        return None
    plan = counting(connection.dialect, cast(list[Cap], [cap for own in caps for cap in own]))
    if isinstance(plan, bool):
        return None
    sql, bound = _start_group_sql(connection.dialect, len(items))
    started, fitted = pipelined(connection, [(sql, {**bound, **params}),
                                             (plan.sql, plan.parameters)])  # fmt: skip
    went = {row[0] for row in started}
    counted = plan.settle(connection, (row[0] for row in fitted))
    if counted and len(went) < len(items):  # counted for some that did not go
        plan.undo(connection, plan.sends)
        counted = False
    return went, counted


def unstart(session: Session, item: Claimed) -> bool:
    """A started message that was not handed over after all (the run stopped, or the
    server could not be reached): ``sending`` → ``leased``, its caps' counters given
    back, while this claim holds it. The run then gives it back with the rest."""
    connection = session.connection()
    mine = (
        (_OUTBOX.c.id == item.id)
        & (_OUTBOX.c.claim_token == item.token)
        & (_OUTBOX.c.status == OutboxStatus.sending.value)
    )
    counted = connection.execute(sa_select(_OUTBOX.c.counted).where(mine)).first()
    if counted is None:
        return False
    connection.execute(
        update(_OUTBOX).where(mine).values(status=OutboxStatus.leased.value, counted=None)
    )
    give_back(connection, (counted[0] or "").split())
    return True


def _why_not(session: Session, item: Claimed, now: datetime) -> tuple[Started, str]:
    """The start found *item* not startable: settle it as its lead and enrollment say."""
    row = session.exec(
        select(OutboxMessage.status, OutboxMessage.claim_token, OutboxMessage.lead_id,
               OutboxMessage.enrollment_id)
        .where(col(OutboxMessage.id) == item.id)
    ).first()  # fmt: skip
    if row is None or row[0] not in HELD_BY_CLAIM or row[1] != item.token:
        return Started.lost, "no longer this claim's"
    if row[0] == OutboxStatus.sending:  # started by a commit whose answer was lost on the
        return Started.go, ""  # way: it is handed over only after this returns
    lead = session.get(Lead, row[2]) if row[2] is not None else None
    if lead is None:
        return Started.lost, "its lead is gone"
    if lead.status != "subscribed":
        reason = f"lead is {lead.status}"
        cancel(session, item.id, reason, now, token=item.token)
        return Started.cancelled, reason
    enrollment = session.get(Enrollment, row[3]) if row[3] is not None else None
    if enrollment is not None and enrollment.status == EnrollmentStatus.paused:
        hold(session, item.id, token=item.token)
        return Started.held, HELD_PAUSED
    if enrollment is not None and enrollment.status != EnrollmentStatus.active:
        reason = f"lead left the sequence: {enrollment.reason or enrollment.status}"
        cancel(session, item.id, reason, now, token=item.token)
        return Started.cancelled, reason
    release(session, [item.id], item.token, now)
    return Started.again, "something happened to the lead since: looked at again"


# --- recording ---------------------------------------------------------------------------

def _marking_sent(size: int, now: Any) -> Any:
    """``sending`` → ``sent`` at *now* for a group of *size*, still under its claims."""
    return (
        update(_OUTBOX)
        .where(_claimed(size))
        .where(unindexed(_OUTBOX.c.status) == OutboxStatus.sending.value)
        .values(status=OutboxStatus.sent.value, sent_at=now, last_error=None,
                lease_until=None, claim_token=None, attempts=_OUTBOX.c.attempts + 1)
    )  # fmt: skip


@lru_cache(maxsize=64)
def _mark_sent(size: int) -> Any:
    """:func:`_marking_sent` returning the ids marked (built once per size, as
    :func:`_start_group`): it runs at every write of a delivery run."""
    return _marking_sent(size, bindparam("now")).returning(_OUTBOX.c.id)


_EMAIL_SENT = _EVENTS.insert().values(type="email_sent", source="engine", machine=False,
                                      scored=False)  # fmt: skip


@lru_cache(maxsize=64)
def _record_sent_at_once(size: int) -> Any:
    """On PostgreSQL, :func:`record_sent` of a group of *size* as one statement: the
    outbox rows marked ``sent``, their enrollments told (as
    :func:`~nurture.store.enrollments.emails_left`) and ``email_sent`` recorded, by
    data-modifying CTEs; it returns the ids marked."""
    now = bindparam("now", type_=UTCDateTime())
    o = _OUTBOX.c
    sent = (
        _marking_sent(size, now)
        .returning(o.id, o.lead_id, o.enrollment_id, o.kind, o.sequence, o.step, o.message_id)
        .cte("sent")
    )
    told = telling_email_left(_ENROLLMENTS.c.id == sent.c.enrollment_id, now).cte("told")
    logged = (
        _EVENTS.insert()
        .from_select(
            ["lead_id", "type", "sequence", "step", "data", "occurred_at", "source", "machine",
             "scored"],
            sa_select(sent.c.lead_id, literal("email_sent"), sent.c.sequence, sent.c.step,
                      func.jsonb_build_object("message_id", sent.c.message_id), now,
                      literal("engine"), false(), false())
            .where(sent.c.kind == MessageKind.email.value)
            .where(sent.c.lead_id.is_not(None)),
            include_defaults=False,
        )
        .cte("logged")
    )  # fmt: skip
    return sa_select(sent.c.id).add_cte(told, logged)


def record_sent(session: Session, items: Sequence[Claimed], now: datetime) -> set[int]:
    """``sending`` → ``sent`` for each of *items* its claim still holds, its enrollment
    told and ``email_sent`` recorded: the commonest write of a delivery run, in three
    plain statements however many went (one on PostgreSQL; kept off the ORM's unit of
    work). Return the ids of those written."""
    if not items:
        return set()
    connection = session.connection()
    params = {**_claims(items), "now": now}
    at_once = connection.dialect.name == "postgresql"  # one round trip instead of three
    marking = _record_sent_at_once(len(items)) if at_once else _mark_sent(len(items))
    written = set(connection.execute(marking, params).scalars())
    sent = [item for item in items if item.id in written]
    if not at_once:
        emails_left(connection, [i.enrollment_id for i in sent if i.enrollment_id is not None],
                    now)  # fmt: skip
        events = [{"lead_id": item.lead_id, "sequence": item.sequence, "step": item.step,
                   "data": {"message_id": item.message_id}, "occurred_at": now}
                  for item in sent if item.kind == MessageKind.email]  # fmt: skip
        if events:
            connection.execute(_EMAIL_SENT, events)
    for item in sent:
        logs.action(f"{item.kind} sent", lead=item.recipient, sequence=item.sequence,
                    step=item.step, message_id=item.message_id)  # fmt: skip
    return written


def record(
    session: Session,
    item: Claimed,
    outcome: str,
    detail: str,
    now: datetime,
    *,
    raised: bool = False,
    resend_uncertain: bool = False,
    retry_after: Callable[[int], timedelta] | None = None,
    given_up: Callable[[OutboxMessage], bool] | None = None,
) -> str:
    """Write how a send of *item* went (``sent``, ``bounce``, ``refused``,
    ``uncertain``, ``retry``, or anything else: failed), if its claim still holds it.
    Return the name of what it became, for the run's report (``""``: not this claim's)."""
    if outcome == "sent":
        return "sent" if record_sent(session, [item], now) else ""
    row = session.get(OutboxMessage, item.id, with_for_update=True)
    if row is None or row.status != OutboxStatus.sending or row.claim_token != item.token:
        return ""
    row.lease_until, row.claim_token = None, None
    row.attempts += 1
    fields: dict[str, Any] = {"lead": item.recipient, "sequence": item.sequence,
                              "step": item.step}  # fmt: skip
    counted, gone = (row.counted or "").split(), False
    if outcome == "bounce":
        row.status, row.last_error, became = OutboxStatus.bounced.value, detail, "bounced"
        if item.kind == MessageKind.email and item.lead_id is not None:
            record_event(session, item.lead_id, "email_bounced", sequence=item.sequence,
                         step=item.step, data={"reply": detail, "message_id": row.message_id},
                         at=now, source="smtp", source_id=row.message_id)  # fmt: skip
        logs.action("email bounced", level=logging.WARNING, **fields, reply=detail)
    elif outcome == "refused":
        # The server will not send for us: no lead is at fault, each stays subscribed.
        row.status, row.last_error = OutboxStatus.failed.value, f"{SENDING_PROBLEM}{detail}"
        row.next_attempt_at, became = now, "refused"  # when it was refused: `status` reads it
        logs.action("mail server refuses to send for us: delivery stops",
                    level=logging.ERROR, **fields, reply=detail,
                    resend=f"nurture outbox resend {row.id}")  # fmt: skip
    elif outcome == "uncertain":
        became = "uncertain"
        if resend_uncertain and not raised:
            row.status, row.last_error = OutboxStatus.queued.value, detail
            row.next_attempt_at = now
        else:
            row.status, row.next_attempt_at, gone = OutboxStatus.uncertain.value, now, True
            row.last_error = (f"{detail}: it may have been delivered; held "
                              f"(`nurture outbox resend {row.id}` sends it again)")  # fmt: skip
        logs.action("uncertain send", level=logging.WARNING, **fields,
                    message_id=row.message_id, error=detail)  # fmt: skip
    elif outcome == "retry" and not (given_up is not None and given_up(row)):
        row.status, row.last_error, became = OutboxStatus.queued.value, detail, "retrying"
        row.first_failure_at = row.first_failure_at or now
        delay = retry_after(row.attempts) if retry_after is not None else timedelta(0)
        row.next_attempt_at = now + delay
        logs.action("send will be retried", level=logging.WARNING, **fields,
                    attempt=row.attempts, at=row.next_attempt_at.isoformat(),
                    error=detail)  # fmt: skip
    else:
        row.status, row.last_error, became = OutboxStatus.failed.value, detail, "failed"
        logs.action("send failed", level=logging.ERROR, **fields, error=detail)
    if not gone:  # it did not go (or goes again): its cap counters are given back
        give_back(session.connection(), counted)
        row.counted = None
    if item.pace is not None and outcome in ("bounce", "refused"):
        session.add(row)
        session.flush()  # the health reads this outcome
        check_health(session.connection(), item.pace, now,
                     refusal=detail if outcome == "refused" else "")  # fmt: skip
    if row.status != OutboxStatus.queued:  # settled: it will not go (or may have)
        email_left(session, item.enrollment_id, now)
    session.add(row)
    return became


# --- leases ------------------------------------------------------------------------------


def extend_leases(session: Session, worker: str, until: datetime) -> int:
    """Push back the lease of every message *worker* holds (its heartbeat)."""
    result = session.execute(
        update(OutboxMessage)
        .where(col(OutboxMessage.worker) == worker)
        .where(col(OutboxMessage.status).in_(HELD_BY_CLAIM))
        .values(lease_until=until)
    )
    return _changed(result)


def settle_abandoned(
    session: Session, now: datetime, *, resend: bool, not_of_worker: str | None = None
) -> int:
    """Messages whose holder died: their lease ran out, or (*not_of_worker*) every one
    held by another worker than this one (the caller knows no other worker is alive, as
    a worker that holds a SQLite database does; its own loops' claims are alive). Those
    not started go back to the queue. Those being handed to the server may have gone:
    held as ``uncertain`` for review, or queued again with the same Message-ID when
    *resend*. Return how many were uncertain."""
    expired = (
        and_(col(OutboxMessage.lease_until).is_not(None),
             or_(col(OutboxMessage.worker).is_(None), col(OutboxMessage.worker) != not_of_worker))
        if not_of_worker is not None
        else col(OutboxMessage.lease_until) < now
    )  # fmt: skip
    session.execute(
        update(OutboxMessage)
        .where(col(OutboxMessage.status) == OutboxStatus.leased.value)
        .where(expired)
        .values(status=OutboxStatus.queued.value, lease_until=None, claim_token=None)
    )
    rows = list(
        session.exec(
            select(OutboxMessage)
            .where(OutboxMessage.status == OutboxStatus.sending.value)
            .where(expired)
            .with_for_update(skip_locked=True)
        )
    )
    for row in rows:
        row.lease_until, row.claim_token = None, None
        if resend:
            row.status = OutboxStatus.queued.value
            give_back(session.connection(), (row.counted or "").split())
            row.counted = None
        else:
            row.status, row.next_attempt_at = OutboxStatus.uncertain.value, now
            if row.kind == MessageKind.email:
                email_left(session, row.enrollment_id, now)
            row.last_error = (
                "the sending process stopped mid-send: it may have been delivered; held "
                f"(`nurture outbox resend {row.id}` sends it again)"
            )
        session.add(row)
        logs.action("uncertain send", level=logging.WARNING, lead=row.recipient,
                    sequence=row.sequence, step=row.step, message_id=row.message_id,
                    action="resent" if resend else "held")  # fmt: skip
    return len(rows)


def wait_in_flight(engine: Engine, lead_id: int, timeout: float) -> bool:
    """Wait until no message to *lead_id* is being handed to the mail server by a live
    holder (an opt-out or an erasure returns only once nothing is on its way to them);
    ``False`` if one still was after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while True:
        with Session(engine) as session:
            busy = session.exec(
                select(func.count())
                .select_from(OutboxMessage)
                .where(col(OutboxMessage.lead_id) == lead_id)
                .where(col(OutboxMessage.status) == OutboxStatus.sending.value)
                .where(col(OutboxMessage.lease_until) > clock.now())
            ).one()
        if not busy:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
