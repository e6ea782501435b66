"""The leads of one account (:mod:`nurture.language.accounts`: the company, else the
email's domain unless it is free mail), and what a reply from one of them tells the
others: an ``account_replied`` event each, in the transaction that records the reply,
so ``exit_when: [account_replied]`` ends their sequences at their next look and the
start's last check sends them nothing after it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, or_
from sqlmodel import Session, col, select

from nurture.language.accounts import (
    Account,
    account_of,
    account_reply_data,
    person_name,
)
from nurture.store.enrollments import Enrollment, EnrollmentStatus
from nurture.store.events import record_event
from nurture.store.leads import Lead


def colleagues(session: Session, lead: Lead, account: Account) -> list[Lead]:
    """The other leads of *account* (that of *lead*) in a sequence now (active or paused)."""
    query = select(Lead).where(col(Lead.id) != lead.id)
    if lead.company and lead.company.strip():
        query = query.where(func.lower(func.trim(col(Lead.company))) == account.name.lower())
    else:
        domain = account.name
        query = query.where(col(Lead.email).endswith("@" + domain, autoescape=True)).where(
            or_(col(Lead.company).is_(None), func.trim(col(Lead.company)) == "")
        )
    running = [EnrollmentStatus.active.value, EnrollmentStatus.paused.value]
    query = query.where(
        col(Lead.id).in_(select(Enrollment.lead_id).where(col(Enrollment.status).in_(running)))
    )
    return [other for other in session.exec(query)
            if (theirs := account_of(other.company, other.email)) is not None
            and theirs.key == account.key]  # fmt: skip


def tell_colleagues(session: Session, lead_id: int, *, source_id: str, now: datetime) -> list[int]:
    """The lead *lead_id* replied: record ``account_replied`` on each other lead of its
    account in a sequence (once per reply, by *source_id*); return their ids."""
    lead = session.get(Lead, lead_id)
    account = account_of(lead.company, lead.email) if lead is not None else None
    if lead is None or account is None:
        return []
    data = account_reply_data(person_name(lead.first_name, lead.last_name, lead.email),
                              account, lead_id)  # fmt: skip
    told: list[int] = []
    for other in colleagues(session, lead, account):
        assert other.id is not None
        recorded = record_event(session, other.id, "account_replied", data=data, at=now,
                                source="account", source_id=source_id)  # fmt: skip
        if recorded.new:
            told.append(other.id)
    return told
