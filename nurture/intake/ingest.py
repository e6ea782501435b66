"""Events from outside: one item of ``POST /api/events`` or ``nurture event``, checked
field by field and recorded through :func:`nurture.store.events.record_event`."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from nurture import clock
from nurture.errors import InvalidValueError, LeadNotFoundError, NurtureError
from nurture.language.fields import check_storable, normalize_email
from nurture.store.bulk import one_of
from nurture.store.events import (
    NewEvent,
    Recorded,
    check_external_type,
    record_event,
    record_events,
)
from nurture.store.leads import Lead, get_lead

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
    return clock.as_utc(clock.check_sane(moment, "at"))


#: The longest text each field may hold (the database's columns).
FIELD_LIMITS = {"type": 64, "lead": 320, "sequence": 200, "step": 200, "id": 300}
#: How much JSON an event's ``data`` may hold, serialised.
MAX_DATA_BYTES = 16_384


def _check_text(name: str, value: str) -> None:
    check_storable(name, value)
    limit = FIELD_LIMITS.get(name)
    if limit is not None and len(value) > limit:
        raise InvalidValueError(f"{name}: longer than {limit} characters")


def _check_data(value: Any, path: str = "data") -> None:
    """Every key and string inside ``data`` must be storable (no NUL, no lone surrogate)."""
    if isinstance(value, str):
        check_storable(path, value)
    elif isinstance(value, float) and not math.isfinite(value):
        raise InvalidValueError(f"{path}: a finite number")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_storable(f"{path} key", str(key))
            _check_data(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_data(item, f"{path}[{index}]")


def parse_item(item: Any) -> EventInput:
    """Check one event object from another system (``POST /api/events``); raise
    :class:`InvalidValueError` naming the bad field. Types nurture records itself
    (:data:`~nurture.store.events.ENGINE_TYPES`) are refused."""
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
    for key in FIELD_LIMITS:
        if item.get(key):
            _check_text(key, item[key])
    if item.get("step") and not item.get("sequence"):
        raise InvalidValueError("step: give the sequence too")
    data = item.get("data") or {}
    if not isinstance(data, dict):
        raise InvalidValueError("data: must be a JSON object")
    _check_data(data)
    if len(json.dumps(data, ensure_ascii=False, default=str).encode("utf-8", "replace")) > (
        MAX_DATA_BYTES
    ):
        raise InvalidValueError(f"data: over {MAX_DATA_BYTES // 1024} KiB")
    return EventInput(
        type=check_external_type(item["type"].strip()),
        lead=item["lead"].strip(),
        sequence=item.get("sequence") or None,
        step=item.get("step") or None,
        at=parse_moment(item["at"]) if item.get("at") else None,
        data=data,
        id=item.get("id") or None,
    )


def _check_moment(event: EventInput, now: datetime) -> None:
    if event.at is not None and event.at > now + FUTURE_SLACK:
        raise InvalidValueError(f"at: {event.at.isoformat()} is in the future")


def ingest_many(
    session: Session, events: list[EventInput], source: str, via_key: str | None = None
) -> list[Recorded | NurtureError]:
    """Record a batch of events for their leads, in a few statements: what became of
    each, or why it was refused (:class:`InvalidValueError`, :class:`LeadNotFoundError`).
    May raise :class:`~sqlalchemy.exc.IntegrityError` (see
    :func:`~nurture.store.events.record_events`): then :func:`ingest` them one by one."""
    now = clock.now()
    outcome: list[Recorded | NurtureError | None] = []
    emails: list[str | None] = []
    for event in events:
        try:
            _check_moment(event, now)
            emails.append(normalize_email(event.lead))
            outcome.append(None)
        except InvalidValueError as exc:
            emails.append(None)
            outcome.append(exc)
    wanted = sorted({email for email in emails if email is not None})
    lead_ids: dict[str, int] = {}
    dialect = session.get_bind().dialect
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        for lead_id, address in session.exec(
            select(Lead.id, Lead.email).where(one_of(dialect, col(Lead.email), chunk))
        ):
            if lead_id is not None:
                lead_ids[address] = lead_id
    rows: list[tuple[int, NewEvent]] = []
    for index, (event, email) in enumerate(zip(events, emails, strict=True)):
        if email is None:
            continue
        if email not in lead_ids:
            outcome[index] = LeadNotFoundError(f"no lead with email {email}")
            continue
        row = NewEvent(
            lead_id=lead_ids[email], type=event.type, sequence=event.sequence,
            step=event.step, data=event.data, occurred_at=event.at or now, source=source,
            source_id=event.id, via_key=via_key,
        )  # fmt: skip
        rows.append((index, row))
    recorded = record_events(session, [row for _, row in rows])
    for (index, _), result in zip(rows, recorded, strict=True):
        outcome[index] = result
    done = [item for item in outcome if item is not None]
    assert len(done) == len(events)
    return done


def ingest(
    session: Session, event: EventInput, source: str, via_key: str | None = None
) -> Recorded:
    """Record *event* for its lead; :class:`LeadNotFoundError` if there is no such lead."""
    now = clock.now()
    _check_moment(event, now)
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
        via_key=via_key,
    )


__all__ = ["EventInput", "LeadNotFoundError", "ingest", "parse_item", "parse_moment"]
