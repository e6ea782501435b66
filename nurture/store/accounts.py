"""The leads of one account (:mod:`nurture.language.accounts`: the company, else the
email's domain unless it is free mail), and what a reply from one of them tells the
others: an ``account_replied`` event each, in the transaction that records the reply,
so ``exit_when: [account_replied]`` ends their sequences at their next look and the
start's last check sends them nothing after it. When the one who replied is erased,
what it left on the others names them no more (:func:`forget_replier`)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, or_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from nurture.language.accounts import (
    Account,
    account_of,
    account_reply_data,
    account_reply_words,
    erased_reply_data,
    person_name,
)
from nurture.store.enrollments import RUNNING, Enrollment
from nurture.store.events import Event, NewEvent, record_event, record_events
from nurture.store.leads import Lead
from nurture.store.outbox import OutboxMessage


def colleagues(session: Session, lead: Lead, account: Account) -> list[Lead]:
    """The other leads of *account* (that of *lead*) in a sequence now (active or
    paused), read in one query: each lead's enrollments are looked up by the
    ``lead_id`` index (an EXISTS per candidate), not by a scan of every enrollment."""
    query = select(Lead).where(col(Lead.id) != lead.id)
    if lead.company and lead.company.strip():
        query = query.where(func.lower(func.trim(col(Lead.company))) == account.name.lower())
    else:
        domain = account.name
        query = query.where(col(Lead.email).endswith("@" + domain, autoescape=True)).where(
            or_(col(Lead.company).is_(None), func.trim(col(Lead.company)) == "")
        )
    in_sequence = (
        select(Enrollment.id)
        .where(col(Enrollment.lead_id) == col(Lead.id))
        .where(col(Enrollment.status).in_(RUNNING))
    )
    query = query.where(in_sequence.exists())
    return [other for other in session.exec(query)
            if (theirs := account_of(other.company, other.email)) is not None
            and theirs.key == account.key]  # fmt: skip


def tell_colleagues(session: Session, lead_id: int, *, source_id: str, now: datetime) -> list[int]:
    """The lead *lead_id* replied: record ``account_replied`` on each other lead of its
    account in a sequence (once per reply, by *source_id*), all in one batch; return
    their ids."""
    lead = session.get(Lead, lead_id)
    account = account_of(lead.company, lead.email) if lead is not None else None
    if lead is None or account is None:
        return []
    data = account_reply_data(person_name(lead.first_name, lead.last_name, lead.email),
                              account, lead_id)  # fmt: skip
    others = [other.id for other in colleagues(session, lead, account) if other.id is not None]
    batch = [NewEvent(other, "account_replied", now, dict(data), source="account",
                      source_id=source_id) for other in others]  # fmt: skip
    try:
        with session.begin_nested():  # another poll told them meanwhile: one by one
            recorded = record_events(session, batch)
    except IntegrityError:
        recorded = [record_event(session, e.lead_id, e.type, data=e.data, at=now,
                                 source=e.source, source_id=e.source_id)
                    for e in batch]  # fmt: skip
    return [item.event.lead_id for item in recorded if item.new]


def forget_replier(session: Session, lead_id: int) -> int:
    """The lead *lead_id* is being erased (in the caller's transaction): the
    ``account_replied`` events its replies left on its colleagues say "a colleague"
    instead of its name and no longer point at it, and so do those colleagues'
    enrollments and emails that were stopped saying who replied. Return how many events
    changed."""
    replies = select(Event.source_id).where(col(Event.lead_id) == lead_id).where(
        col(Event.type) == "email_replied").where(col(Event.source_id).is_not(None))  # fmt: skip
    told = session.exec(
        select(Event)
        .where(col(Event.source) == "account")
        .where(col(Event.source_id).in_(replies.scalar_subquery()))
        .where(col(Event.type) == "account_replied")
        .where(col(Event.lead_id) != lead_id)
    ).all()
    changed = [event for event in told if event.data.get("replied_lead_id") == lead_id]
    if not changed:
        return 0
    words = {account_reply_words(event.data): account_reply_words(erased_reply_data(event.data))
             for event in changed}  # fmt: skip
    session.execute(update(Event), [{"id": event.id, "data": erased_reply_data(event.data)}
                                    for event in changed])  # fmt: skip
    others = sorted({event.lead_id for event in changed})
    for said, anonymous in words.items():
        for start in range(0, len(others), 500):
            chunk = others[start : start + 500]
            session.execute(
                update(Enrollment)
                .where(col(Enrollment.lead_id).in_(chunk))
                .where(col(Enrollment.reason).contains(said, autoescape=True))
                .values(reason=func.replace(col(Enrollment.reason), said, anonymous))
            )
            session.execute(
                update(OutboxMessage)
                .where(col(OutboxMessage.lead_id).in_(chunk))
                .where(col(OutboxMessage.last_error).contains(said, autoescape=True))
                .values(last_error=func.replace(col(OutboxMessage.last_error), said, anonymous))
            )
    for event in changed:
        session.expire(event)
    return len(changed)
