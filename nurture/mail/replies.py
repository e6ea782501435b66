"""Reply detection: poll the ``[replies]`` IMAP mailbox and turn what arrives into events.

Each new message is classified (:func:`classify`, pure): a bounce report (DSN) becomes
``email_bounced``; an abuse report (ARF) ``complained``; a mail to the
``List-Unsubscribe`` mailto becomes ``unsubscribed``; an out-of-office becomes
``out_of_office`` and pauses the lead's sequences until they are back
(:mod:`nurture.mail.absence`); another automatic answer becomes ``auto_reply``; neither
is a reply. Anything else is ``email_replied``. Processed messages get the IMAP keyword
``$NurtureProcessed``; the event's source id is the message's own Message-ID, so a
message seen twice (a crash between the two) is still one event.

Anyone can send mail to the mailbox, so nothing in it changes a lead without proof
(:func:`attribute`):

- a bounce or complaint counts only when it cites the Message-ID of an email we sent
  to that lead (the address named inside a report proves nothing);
- an unsubscribe mail counts only with the sealed token of the ``List-Unsubscribe``
  mailto in its subject;
- a reply is matched to the email it answers through ``In-Reply-To``/``References``;
  one matched only by its From address is recorded and stops the lead's sequences,
  but earns nothing (no points, no hand-off) unless the receiving server's
  ``Authentication-Results`` say the From domain passed (:func:`authenticated_from`);
- an out-of-office pauses the lead only with the same proof (a Message-ID of ours, or
  an authenticated From); without it, it is recorded as a machine event and changes
  nothing;
- mail about a notification to a salesperson (a reply to a hand-off notice, its
  bounce) never touches the lead.
"""

from __future__ import annotations

import hashlib
import imaplib
import re
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes, policy
from email.message import EmailMessage, Message
from email.utils import getaddresses, parseaddr
from typing import cast

import authres
from sqlalchemy import Engine, or_, update
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from nurture import logs
from nurture.config import RepliesSection
from nurture.errors import InvalidValueError, NurtureError
from nurture.language.excerpt import reply_excerpt
from nurture.language.fields import normalize_email
from nurture.mail.absence import absence_of, automatic_subject, out_of_office, pause_lead
from nurture.mail.addresses import wire_address
from nurture.mail.compose import UnsubscribeLink, read_unsubscribe_link
from nurture.store.accounts import tell_colleagues
from nurture.store.arrivals import announce
from nurture.store.database import session_scope
from nurture.store.enrollments import Enrollment, EnrollmentStatus
from nurture.store.events import record_event
from nurture.store.leads import Lead
from nurture.store.meta import links_bound_since
from nurture.store.outbox import MessageKind, OutboxMessage
from nurture.store.pausing import PAUSED_WHILE_AWAY, back_now

PROCESSED = "$NurtureProcessed"
#: Also set on a message nurture could not process (a person should look at it).
FAILED = "$NurtureFailed"
_MESSAGE_ID = re.compile(r"<[^<>\s]+>")
_BOUNCE_SENDERS = re.compile(r"^(mailer-daemon|postmaster)@", re.IGNORECASE)


class MailboxError(NurtureError):
    """The reply mailbox cannot be read."""

    exit_code = 2


@dataclass(frozen=True)
class Classified:
    #: ``reply``, ``auto_reply``, ``bounce``, ``complaint``, ``unsubscribe``, or ``ignore``.
    kind: str
    #: Message-IDs this message names as the ones it answers (or, for a bounce, the
    #: bounced message), nearest first.
    refers_to: tuple[str, ...] = ()
    #: The address it came from (for a bounce: the recipient that failed).
    address: str = ""
    #: For an unsubscribe: the lead id its signed subject names.
    lead_id: int | None = None
    #: For an unsubscribe: the link its subject carries (it names its person).
    link: UnsubscribeLink | None = None
    reason: str = ""
    data: dict[str, str] = field(default_factory=dict)


def _ids(value: str | None) -> list[str]:
    return _MESSAGE_ID.findall(value or "")


def _is_automatic(message: Message) -> str | None:
    auto = str(message.get("Auto-Submitted", "")).strip().lower()
    if auto and auto != "no":
        return f"Auto-Submitted: {auto}"
    for header in ("X-Autoreply", "X-Autorespond", "X-Autoresponder"):
        if str(message.get(header, "no")).strip().lower() not in ("no", "false", "0", ""):
            return header
    precedence = str(message.get("Precedence", "")).strip().lower()
    if precedence in ("auto_reply", "bulk", "junk", "list"):
        return f"Precedence: {precedence}"
    if message.get("X-MS-Exchange-Inbox-Rules-Loop") or message.get("X-Auto-Response-Suppress"):
        if automatic_subject(str(message.get("Subject", ""))):
            return "Exchange automatic reply"
    subject = str(message.get("Subject", "")).strip()
    if automatic_subject(subject):
        return f"subject {subject[:60]!r}"
    return None


def _original_ids(message: EmailMessage) -> list[str]:
    """The Message-IDs of the message a report is about (its attached copy or headers)."""
    found: list[str] = []
    for part in message.walk():
        kind = part.get_content_type()
        if kind not in ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers"):
            continue
        inner = part.get_payload()
        if isinstance(inner, list) and inner and isinstance(inner[0], Message):
            found += _ids(str(inner[0].get("Message-ID", "")))
        elif isinstance(inner, str):
            match = re.search(r"^Message-ID:\s*(<[^>]+>)", inner, re.IGNORECASE | re.M)
            if match:
                found.append(match.group(1))
    return found


def _complaint(message: EmailMessage) -> Classified | None:
    """An abuse report from a mailbox provider's feedback loop (ARF, RFC 5965)."""
    if not (
        message.get_content_type() == "multipart/report"
        and message.get_param("report-type") == "feedback-report"
    ):
        return None
    recipient = ""
    for part in message.walk():
        if part.get_content_type() == "message/feedback-report":
            blocks = part.get_payload() if part.is_multipart() else []
            for block in blocks:
                if isinstance(block, Message):
                    recipient = recipient or str(block.get("Original-Rcpt-To", "")).strip()
    return Classified(
        "complaint",
        tuple(_original_ids(message)),
        recipient.lower(),
        reason="feedback loop complaint",
    )


def _bounce(message: EmailMessage) -> Classified | None:
    """A delivery status notification that reports a permanent failure."""
    is_report = (
        message.get_content_type() == "multipart/report"
        and message.get_param("report-type") == "delivery-status"
    )
    sender = parseaddr(str(message.get("From", "")))[1]
    if not is_report and not _BOUNCE_SENDERS.match(sender):
        return None
    action = status = recipient = ""
    original: list[str] = []
    for part in message.walk():
        kind = part.get_content_type()
        if kind == "message/delivery-status":
            for block in part.get_payload() if part.is_multipart() else []:
                assert isinstance(block, Message)
                action = action or str(block.get("Action", "")).strip().lower()
                status = status or str(block.get("Status", "")).strip()
                final = str(block.get("Final-Recipient", "") or block.get("Original-Recipient", ""))
                recipient = recipient or final.partition(";")[2].strip()
        elif kind in ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers"):
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                original += _ids(str(inner[0].get("Message-ID", "")))
            elif isinstance(inner, str):
                found = re.search(r"^Message-ID:\s*(<[^>]+>)", inner, re.IGNORECASE | re.M)
                if found:
                    original.append(found.group(1))
    if action and action != "failed":
        return Classified("ignore", reason=f"delivery report: {action}")
    if status.startswith("4"):
        return Classified("ignore", reason=f"temporary failure {status}")
    if not original and not recipient:
        # From a mailer daemon but unreadable: never mistaken for the lead's reply.
        return Classified("ignore", reason="delivery report without a recipient")
    return Classified(
        "bounce",
        tuple(original),
        recipient.lower(),
        reason=status or "bounce",
        data={"status": status},
    )


def classify(message: EmailMessage, *, secret: str, unsubscribe_mailto: str) -> Classified:
    """What a message that arrived in the reply mailbox means."""
    sender = parseaddr(str(message.get("From", "")))[1].lower()
    report = _complaint(message) or _bounce(message)
    if report is not None:
        return report
    recipients = {
        address.lower()
        for _, address in getaddresses(
            [str(message.get(h, "")) for h in ("To", "Cc", "Delivered-To", "X-Original-To")]
        )
    }
    if unsubscribe_mailto and wire_address(unsubscribe_mailto).lower() in recipients:
        subject = str(message.get("Subject", "")).strip()
        link = read_unsubscribe_link(secret, subject.split()[-1]) if subject else None
        return Classified(
            "unsubscribe",
            address=sender,
            lead_id=link.lead_id if link is not None else None,
            link=link,
            reason="mail to the unsubscribe address",
        )
    refers = _ids(str(message.get("In-Reply-To", ""))) + list(
        reversed(_ids(str(message.get("References", ""))))
    )
    away = out_of_office(message)
    automatic = away or _is_automatic(message)
    kind = "out_of_office" if away else "auto_reply" if automatic else "reply"
    subject = str(message.get("Subject", ""))[:200]
    data = {"subject": subject}
    if not automatic:  # what they wrote, for sales' notice
        data["first_lines"] = reply_excerpt(message)
    return Classified(
        kind,
        tuple(dict.fromkeys(refers)),
        sender,
        reason=automatic or "",
        data=data,
    )


@dataclass
class PollReport:
    replies: int = 0
    auto_replies: int = 0
    bounces: int = 0
    unsubscribes: int = 0
    complaints: int = 0
    #: Messages no lead could be found for.
    unmatched: int = 0
    ignored: int = 0


#: The report's counter for each kind.
COUNTERS = {
    "reply": "replies",
    "auto_reply": "auto_replies",
    "out_of_office": "auto_replies",
    "bounce": "bounces",
    "unsubscribe": "unsubscribes",
    "complaint": "complaints",
}
EVENTS = {
    "reply": "email_replied",
    "auto_reply": "auto_reply",
    "out_of_office": "out_of_office",
    "bounce": "email_bounced",
    "unsubscribe": "unsubscribed",
    "complaint": "complained",
}


@dataclass(frozen=True)
class Target:
    """The lead (and touch) a message is about."""

    lead_id: int
    sequence: str | None = None
    step: str | None = None
    #: Matched only by the sender's address, which anyone can write.
    by_address: bool = False


def attribute(session: Session, found: Classified, secret: str = "") -> Target | str:
    """The lead a message is about, or why it is about none we may touch (*secret*:
    the signing key, which tells whether an unsubscribe link names its lead)."""
    sent = None
    if found.refers_to:  # the one it answers (In-Reply-To), else the latest it cites
        cited = {
            message.message_id: message
            for message in session.exec(
                select(OutboxMessage).where(col(OutboxMessage.message_id).in_(found.refers_to))
            )
        }
        sent = next((cited[i] for i in found.refers_to if i in cited), None)
    if sent is not None and sent.kind != MessageKind.email.value:
        return f"about a {sent.kind} message to {sent.recipient}, not about the lead"
    if sent is not None:
        if sent.lead_id is None:
            return "not about a lead"
        return Target(sent.lead_id, sent.sequence, sent.step)
    if found.kind in ("bounce", "complaint"):
        return "cites no message we sent"
    if found.kind == "unsubscribe":
        lead = session.get(Lead, found.lead_id) if found.lead_id is not None else None
        if (
            lead is not None
            and lead.id is not None
            and found.link is not None
            and (found.link.names(secret, lead.email, lead.created_at, links_bound_since(session)))
        ):
            return Target(lead.id)
        return "no valid unsubscribe token in the subject"
    if found.address:
        try:  # stored as normalize_email gives it (a Unicode domain, not A-labels)
            address = normalize_email(found.address)
        except InvalidValueError:
            return "no lead with the sender's address"
        lead = session.exec(select(Lead).where(Lead.email == address)).first()
        if lead is not None and lead.id is not None:
            return Target(lead.id, by_address=True)
    return "no lead with the sender's address"


def _aligned(domain: str, other: str) -> bool:
    """Relaxed alignment (DMARC): the same domain, or one a subdomain of the other."""
    domain, other = domain.lower().rstrip("."), other.lower().rstrip(".")
    if not domain or not other:
        return False
    return domain == other or domain.endswith("." + other) or other.endswith("." + domain)


def authenticated_from(message: Message, authserv_id: str) -> str | None:
    """Which check of the receiving server (the ``Authentication-Results`` headers it
    wrote, named by *authserv_id*) says the From domain is genuine: ``dmarc=pass`` for
    it, or ``dkim=pass``/``spf=pass`` for an aligned domain; ``None`` if none does.

    Headers with another authserv-id are anyone's and ignored. Of those with our
    server's id, only the topmost counts: the receiving server prepends its verdict
    above what the message brought (RFC 8601, section 5), and a header below it, even
    with its id, may be the sender's forgery (a ``dmarc=pass`` under its ``dmarc=fail``).
    """
    header = _topmost_results(message, authserv_id)
    if header is None:
        return None
    from_domain = parseaddr(str(message.get("From", "")))[1].rpartition("@")[2]
    for result in header.results:
        if str(result.result).lower() != "pass":
            continue
        values = {
            f"{p.type}.{p.name}".lower(): str(p.value).rpartition("@")[2] for p in result.properties
        }
        method = str(result.method).lower()
        checked = {"dmarc": "header.from", "dkim": "header.d", "spf": "smtp.mailfrom"}
        if method in checked and _aligned(values.get(checked[method], ""), from_domain):
            if method != "dmarc" or values["header.from"].lower() == from_domain.lower():
                return f"{method}=pass"
    return None


def _topmost_results(
    message: Message, authserv_id: str
) -> authres.AuthenticationResultsHeader | None:
    """The topmost ``Authentication-Results`` header naming *authserv_id*, parsed (``None``
    if there is none, or it cannot be read: nothing below it stands in for it)."""
    if not authserv_id:
        return None
    for value in message.get_all("Authentication-Results") or []:  # top to bottom
        text = " ".join(str(value).split())
        try:
            header = authres.AuthenticationResultsHeader.parse("Authentication-Results: " + text)
        except authres.AuthResError:
            named = (text.split(";", 1)[0].split() or [""])[0]
            if named.lower() == authserv_id.lower():
                return None  # ours, unreadable: the ones below prove nothing
            continue
        if str(header.authserv_id).lower() == authserv_id.lower():
            return header
    return None


def _stop_sequences(session: Session, lead_id: int, reason: str, now: datetime) -> int:
    """End the lead's active enrollments, and those paused while they were away (a
    queued email of theirs is not sent)."""
    result = session.execute(
        update(Enrollment)
        .where(col(Enrollment.lead_id) == lead_id)
        .where(or_(col(Enrollment.status) == EnrollmentStatus.active.value,
                   PAUSED_WHILE_AWAY))
        .values(
            status=EnrollmentStatus.exited.value,
            reason=reason,
            ended_at=now,
            updated_at=now,
            version=col(Enrollment.version) + 1,
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)


def process(
    session: Session,
    raw: bytes,
    *,
    secret: str,
    unsubscribe_mailto: str,
    now: datetime,
    report: PollReport,
    authserv_id: str = "",
    default_timezone: str = "UTC",
) -> None:
    """Classify one message and record what it means (*default_timezone*: a lead's,
    when it has none of its own)."""
    message = cast(EmailMessage, message_from_bytes(raw, policy=policy.default))
    found = classify(message, secret=secret, unsubscribe_mailto=unsubscribe_mailto)
    if found.kind == "ignore":
        report.ignored += 1
        return
    target = attribute(session, found, secret)
    if isinstance(target, str):
        report.unmatched += 1
        logs.action("mail left alone", kind=found.kind, sender=found.address, why=target)
        return
    data: dict[str, object] = {**found.data, "reason": found.reason, "from": found.address}
    unproven = None
    if target.by_address and found.kind in ("reply", "out_of_office"):
        passed = authenticated_from(message, authserv_id)
        data["authenticated"] = passed or False
        if passed is None:
            unproven = "sender not authenticated (no In-Reply-To of ours)"
            data["machine_reason"] = unproven
    away = None
    if found.kind == "out_of_office" and unproven is None:  # unproven: pauses nothing
        away = absence_of(session, target.lead_id, message, default_timezone, now)
        data.update(away.as_data() if away is not None else {})
    own_id = (_ids(str(message.get("Message-ID", ""))) or [""])[0]
    source_id = own_id or "sha256:" + hashlib.sha256(raw).hexdigest()
    recorded = record_event(
        session,
        target.lead_id,
        EVENTS[found.kind],
        sequence=target.sequence,
        step=target.step,
        data=data,
        at=now,
        source="imap",
        source_id=source_id,
        # Stored, never counted: no points, no condition, no hand-off.
        machine=unproven is not None,
    )
    if recorded.new and unproven is not None and found.kind == "reply":
        # Stopping is the safe side: whoever wrote it, the lead gets no more email now.
        _stop_sequences(session, target.lead_id, "replied (sender not authenticated)", now)
    if recorded.new and away is not None:
        pause_lead(session, target.lead_id, away, now)
    if recorded.new and unproven is None:
        announce(session, [target.lead_id])  # a reply may make the lead hot: now, not later
    if recorded.new and unproven is None and found.kind == "reply":
        back_now(session, target.lead_id, now)  # they are back: no longer out of office
        announce(session, tell_colleagues(session, target.lead_id, source_id=source_id,
                                          now=now))  # fmt: skip
    if recorded.new:
        counter = COUNTERS[found.kind]
        setattr(report, counter, getattr(report, counter) + 1)
        logs.action(
            f"mail: {EVENTS[found.kind]}",
            lead_id=target.lead_id,
            sequence=target.sequence,
            step=target.step,
            reason=found.reason or None,
            unproven=unproven,
        )


@contextmanager
def _mailbox(settings: RepliesSection) -> Iterator[imaplib.IMAP4]:
    context = ssl.create_default_context(cafile=settings.ca_file or None)
    try:
        if settings.tls:
            imap: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                settings.host, settings.port, ssl_context=context, timeout=30
            )
        else:
            imap = imaplib.IMAP4(settings.host, settings.port, timeout=30)
            if settings.starttls and "STARTTLS" in imap.capabilities:
                imap.starttls(context)
        imap.login(settings.username, settings.password)
    except (OSError, imaplib.IMAP4.error) as exc:
        raise MailboxError(f"[replies] {settings.host}:{settings.port}: {exc}") from None
    try:
        yield imap
    finally:
        try:
            imap.logout()
        except (OSError, imaplib.IMAP4.error):
            pass


def poll(
    engine: Engine,
    settings: RepliesSection,
    *,
    secret: str,
    unsubscribe_mailto: str,
    now: datetime,
    default_timezone: str = "UTC",
) -> PollReport:
    """Read every message not processed yet, record its event, and mark it processed."""
    report = PollReport()
    with _mailbox(settings) as imap:
        status, _ = imap.select(settings.mailbox)
        if status != "OK":
            raise MailboxError(f"[replies] mailbox {settings.mailbox!r} cannot be opened")
        status, found = imap.uid("SEARCH", "UNKEYWORD", PROCESSED)
        uids = found[0].split() if status == "OK" and found and found[0] else []
        for uid in uids:
            status, fetched = imap.uid("FETCH", uid, "(BODY.PEEK[])")
            parts = [item for item in fetched if isinstance(item, tuple)]
            if status != "OK" or not parts:
                continue
            raw = parts[0][1]
            flags = PROCESSED
            try:
                with session_scope(engine) as session:
                    process(
                        session,
                        raw,
                        secret=secret,
                        unsubscribe_mailto=unsubscribe_mailto,
                        now=now,
                        report=report,
                        authserv_id=settings.authserv_id,
                        default_timezone=default_timezone,
                    )
            except (SQLAlchemyError, OSError):
                raise  # the database is away: leave the message for the next poll
            except Exception:
                # One message nurture cannot read must not stop every later one: it is
                # flagged for a person to look at, and the poll goes on.
                logs.logger.exception("cannot process mail uid %s; flagged %s", uid, FAILED)
                flags = f"{PROCESSED} {FAILED}"
                report.ignored += 1
            imap.uid("STORE", uid, "+FLAGS", f"({flags})")
    return report
