"""A built message as the text stored in the outbox and handed to the server.

The email package's compat32 generator is what nurture serialises with; two of its
habits cost more than the rest of an email's making, and are avoided here without
changing a byte of what it writes:

- It writes every header through :class:`email.header.Header`, even a plain ASCII one
  that needs no encoding nor folding (``as_string`` folds nothing). :class:`_Policy`
  writes such a header as it is (what ``Header.encode`` returns for it) and leaves every
  other one to compat32.
- For a multipart message it draws a random boundary and searches the whole text for
  it with a freshly compiled expression. When every part is quoted-printable or
  base64, a boundary that begins with ``=_`` can occur in neither (quoted-printable
  writes ``=`` as ``=3D``, base64 has no ``=_``), so one is set without the search.
"""

from __future__ import annotations

import secrets
from email.message import Message
from email.policy import Compat32

_SAFE_ENCODINGS = {"quoted-printable", "base64"}


class _Policy(Compat32):
    """compat32, with short plain ASCII headers written without the Header machinery."""

    def fold(self, name: str, value: str) -> str:
        if (
            isinstance(value, str)
            and value.isascii()
            and (not self.max_line_length or len(name) + 2 + len(value) <= self.max_line_length)
            and "\n" not in value
            and "\r" not in value
            and "=?" not in value
        ):
            return f"{name}: {value}{self.linesep}"
        return super().fold(name, value)


_POLICY = _Policy()


def as_text(message: Message) -> str:
    """*message* serialised, exactly as ``message.as_string()`` would, only faster."""
    if message.is_multipart() and message.get_boundary() is None:
        parts = message.get_payload()
        assert isinstance(parts, list)
        if all(_safe(part) for part in parts):
            message.set_boundary(f"=_{secrets.token_hex(16)}")
    return message.as_string(policy=_POLICY)


def _safe(part: object) -> bool:
    """Whether no line of *part* can begin with ``--=_``."""
    if not isinstance(part, Message):
        return False
    encoding = str(part.get("Content-Transfer-Encoding", "")).lower()
    return not part.is_multipart() and encoding in _SAFE_ENCODINGS
