"""Email addresses on the wire.

Leads' addresses are stored as :func:`nurture.language.fields.normalize_email` gives them: an
internationalised domain in its Unicode form (``anna@bücher.de``). Headers and the SMTP
envelope use the ASCII (A-label, punycode) form of the domain instead
(``anna@xn--bcher-kva.de``). A local part that is not ASCII (``zoë@example.com``) has no
ASCII form: such a message needs a server that offers SMTPUTF8 (RFC 6531), and its
address headers are written as UTF-8 (RFC 6532).
"""

from __future__ import annotations

from email.utils import formataddr
from functools import lru_cache

from email_validator import EmailNotValidError, validate_email

from nurture.errors import InvalidValueError
from nurture.language.templates import clean_header

#: Why a message that needs SMTPUTF8 fails on a server that does not offer it.
NO_SMTPUTF8 = "the mail server does not accept internationalised addresses (SMTPUTF8)"


@lru_cache(maxsize=4096)
def wire_address(address: str) -> str:
    """*address* with its domain in ASCII (A-labels); the local part as it is.

    Raises :class:`~nurture.errors.InvalidValueError` for an address that is not valid.
    """
    local, _, domain = address.rpartition("@")
    if not local or domain.isascii():
        return address
    try:
        checked = validate_email(address, check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidValueError(f"invalid email {address!r}: {exc}") from None
    return f"{local}@{checked.ascii_domain}"


def wire_domain(address: str) -> str:
    """The ASCII form of the domain of *address* (``localhost`` when there is none)."""
    return wire_address(address).rpartition("@")[2] or "localhost"


def needs_smtputf8(address: str) -> bool:
    """Whether *address* can travel only with SMTPUTF8 (its local part is not ASCII)."""
    return not wire_address(address).isascii()


class Utf8Header:
    """A header value written exactly as it is (UTF-8, RFC 6532), for an address whose
    local part is not ASCII: encoded words (RFC 2047) are not allowed in an address.

    The email package's compat32 generator calls :meth:`encode` on a header value that
    is not a ``str``; the value was built from cleaned parts, so it holds no line break.
    """

    def __init__(self, value: str) -> None:
        self.value = value

    def encode(self, linesep: str = "\n", maxlinelen: int | None = None, **_: object) -> str:
        return self.value

    def __str__(self) -> str:
        return self.value


def header_address(name: str, address: str) -> str | Utf8Header:
    """``Name <address>`` for a header: both cleaned of line breaks, the name quoted or
    encoded (RFC 2047) as needed, the domain in ASCII; UTF-8 when the local part is not
    ASCII."""
    wire = wire_address(clean_header(address))
    if wire.isascii():
        return formataddr((clean_header(name), wire), "utf-8")
    placeholder = "x@x.invalid"  # formataddr refuses a non-ASCII address; only the name is its job
    shown = formataddr((clean_header(name), placeholder), "utf-8")
    return Utf8Header(shown.replace(placeholder, wire))
