"""A lead's fields as people write them (a CSV column, an ``update`` step, an API
item, a form): their names, stages and statuses, and how each value is checked and
normalised. Pure: the table that stores them is :class:`nurture.store.leads.Lead`."""

from __future__ import annotations

import enum
import re
from functools import cache, lru_cache
from typing import Any
from zoneinfo import available_timezones

from email_validator import EmailNotValidError, validate_email

from nurture.errors import InvalidValueError
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

#: The longest value each text field may hold (the database columns are this wide).
MAX_LENGTHS = {
    "email": 320,
    "first_name": 200,
    "last_name": 200,
    "company": 300,
    "title": 300,
    "phone": 64,
    "timezone": 64,
    "owner": 320,
    "source": 200,
}


#: A local part email_validator takes as it is (ASCII dot-atom): the usual case.
_PLAIN_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_PLAIN_DOMAIN = re.compile(r"[A-Za-z0-9.-]+")


@lru_cache(maxsize=4096)  # owners and senders repeat on every row of an import
def normalize_email(value: str) -> str:
    """Return the canonical, lower-cased form of an email address, or raise.

    A plain address (an ASCII dot-atom before the @, a domain whose checked form is
    itself) is checked by a pattern, its domain once per domain; any other goes through
    email_validator whole. Both give the same answer (``tests/unit/test_fields.py``).
    """
    candidate = value.strip()
    local, at, domain = candidate.rpartition("@")
    if (
        at
        and len(candidate) <= 254
        and _PLAIN_LOCAL.fullmatch(local)
        and _PLAIN_DOMAIN.fullmatch(domain)
        and _plain_domain(domain.lower())
    ):
        return candidate.lower()
    return _validated(candidate)


@lru_cache(maxsize=65536)  # companies' domains, each on many rows
def _plain_domain(domain: str) -> bool:
    """Whether email_validator takes *domain* (lower-case ASCII) as it is."""
    try:
        checked = validate_email(f"a@{domain}", check_deliverability=False)
    except EmailNotValidError:
        return False
    return checked.domain == domain


def _validated(candidate: str) -> str:
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


#: Line breaks: a name, title or phone is one line (it goes into headers and greetings).
LINE_BREAK = re.compile("[\r\n\x85\u2028\u2029]")


def check_one_line(name: str, value: str) -> None:
    """Raise :class:`InvalidValueError` naming *name* if *value* holds a line break."""
    if LINE_BREAK.search(value):
        raise InvalidValueError(f"{name}: a line break is not allowed (one line of text)")


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


def name_key(name: str) -> str:
    """A person's name as it is matched ("Sam  PATEL" is "sam patel"): case and spacing
    do not count."""
    return " ".join(name.casefold().split())


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
    check_one_line(name, value)
    text = value.strip()
    limit = _max_length(name)
    if limit is not None and len(text) > limit:
        raise InvalidValueError(f"{name} is longer than {limit} characters")
    return text


def _max_length(name: str) -> int | None:
    return MAX_LENGTHS.get(name)


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
