"""Leads: the people we hold details for, their stage and whether we may contact them."""

from __future__ import annotations

import enum
import re
from datetime import datetime
from functools import cache, lru_cache
from typing import Any
from zoneinfo import available_timezones

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import Column, String
from sqlmodel import Field, SQLModel

from nurture import clock
from nurture.errors import InvalidValueError
from nurture.sqltypes import JSONType, UTCDateTime
from nurture.suggest import close_match, did_you_mean


class Stage(enum.StrEnum):
    """Where a lead stands in the funnel."""

    cold = "cold"
    warm = "warm"
    hot = "hot"
    accepted = "accepted"
    customer = "customer"
    disqualified = "disqualified"


class ContactStatus(enum.StrEnum):
    """Whether a lead may be emailed."""

    subscribed = "subscribed"
    #: Signed up through a double opt-in form and not confirmed yet: never emailed by
    #: sequences.
    pending = "pending"
    unsubscribed = "unsubscribed"
    bounced = "bounced"
    complained = "complained"


#: Plain text fields of a lead, settable from a CSV column of the same name.
TEXT_FIELDS = ("first_name", "last_name", "company", "title", "phone", "source")
#: Every field that a CSV column or an ``update`` step may set.
SETTABLE_FIELDS = ("email", *TEXT_FIELDS, "timezone", "owner", "stage", "status")


class Lead(SQLModel, table=True):
    """A person whose details we hold and who showed some interest."""

    __tablename__ = "leads"

    id: int | None = Field(default=None, primary_key=True)
    #: Normalised and lower-cased, so that it compares case-insensitively.
    email: str = Field(max_length=320, unique=True, index=True)
    first_name: str | None = Field(default=None, max_length=200)
    last_name: str | None = Field(default=None, max_length=200)
    company: str | None = Field(default=None, max_length=300)
    title: str | None = Field(default=None, max_length=300)
    phone: str | None = Field(default=None, max_length=64)
    #: IANA timezone name; ``None`` means the project's default timezone.
    timezone: str | None = Field(default=None, max_length=64)
    #: The salesperson who owns the lead (an email address).
    owner: str | None = Field(default=None, max_length=320, index=True)
    source: str | None = Field(default=None, max_length=200, index=True)
    stage: str = Field(default=Stage.cold.value, sa_type=String(16), index=True)
    status: str = Field(default=ContactStatus.subscribed.value, sa_type=String(16))
    #: The last consent given (a form's, or an API item's): what was agreed to (text,
    #: version), when, where (form, API key) and from which IP.
    consent: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONType, nullable=True))
    #: Every other column of the import, as ``lead.NAME`` in expressions.
    attributes: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSONType, nullable=False)
    )
    created_at: datetime = Field(default_factory=clock.now, sa_type=UTCDateTime)
    #: Indexed: each pass looks at the leads changed since the one before.
    updated_at: datetime = Field(default_factory=clock.now, sa_type=UTCDateTime, index=True)
    #: Engagement score as of ``scored_at`` (it decays from there), and fit score.
    engagement: float = 0.0
    fit: float = 0.0
    scored_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    #: Events before this moment no longer count (the lead was recycled).
    score_reset_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    #: The stage the scores gave at the last review; a crossing is a change of it.
    score_stage: str = Field(default="cold", sa_type=String(16))
    #: When decay may next move the lead down a stage: the pass looks again then.
    stage_review_at: datetime | None = Field(default=None, sa_type=UTCDateTime, index=True)

    @property
    def full_name(self) -> str:
        """First and last name, or empty when neither is known."""
        return " ".join(part for part in (self.first_name, self.last_name) if part)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view of the lead (the shape of ``leads show --json``)."""
        return {
            "email": self.email,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "company": self.company,
            "title": self.title,
            "phone": self.phone,
            "timezone": self.timezone,
            "owner": self.owner,
            "source": self.source,
            "stage": str(self.stage),
            "status": str(self.status),
            "attributes": dict(self.attributes or {}),
            "consent": dict(self.consent) if self.consent else None,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
        }


@lru_cache(maxsize=4096)  # owners and senders repeat on every row of an import
def normalize_email(value: str) -> str:
    """Return the canonical, lower-cased form of an email address, or raise."""
    candidate = value.strip()
    if not candidate:
        raise InvalidValueError("email is empty")
    try:
        checked = validate_email(candidate, check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidValueError(f"invalid email {candidate!r}: {exc}") from None
    return checked.normalized.lower()


@cache
def _timezones() -> frozenset[str]:
    return frozenset(available_timezones())


#: Characters no database column can hold (PostgreSQL refuses NUL and unpaired
#: surrogates) and control characters that have no place in a name, title or note.
UNSTORABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def describe_character(character: str) -> str:
    """``"\\x00"`` -> ``"the NUL character (U+0000)"``: a bad character, named for a person."""
    code = f"U+{ord(character):04X}"
    if character == "\x00":
        return f"the NUL character ({code})"
    if "\ud800" <= character <= "\udfff":
        return f"an unpaired surrogate ({code})"
    return f"a control character ({code})"


def check_storable(name: str, value: str) -> None:
    """Raise :class:`InvalidValueError` naming *name* if *value* holds a character that
    cannot be stored (NUL, an unpaired surrogate, a control character)."""
    bad = UNSTORABLE.search(value)
    if bad:
        raise InvalidValueError(f"{name}: {describe_character(bad.group())} is not allowed")


_OFFSET = re.compile(r"(?:utc|gmt)?\s*([+-])\s*(\d{1,2})(?::?(\d{2}))?", re.IGNORECASE)


def suggest_timezone(value: str) -> str:
    """A hint for a timezone that is not an IANA name: ``Paris`` -> ``Europe/Paris``."""
    name = value.strip()
    if not name:
        return ""
    if _OFFSET.fullmatch(name):
        # Etc/GMT+1 is UTC-1: never suggest the POSIX names with their reversed sign.
        return (
            " (an offset has no daylight saving and is not a place:"
            " use an IANA name like 'Europe/Berlin')"
        )
    zones = _timezones()
    by_city = {zone.rsplit("/", 1)[-1].lower(): zone for zone in zones if "/" in zone}
    folded = name.replace(" ", "_").lower()
    exact = {zone.lower(): zone for zone in zones}.get(folded) or by_city.get(folded)
    if exact:
        return f" (did you mean '{exact}'?)"
    close = close_match(folded, by_city)
    if close:
        return f" (did you mean '{by_city[close]}'?)"
    return did_you_mean(name, zones) or " (use an IANA name like 'Europe/Warsaw')"


def check_timezone(value: str) -> str:
    """Return *value* if it is an IANA timezone name, or raise with a did-you-mean."""
    name = value.strip()
    if name in _timezones():
        return name
    raise InvalidValueError(f"unknown timezone {value!r}{suggest_timezone(value)}")


def parse_stage(value: str) -> Stage:
    """Return the :class:`Stage` named by *value* (case-insensitive), or raise."""
    try:
        return Stage(value.strip().lower())
    except ValueError:
        choices = ", ".join(stage.value for stage in Stage)
        raise InvalidValueError(f"unknown stage {value!r} (one of: {choices})") from None


def parse_status(value: str) -> ContactStatus:
    """Return the :class:`ContactStatus` named by *value* (case-insensitive), or raise."""
    try:
        return ContactStatus(value.strip().lower())
    except ValueError:
        choices = ", ".join(status.value for status in ContactStatus)
        raise InvalidValueError(f"unknown status {value!r} (one of: {choices})") from None


def parse_field(name: str, value: str) -> Any:
    """Validate and convert the text *value* for the lead field *name*."""
    check_storable(name, value)
    if name == "email":
        return normalize_email(value)
    if name == "owner":
        return normalize_email(value)
    if name == "timezone":
        return check_timezone(value)
    if name == "stage":
        return parse_stage(value).value
    if name == "status":
        return parse_status(value).value
    text = value.strip()
    limit = _max_length(name)
    if limit is not None and len(text) > limit:
        raise InvalidValueError(f"{name} is longer than {limit} characters")
    return text


@cache
def _max_length(name: str) -> int | None:
    column = Lead.__table__.c[name]  # type: ignore[attr-defined]
    return getattr(column.type, "length", None)


def merge_status(current: str, incoming: str) -> str:
    """The status after new data says *incoming*: an opt-out or bounce is never undone.

    Only a deliberate act (a new opt-in recorded by the tracking server, such as a
    confirmed double opt-in) resubscribes a lead, never a later import. ``pending``
    (waiting for a double opt-in) is only ever a new lead's status: it holds back no one
    who is already known.
    """
    if current != ContactStatus.subscribed and incoming == ContactStatus.subscribed:
        return current
    if incoming == ContactStatus.pending and current != ContactStatus.pending:
        return current
    return incoming
