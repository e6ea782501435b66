"""A built message as the text stored in the outbox and handed to the server.

The email package's compat32 generator is what nurture serialises with; some of its
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
- It writes a message in hundreds of small writes (each line of each part, twice) to
  buffers, one per part, and asks each part its content type to choose a handler. A
  message of nurture's own making (:class:`TextPart` parts, alone or in a multipart)
  is written here in one piece instead, with the same header folding; any other
  message goes to the generator. ``tests/unit/test_wire.py`` holds the two to the
  same bytes.

:class:`TextPart` is a UTF-8 quoted-printable text part built without the cost of
``MIMENonMultipart`` and ``set_payload(body, charset)``: the same headers in the same
order, the same body (:func:`nurture.mail.quoted_printable.body_encode`).
"""

from __future__ import annotations

import secrets
from email.charset import QP, Charset
from email.generator import Generator
from email.message import Message
from email.policy import Compat32

from nurture.mail.quoted_printable import body_encode

_SAFE_ENCODINGS = {"quoted-printable", "base64"}
#: UTF-8 bodies as quoted-printable (readable, and safe for any line length).
UTF8_QP = Charset("utf-8")
UTF8_QP.body_encoding = QP


class _Policy(Compat32):
    """compat32, with plain ASCII headers written without the Header machinery."""

    def fold(self, name: str, value: str) -> str:
        # For a one-line printable ASCII value that needs no folding, Header(value).encode()
        # gives the value itself, encoded words ("=?utf-8?...?=") included: a us-ascii
        # header is only ever split at its line breaks and folded past its length.
        if (
            isinstance(value, str)
            and value.isascii()
            and value.isprintable()
            and len(value) < _UNFOLDED
            and (not self.max_line_length or len(name) + 2 + len(value) <= self.max_line_length)
        ):
            return f"{name}: {value}{self.linesep}"
        return super().fold(name, value)


#: With no line length set, Header folds a line past a million characters.
_UNFOLDED = 900_000
_POLICY = _Policy()
#: What ``as_string`` folds headers with: its ``maxheaderlen=0`` folds nothing.
_FOLDING = _POLICY.clone(max_line_length=0)
_NL = _FOLDING.linesep


class TextPart(Message):
    """A ``text/SUBTYPE`` part of *body* in UTF-8, quoted-printable: what
    ``MIMENonMultipart("text", subtype)`` then ``set_payload(body, UTF8_QP)`` make."""

    def __init__(self, subtype: str, body: str) -> None:
        super().__init__()
        self["MIME-Version"] = "1.0"
        self["Content-Type"] = f'text/{subtype}; charset="utf-8"'
        self["Content-Transfer-Encoding"] = "quoted-printable"
        self._encoded = body_encode(body)
        self.set_payload(self._encoded)
        self._charset = UTF8_QP

    def wire_body(self) -> str | None:
        """The body as the generator writes it: the payload :meth:`__init__` set (ASCII
        with LF line ends, written as it is), unless another was set since."""
        return self._encoded if self.get_payload() is self._encoded else None


def as_text(message: Message) -> str:
    """*message* serialised, exactly as ``message.as_string()`` would, only faster."""
    boundary = message.get_boundary() if message.is_multipart() else None
    if message.is_multipart() and boundary is None:
        parts = message.get_payload()
        assert isinstance(parts, list)
        if all(_safe(part) for part in parts):
            boundary = f"=_{secrets.token_hex(16)}"
            message.set_boundary(boundary)
    written = _written(message, boundary)
    return written if written is not None else message.as_string(policy=_POLICY)


def _written(message: Message, boundary: str | None = None) -> str | None:
    """*message* as ``as_string`` writes it when it is nurture's own making: a
    :class:`TextPart`, or a multipart of them with a boundary and no preamble nor
    epilogue; else ``None``. *boundary*: the message's, when already read."""
    if hasattr(message, "_write_headers") or type(message).as_string is not Message.as_string:
        return None  # it writes its own headers, or folds them (EmailMessage)
    if isinstance(message, TextPart):
        body = message.wire_body()
        if body is None or _handler(message.get_content_type()) not in _TEXT_HANDLERS:
            return None
        return _headers(message) + body
    parts = message.get_payload()
    boundary = boundary or message.get_boundary()
    if (
        not isinstance(parts, list)
        or not boundary
        or message.preamble is not None
        or message.epilogue is not None
        or _handler(message.get_content_type()) != "_handle_multipart"
    ):
        return None
    texts = []
    for part in parts:
        text = _written(part) if isinstance(part, Message) else None
        if text is None:
            return None
        texts.append(text)
    delimiter = f"--{boundary}{_NL}"
    return "".join([
        _headers(message), delimiter,
        (_NL + delimiter).join(texts),
        f"{_NL}--{boundary}--{_NL}",
    ])  # fmt: skip


def _headers(message: Message) -> str:
    """The header block of *message* and the blank line after it."""
    fold = _FOLDING.fold
    return "".join([fold(name, value) for name, value in message.raw_items()]) + _NL


#: The generator's methods that write a text body as it is (its lines' ends as LF).
_TEXT_HANDLERS = ("_handle_text", "_writeBody")


def _handler(content_type: str) -> str:
    """The name of the method the generator writes a part of *content_type* with."""
    main, _, sub = content_type.partition("/")
    for name in (f"_handle_{main}_{sub}", f"_handle_{main}"):
        if hasattr(Generator, name.replace("-", "_")):
            return name.replace("-", "_")
    return "_writeBody"


def _safe(part: object) -> bool:
    """Whether no line of *part* can begin with ``--=_``."""
    if not isinstance(part, Message):
        return False
    encoding = str(part.get("Content-Transfer-Encoding", "")).lower()
    return not part.is_multipart() and encoding in _SAFE_ENCODINGS
