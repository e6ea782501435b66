"""Leads that arrive from outside one at a time: by a web form or the leads API.

:func:`parse_lead` checks one API item; :func:`take_leads` stores a batch by the
import's rules (:func:`nurture.store.upsert_leads`: emails compare case-insensitively,
empty values keep what is stored, an unsubscribe is never undone), honours the
suppression list (unless the item carries a consent: a fresh opt-in), records a
``lead_created`` or ``lead_updated`` event naming the key or form that made the change,
keeps the consent, and announces the leads to the daemon (:mod:`nurture.store.arrivals`).

A form is anyone's to post: it creates a lead and fills the fields a known lead does
not hold yet, and never replaces a stored value nor a stored consent (what it said is
kept in :attr:`Taken.kept`, for the ``form_submitted`` event). The API's callers hold a
key: their values are written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col, select

from nurture import clock
from nurture.errors import InvalidValueError, NurtureError
from nurture.language.fields import SETTABLE_FIELDS, check_storable, parse_field
from nurture.store.arrivals import announce
from nurture.store.events import Event, record_events
from nurture.store.leads import Lead, LeadChanges, upsert_leads
from nurture.store.suppression import lift, suppressed

#: Longest text accepted for one attribute value.
MAX_ATTRIBUTE = 2000
#: Most attributes one item may carry.
MAX_ATTRIBUTES = 100
#: Longest name of an attribute (and of a consent version).
MAX_ATTRIBUTE_NAME = 100


class SuppressedError(NurtureError):
    """This address was erased at the person's request (the suppression list): it comes
    back only with a new consent of theirs."""


@dataclass
class LeadItem:
    """One lead to create or update, and the consent it comes with, if any."""

    changes: LeadChanges
    #: ``{"text", "version", ...}``: the person agreed to this (a fresh opt-in).
    consent: dict[str, Any] | None = None


@dataclass(frozen=True)
class Taken:
    email: str
    #: ``created``, ``updated`` or ``unchanged``.
    result: str
    lead_id: int
    #: What a form sent that differs from the values the lead holds (not written).
    kept: dict[str, Any] = field(default_factory=dict)


@dataclass
class Origin:
    """Who brings the leads: the event source, and the key or form name."""

    source: str
    via_key: str | None = None
    form: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _text(name: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidValueError(f"{name}: must be a string")
    return str(value)


def parse_attributes(value: Any) -> dict[str, Any]:
    """Custom attributes from JSON: an object of strings, numbers or booleans."""
    if not isinstance(value, dict):
        raise InvalidValueError("attributes: must be a JSON object")
    if len(value) > MAX_ATTRIBUTES:
        raise InvalidValueError(f"attributes: at most {MAX_ATTRIBUTES}")
    attributes: dict[str, Any] = {}
    for key, item in value.items():
        check_storable("attributes key", str(key))
        if not 0 < len(str(key)) <= MAX_ATTRIBUTE_NAME:
            raise InvalidValueError(f"attributes: a name of 1 to {MAX_ATTRIBUTE_NAME} characters")
        if key in SETTABLE_FIELDS:
            raise InvalidValueError(f"attributes.{key}: {key} is a field: send it as one")
        if item is None or item == "":
            continue  # empty keeps what is stored
        if not isinstance(item, str | int | float | bool):
            raise InvalidValueError(f"attributes.{key}: a string, number or boolean")
        if isinstance(item, float) and not math.isfinite(item):
            raise InvalidValueError(f"attributes.{key}: a finite number")
        if isinstance(item, str):
            check_storable(f"attributes.{key}", item)
            item = item.strip()
            if len(item) > MAX_ATTRIBUTE:
                raise InvalidValueError(f"attributes.{key}: longer than {MAX_ATTRIBUTE}")
        attributes[str(key)] = item
    return attributes


def parse_consent(value: Any) -> dict[str, Any]:
    """``{"text": ..., "version": ...}``: what the person agreed to."""
    if not isinstance(value, dict) or not isinstance(value.get("text"), str):
        raise InvalidValueError('consent: {"text": WHAT THEY AGREED TO, "version": "..."}')
    check_storable("consent.text", value["text"])
    text = value["text"].strip()
    if not text or len(text) > MAX_ATTRIBUTE:
        raise InvalidValueError(f"consent.text: 1 to {MAX_ATTRIBUTE} characters")
    version = value.get("version")
    if version is not None and not isinstance(version, str):
        raise InvalidValueError("consent.version: must be a string")
    if version is not None:
        check_storable("consent.version", version)
        if len(version) > MAX_ATTRIBUTE_NAME:
            raise InvalidValueError(f"consent.version: at most {MAX_ATTRIBUTE_NAME} characters")
    return {"text": text, "version": version}


def parse_lead(item: Any) -> LeadItem:
    """Check one leads-API item; raise :class:`InvalidValueError` naming the field."""
    if not isinstance(item, dict):
        raise InvalidValueError("a lead must be a JSON object with an email")
    known = (*SETTABLE_FIELDS, "attributes", "consent")
    for key in item:
        if key not in known:
            raise InvalidValueError(
                f"unknown field {key!r}: put custom values in attributes (fields: "
                f"{', '.join(known)})"
            )
    if not isinstance(item.get("email"), str):
        raise InvalidValueError("email: required, a string")
    fields: dict[str, Any] = {}
    errors: list[str] = []
    for name in SETTABLE_FIELDS:
        value = item.get(name)
        if value is None or value == "":
            continue
        try:
            fields[name] = parse_field(name, _text(name, value))
        except InvalidValueError as exc:
            errors.append(str(exc))
    if errors:
        raise InvalidValueError("; ".join(errors))
    attributes = parse_attributes(item["attributes"]) if item.get("attributes") else {}
    consent = parse_consent(item["consent"]) if item.get("consent") is not None else None
    email = str(fields.pop("email"))
    return LeadItem(LeadChanges(email, fields, attributes), consent)


def _opts_in_anew(item: LeadItem, origin: Origin) -> bool:
    """Whether *item* may bring an erased address back: a consent given through the API
    (the caller vouches for it), or through a form that then asks the address itself to
    confirm (double opt-in: the lead waits, ``pending``). Anyone can type an address into
    a form: a consent box alone is no proof that it is theirs."""
    if item.consent is None:
        return False
    return origin.source != "form" or item.changes.fields.get("status") == "pending"


def take_leads(
    session: Session, items: list[LeadItem], origin: Origin
) -> list[Taken | NurtureError]:
    """Create or update each item's lead (emails unique in *items*), in the caller's
    transaction; what became of each, or why it was refused."""
    now = clock.now()
    blocked = suppressed(session, [item.changes.email for item in items])
    outcome: dict[str, Taken | NurtureError] = {}
    kept: list[LeadItem] = []
    for item in items:
        email = item.changes.email
        if email in blocked and not _opts_in_anew(item, origin):
            outcome[email] = SuppressedError()
        else:
            kept.append(item)
    # A consent through the API lifts the suppression now; a form's waits for the link
    # sent to the address (the confirmation lifts it).
    lift(
        session,
        [i.changes.email for i in kept if i.changes.email in blocked and origin.source != "form"],
    )
    from_form = origin.source == "form"
    result = upsert_leads(session, [item.changes for item in kept], fill_only=from_form)
    emails = [item.changes.email for item in kept]
    ids: dict[str, int] = {
        email: lead_id
        for email, lead_id in session.exec(
            select(Lead.email, Lead.id).where(col(Lead.email).in_(emails))
        )
        if lead_id is not None
    }
    events: list[Event] = []
    base = {**origin.extra, **({"form": origin.form} if origin.form else {})}
    for email in result.created:
        events.append(_event(ids[email], "lead_created", base, origin, now))
    for email in result.updated:
        data = {**base, "fields": result.changed.get(email, [])}
        events.append(_event(ids[email], "lead_updated", data, origin, now))
    on_record: set[int] = set()
    if from_form:  # a stranger's consent never replaces the one on record
        on_record = {
            lead_id
            for lead_id, consent in session.exec(
                select(Lead.id, Lead.consent).where(col(Lead.id).in_(list(ids.values())))
            )
            if consent and lead_id is not None
        }
    for item in kept:
        lead_id = ids[item.changes.email]
        if item.consent is not None and lead_id not in on_record:
            consent = {**item.consent, **base, "at": now.isoformat(), "source": origin.source}
            if origin.via_key:
                consent["key"] = origin.via_key
            session.execute(update(Lead).where(col(Lead.id) == lead_id).values(consent=consent))
    record_events(session, events)
    states = {
        **dict.fromkeys(result.created, "created"),
        **dict.fromkeys(result.updated, "updated"),
        **dict.fromkeys(result.unchanged, "unchanged"),
    }
    for email in emails:
        outcome[email] = Taken(email, states[email], ids[email], result.kept.get(email, {}))
    announce(session, [ids[e] for e in emails if states[e] != "unchanged"])
    return [outcome[item.changes.email] for item in items]


def _event(lead_id: int, kind: str, data: dict[str, Any], origin: Origin, now: Any) -> Event:
    return Event(lead_id=lead_id, type=kind, data=dict(data), occurred_at=now,
                 source=origin.source, via_key=origin.via_key)  # fmt: skip
