"""The fast quoted-printable encoder writes exactly what the email package writes."""

from __future__ import annotations

import random
from email.charset import QP, Charset
from email.mime.nonmultipart import MIMENonMultipart

import pytest

from nurture.mail.quoted_printable import body_encode
from nurture.mail.wire import TextPart

UTF8_QP = Charset("utf-8")
UTF8_QP.body_encoding = QP


def stdlib(text: str) -> str:
    """The body the email package stores for *text* (how parts were built before)."""
    part = MIMENonMultipart("text", "plain")
    part.set_payload(text, UTF8_QP)
    payload = part.get_payload()
    assert isinstance(payload, str)
    return payload


TRICKY = [
    "",
    "a",
    "=",
    "==\n==",
    ".",
    ".\n",
    "a\n.\nb",
    "..\n.",
    " ",
    "\t",
    "a \n",
    "a\t\n",
    "a  \nb\t \n",
    "trailing space ",
    "\n",
    "\n\n",
    "\r",
    "\r\n",
    "\n\r",
    "a\rb\r\nc\n\rd",
    "From me\nFrom you",
    "\x00",
    "a\x00b\n.",
    ".\x00",
    "\x0b\x0c\x1c\x1d\x1e\x7f\x85",
    "\u2028line\u2029",
    "é",
    "Jörg Müller, 漢字 😀",
    "=20 =2E =09 =3D =\n",
    "x" * 75,
    "x" * 76,
    "x" * 77,
    "x" * 74 + " ",
    "x" * 75 + " ",
    "x" * 76 + " ",
    "x" * 77 + " ",
    "x" * 150 + "\t",
    "x" * 72 + "é",
    "x" * 73 + "é",
    "x" * 74 + "é",
    "x" * 75 + "é",
    "x" * 73 + "==",
    "x" * 74 + "=",
    "x" * 200,
    "<p style=\"a:b\">" * 40,
    ("é" * 30 + "\n") * 3,
    "line one\n\n\nline four  \n",
]


@pytest.mark.parametrize("text", TRICKY)
def test_tricky_texts_encode_as_the_email_package_encodes_them(text: str) -> None:
    assert body_encode(text) == stdlib(text)


#: Pieces random texts are made of: what each rule of either encoder looks at.
PIECES = [*"ab .=\t\r\n-_xyz", "é", "漢", "😀", "\x00", "\x0b", "\x0c", "\x1c", "\x7f", "\x85",
          "\u2028", "From ", "=3D", "=20", "=2E", "  ", "\r\n", " \n", "\t\n", ".\n"]  # fmt: skip


def test_random_texts_encode_as_the_email_package_encodes_them() -> None:
    rng = random.Random(20261206)
    for _ in range(20_000):
        weights = [rng.random() for _ in PIECES]
        text = "".join(rng.choices(PIECES, weights, k=rng.randint(0, rng.choice([5, 40, 300]))))
        if rng.random() < 0.4:  # lines that end near the 76 characters limit
            text = "x" * rng.randint(60, 160) + text
        assert body_encode(text) == stdlib(text), repr(text)


def test_lines_of_every_length_around_the_limit() -> None:
    for length in range(60, 240):
        for end in ("", " ", "\t", "é", "=", "=a", " \n", ".", "ü "):
            for filler in ("x", "=", "é", "x=", "xé", " "):
                text = (filler * length)[:length] + end
                assert body_encode(text) == stdlib(text), repr(text)


def test_a_text_part_is_the_part_the_email_package_makes() -> None:
    for text in [*TRICKY, "Hello Jörg,\n\nSee https://example.com/?a=1 below.\n"]:
        for subtype in ("plain", "html"):
            part = MIMENonMultipart("text", subtype)
            part.set_payload(text, UTF8_QP)
            ours = TextPart(subtype, text)
            assert ours.items() == part.items()
            assert ours.get_payload() == part.get_payload()
            assert ours.get_charset() == part.get_charset()
            assert ours.as_string() == part.as_string()


def test_a_text_that_cannot_be_utf8_fails_as_before() -> None:
    with pytest.raises(UnicodeEncodeError):
        stdlib("\udcff")
    with pytest.raises(UnicodeEncodeError):
        body_encode("\udcff")
