"""The senders' health: a sender whose hard bounces pass ``[limits] max_bounce_rate`` of
its last 100 sends, that got 3 complaints in 24 hours, or whose server refused to send
for it (5.7.x) is paused (:mod:`nurture.store.sender_health`); the operator and the sender's
owner are told once. Checked after each bounce or refusal (in the send's own
transaction) and at the start of each delivery run (bounce reports and complaints
arrive by IMAP)."""

from __future__ import annotations

import logging
from datetime import datetime
from email.utils import make_msgid
from typing import Any

from sqlmodel import Session

from nurture import logs
from nurture.config import SenderEntry, Settings
from nurture.mail.compose import Sender, build_notification
from nurture.mail.senders import sender_paces
from nurture.store import sender_health as store
from nurture.store.outbox import MessageKind, queue_message


def watch_health(session: Session, settings: Settings, now: datetime) -> list[str]:
    """Pause every unhealthy sender (a bounce report or a complaint may have come since
    its last send) and tell the operator (``[sales] notify_email``) and the sender's
    owner of each pause, once. Return the names paused now."""
    connection = session.connection()
    paces = sender_paces(settings)
    paused_now = [pace.name for pace in paces.values()
                  if store.check_health(connection, pace, now) is not None]  # fmt: skip
    for state in store.untold(connection):
        entry = settings.sender_named(state.name)
        if entry is None or not store.mark_told(connection, state.name, now):
            continue
        _tell(session, settings, entry, state, now)
    return paused_now


def _tell(
    session: Session, settings: Settings, entry: SenderEntry, state: Any, now: datetime
) -> None:
    """A notice of *entry*'s pause to the operator and to the sender's owner."""
    sender = Sender.parse(settings.sales.from_address)
    if not sender.name:
        sender = Sender(f"{settings.project.name} leads", sender.email)
    body = (
        f"The sender {entry.name} ({entry.email}) is paused: {state.pause_reason}.\n\n"
        "Its emails wait, held, until someone resumes it:\n\n"
        f"    nurture senders resume {entry.name}\n"
    )
    moment = state.paused_at.isoformat() if state.paused_at else now.isoformat()
    for to in dict.fromkeys(a for a in (settings.sales.notify_email, entry.email) if a):
        message = build_notification(
            sender=sender, to_email=to, subject=f"[nurture] sender {entry.name} is paused",
            body=body, date=now, message_id=make_msgid(domain=sender.domain),
        )  # fmt: skip
        queue_message(
            session, message, kind=MessageKind.notify, key=f"sender-paused:{entry.name}:"
            f"{moment}:{to}", lead_id=None, sequence="senders", step="paused",
            sender=sender.email, recipient=to, timezone=settings.project.default_timezone,
            now=now,
        )  # fmt: skip
    told = ", ".join(a for a in (settings.sales.notify_email, entry.email) if a)
    logs.action("sender pause told", level=logging.WARNING, sender=entry.name, to=told)
