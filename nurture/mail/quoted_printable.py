"""Quoted-printable bodies, exactly as the email package writes them, only faster.

A text part set with ``set_payload(text, charset)`` for a UTF-8 charset whose body
encoding is quoted-printable gets its body from :func:`email.quoprimime.body_encode`
(through :meth:`email.charset.Charset.body_encode`): each byte that is not printable
ASCII (or is ``=``) is escaped as ``=XX``, every line break (CR LF, CR, LF) becomes LF,
and lines longer than 76 characters are cut with soft breaks (``=`` at the end). That
escaping runs in Python, one character at a time, and was most of the cost of building
an email.

:func:`body_encode` gives the very same text. Text whose only byte to escape is ``=``
(most HTML) needs one ``replace``; other text is escaped by :func:`binascii.b2a_qp`
(C), and what it does differently is undone (its own soft breaks, its escaping of a
lone ``.`` at the start of a line and of white space at the end of a line). Then the
email package's way of cutting long lines and of protecting white space at the end of
a line is applied, to those lines only. Text with a NUL goes the email package's own
way. ``tests/unit/test_quoted_printable.py`` compares the two over many
tricky texts.
"""

from __future__ import annotations

import binascii
from email import quoprimime

#: The longest encoded line, soft break included (RFC 2045; the email package's).
MAX_LINE = 76
#: The bytes quoprimime writes as they are (line feeds are line breaks).
_SAFE = bytes(range(0x20, 0x7F)).replace(b"=", b"") + b"\t\n"
_WHITE = (" ", "\t")
#: The bytes of UTF-8 sequences beyond ASCII.
_HIGH = bytes(range(0x80, 0x100))


def body_encode(text: str) -> str:
    """*text* (UTF-8) as a quoted-printable body with LF line ends: what
    ``MIMEText``-style ``set_payload(text, utf8_quoted_printable_charset)`` stores."""
    if not text:
        return text
    if "\x00" in text:
        return quoprimime.body_encode(text.encode("utf-8").decode("latin-1"))
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    data = text.encode("utf-8")
    unsafe = data.translate(None, _SAFE).replace(b"=", b"")  # the bytes to escape, but "="
    if not unsafe:
        flat = text.replace("=", "=3D")
    elif unsafe.translate(None, _HIGH) or len(chars := set(unsafe.decode("utf-8"))) > 16:
        flat = _escaped(data)  # control characters, or many different letters
    else:  # a few letters beyond ASCII (a name): each replaced by its escape
        flat = text.replace("=", "=3D")
        for char in chars:
            flat = flat.replace(char, "=" + char.encode("utf-8").hex("=").upper())
    lines = flat.split("\n")
    if " \n" in flat or "\t\n" in flat or flat[-1] in " \t":
        return "\n".join([_cut(line) if len(line) > MAX_LINE or line.endswith(_WHITE) else line
                          for line in lines])  # fmt: skip
    if max(map(len, lines)) <= MAX_LINE:
        return flat
    return "\n".join([_cut(line) if len(line) > MAX_LINE else line for line in lines])


def _escaped(data: bytes) -> str:
    """*data* (no CR, no NUL) with every byte escaped that quoprimime escapes, and
    nothing else: no soft breaks yet."""
    encoded = binascii.b2a_qp(data)
    # In b2a_qp's output, "=" is followed by two hex digits or by the line feed of a
    # soft break; "=2E", "=20" and "=09" can only be its escapes of a lone "." at a
    # line's start and of white space at a line's end, which quoprimime does not make.
    encoded = encoded.replace(b"=\n", b"")
    for escape, byte in ((b"=2E", b"."), (b"=20", b" "), (b"=09", b"\t")):
        if escape in encoded:
            encoded = encoded.replace(escape, byte)
    return encoded.decode("ascii")


def _cut(line: str) -> str:
    """One escaped line as quoprimime writes it: pieces of at most 75 characters and a
    soft break, never splitting an escape, then its last character quoted when it is
    white space (a soft break before it when the line has no room left)."""
    if len(line) <= MAX_LINE and line[-1:] not in (" ", "\t"):
        return line
    pieces = []
    start = 0
    while len(line) - start > MAX_LINE:
        stop = start + MAX_LINE - 1
        if line[stop - 2] == "=":  # the escape's own "=" ends the piece as its soft break
            pieces.append(line[start : stop - 1])
            start = stop - 2
        elif line[stop - 1] == "=":
            pieces.append(line[start:stop])
            start = stop - 1
        else:
            pieces.append(line[start:stop] + "=")
            start = stop
    rest = line[start:]
    if rest and rest[-1] in " \t":
        quoted = f"={ord(rest[-1]):02X}"
        room = MAX_LINE + 1 - len(rest)
        if room >= 3:
            rest = rest[:-1] + quoted
        elif room == 2:
            rest = rest + "=\n"
        else:
            rest = rest[:-1] + "=\n" + quoted
    pieces.append(rest)
    return "\n".join(pieces)
