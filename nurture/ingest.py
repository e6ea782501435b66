"""Events from outside: one item of ``POST /api/events`` or ``nurture event``, checked
field by field and recorded through :func:`nurture.events.record_event`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session

from nurture import clock
from nurture.errors import InvalidValueError, LeadNotFoundError
from nurture.events import Recorded, check_type, record_event
from nurture.store import get_lead

#: Events may be reported late, but not from the future (clocks drift a little).
FUTURE_SLACK = timedelta(minutes=5)
ITEM_KEYS = ("type", "lead", "sequence", "step", "at", "data", "id")


@dataclass(frozen=True)
class EventInput:
    type: str
    lead: str
    sequence: str | None = None
    step: str | None = None
    at: datetime | None = None
    data: dict[str, Any] = field(default_factory=dict)
    #: The sender's id for the event: the same id twice is one event.
    id: str | None = None


def parse_moment(text: str) -> datetime:
    """An ISO 8601 moment with an offset (``Z`` or ``+02:00``)."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidValueError(f"at: {text!r} is not an ISO 8601 moment") from None
    if moment.tzinfo is None:
        raise InvalidValueError(f"at: {text!r} needs an offset, like Z or +02:00")
    return clock.as_utc(moment)


def parse_item(item: Any) -> EventInput:
    """Check one event object; raise :class:`InvalidValueError` naming the bad field."""
    if not isinstance(item, dict):
        raise InvalidValueError("an event must be a JSON object with type and lead")
    unknown = [key for key in item if key not in ITEM_KEYS]
    if unknown:
        raise InvalidValueError(f"unknown field {unknown[0]!r} (fields: {', '.join(ITEM_KEYS)})")
    for key in ("type", "lead"):
        if not isinstance(item.get(key), str) or not item[key].strip():
            raise InvalidValueError(f"{key}: required, a non-empty string")
    for key in ("sequence", "step", "id", "at"):
        if item.get(key) is not None and not isinstance(item[key], str):
            raise InvalidValueError(f"{key}: must be a string")
    if item.get("step") and not item.get("sequence"):
        raise InvalidValueError("step: give the sequence too")
    data = item.get("data") or {}
    if not isinstance(data, dict):
        raise InvalidValueError("data: must be a JSON object")
    return EventInput(
        type=check_type(item["type"].strip()),
        lead=item["lead"].strip(),
        sequence=item.get("sequence") or None,
        step=item.get("step") or None,
        at=parse_moment(item["at"]) if item.get("at") else None,
        data=data,
        id=item.get("id") or None,
    )


def ingest(session: Session, event: EventInput, source: str) -> Recorded:
    """Record *event* for its lead; :class:`LeadNotFoundError` if there is no such lead."""
    now = clock.now()
    if event.at is not None and event.at > now + FUTURE_SLACK:
        raise InvalidValueError(f"at: {event.at.isoformat()} is in the future")
    lead = get_lead(session, event.lead)
    assert lead.id is not None
    return record_event(
        session,
        lead.id,
        event.type,
        sequence=event.sequence,
        step=event.step,
        data=event.data,
        at=event.at or now,
        source=source,
        source_id=event.id,
    )


__all__ = ["EventInput", "LeadNotFoundError", "ingest", "parse_item", "parse_moment"]
