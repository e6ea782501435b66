"""Mail to salespeople (hand-off notices, reminders, sign-in links, digests): written
from the package's own templates (``nurture/web/templates/mail/``, HTML and text), sent
through the outbox from a From with a display name and a Reply-To that reaches a
person. Mail that names no lead (a sign-in link, a digest) never touches one."""

from __future__ import annotations

from datetime import datetime
from email.utils import make_msgid
from functools import cache
from typing import Any

from jinja2 import PackageLoader, StrictUndefined
from jinja2.sandbox import SandboxedEnvironment
from sqlmodel import Session

from nurture.config import Config
from nurture.mail.compose import Sender, build_notification
from nurture.store.outbox import MessageKind, mention, queue_message


@cache
def environment() -> SandboxedEnvironment:
    """The environment of nurture's own pages and sales mail: strict, and HTML-escaped
    for ``.html.j2`` files."""
    env = SandboxedEnvironment(
        loader=PackageLoader("nurture.web", "templates"),
        autoescape=lambda name: bool(name and name.endswith(".html.j2")),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


def render(template: str, /, **values: Any) -> str:
    """Render the package template *template* with *values*."""
    return environment().get_template(template).render(**values)


def sales_sender(config: Config) -> Sender:
    """The From of mail to sales: ``[sales] from_address``, named after the project when
    it has no display name of its own."""
    sender = Sender.parse(config.settings.sales.from_address)
    if sender.name:
        return sender
    return Sender(f"{config.settings.project.name} leads", sender.email)


def reply_to(config: Config) -> str:
    """Where a salesperson's reply to our mail goes: ``[sales] reply_to``, else the
    first manager, else the sales inbox (empty: none)."""
    sales = config.settings.sales
    return sales.reply_to or (sales.managers[0] if sales.managers else "") or sales.notify_email


def queue_sales_mail(
    session: Session,
    config: Config,
    *,
    kind: MessageKind,
    key: str,
    to: str,
    subject: str,
    template: str,
    values: dict[str, Any],
    now: datetime,
    lead_id: int | None = None,
    mentions: set[int] | None = None,
) -> None:
    """Render ``mail/TEMPLATE.txt.j2`` and ``.html.j2`` and queue them to *to*, once per
    *key*, in the caller's transaction. *mentions*: the other leads the mail names (it
    goes with any of them when they are erased)."""
    sender = sales_sender(config)
    values = {"project": config.settings.project.name, **values}
    message = build_notification(
        sender=sender,
        to_email=to,
        subject=subject,
        body=render(f"mail/{template}.txt.j2", **values),
        html=render(f"mail/{template}.html.j2", subject=subject, **values),
        reply_to=reply_to(config),
        date=now,
        message_id=make_msgid(domain=sender.domain),
    )
    row = queue_message(
        session, message, kind=kind, key=key, lead_id=lead_id, sequence="sales",
        step=key.split(":")[0], sender=sender.email, recipient=to,
        timezone=config.settings.project.default_timezone, now=now,
    )  # fmt: skip
    if mentions:
        mention(session, row, mentions)
