"""Nothing in the reply mailbox changes a lead without proof (dovecot on loopback):
reports count only when they cite an email we sent to the lead, the unsubscribe mailto
only with its sealed token, a reply matched by its From address only earns points when
the receiving server authenticated it, and mail about notifications leaves the lead
alone."""

from __future__ import annotations

import uuid
from datetime import timedelta
from email.message import EmailMessage
from email.utils import make_msgid

import pytest

from nurture.config import load_settings
from nurture.store.database import session_scope
from nurture.store.leads import LeadChanges, upsert_leads
from tests.integration import test_replies
from tests.integration.test_replies import START, Inbox

inbox = test_replies.inbox

ATTACKER = "Mail Delivery System <MAILER-DAEMON@mx.evil.example>"


def _raw(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


def dsn(recipient: str, original_id: str | None) -> bytes:
    """A delivery status report of a permanent failure (RFC 3464)."""
    cited = f"Message-ID: {original_id}\n" if original_id else ""
    return _raw(
        f"From: {ATTACKER}\nTo: ana@example.com\nSubject: Undelivered Mail Returned to Sender\n"
        f"Message-ID: <{uuid.uuid4().hex}@mx.evil.example>\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        "--B\nContent-Type: text/plain\n\nYour message could not be delivered.\n"
        "--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.evil.example\n\n"
        f"Final-Recipient: rfc822; {recipient}\nAction: failed\nStatus: 5.1.1\n\n"
        f"--B\nContent-Type: text/rfc822-headers\n\n{cited}Subject: Hello\n\n--B--\n"
    )


def arf(recipient: str, original_id: str | None) -> bytes:
    """A feedback-loop abuse report (RFC 5965)."""
    cited = f"Message-ID: {original_id}\n" if original_id else ""
    return _raw(
        "From: Feedback Loop <fbl@isp.example>\nTo: ana@example.com\nSubject: Abuse report\n"
        f"Message-ID: <{uuid.uuid4().hex}@isp.example>\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="B"\n\n'
        "--B\nContent-Type: text/plain\n\nThis is an abuse report.\n"
        "--B\nContent-Type: message/feedback-report\n\nFeedback-Type: abuse\n"
        f"User-Agent: FBL/1.0\nVersion: 1\nOriginal-Rcpt-To: {recipient}\n\n"
        f"--B\nContent-Type: text/rfc822-headers\n\n{cited}Subject: Hello\n\n--B--\n"
    )


def plain_mail(sender: str, to: str, subject: str, **headers: str) -> bytes:
    mail = EmailMessage()
    for name, value in headers.items():
        mail[name.replace("_", "-")] = value
    mail["From"] = sender
    mail["To"] = to
    mail["Subject"] = subject
    mail["Message-ID"] = make_msgid(domain="example.org")
    mail.set_content("Hello")
    return mail.as_bytes()


def test_reports_that_cite_no_email_of_ours_change_nothing(inbox: Inbox) -> None:
    inbox.tick(START)
    [hello] = inbox.sent()
    inbox.imap.append(dsn("maria@example.com", None))
    inbox.imap.append(dsn("maria@example.com", "<forged.123@example.com>"))
    inbox.imap.append(arf("maria@example.com", None))
    inbox.tick(START + timedelta(hours=1))
    assert inbox.lead().status == "subscribed"
    assert inbox.events("email_bounced") == [] and inbox.events("complained") == []
    inbox.tick(START + timedelta(days=2))
    assert len(inbox.sent()) == 2  # the sequence goes on
    # The same complaint citing the email we sent: believed.
    inbox.imap.append(arf("someone@else.example", str(hello["Message-ID"])))
    inbox.tick(START + timedelta(days=2, hours=1))
    assert inbox.lead().status == "complained"
    [complaint] = inbox.events("complained")
    assert (complaint.sequence, complaint.step) == ("nudge", "hello")


def test_mail_to_the_unsubscribe_address_needs_the_sealed_token(inbox: Inbox) -> None:
    inbox.tick(START)
    [hello] = inbox.sent()
    mailto = str(hello["List-Unsubscribe"]).split(",")[1].strip().strip("<>")
    address, _, token = mailto.removeprefix("mailto:").partition("?subject=")
    assert "." not in token  # sealed, not the readable signed payload
    inbox.imap.append(plain_mail("maria@example.com", address, "unsubscribe"))
    inbox.imap.append(plain_mail("maria@example.com", address, token[:-2] + "AA"))
    inbox.tick(START + timedelta(hours=1))
    assert inbox.lead().status == "subscribed" and inbox.events("unsubscribed") == []
    inbox.imap.append(plain_mail("maria@example.com", address, token))
    inbox.tick(START + timedelta(hours=2))
    assert inbox.lead().status == "unsubscribed"


def test_a_reply_matched_only_by_from_is_recorded_stops_but_earns_nothing(
    inbox: Inbox,
) -> None:
    inbox.tick(START)
    inbox.imap.append(plain_mail("María <maria@example.com>", "ana@example.com", "Hi"))
    inbox.tick(START + timedelta(hours=1))
    [reply] = inbox.events("email_replied")
    assert reply.machine and reply.data["authenticated"] is False
    assert inbox.enrollment().status == "exited"  # stopping is the safe side
    assert "not authenticated" in (inbox.enrollment().reason or "")
    lead = inbox.lead()
    assert lead.engagement == 0 and lead.stage == "cold"
    inbox.tick(START + timedelta(days=3))
    assert len(inbox.sent()) == 1


@pytest.mark.parametrize(
    ("results", "counted"),
    [
        ("mx.ours.example; dmarc=pass (p=reject) header.from=example.com", True),
        ("mx.ours.example; dkim=pass header.d=example.com; dmarc=none", True),
        ("mx.ours.example; spf=pass smtp.mailfrom=bounces@mail.example.com", True),
        # Another server's verdict is anyone's to write.
        ("mx.evil.example; dmarc=pass header.from=example.com", False),
        # A pass for another domain proves nothing about this From.
        (
            "mx.ours.example; dkim=pass header.d=evil.example; spf=pass smtp.mailfrom=evil.example",
            False,
        ),
        ("mx.ours.example; dmarc=fail header.from=example.com", False),
        ("mx.ours.example; dmarc=pass header.from=evil.example", False),
        ("mx.ours.example; ;;; garbage", False),
    ],
)
def test_a_from_only_reply_counts_when_our_server_authenticated_it(
    inbox: Inbox, monkeypatch: pytest.MonkeyPatch, results: str, counted: bool
) -> None:
    monkeypatch.setenv("NURTURE_REPLIES_AUTHSERV_ID", "mx.ours.example")
    inbox.config = load_settings(inbox.config.config_file)
    inbox.tick(START)
    mail = plain_mail(
        "María <maria@example.com>", "ana@example.com", "Hi", Authentication_Results=results
    )
    inbox.imap.append(mail)
    inbox.tick(START + timedelta(hours=1))
    [reply] = inbox.events("email_replied")
    assert reply.machine is not counted
    assert bool(reply.data["authenticated"]) is counted
    assert (inbox.lead().engagement > 0) is counted


def test_mail_about_a_notification_never_touches_the_lead(inbox: Inbox) -> None:
    (inbox.config.sequences_dir / "nudge.yaml").write_text(
        test_replies.SEQUENCE.replace(
            "  - id: later\n",
            '  - id: heads-up\n    notify: "{{ lead.first_name }} got the welcome"\n'
            "  - id: later\n",
        )
    )
    with session_scope(inbox.engine) as session:
        upsert_leads(session, [LeadChanges("maria@example.com", {"owner": "lee@example.com"})])
    inbox.tick(START)
    inbox.tick(START + timedelta(minutes=1))  # the notify step follows the email once it left
    notice = next(m for m in inbox.sent() if m["To"] == "lee@example.com")
    answer = plain_mail(
        "Lee <lee@example.com>",
        str(notice["From"]),
        "Re: " + str(notice["Subject"]),
        In_Reply_To=str(notice["Message-ID"]),
    )
    inbox.imap.append(answer)
    inbox.imap.append(dsn("lee@example.com", str(notice["Message-ID"])))
    inbox.tick(START + timedelta(hours=1))
    assert inbox.lead().status == "subscribed"
    assert inbox.events("email_replied") == [] and inbox.events("email_bounced") == []
    assert inbox.enrollment().status == "active"


def test_mail_about_a_hand_off_notice_never_touches_the_lead(inbox: Inbox) -> None:
    from nurture.store.events import record_event

    with session_scope(inbox.engine) as session:
        upsert_leads(
            session,
            [
                LeadChanges(
                    "maria@example.com",
                    {"owner": "lee@example.com", "title": "VP Sales"},
                )
            ],
        )
        lead = inbox.lead()
        record_event(session, lead.id or 0, "meeting_booked", at=START, source="test")
    inbox.tick(START)
    notice = next(m for m in inbox.sent() if m["To"] == "lee@example.com")
    assert "hot" in str(notice["Subject"]).lower()
    inbox.imap.append(
        plain_mail(
            "Lee <lee@example.com>",
            str(notice["Reply-To"] or notice["From"]),
            "Re: " + str(notice["Subject"]),
            In_Reply_To=str(notice["Message-ID"]),
        )
    )
    inbox.imap.append(dsn("lee@example.com", str(notice["Message-ID"])))
    inbox.imap.append(arf("lee@example.com", str(notice["Message-ID"])))
    inbox.tick(START + timedelta(hours=1))
    assert inbox.lead().status == "subscribed"
    for kind in ("email_replied", "email_bounced", "email_complained"):
        assert inbox.events(kind) == []


def test_a_reply_citing_several_of_our_emails_is_credited_to_the_one_it_answers(
    inbox: Inbox,
) -> None:
    inbox.tick(START)
    inbox.tick(START + timedelta(days=2, hours=1))
    first, second = (m for m in inbox.sent() if "maria@example.com" in str(m["To"]))
    reply = plain_mail(
        "María López <maria@example.com>",
        str(second["Reply-To"] or second["From"]),
        "Re: " + str(second["Subject"]),
        In_Reply_To=str(second["Message-ID"]),
        References=f"{first['Message-ID']} {second['Message-ID']}",
    )
    inbox.imap.append(reply)
    inbox.tick(START + timedelta(days=2, hours=2))
    [replied] = inbox.events("email_replied")
    assert (replied.sequence, replied.step) == ("nudge", "later")


@pytest.mark.parametrize(
    ("headers", "counted"),
    [
        # The receiving server's verdict on top, a forged pass with its id below it.
        (["mx.ours.example; dmarc=fail header.from=example.com",
          "mx.ours.example; dmarc=pass header.from=example.com"], False),
        (["mx.ours.example; spf=fail smtp.mailfrom=example.com",
          "mx.ours.example; dkim=pass header.d=example.com"], False),
        # Another hop's header above ours is anyone's; ours, topmost of its id, counts.
        (["mx.internal.example; none",
          "mx.ours.example; dmarc=pass header.from=example.com",
          "mx.ours.example; dmarc=fail header.from=example.com"], True),
        # Ours but unreadable on top: nothing below stands in for it.
        (["mx.ours.example; ;;; garbage",
          "mx.ours.example; dmarc=pass header.from=example.com"], False),
    ],
)  # fmt: skip
def test_only_the_receiving_servers_topmost_authentication_results_count(
    inbox: Inbox, monkeypatch: pytest.MonkeyPatch, headers: list[str], counted: bool
) -> None:
    monkeypatch.setenv("NURTURE_REPLIES_AUTHSERV_ID", "mx.ours.example")
    inbox.config = load_settings(inbox.config.config_file)
    inbox.tick(START)
    top = "".join(f"Authentication-Results: {value}\n" for value in headers)  # top first
    inbox.imap.append(_raw(
        f"{top}Received: from mail.example.com by mx.ours.example; Mon, 5 Jan 2026 10:00 +0000\n"
        "From: Maria <maria@example.com>\nTo: ana@example.com\nSubject: Hi\n"
        f"Message-ID: {make_msgid(domain='example.org')}\n\nHello\n"
    ))  # fmt: skip
    inbox.tick(START + timedelta(hours=1))
    [reply] = inbox.events("email_replied")
    assert reply.machine is not counted
    assert (inbox.lead().engagement > 0) is counted
