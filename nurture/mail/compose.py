"""Turning a sequence step into the email a lead gets: variables, rendering, headers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from email import message_from_string, policy
from email.header import Header
from email.message import EmailMessage, Message
from email.mime.multipart import MIMEMultipart
from email.utils import format_datetime, make_msgid, parseaddr
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from nurture.config.sections import sender_key
from nurture.language.expressions import LeadView, View
from nurture.language.templates import RenderedEmail, TemplateSet, clean_header
from nurture.mail.addresses import Utf8Header, header_address, wire_address, wire_domain
from nurture.mail.senders import SenderChoice, pick_sender
from nurture.mail.tracking import track_email
from nurture.mail.wire import TextPart
from nurture.tokens import seal, unseal, verify

if TYPE_CHECKING:
    from nurture.config import Config
    from nurture.engine.context import Context
    from nurture.language.sequences import Sequence
    from nurture.store.advancing import DueLead
    from nurture.store.leads import Lead

UNSUBSCRIBE_PURPOSE = "unsubscribe"


@dataclass(frozen=True)
class Sender:
    """Who an email is from, as the sequence and ``[sender]`` say."""

    name: str
    email: str
    postal_address: str = ""
    title: str = ""

    @classmethod
    def parse(cls, text: str, postal_address: str = "", title: str = "") -> Sender:
        if cls is Sender:  # the same few senders, for every email
            return _parsed_sender(text, postal_address, title)
        return cls._parse(text, postal_address, title)

    @classmethod
    def _parse(cls, text: str, postal_address: str, title: str) -> Sender:
        name, email = parseaddr(text)
        # One form of the address wherever a sender is stored and looked up.
        return cls(clean_header(name), sender_key(email), postal_address, title)

    @property
    def domain(self) -> str:
        """The ASCII form of the sender's domain (for Message-IDs)."""
        return wire_domain(self.email)

    def view(self) -> View:
        values = {
            "name": self.name or self.email,
            "email": self.email,
            "postal_address": self.postal_address,
            "title": self.title,
        }
        # An empty value is undefined, so `sender.title | default(...)` works.
        return View({key: value for key, value in values.items() if value})


@lru_cache(maxsize=256)
def _parsed_sender(text: str, postal_address: str, title: str) -> Sender:
    return Sender._parse(text, postal_address, title)


#: The lead id a test send's unsubscribe link names: no lead has it.
TEST_LEAD_ID = 0


def person_mark(secret: str, email: str) -> str:
    """A keyed hash of the address *email*, for links that must act on that person only
    (an id may name someone else one day; this mark cannot)."""
    digest = hmac.new(secret.encode(), f"person:{email}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")[:16]


def unsubscribe_url(
    base_url: str, secret: str, lead_id: int, sequence: str, step: str, email: str | None = None
) -> str:
    """The one-click unsubscribe link for one email: its token is sealed (signed and
    unreadable: it names the lead, the sequence and the step) and, given the lead's
    *email*, bound to the person: it acts on no one else, whatever their id."""
    payload = f"{lead_id}:{sequence}:{step}"
    if email is not None:
        payload = f"p{person_mark(secret, email)}:{payload}"
    return f"{base_url}/u/{seal(secret, UNSUBSCRIBE_PURPOSE, payload)}"


@dataclass(frozen=True)
class UnsubscribeLink:
    """What a genuine unsubscribe token names."""

    lead_id: int
    sequence: str
    step: str
    #: The person's mark (:func:`person_mark`); ``None`` in links made before links
    #: were bound to their person.
    person: str | None

    def names(self, secret: str, email: str, created_at: datetime, bound_since: datetime) -> bool:
        """Whether the link acts on the lead with *email*: its mark says so, or (an old
        link without one) the lead existed before links were bound, so its id cannot
        have been reused for it."""
        if self.person is not None:
            return hmac.compare_digest(self.person, person_mark(secret, email))
        return created_at <= bound_since


def read_unsubscribe_link(secret: str, token: str) -> UnsubscribeLink | None:
    """The :class:`UnsubscribeLink` of a genuine unsubscribe token, else ``None``.

    Emails sent before tokens were sealed carry a signed token whose payload is
    readable (``payload.mac``): it cannot be forged either, and the law wants an
    unsubscribe link to keep working, so it is still honoured."""
    payload = unseal(secret, UNSUBSCRIBE_PURPOSE, token)
    if payload is None and "." in token:
        payload = verify(secret, UNSUBSCRIBE_PURPOSE, token)
    if payload is None:
        return None
    person = None
    if payload.startswith("p"):
        person, _, payload = payload[1:].partition(":")
        if len(person) != 16:
            return None
    lead_id, _, rest = payload.partition(":")
    sequence, _, step = rest.partition(":")
    if not (lead_id.isdigit() and lead_id.isascii()):
        return None
    return UnsubscribeLink(int(lead_id), sequence, step, person)


def read_unsubscribe(secret: str, token: str) -> tuple[int, str, str] | None:
    """``(lead id, sequence, step)`` of a genuine unsubscribe token, else ``None``.

    Emails sent before tokens were sealed carry a signed token whose payload is
    readable (``payload.mac``): it cannot be forged either, and the law wants an
    unsubscribe link to keep working, so it is still honoured."""
    link = read_unsubscribe_link(secret, token)
    return None if link is None else (link.lead_id, link.sequence, link.step)


def template_variables(
    lead: LeadView, sender: Sender, sequence: Any, step_id: str, unsubscribe: str
) -> dict[str, Any]:
    """What an email template sees."""
    return {
        "lead": lead,
        "sender": sender.view(),
        "sequence": View({"name": sequence.name, "description": sequence.description}),
        "step": View({"id": step_id}),
        "unsubscribe_url": unsubscribe,
    }


def _text_part(body: str, subtype: str) -> TextPart:
    """A UTF-8 quoted-printable ``text/SUBTYPE`` part (readable, and safe for any line
    length)."""
    return TextPart(subtype, body)


def _header(value: str) -> str:
    """A header value: as it is when ASCII, else RFC 2047 encoded words."""
    return value if value.isascii() else _encoded_header(value)


@lru_cache(maxsize=256)  # a few subjects of each template (a first name in some)
def _encoded_header(value: str) -> str:
    return Header(value, "utf-8").encode()


def _set_address(message: Message, header: str, name: str, email: str) -> None:
    """Set an address header (see :func:`~nurture.mail.addresses.header_address`: a
    :class:`~nurture.mail.addresses.Utf8Header` when the local part is not ASCII)."""
    message[header] = header_address(name, email)  # type: ignore[assignment]


@lru_cache(maxsize=256)
def _sender_address(name: str, email: str) -> str | Utf8Header:
    """The From or Reply-To value of a sender: the same for every email it sends."""
    return header_address(name, email)


@lru_cache(maxsize=256)
def _reply_to(reply_to: str) -> str | Utf8Header:
    return header_address(*parseaddr(reply_to))


def _date(date: datetime) -> str:
    """The Date value of *date*: its wall clock to the second and its UTC offset (emails
    of one pass share them; equal instants in two zones do not)."""
    return _formatted_date(date.replace(microsecond=0, tzinfo=None), date.utcoffset())


@lru_cache(maxsize=64)
def _formatted_date(wall: datetime, offset: timedelta | None) -> str:
    return format_datetime(wall if offset is None else wall.replace(tzinfo=timezone(offset)))


@lru_cache(maxsize=64)
def _mailto(address: str) -> str:
    """A ``mailto:`` address for List-Unsubscribe (RFC 6068)."""
    return quote(wire_address(clean_header(address)), safe="@")


def build_message(
    rendered: RenderedEmail,
    *,
    sender: Sender,
    to_email: str,
    to_name: str,
    date: datetime,
    unsubscribe: str,
    unsubscribe_mailto: str = "",
    reply_to: str = "",
    message_id: str | None = None,
    feedback_id: str = "",
) -> Message:
    """A multipart/alternative message (quoted-printable UTF-8 parts) with every header
    set safely: names and subjects pass through :func:`clean_header`, so no value taken
    from lead data can add a header.

    Built with the email package's compat32 classes, which serialise about four times
    faster than :class:`~email.message.EmailMessage` (bench/README.md); read it back
    with :func:`parse` for the modern API.
    """
    message = MIMEMultipart("alternative")
    message["From"] = _sender_address(sender.name, sender.email)  # type: ignore[assignment]
    _set_address(message, "To", to_name, to_email)
    if reply_to:
        message["Reply-To"] = _reply_to(reply_to)  # type: ignore[assignment]
    message["Subject"] = _header(clean_header(rendered.subject))
    message["Date"] = _date(date)
    message["Message-ID"] = message_id or make_msgid(domain=sender.domain)
    targets = [f"<{unsubscribe}>"]
    if unsubscribe_mailto:
        mailto = _mailto(unsubscribe_mailto)
        targets.append(f"<mailto:{mailto}?subject={unsubscribe.rsplit('/', 1)[-1]}>")
    message["List-Unsubscribe"] = ", ".join(targets)
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    if feedback_id:
        message["Feedback-ID"] = feedback_id
    message.attach(_text_part(rendered.text, "plain"))
    message.attach(_text_part(rendered.html, "html"))
    return message


def parse(raw: str) -> EmailMessage:
    """A stored message, read back with the modern email API."""
    parsed = message_from_string(raw, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def render_step_email(
    templates: TemplateSet,
    template: str,
    lead: LeadView,
    sender: Sender,
    sequence: Any,
    step_id: str,
    unsubscribe: str,
) -> RenderedEmail:
    """Render *template* for one lead at one step."""
    return templates.render(
        template, template_variables(lead, sender, sequence, step_id, unsubscribe)
    )


def build_notification(
    *,
    sender: Sender,
    to_email: str,
    subject: str,
    body: str,
    date: datetime,
    message_id: str,
    html: str = "",
    reply_to: str = "",
) -> Message:
    """A message to a salesperson (a ``notify`` step, a hand-off notice, a sign-in link,
    a digest): plain text, or text and *html* as alternatives; no unsubscribe headers."""
    message: Message
    if html:
        message = MIMEMultipart("alternative")
        message.attach(_text_part(body, "plain"))
        message.attach(_text_part(html, "html"))
    else:
        message = _text_part(body, "plain")
    _set_address(message, "From", sender.name, sender.email)
    _set_address(message, "To", "", to_email)
    if reply_to:
        name, address = parseaddr(reply_to)
        _set_address(message, "Reply-To", name, address)
    message["Subject"] = _header(clean_header(subject))
    message["Date"] = format_datetime(date)
    message["Message-ID"] = message_id
    message["Auto-Submitted"] = "auto-generated"
    return message


def sequence_sender(
    config: Config, sequence: Sequence, choice: SenderChoice | None = None
) -> Sender:
    """Who *sequence*'s emails come from (*choice*, the lead's pick: see
    :func:`~nurture.mail.senders.pick_sender`; else the sequence's own sender), with
    the project's postal address and title."""
    if choice is None:
        choice = pick_sender(sequence, config.settings, owner=None)
    settings = config.settings.sender
    return Sender.parse(choice.address, settings.postal_address, settings.title)


#: What a Feedback-ID field may hold (a colon would split it into more fields).
_FEEDBACK_FIELD = re.compile(r"[^A-Za-z0-9._@+-]+")


@lru_cache(maxsize=1024)
def feedback_id(step: str, sequence: str, sender: str) -> str:
    """``STEP:SEQUENCE:SENDER:nurture``, the fields Gmail's feedback loop reports on:
    each field keeps letters, digits and ``._@+-`` only (anything else becomes ``-``),
    so no value can split a field or add a header."""
    fields = [_FEEDBACK_FIELD.sub("-", value).strip("-")[:60] or "-"
              for value in (step, sequence, sender)]  # fmt: skip
    return ":".join([*fields, "nurture"])


@dataclass(frozen=True)
class ComposedEmail:
    message: Message
    sender: Sender
    #: The tracked links' original URLs, in order.
    links: list[str]
    #: Which sender it comes from, and why.
    choice: SenderChoice | None = None


def compose_email(
    ctx: Context,
    sequence: Sequence,
    step_id: str,
    template: str,
    lead: Lead | DueLead,
    view: LeadView,
    now: datetime,
    tracking_id: str | None,
    test_to: str | None = None,
    choice: SenderChoice | None = None,
) -> ComposedEmail:
    """The email *lead* gets at a step: rendered, tracked (with a *tracking_id*), with
    every header set. ``nurture preview`` shows exactly this. With *test_to*, the same
    email as a test for that address: ``[test]`` before the subject, and an unsubscribe
    link that names no lead (it opens a page that says so, and changes nothing).
    *choice*: the sender picked for the lead (else as :func:`pick_sender` picks it
    without the delivery's figures)."""
    assert lead.id is not None
    if choice is None:
        choice = pick_sender(sequence, ctx.config.settings, owner=lead.owner)
    sender = sequence_sender(ctx.config, sequence, choice)
    settings = ctx.config.settings
    base = settings.tracking.base_url
    lead_id = TEST_LEAD_ID if test_to else lead.id
    link = unsubscribe_url(base, ctx.secret, lead_id, sequence.name, step_id,
                           None if test_to else lead.email)  # fmt: skip
    rendered = render_step_email(ctx.templates, template, view, sender, sequence, step_id, link)
    links: list[str] = []
    if tracking_id is not None:
        body, text, links = track_email(rendered.html, rendered.text, base_url=base,
                                        secret=ctx.secret, tracking_id=tracking_id)  # fmt: skip
        rendered = replace(rendered, html=body, text=text)
    if test_to:
        rendered = replace(rendered, subject=f"[test] {rendered.subject}")
    message = build_message(
        rendered,
        sender=sender,
        to_email=test_to or lead.email,
        to_name="" if test_to else lead.full_name,
        date=now,
        unsubscribe=link,
        unsubscribe_mailto=settings.tracking.unsubscribe_mailto,
        reply_to=sequence.reply_to,
        message_id=make_msgid(domain=sender.domain),
        feedback_id=feedback_id(step_id, sequence.name, choice.name or sender.email),
    )
    return ComposedEmail(message, sender, links, choice)
