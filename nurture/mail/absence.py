"""Out-of-office answers: told apart from replies, read for the day the person is back,
and turned into a pause of the lead's sequences until the next business day after it.

**What is one.** An automatic reply (RFC 3834 ``Auto-Submitted: auto-replied``, an
``X-Autoreply``/``X-Autorespond`` header other than ``no``, ``Precedence: auto_reply``)
or a message whose subject *starts* with one of the whole phrases auto-replies use in
English, German, French, Spanish, Italian, Portuguese, Dutch or Polish ("Out of office",
"Automatic reply", "Abwesenheitsnotiz", "Réponse automatique"…), followed by the end,
a colon, a bracket or a spaced dash: "Absence management demo?" or "Urlaubsplanung"
are a person's mail, and "Re: Out of office" is someone answering one.

**Its return date** (:func:`return_date`) is read from the answer's own text only, never
from its subject (which quotes ours, with the dates of our webinars):

- A date that follows a return cue ("back", "return", "until", "bis", "zurück",
  "jusqu'au", "de retour", "hasta", "fino al", "rientro", "até", "tot", "terug",
  "do", "powrót"…, :data:`CUES`) wins; the first such date in the text is taken. With
  none, the latest date written with a month name anywhere in the text is taken.
- Numbers are read as dates only after a cue, never bare ("Version 2.5", "open 9-17",
  a phone number). A numeric date is read day first (``10/03`` is 10 March) in every
  language but English; ``10.03.`` (dots) is day first in English too. In English a
  numeric date with slashes or dashes is read day first when its first number is over
  12, month first when its second is, and not at all when both could be the month
  (``03/10`` is left unread rather than guessed). Month names are read by
  ``dateparser`` in the cue's language.
- A date without a year is put in the year that brings it nearest to the day the
  answer came (``back on 2 March`` received on 3 March is yesterday, not next year);
  a weekday or "in two weeks" is the next one.

**What it does** (:func:`read_absence`): a return date today or earlier means the
person is back now (the ``out_of_office`` event is recorded with it, nothing is
paused); a date more than :data:`LONGEST_AWAY` ahead is not believed (a signature's
date, a misreading) and the person is taken to be away :data:`DEFAULT_AWAY`, as when
no date is found.

:func:`out_of_office`, :func:`automatic_subject`, :func:`return_date` and
:func:`read_absence` are pure; :func:`pause_lead` pauses.
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
#: How long someone whose answer names no return date (or one not believed) is away.
DEFAULT_AWAY = timedelta(days=7)
#: The longest pause an answer can ask for: a later date is not believed.
LONGEST_AWAY = timedelta(days=60)
#: How much of the answer's own text is read for the date.
TEXT_LINES, TEXT_CHARACTERS = 15, 3000
#: How far after a cue its date may start (``back in the office on Monday 8 March``).
CUE_REACH = 28

_PHRASES = (
    # English
    r"out of (the )?office( auto[- ]?reply)?|ooo|automatic reply|automatic response|"
    r"auto[- ]?reply|auto[- ]?response|autoreply|auto|away from (the )?office|"
    r"on vacation|on holiday|on leave|annual leave|"
    # German
    r"abwesenheitsnotiz|abwesenheit|abwesend|automatische antwort|nicht im büro|"
    r"au(ß|ss)er haus|im urlaub|"
    # French
    r"r[ée]ponse automatique|absent(e)? du bureau|absence du bureau|message d'absence|"
    r"en cong[ée]s?|"
    # Spanish
    r"respuesta autom[áa]tica|fuera de (la )?oficina|respuesta de ausencia|ausente|"
    r"de vacaciones|"
    # Italian
    r"risposta automatica|fuori (dall'|dal )?ufficio|fuori sede|assente|in ferie|"
    # Portuguese
    r"resposta autom[áa]tica|fora do escrit[óo]rio|de f[ée]rias|"
    # Dutch
    r"automatisch antwoord|niet aanwezig|afwezig(heid)?|buiten kantoor|met vakantie|"
    # Polish
    r"odpowied[źz] automatyczna|automatyczna odpowied[źz]|poza biurem|nieobecno[śs][ćc]|"
    r"nieobecn[ya]"
)
_SUBJECTS = re.compile(
    r"^\s*(\[[^\]]{0,40}\]\s*)?(" + _PHRASES + r")"
    # the whole phrase: then the end, a colon, a bracket or a dash with spaces round it
    r"\s*($|[:\uff1a(\[]|[-\u2013\u2014|]\s)",
    re.IGNORECASE,
)
#: Header values that say a message is *not* automatic.
_NOT = frozenset({"no", "false", "0", "off", "none"})

#: The words after which a return date comes, per language (the date's reading order
#: follows the cue's language).
CUES: dict[str, str] = {
    "en": r"back|return(s|ing)?|until|till|'?til|through",
    "de": r"bis( zum| einschlie(ß|ss)lich)?|zurück|ab",
    "fr": r"jusqu['\u2019]?(au|à)|de retour|retour( le)?",
    "es": r"hasta|regreso|regresar[ée]|de vuelta|vuelvo",
    "it": r"fino (al|a)|rientro|rientrer[òo]|ritorno",
    "pt": r"até|regresso|retorno|de volta|volto",
    "nl": r"tot( en met)?|terug",
    "pl": r"do|powr[óo]t|powrotu|wracam",
}
_CUE = re.compile(
    "|".join(rf"(?P<{language}>(?<!\w)({cues})(?!\w))" for language, cues in CUES.items()),
    re.IGNORECASE,
)
_NUMERIC = re.compile(
    r"(?<![\w.,/-])(?:(?P<iso>\d{4}-\d{1,2}-\d{1,2})|"
    r"(?P<a>\d{1,2})(?P<sep>[./-])(?P<b>\d{1,2})(?:(?P=sep)(?P<year>\d{4}|\d{2}))?(?P<dot>\.)?)"
    r"(?![\w,/-]|[.]\d)"
)
_YEAR = re.compile(r"(?<!\d)(19|20)\d{2}(?!\d)")


def automatic_subject(subject: str) -> bool:
    """Whether *subject* starts with a phrase of an automatic answer ("Out of office:",
    "Automatische Antwort", "Nieobecność"…) as a whole phrase."""
    return _SUBJECTS.search(unicodedata.normalize("NFC", subject)) is not None


def _says_yes(value: object) -> bool:
    return value is not None and str(value).strip().lower() not in _NOT


def out_of_office(message: Message) -> str | None:
    """Why *message* is an out-of-office answer (the header or subject that says so), or
    ``None``. ``Auto-Submitted: auto-generated`` and list mail are automatic, but not
    someone away."""
    auto = str(message.get("Auto-Submitted", "")).strip().lower()
    if auto.startswith("auto-replied"):
        return f"Auto-Submitted: {auto}"
    for header in ("X-Autoreply", "X-Autorespond", "X-Autoresponder"):
        if _says_yes(message.get(header)):
            return header
    if str(message.get("Precedence", "")).strip().lower() == "auto_reply":
        return "Precedence: auto_reply"
    subject = unicodedata.normalize("NFC", str(message.get("Subject", "")))
    if automatic_subject(subject):
        return f"subject {subject.strip()[:60]!r}"
    return None


def _nearest_year(day: date, today: date) -> date | None:
    """*day*'s month and day in the year that brings it nearest to *today*."""
    candidates = []
    for year in (today.year - 1, today.year, today.year + 1):
        try:
            candidates.append(day.replace(year=year))
        except ValueError:  # 29 February
            continue
    return min(candidates, key=lambda d: abs((d - today).days), default=None)


def _numeric(match: re.Match[str], language: str, today: date) -> date | None:
    """The date a numeric match stands for (see the module's doc on the order)."""
    if match["iso"]:
        try:
            return date.fromisoformat("-".join(f"{int(p):02d}" for p in match["iso"].split("-")))
        except ValueError:
            return None
    a, b, separator = int(match["a"]), int(match["b"]), match["sep"]
    if separator == "-" and not match["year"]:
        return None  # 9-17: hours, a range, never a date without its year
    if separator == "." or language != "en" or a > 12:
        day, month = a, b
    elif b > 12:
        day, month = b, a
    else:
        return None  # 03/10 in English: either; not guessed
    year = match["year"]
    try:
        if year:
            return date(int(year) + (2000 if len(year) == 2 else 0), month, day)
        return _nearest_year(date(2000, month, day), today)
    except ValueError:
        return None


def _named(text: str, language: str | None, today: date) -> list[tuple[int, date]]:
    """The dates written with words in *text* (a month name, a weekday, "in two weeks"),
    with where each starts; numbers alone are left out."""
    from dateparser.search import search_dates

    base = datetime.combine(today, datetime.min.time())
    settings: dict[str, Any] = {
        "RELATIVE_BASE": base,
        "PREFER_DATES_FROM": "future",
        "DATE_ORDER": "MDY" if language == "en" else "DMY",
        "RETURN_AS_TIMEZONE_AWARE": False,
    }
    languages = [language] if language else list(LANGUAGES)
    try:
        found = search_dates(text, languages=languages, settings=settings) or []
    except (ValueError, OverflowError, TypeError, LookupError):
        return []
    dates: list[tuple[int, date]] = []
    searched = 0
    for piece, moment in found:
        start = text.find(piece, searched)
        searched = max(start, 0) + len(piece)
        if not re.search(r"[^\W\d_]{3,}", piece):
            continue  # digits only: read by the numeric rule, after a cue only
        day = moment.date()
        if re.search(r"\d", piece):
            if not _YEAR.search(piece):
                day = _nearest_year(day, today) or day
        else:
            # Words only: a weekday or "in two weeks" is read the same forward and back
            # a week apart at most; a month alone ("March") is not a day.
            try:
                back = search_dates(piece, languages=languages,
                                    settings={**settings, "PREFER_DATES_FROM": "past"})  # fmt: skip
            except (ValueError, OverflowError, TypeError, LookupError):
                continue
            if not back or not timedelta(0) <= moment - back[0][1] <= timedelta(days=7):
                continue
        dates.append((max(start, 0), day))
    return dates


def return_date(text: str, today: date) -> date | None:
    """The day someone is back, as their answer *text* (its own words, not its subject)
    says, read on *today* (their local date): the first date after a return cue, else
    the latest date written with a month name; ``None`` if it names none. It may be
    today, past, or far ahead: :func:`read_absence` judges it."""
    flat = " ".join(text.split())
    for cue in _CUE.finditer(flat):
        language = cue.lastgroup or "en"
        window = flat[cue.end() : cue.end() + CUE_REACH + 40]
        numeric = _NUMERIC.search(window)
        named = [(start, day) for start, day in _named(window, language, today)
                 if start <= CUE_REACH]  # fmt: skip
        if numeric is not None and numeric.start() <= CUE_REACH and (
            not named or numeric.start() < named[0][0]
        ):
            day = _numeric(numeric, language, today)
            if day is not None:
                return day
        if named:
            return named[0][1]
    found = [day for _, day in _named(flat, None, today)]
    return max(found, default=None)


@dataclass(frozen=True)
class Away:
    """What an out-of-office answer says."""

    #: The day they are back (read, or :data:`DEFAULT_AWAY` after the answer).
    until: date
    #: Whether the answer named it (and it was believed).
    read: bool
    #: When their sequences go on: the start of the next business day after *until*,
    #: in their timezone; ``None`` when they are back already (*until* is today or past).
    resume_at: datetime | None
    #: A date the answer named but that was not believed (further than
    #: :data:`LONGEST_AWAY`), for the record.
    ignored: date | None = None

    def words(self) -> str:
        """``out of office until 12 March``."""
        return away_words(self.until)

    def as_data(self) -> dict[str, Any]:
        """The ``out_of_office`` event's data keys."""
        data: dict[str, Any] = {
            "until": self.until.isoformat(),
            "until_read": self.read,
            "resume_at": self.resume_at.isoformat() if self.resume_at else None,
        }
        if self.resume_at is None:
            data["back_now"] = True
        if self.ignored is not None:
            data["until_ignored"] = self.ignored.isoformat()
        return data


def away_words(until: date, today: date | None = None) -> str:
    """``out of office until 12 March`` (with the year when it is not *today*'s)."""
    year = f" {until.year}" if today is not None and until.year != today.year else ""
    return f"out of office until {until.day} {until:%B}{year}"


def read_absence(message: EmailMessage, timezone: str, now: datetime) -> Away:
    """When the sender of *message*, received *now*, is back and their sequences go on
    (*timezone*: theirs). Only the answer's own text is read, not its subject."""
    tz = zone(timezone)
    today = now.astimezone(tz).date()
    found = return_date(reply_excerpt(message, TEXT_LINES, TEXT_CHARACTERS), today)
    if found is not None and found <= today:
        return Away(found, True, None)  # back already
    if found is not None and found - today > LONGEST_AWAY:
        until = today + DEFAULT_AWAY
        return Away(until, False, localize(next_business_day(until), 0, tz), ignored=found)
    read = found is not None
    until = found or today + DEFAULT_AWAY
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
    """Pause the lead's sequences until *away* says they are back (their emails held).
    Nothing is paused when they are back already. An answer that names no date never
    brings an earlier absence's end nearer."""
    if away.resume_at is None:
        return 0
    return pause_while_away(session, lead_id, until=away.resume_at, reason=away.words(),
                            now=now, firm=away.read)  # fmt: skip


def still_away(events: Iterable[Any], today: date) -> str:
    """``out of office until 12 March`` while the latest out-of-office of a lead's
    *events* (oldest first) says they are away on *today* (and no reply of theirs came
    after it); ``""`` otherwise. One recorded without proof (a machine event) or saying
    they are back already tells nothing."""
    until: date | None = None
    for event in events:
        if event.type == "out_of_office":
            if getattr(event, "machine", False) or event.data.get("back_now"):
                continue
            try:
                until = date.fromisoformat(str(event.data.get("until") or ""))
            except ValueError:
                until = None
        elif event.type == "email_replied":
            until = None  # they wrote back themselves: they are there
    return away_words(until, today) if until is not None and until >= today else ""
