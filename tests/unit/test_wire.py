"""The outbox's serialiser writes exactly what the email package's generator writes."""

from __future__ import annotations

import copy
import random
from datetime import UTC, datetime, timedelta, timezone
from email.charset import QP, Charset
from email.mime.nonmultipart import MIMENonMultipart
from email.policy import Compat32

from nurture.language.templates import RenderedEmail
from nurture.mail.compose import Sender, build_message, build_notification, parse
from nurture.mail.delivery import with_date
from nurture.mail.wire import _POLICY, as_text

CHARS = "abcdefghij ÀéøΩ漢字😀<>&\"'=?_-\t\n.,:;"
SENDER = Sender.parse("Sam Patel <sam@example.com>", "", "")
WHEN = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)


def _text(rng: random.Random, size: int) -> str:
    return "".join(rng.choice(CHARS) for _ in range(rng.randint(0, size)))


def test_every_message_is_written_byte_for_byte_as_the_generator_writes_it() -> None:
    rng = random.Random(20261206)
    for _ in range(300):
        rendered = RenderedEmail(subject=_text(rng, 120), text=_text(rng, 3000),
                                 html=f"<p>{_text(rng, 3000)}</p>", preheader="")  # fmt: skip
        message = build_message(
            rendered, sender=SENDER, to_email="maria@example.com",
            to_name=_text(rng, 40).replace("\n", " "), date=WHEN,
            unsubscribe="https://t.example.com/u/abc", reply_to="Sales <sales@example.com>",
        )  # fmt: skip
        reference = copy.deepcopy(message)
        written = as_text(message)
        reference.set_boundary(message.get_boundary())  # the only random part
        assert written == reference.as_string()


def test_the_boundary_it_sets_cannot_occur_in_the_parts() -> None:
    body = "--=_ a line that looks like a boundary\n=_ and = signs"
    rendered = RenderedEmail(subject="Hi", text=body, html=f"<p>{body}</p>", preheader="")
    message = build_message(rendered, sender=SENDER, to_email="bo@example.com", to_name="Bo",
                            date=WHEN, unsubscribe="https://t.example.com/u/x")  # fmt: skip
    written = as_text(message)
    boundary = message.get_boundary()
    assert boundary is not None and boundary.startswith("=_")
    assert written.count(f"--{boundary}") == 3  # two parts and the closing line
    parsed = parse(written)
    assert [part.get_content().strip() for part in parsed.iter_parts()] == [
        body, f"<p>{body}</p>"
    ]


def test_a_message_it_cannot_vouch_for_keeps_the_generator_s_own_boundary() -> None:
    notice = build_notification(sender=SENDER, to_email="sam@example.com", subject="Hot lead",
                                body="text", html="<p>html</p>", date=WHEN,
                                message_id="<1@example.com>")  # fmt: skip
    for part in notice.get_payload():  # type: ignore[union-attr]
        del part["Content-Transfer-Encoding"]
        part["Content-Transfer-Encoding"] = "8bit"
    as_text(notice)
    assert not str(notice.get_boundary()).startswith("=_")


def _stdlib_part(body: str, subtype: str) -> MIMENonMultipart:
    """A text part as nurture built it before it had its own (the email package's)."""
    charset = Charset("utf-8")
    charset.body_encoding = QP
    part = MIMENonMultipart("text", subtype)
    part.set_payload(body, charset)
    return part


def test_messages_are_the_bytes_the_email_package_alone_made() -> None:
    """Parts built the email package's way, serialised by its generator: the same text."""
    rng = random.Random(23)
    for n in range(300):
        text = _text(rng, 3000) + ("x" * rng.randint(70, 80) + " \n") * (n % 3)
        rendered = RenderedEmail(subject=_text(rng, 120), text=text,
                                 html=f"<p>{_text(rng, 3000)}</p>", preheader="")  # fmt: skip
        message = build_message(
            rendered, sender=SENDER, to_email="maria@example.com",
            to_name=_text(rng, 40).replace("\n", " "), date=WHEN,
            unsubscribe="https://t.example.com/u/abc", reply_to="Sales <sales@example.com>",
            unsubscribe_mailto="unsubscribe@example.com", feedback_id="a:b:c:nurture",
        )  # fmt: skip
        reference = copy.deepcopy(message)
        written = as_text(message)
        reference.set_payload([_stdlib_part(rendered.text, "plain"),
                               _stdlib_part(rendered.html, "html")])  # fmt: skip
        reference.set_boundary(message.get_boundary())
        assert written == reference.as_string()


def test_a_notification_is_the_bytes_the_email_package_alone_made() -> None:
    for html in ("", "<p>Hé</p>"):
        notice = build_notification(sender=SENDER, to_email="sam@example.com", subject="Hot lead",
                                    body="Zoë is hot\n", html=html, date=WHEN,
                                    message_id="<1@example.com>")  # fmt: skip
        reference = copy.deepcopy(notice)
        if html:
            reference.set_payload([_stdlib_part("Zoë is hot\n", "plain"),
                                   _stdlib_part(html, "html")])  # fmt: skip
        else:
            reference.set_payload(_stdlib_part("Zoë is hot\n", "plain").get_payload())
        written = as_text(notice)
        if html:
            reference.set_boundary(notice.get_boundary())
        assert written == reference.as_string()


def test_headers_are_folded_as_compat32_folds_them() -> None:
    """Plain ASCII values, encoded words among them, are written as the Header
    machinery writes them; anything else goes through it."""
    rng = random.Random(7)
    pieces = ["a", "Z", " ", "  ", "\t", "=?", "?=", "=?utf-8?b?SsO2cmc=?=", "=?utf-8?q?J=C3?=",
              "<x@example.com>", ",", ":", "\n", "\r", "\x0b", "\x1c", "é", "\x7f"]  # fmt: skip

    def folded(policy: Compat32, value: str) -> str:
        try:
            return policy.fold("Subject", value)
        except Exception as exc:  # an embedded header: refused alike
            return repr(exc)

    for _ in range(5000):
        value = "".join(rng.choices(pieces, k=rng.randint(0, 30)))
        for length in (0, 78):
            ours = _POLICY.clone(max_line_length=length)
            assert folded(ours, value) == folded(Compat32(max_line_length=length), value)


def test_a_modern_message_of_text_parts_is_left_to_the_generator() -> None:
    """An EmailMessage folds its headers at 78 characters: not nurture's shape."""
    from email.message import EmailMessage

    from nurture.mail.wire import TextPart

    message = EmailMessage()
    message["Subject"] = "a long subject " * 10
    message.set_type("multipart/alternative")
    message.set_payload([TextPart("plain", "x" * 200), TextPart("html", "<p>é</p>")])
    written = as_text(message)
    assert written == message.as_string(policy=_POLICY)
    assert "\n " in written.split("\n\n")[0]  # the subject folded, as the generator does


def test_the_date_set_at_sending_replaces_the_one_date_line_and_nothing_else() -> None:
    sent = datetime(2026, 11, 2, 9, 30, 5, 999_999, tzinfo=UTC)
    stored = "From: a@example.com\nDate: Sun, 01 Nov 2026 08:00:00 +0000\nTo: b@example.com\n\n"
    body = "Date: in the body, kept\n"
    assert with_date(stored + body, sent) == (
        b"From: a@example.com\r\nDate: Mon, 02 Nov 2026 09:30:05 +0000\r\nTo: b@example.com"
        b"\r\n\r\nDate: in the body, kept\r\n"
    )
    first = with_date("Date: old\nFrom: a@example.com\n\nx", sent)
    assert first == b"Date: Mon, 02 Nov 2026 09:30:05 +0000\r\nFrom: a@example.com\r\n\r\nx"
    # The same moment in another zone is written in that zone (the cache keeps them apart).
    paris = with_date("Date: old\n\nx", sent.astimezone(timezone(timedelta(hours=1))))
    assert paris == b"Date: Mon, 02 Nov 2026 10:30:05 +0100\r\n\r\nx"
    no_date = with_date("From: a@example.com\n\nDate: x", sent)
    assert no_date == b"From: a@example.com\r\n\r\nDate: x"
