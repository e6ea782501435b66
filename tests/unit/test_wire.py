"""The outbox's serialiser writes exactly what the email package's generator writes."""

from __future__ import annotations

import copy
import random
from datetime import UTC, datetime

from nurture.language.templates import RenderedEmail
from nurture.mail.compose import Sender, build_message, build_notification, parse
from nurture.mail.wire import as_text

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
