"""The plain-address fast path of ``normalize_email`` answers exactly as
email_validator does, for plain addresses and for every near miss of one."""

from __future__ import annotations

import random

import pytest
from email_validator import EmailNotValidError, validate_email

from nurture.errors import InvalidValueError
from nurture.language.fields import normalize_email


def reference(value: str) -> str | None:
    """What email_validator alone says: the lower-cased address, or ``None``."""
    candidate = value.strip()
    if not candidate:
        return None
    try:
        return validate_email(candidate, check_deliverability=False).normalized.lower()
    except EmailNotValidError:
        return None


def ours(value: str) -> str | None:
    normalize_email.cache_clear()
    try:
        return normalize_email(value)
    except InvalidValueError:
        return None


EDGES = [
    "Ann.Lee@Example.COM", " ann@example.com ", "ann@example.com.", "ann@.example.com",
    "ann..lee@example.com", ".ann@example.com", "ann.@example.com", "ann@example..com",
    "ann@-example.com", "ann@example-.com", "ann@localhost", "ann@example", "ann@test",
    "ann@example.invalid", "ann@example.local", "ann@x.onion", "ann@123.45",
    "ann@[127.0.0.1]", '"ann lee"@example.com', "ann@exa_mple.com", "ann@xn--e1afmkfd.xn--p1ai",
    "ann@xn--abc.com", "ann@@example.com", "@example.com", "ann@", "a" * 64 + "@example.com",
    "a" * 65 + "@example.com", "ann@" + "a" * 63 + ".com", "ann@" + "a" * 64 + ".com",
    "ann@" + ".".join(["abcdefghi"] * 25) + ".com",
    "a" * 64 + "@" + ".".join(["b" * 60] * 3) + ".com",
    "a" * 60 + "@" + ".".join(["b" * 40] * 5) + ".com", "ann+tag@example.com",
    "o'brien@example.ie", "ann@EXAMPLE.co.uk", "ann@example.c", "ann@example.123",
    "ann@exa mple.com", "ann lee@example.com", "ännä@example.com", "ann@exämple.com", "",
]  # fmt: skip


@pytest.mark.parametrize("value", EDGES)
def test_an_edge_case_is_judged_as_email_validator_judges_it(value: str) -> None:
    assert ours(value) == reference(value)


def test_random_near_misses_are_judged_as_email_validator_judges_them() -> None:
    # Given addresses built from the characters that matter at each place
    rng = random.Random(23)
    local_chars = "abcXYZ019.+-_'!#~\"() ,é"
    domain_chars = "abcXYZ019.-_ é"
    tlds = ["com", "io", "COM", "invalid", "local", "1", "c", "xn--p1ai", ""]
    for _ in range(3000):
        local = "".join(rng.choice(local_chars) for _ in range(rng.randint(0, 12)))
        domain = "".join(rng.choice(domain_chars) for _ in range(rng.randint(0, 10)))
        value = f"{local}@{domain}.{rng.choice(tlds)}"
        # Then the fast path says what email_validator says, address by address
        assert ours(value) == reference(value), value
