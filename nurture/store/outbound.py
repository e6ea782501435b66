"""What happened that ``[[webhooks]]`` may want to hear about.

:func:`note` is called where events are recorded (:mod:`nurture.store.events`), in the same
transaction: each event that means something to the outside (a stage change, an
unsubscribe, a hand-off answer...) leaves one row here, with the webhook event type it
becomes. The daemon turns the rows into signed deliveries for the endpoints that want
them (:mod:`nurture.mail.webhooks`) and removes them. Nothing is sent from here.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Column, String
from sqlmodel import Field, Session, SQLModel

from nurture import clock
from nurture.store.bulk import insert_rows
from nurture.store.sqltypes import JSONType, UTCDateTime

#: Recorded event type -> webhook event type.
TYPES = {
    "lead_created": "lead.created",
    "lead_updated": "lead.updated",
    "stage_changed": "lead.stage_changed",
    "unsubscribed": "lead.unsubscribed",
    "opt_in_confirmed": "lead.confirmed",
    "form_submitted": "form.submitted",
    "handoff_accepted": "handoff.answered",
    "handoff_rejected": "handoff.answered",
    "handoff_recycled": "handoff.answered",
    "call_completed": "task.completed",
    "linkedin_completed": "task.completed",
    "task_completed": "task.completed",
}


class WebhookEvent(SQLModel, table=True):
    """An event on its way to the ``[[webhooks]]`` that want it."""

    __tablename__ = "webhook_events"

    id: int | None = Field(default=None, primary_key=True)
    #: The id deliveries carry (``evt_...``): the same for every endpoint and retry.
    public_id: str = Field(max_length=40, unique=True)
    #: ``lead.created``, ``lead.stage_changed``, ...
    type: str = Field(sa_type=String(40))
    lead_id: int | None = Field(default=None, foreign_key="leads.id", ondelete="CASCADE")
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONType, nullable=False))
    created_at: datetime = Field(default_factory=clock.now, sa_type=UTCDateTime)


class Recordable(Protocol):
    lead_id: int
    type: str
    data: dict[str, Any]
    occurred_at: datetime
    sequence: str | None
    step: str | None
    source: str


def new_id() -> str:
    return "evt_" + secrets.token_hex(12)


def note(session: Session, events: Iterable[Recordable]) -> None:
    """Queue the webhook events that new *events* (of leads, not machines) mean, by one
    statement (:func:`~nurture.store.bulk.insert_rows`; no ORM object per row). The
    leads of *events* must be stored already (the callers flush first)."""
    rows: list[dict[str, Any]] = []
    now = clock.now()
    for event in events:
        kind = TYPES.get(event.type)
        if kind is None:
            continue
        data = {
            "event": event.type,
            "at": event.occurred_at.isoformat(),
            "source": event.source,
            **({"sequence": event.sequence} if event.sequence else {}),
            **({"step": event.step} if event.step else {}),
            **{k: v for k, v in (event.data or {}).items() if k not in ("ip", "user_agent")},
        }
        kinds = [kind]
        if kind == "lead.stage_changed" and (event.data or {}).get("to") == "hot":
            kinds.append("lead.hot")
        rows.extend(
            {"public_id": new_id(), "type": k, "lead_id": event.lead_id, "data": data,
             "created_at": now}
            for k in kinds
        )  # fmt: skip
    insert_rows(session.connection(), WebhookEvent.__table__, rows)  # type: ignore[attr-defined]
