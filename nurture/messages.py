"""Turning a sequence step into the email a lead gets: variables, rendering, headers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from typing import Any

from nurture.expressions import LeadView, View
from nurture.templates import RenderedEmail, TemplateSet, clean_header
from nurture.tokens import sign

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
        name, email = parseaddr(text)
        return cls(clean_header(name), email.lower(), postal_address, title)

    @property
    def domain(self) -> str:
        return self.email.rpartition("@")[2] or "localhost"

    def view(self) -> View:
        values = {
            "name": self.name or self.email,
            "email": self.email,
            "postal_address": self.postal_address,
            "title": self.title,
        }
        # An empty value is undefined, so `sender.title | default(...)` works.
        return View({key: value for key, value in values.items() if value})


def unsubscribe_url(base_url: str, secret: str, lead_id: int, sequence: str, step: str) -> str:
    """The signed one-click unsubscribe link for one email."""
    token = sign(secret, UNSUBSCRIBE_PURPOSE, f"{lead_id}:{sequence}:{step}")
    return f"{base_url}/u/{token}"


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
) -> EmailMessage:
    """A multipart/alternative message with every header set safely.

    Names and subjects pass through :func:`clean_header` and :class:`Address`, so no
    value taken from lead data can add a header.
    """
    message = EmailMessage()
    message["From"] = Address(display_name=sender.name, addr_spec=sender.email)
    message["To"] = Address(display_name=clean_header(to_name), addr_spec=to_email)
    if reply_to:
        name, address = parseaddr(reply_to)
        message["Reply-To"] = Address(display_name=clean_header(name), addr_spec=address)
    message["Subject"] = clean_header(rendered.subject)
    message["Date"] = format_datetime(date)
    message["Message-ID"] = message_id or make_msgid(domain=sender.domain)
    targets = [f"<{unsubscribe}>"]
    if unsubscribe_mailto:
        targets.append(f"<mailto:{unsubscribe_mailto}?subject={unsubscribe.rsplit('/', 1)[-1]}>")
    message["List-Unsubscribe"] = ", ".join(targets)
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    return message


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
    *, sender: Sender, to_email: str, subject: str, body: str, date: datetime, message_id: str
) -> EmailMessage:
    """A plain-text message to a salesperson (a ``notify`` step): no unsubscribe headers."""
    message = EmailMessage()
    message["From"] = Address(display_name=sender.name, addr_spec=sender.email)
    message["To"] = Address(addr_spec=to_email)
    message["Subject"] = clean_header(subject)
    message["Date"] = format_datetime(date)
    message["Message-ID"] = message_id
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(body)
    return message
