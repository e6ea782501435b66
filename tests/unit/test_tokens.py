"""Tokens have exactly one spelling, and the unsubscribe token is unreadable."""

from __future__ import annotations

import base64

from nurture.mail.compose import UNSUBSCRIBE_PURPOSE, read_unsubscribe, unsubscribe_url
from nurture.tokens import seal, sign, unseal, verify


def _other_spellings(token: str) -> list[str]:
    body, _, mac = token.partition(".")
    # Bits past the last byte are ignored by a lenient decoder: flip the lowest one.
    assert len(body) % 4 in (2, 3)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    stray = alphabet[alphabet.index(body[-1]) ^ 1]
    spellings = [
        token + "=",
        token + "==",
        f"{body}=.{mac}",
        token.replace("-", "+").replace("_", "/"),
        f"{body}.{mac[:3]}!{mac[3:]}",  # the decoder used to skip what it did not know
        f"{body}.{mac[:3]} {mac[3:]}",
        f"{body[:-1]}{stray}.{mac}",
        f"{body}.{mac}.{mac}",
        f"{body}..{mac}",
    ]
    return [spelling for spelling in spellings if spelling != token]


def test_a_signed_token_has_one_spelling() -> None:
    token = next(  # one whose MAC has both - and _
        t for n in range(2000) if "-" in (t := sign("k", "click", f"id{n}:0")) and "_" in t
    )
    payload = verify("k", "click", token)
    assert payload is not None
    for spelling in _other_spellings(token):
        assert verify("k", "click", spelling) is None, spelling


def test_a_sealed_token_is_unreadable_authenticated_and_for_its_purpose() -> None:
    token = seal("k", UNSUBSCRIBE_PURPOSE, "11:pricing-guide-welcome:welcome")
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    for secret in (b"11", b"pricing", b"welcome"):
        assert secret not in raw and secret.decode() not in token
    assert unseal("k", UNSUBSCRIBE_PURPOSE, token) == "11:pricing-guide-welcome:welcome"
    assert unseal("k", "click", token) is None
    assert unseal("other", UNSUBSCRIBE_PURPOSE, token) is None
    flipped = token[:5] + ("A" if token[5] != "A" else "B") + token[6:]
    assert unseal("k", UNSUBSCRIBE_PURPOSE, flipped) is None
    for spelling in (token + "=", token.replace("-", "+").replace("_", "/") + "/", "", "A", "!"):
        assert unseal("k", UNSUBSCRIBE_PURPOSE, spelling) is None
    # Deterministic: the same email gets the same link every time it is rendered.
    assert seal("k", UNSUBSCRIBE_PURPOSE, "11:pricing-guide-welcome:welcome") == token


def test_unsubscribe_links_are_sealed_and_links_already_sent_keep_working() -> None:
    url = unsubscribe_url("https://t.example", "k", 11, "pricing-guide-welcome", "welcome")
    token = url.rsplit("/", 1)[1]
    assert "." not in token and read_unsubscribe("k", token) == (
        11,
        "pricing-guide-welcome",
        "welcome",
    )
    legacy = sign("k", UNSUBSCRIBE_PURPOSE, "11:pricing-guide-welcome:welcome")
    assert read_unsubscribe("k", legacy) == (11, "pricing-guide-welcome", "welcome")
    assert read_unsubscribe("other", legacy) is None
    assert read_unsubscribe("k", sign("k", "click", "11:x:y")) is None
    assert read_unsubscribe("k", sign("k", UNSUBSCRIBE_PURPOSE, "\u0661\u0661:x:y")) is None
    for spelling in _other_spellings(legacy):
        assert read_unsubscribe("k", spelling) is None, spelling
