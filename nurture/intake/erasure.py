"""Erasure (the right to be forgotten): everything nurture holds about a person goes,
and a keyed hash of their address stays on the suppression list
(:mod:`nurture.store.suppression`) so that no later import, form or API call emails
them again unless they opt in anew.

:func:`erase` wins against everything running beside it:

1. One transaction locks the lead and makes it not contactable: from its commit on, no
   message to the person can start (:func:`nurture.store.sending.start` checks it).
2. It waits (a few seconds at most) for a message already being handed to the mail
   server to finish: when :func:`erase` returns, nothing is on its way to them.
3. One transaction deletes the lead: the schema cascades to every row about them
   (events, enrollments, their messages, tasks, hand-offs, webhook calls, sign-in
   links, arrivals) and :func:`forget` deletes the mail that names them (a digest);
   what their replies left on their colleagues (``account_replied``, and the reasons
   it gave their stopped sequences and emails) says "a colleague" instead of them.
   A pass or a dispatcher that wrote about them meanwhile finds its write refused by
   the foreign keys, or its rows deleted with the rest.
4. The copies outside the database go: the Maildir files of their messages.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, delete, func, update
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from nurture import logs
from nurture.language.fields import normalize_email
from nurture.mail.transports import remove_from_maildir
from nurture.retry import backoff, is_transient
from nurture.store.accounts import forget_replier
from nurture.store.arrivals import Arrival
from nurture.store.database import session_scope
from nurture.store.enrollments import Enrollment
from nurture.store.events import Event
from nurture.store.handoffs import Handoff, Webhook
from nurture.store.leads import Lead
from nurture.store.outbound import WebhookEvent
from nurture.store.outbox import OutboxMention, OutboxMessage
from nurture.store.sending import wait_in_flight
from nurture.store.suppression import suppress
from nurture.store.tasks import Task

#: Longest an erasure waits for a message being handed to the mail server right now.
IN_FLIGHT_WAIT = 30.0
#: The rows about a person an erasure locks, in order, before the lead itself.
LOCK_ORDER: tuple[tuple[Any, Any], ...] = (
    (OutboxMessage, col(OutboxMessage.lead_id)),
    (Enrollment, col(Enrollment.lead_id)),
    (Task, col(Task.lead_id)),
    (Handoff, col(Handoff.lead_id)),
    (WebhookEvent, col(WebhookEvent.lead_id)),
    (Webhook, col(Webhook.lead_id)),
)
#: Tries of the deleting transaction (PostgreSQL may abort it in a deadlock with a
#: worker writing about the same person at that moment).
ERASE_ATTEMPTS = 5


@dataclass(frozen=True)
class Erased:
    email: str
    #: Whether there was a lead to erase (the address is suppressed either way).
    found: bool
    #: What went: rows per kind (and ``files``: Maildir files).
    removed: dict[str, int]


def forget(session: Session, email: str) -> tuple[Erased, list[str]]:
    """Erase the person with *email* (in the caller's transaction): the lead and every
    row about them, the mail that names them; then suppress the address. Return what
    went and the idempotency keys of the messages that went (their files go too)."""
    address = normalize_email(email)
    lead_id = session.exec(select(Lead.id).where(Lead.email == address)).first()
    removed: dict[str, int] = {}
    keys: list[str] = []
    if lead_id is not None:
        # Lock what is about them in the order every writer locks it (a message, then
        # its enrollment, then the lead): a pass, a delivery or a dispatcher writing
        # about them finishes first, and no one waits for the other in a circle.
        for table, column in LOCK_ORDER:
            session.execute(sa_select(table.id).where(column == lead_id).with_for_update())
        session.execute(sa_select(col(Lead.id)).where(col(Lead.id) == lead_id).with_for_update())
        mentioned = select(OutboxMention.outbox_id).where(col(OutboxMention.lead_id) == lead_id)
        about = (col(OutboxMessage.lead_id) == lead_id) | col(OutboxMessage.id).in_(mentioned)
        keys = list(session.exec(select(OutboxMessage.idempotency_key).where(about)))
        # The cascades would do it; counting each kind tells the operator what went.
        counted: tuple[tuple[str, Any, Any], ...] = (
            ("outbox", OutboxMessage, about),
            ("webhooks", Webhook, col(Webhook.lead_id) == lead_id),
            ("webhook_events", WebhookEvent, col(WebhookEvent.lead_id) == lead_id),
            ("arrivals", Arrival, col(Arrival.lead_id) == lead_id),
            ("tasks", Task, col(Task.lead_id) == lead_id),
            ("handoffs", Handoff, col(Handoff.lead_id) == lead_id),
            ("enrollments", Enrollment, col(Enrollment.lead_id) == lead_id),
            ("events", Event, col(Event.lead_id) == lead_id),
        )
        for name, table, where in counted:
            removed[name] = int(session.exec(select(func.count()).select_from(table)
                                             .where(where)).one())  # fmt: skip
        # What their replies told their colleagues names them: it says "a colleague" now.
        removed["colleagues_told"] = forget_replier(session, lead_id)
        session.execute(delete(OutboxMessage).where(col(OutboxMessage.id).in_(mentioned)))
        session.execute(delete(Lead).where(col(Lead.id) == lead_id))  # the rest cascades
        session.expunge_all()
    suppress(session, address)
    return Erased(address, lead_id is not None, removed), keys


def erase(engine: Engine, email: str, outbox_dir: Path | None = None) -> Erased:
    """Erase the person with *email* so that it wins against every loop running beside
    it (see the module's doc); *outbox_dir*: the Maildir whose files of theirs go."""
    address = normalize_email(email)
    with session_scope(engine) as session:
        lead = session.exec(select(Lead).where(Lead.email == address).with_for_update()).first()
        lead_id = lead.id if lead is not None else None
        if lead_id is not None:  # from this commit on, nothing to them starts
            session.execute(update(Lead).where(col(Lead.id) == lead_id)
                            .values(status="unsubscribed"))  # fmt: skip
    if lead_id is not None and not wait_in_flight(engine, lead_id, IN_FLIGHT_WAIT):
        logs.action("erasing while a message to them is still being handed to the mail "
                    "server", level=logging.WARNING, lead_id=lead_id)  # fmt: skip
    for attempt in range(1, ERASE_ATTEMPTS + 1):
        try:
            with session_scope(engine) as session:
                erased, keys = forget(session, address)
            break
        except Exception as exc:  # a deadlock with a writer about them: theirs rolls back
            if not is_transient(exc) or attempt == ERASE_ATTEMPTS:
                raise
            time.sleep(backoff(attempt, timedelta(milliseconds=50), timedelta(seconds=2))
                       .total_seconds())  # fmt: skip
    if outbox_dir is not None and keys:
        erased.removed["files"] = remove_from_maildir(outbox_dir, keys)
    return erased
