"""The first lines of a reply, as sales reads them in a notice: the person's own words,
without the quoted message, the signature or the client's "On ... wrote:" line."""

from __future__ import annotations

import re
from email.message import EmailMessage

#: At most this many lines, and this many characters, are kept.
LINES = 4
CHARACTERS = 400
_ATTRIBUTION = re.compile(
    r"^(on .{4,200} wrote:?|le .{4,200} a écrit ?:?|am .{4,200} schrieb .{0,100}:?|"
    r"el .{4,200} escribió:?|-{2,} ?original message ?-{2,}|from: .+|_{5,})\s*$",
    re.IGNORECASE,
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def first_lines(text: str, lines: int = LINES, limit: int = CHARACTERS) -> str:
    """The first *lines* non-empty lines of *text* before any quote or signature."""
    kept: list[str] = []
    for raw in text.replace("\r\n", "\n").split("\n"):
        line = _CONTROL.sub("", raw).strip()
        if line.startswith(">") or _ATTRIBUTION.match(line) or line in ("--", "-- "):
            break
        if line:
            kept.append(line)
        if len(kept) >= lines:
            break
    joined = "\n".join(kept)
    return joined if len(joined) <= limit else joined[: limit - 1].rstrip() + "…"


def reply_excerpt(message: EmailMessage, lines: int = LINES, limit: int = CHARACTERS) -> str:
    """The first *lines* lines of *message*'s own text (its plain part, else its HTML as
    text); empty when it has none that can be read."""
    try:
        part = message.get_body(("plain", "html"))
        if part is None:
            return ""
        content = part.get_content()
    except (LookupError, ValueError, AttributeError, TypeError):
        return ""
    if not isinstance(content, str):
        return ""
    if part.get_content_subtype() == "html":
        from nurture.language.templates import html_to_text

        content = html_to_text(content)
    return first_lines(content, lines, limit)
