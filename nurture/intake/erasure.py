"""Erasure (the right to be forgotten): everything nurture holds about a person goes,
and a keyed hash of their address stays on the suppression list
(:mod:`nurture.suppression`) so that no later import, form or API call emails them
again unless they opt in anew.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete
from sqlmodel import Session, col, select

from nurture.language.fields import normalize_email
from nurture.store.arrivals import Arrival
from nurture.store.enrollments import Enrollment
from nurture.store.events import Event
from nurture.store.handoffs import Handoff, Webhook
from nurture.store.leads import Lead
from nurture.store.outbound import WebhookEvent
from nurture.store.outbox import OutboxMessage
from nurture.store.suppression import suppress
from nurture.store.tasks import Task


@dataclass(frozen=True)
class Erased:
    email: str
    #: Whether there was a lead to erase (the address is suppressed either way).
    found: bool
    #: What went: rows per kind.
    removed: dict[str, int]


def forget(session: Session, email: str) -> Erased:
    """Erase the person with *email* (in the caller's transaction): the lead, its events,
    enrollments, tasks, hand-offs, every outbox message to them (queued or sent), the
    webhook calls about them; then suppress the address."""
    address = normalize_email(email)
    lead = session.exec(select(Lead).where(Lead.email == address)).first()
    removed: dict[str, int] = {}
    if lead is not None:
        lead_id = lead.id
        steps = (
            ("outbox", delete(OutboxMessage).where(col(OutboxMessage.lead_id) == lead_id)),
            ("webhooks", delete(Webhook).where(col(Webhook.lead_id) == lead_id)),
            ("webhook_events", delete(WebhookEvent).where(col(WebhookEvent.lead_id) == lead_id)),
            ("arrivals", delete(Arrival).where(col(Arrival.lead_id) == lead_id)),
            ("tasks", delete(Task).where(col(Task.lead_id) == lead_id)),
            ("handoffs", delete(Handoff).where(col(Handoff.lead_id) == lead_id)),
            ("enrollments", delete(Enrollment).where(col(Enrollment.lead_id) == lead_id)),
            ("events", delete(Event).where(col(Event.lead_id) == lead_id)),
        )
        for name, statement in steps:
            result = session.execute(statement)
            removed[name] = int(getattr(result, "rowcount", 0) or 0)
        session.execute(delete(Lead).where(col(Lead.id) == lead_id))
        session.expunge_all()
    suppress(session, address)
    return Erased(address, lead is not None, removed)
