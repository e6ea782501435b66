"""Classifying what arrives in the reply mailbox (pure)."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from nurture.mail.compose import unsubscribe_url
from nurture.mail.replies import classify

SECRET = "k" * 32


def mail(subject: str = "Re: your guide", **headers: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Maria <Maria@Example.com>"
    message["To"] = "ana@example.com"
    message["Subject"] = subject
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content("hello")
    return message


def kind(message: EmailMessage) -> str:
    return classify(message, secret=SECRET, unsubscribe_mailto="unsub@example.com").kind


def test_a_reply_names_the_messages_it_answers_nearest_first() -> None:
    found = classify(
        mail(In_Reply_To="<b@x>", References="<a@x> <b@x>"),
        secret=SECRET, unsubscribe_mailto="",
    )  # fmt: skip
    assert found.kind == "reply"
    assert found.refers_to == ("<b@x>", "<a@x>")
    assert found.address == "maria@example.com"


@pytest.mark.parametrize(
    "headers",
    [
        {"Auto_Submitted": "auto-replied"},
        {"X_Autoreply": "yes"},
        {"Precedence": "auto_reply"},
        {"subject": "Out of Office: back on Monday"},
        {"subject": "Automatic reply: your guide"},
        {"subject": "Abwesenheitsnotiz"},
    ],
)
def test_automatic_answers_are_not_replies(headers: dict[str, str]) -> None:
    subject = headers.pop("subject", "Re: your guide")
    assert kind(mail(subject, **headers)) == "out_of_office"


@pytest.mark.parametrize(
    "headers", [{"Auto_Submitted": "auto-generated"}, {"Precedence": "bulk"}]
)
def test_other_automatic_mail_is_no_reply_and_no_absence(headers: dict[str, str]) -> None:
    assert kind(mail("Re: your guide", **headers)) == "auto_reply"


def test_auto_submitted_no_is_a_person() -> None:
    assert kind(mail(Auto_Submitted="no")) == "reply"


def test_mail_to_the_unsubscribe_address_carries_its_signed_subject() -> None:
    token = unsubscribe_url("https://t.example.com", SECRET, 42, "s", "welcome").rsplit("/", 1)[1]
    message = mail(token)
    message.replace_header("To", "Unsubscribe <UNSUB@example.com>")
    found = classify(message, secret=SECRET, unsubscribe_mailto="unsub@example.com")
    assert (found.kind, found.lead_id) == ("unsubscribe", 42)
    message.replace_header("Subject", token[:-2] + "xx")
    assert classify(message, secret=SECRET, unsubscribe_mailto="unsub@example.com").lead_id is None


def dsn(action: str, status: str) -> EmailMessage:
    from email import message_from_string, policy

    raw = f"""\
From: Mail Delivery System <MAILER-DAEMON@mx.example.com>
To: ana@example.com
Subject: Delivery Status Notification
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b"

--b
Content-Type: text/plain

Your message could not be delivered.
--b
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.com

Final-Recipient: rfc822; Maria@Example.com
Action: {action}
Status: {status}

--b
Content-Type: text/rfc822-headers

Message-ID: <sent-1@example.com>
Subject: Your pricing guide

--b--
"""
    message = message_from_string(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_a_failed_delivery_report_is_a_bounce_of_the_email_it_names() -> None:
    found = classify(dsn("failed", "5.1.1"), secret=SECRET, unsubscribe_mailto="")
    assert found.kind == "bounce"
    assert found.refers_to == ("<sent-1@example.com>",)
    assert found.address == "maria@example.com"


@pytest.mark.parametrize(("action", "status"), [("delayed", "4.4.1"), ("failed", "4.2.2")])
def test_temporary_delivery_reports_are_ignored(action: str, status: str) -> None:
    assert kind(dsn(action, status)) == "ignore"


def test_an_unreadable_mailer_daemon_message_is_never_a_reply() -> None:
    message = mail("Undelivered Mail Returned to Sender")
    message.replace_header("From", "MAILER-DAEMON@mx.example.com")
    assert kind(message) == "ignore"


def test_a_feedback_loop_report_is_a_complaint_about_the_email_it_names() -> None:
    from email import message_from_string, policy

    raw = """\
From: Abuse Desk <fbl@mailbox.example.net>
To: ana@example.com
Subject: Complaint about message
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="b"

--b
Content-Type: text/plain

This is an email abuse report.
--b
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: ExampleFBL/1.0
Version: 1
Original-Rcpt-To: maria@example.com

--b
Content-Type: text/rfc822-headers

Message-ID: <sent-9@example.com>
Subject: Your pricing guide

--b--
"""
    message = message_from_string(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    found = classify(message, secret=SECRET, unsubscribe_mailto="")
    assert (found.kind, found.refers_to, found.address) == (
        "complaint",
        ("<sent-9@example.com>",),
        "maria@example.com",
    )
