"""Out-of-office answers: told apart from replies, read for the day the person is back,
and turned into a pause of the lead's sequences until the next business day after it.

An out-of-office is an automatic reply (RFC 3834 ``Auto-Submitted: auto-replied``,
``X-Autoreply``, ``X-Autorespond``, ``Precedence: auto_reply``) or a message whose
subject is one of the usual ones in English, German, French, Spanish, Italian,
Portuguese, Dutch or Polish. Its return date is read from its own text (and subject)
by ``dateparser`` in those languages; with none found, the person is taken to be away
:data:`DEFAULT_AWAY`.

:func:`out_of_office`, :func:`return_date` and :func:`read_absence` are pure;
:func:`pause_lead` pauses.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from email.message import EmailMessage, Message
from typing import Any

from sqlmodel import Session

from nurture.language.excerpt import reply_excerpt
from nurture.language.timing import localize, next_business_day, zone
from nurture.store.leads import Lead
from nurture.store.pausing import pause_while_away

#: The languages the subjects and return dates are read in.
LANGUAGES = ("en", "de", "fr", "es", "it", "pt", "nl", "pl")
#: How long someone whose answer names no return date is taken to be away.
DEFAULT_AWAY = timedelta(days=7)
#: A date further than this is not a return date (a signature's, a quoted one's).
FURTHEST = timedelta(days=366)
#: How much of the answer's own text is read for the date.
TEXT_LINES, TEXT_CHARACTERS = 15, 3000

_SUBJECTS = re.compile(
    r"^\s*(\[[^\]]{0,40}\]\s*)?("
    # English
    r"out of (the )?office|ooo\b|automatic reply|automatic response|auto[- ]?reply|"
    r"auto[- ]?response|autoreply|auto:|away from (the )?office|on vacation|on holiday|"
    r"on leave|annual leave|"
    # German
    r"abwesenheit|automatische antwort|nicht im büro|au(ß|ss)er haus|im urlaub|urlaub|"
    # French
    r"r[ée]ponse automatique|absent(e)? du bureau|message d'absence|absence|en cong[ée]s?|"
    # Spanish
    r"respuesta autom[áa]tica|fuera de (la )?oficina|respuesta de ausencia|ausencia|"
    r"ausente|de vacaciones|"
    # Italian
    r"risposta automatica|fuori (dall'|dal )?ufficio|fuori sede|assente|assenza|in ferie|"
    # Portuguese
    r"resposta autom[áa]tica|fora do escrit[óo]rio|aus[êe]ncia|de f[ée]rias|"
    # Dutch
    r"automatisch antwoord|niet aanwezig|afwezig(heid)?|buiten kantoor|met vakantie|"
    # Polish
    r"odpowied[źz] automatyczna|automatyczna odpowied[źz]|poza biurem|nieobecno[śs][ćc]|"
    r"nieobecn[ya]|urlop)",
    re.IGNORECASE,
)


def out_of_office(message: Message) -> str | None:
    """Why *message* is an out-of-office answer (the header or subject that says so), or
    ``None``. ``Auto-Submitted: auto-generated`` and list mail are automatic, but not
    someone away."""
    auto = str(message.get("Auto-Submitted", "")).strip().lower()
    if auto.startswith("auto-replied"):
        return f"Auto-Submitted: {auto}"
    for header in ("X-Autoreply", "X-Autorespond", "X-Autoresponder"):
        if message.get(header) is not None:
            return header
    if str(message.get("Precedence", "")).strip().lower() == "auto_reply":
        return "Precedence: auto_reply"
    subject = unicodedata.normalize("NFC", str(message.get("Subject", "")))
    if _SUBJECTS.search(subject):
        return f"subject {subject.strip()[:60]!r}"
    return None


def return_date(text: str, today: date) -> date | None:
    """The day someone is back, as their answer *text* says, read on *today* (their
    local date): the latest date it names after today and within a year; ``None`` if it
    names none."""
    from dateparser.search import search_dates

    settings: dict[str, Any] = {
        "RELATIVE_BASE": datetime.combine(today, datetime.min.time()),
        "PREFER_DATES_FROM": "future",
        "REQUIRE_PARTS": ["day", "month"],
        "RETURN_AS_TIMEZONE_AWARE": False,
    }
    try:
        found = search_dates(text, languages=list(LANGUAGES), settings=settings) or []
    except (ValueError, OverflowError, TypeError, LookupError):
        return None
    days = [moment.date() for _, moment in found]
    later = [day for day in days if today < day <= today + FURTHEST]
    return max(later, default=None)


@dataclass(frozen=True)
class Away:
    """What an out-of-office answer says."""

    #: The day they are back (read, or :data:`DEFAULT_AWAY` after the answer).
    until: date
    #: Whether the answer named it.
    read: bool
    #: When their sequences go on: the start of the next business day after *until*,
    #: in their timezone.
    resume_at: datetime

    def words(self) -> str:
        """``out of office until 12 March``."""
        return away_words(self.until)

    def as_data(self) -> dict[str, Any]:
        """The ``out_of_office`` event's data keys."""
        return {"until": self.until.isoformat(), "until_read": self.read,
                "resume_at": self.resume_at.isoformat()}  # fmt: skip


def away_words(until: date, today: date | None = None) -> str:
    """``out of office until 12 March`` (with the year when it is not *today*'s)."""
    year = f" {until.year}" if today is not None and until.year != today.year else ""
    return f"out of office until {until.day} {until:%B}{year}"


def read_absence(message: EmailMessage, timezone: str, now: datetime) -> Away:
    """When the sender of *message*, received *now*, is back and their sequences go on
    (*timezone*: theirs)."""
    tz = zone(timezone)
    today = now.astimezone(tz).date()
    text = "\n".join(
        (str(message.get("Subject", "")), reply_excerpt(message, TEXT_LINES, TEXT_CHARACTERS))
    )
    until = return_date(text, today)
    read = until is not None
    until = until or today + DEFAULT_AWAY
    return Away(until, read, localize(next_business_day(until), 0, tz))


def absence_of(
    session: Session, lead_id: int, message: EmailMessage, default_timezone: str, now: datetime
) -> Away | None:
    """Read when the lead is back; ``None`` if the lead is gone."""
    lead = session.get(Lead, lead_id)
    if lead is None:
        return None
    return read_absence(message, lead.timezone or default_timezone, now)


def pause_lead(session: Session, lead_id: int, away: Away, now: datetime) -> int:
    """Pause the lead's sequences until *away* says they are back (their emails held)."""
    return pause_while_away(session, lead_id, until=away.resume_at, reason=away.words(),
                            now=now)  # fmt: skip


def still_away(events: Iterable[Any], today: date) -> str:
    """``out of office until 12 March`` while the latest out-of-office of a lead's
    *events* (oldest first) says they are away on *today* (and no reply of theirs came
    after it); ``""`` otherwise."""
    until: date | None = None
    for event in events:
        if event.type == "out_of_office":
            try:
                until = date.fromisoformat(str(event.data.get("until") or ""))
            except ValueError:
                until = None
        elif event.type == "email_replied":
            until = None  # they wrote back themselves: they are there
    return away_words(until, today) if until is not None and until >= today else ""
