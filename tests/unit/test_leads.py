from __future__ import annotations

import pytest

from nurture.errors import InvalidValueError
from nurture.language.fields import (
    ContactStatus,
    Stage,
    check_timezone,
    merge_status,
    normalize_email,
    parse_field,
    parse_stage,
    parse_status,
)


def test_email_is_normalised_and_lower_cased() -> None:
    assert normalize_email("  Maria.Lopez@BrightPath.IO ") == "maria.lopez@brightpath.io"


@pytest.mark.parametrize("bad", ["", "   ", "bob", "bob@", "@example.com", "a b@example.com"])
def test_bad_email_is_refused_with_its_value(bad: str) -> None:
    with pytest.raises(InvalidValueError, match="email"):
        normalize_email(bad)


def test_timezone_must_be_an_iana_name() -> None:
    assert check_timezone("Europe/Warsaw") == "Europe/Warsaw"
    with pytest.raises(InvalidValueError, match="unknown timezone 'Mars/Base'"):
        check_timezone("Mars/Base")
    with pytest.raises(InvalidValueError):
        check_timezone("CEST")


def test_stage_and_status_parse_case_insensitively() -> None:
    assert parse_stage(" Warm ") is Stage.warm
    assert parse_status("UNSUBSCRIBED") is ContactStatus.unsubscribed
    with pytest.raises(InvalidValueError, match="one of: cold, warm, hot"):
        parse_stage("lukewarm")
    with pytest.raises(InvalidValueError, match="unknown status"):
        parse_status("maybe")


def test_text_fields_are_limited_to_their_column_length() -> None:
    assert parse_field("company", "  Acme  ") == "Acme"
    with pytest.raises(InvalidValueError, match="phone is longer than 64"):
        parse_field("phone", "1" * 65)


def test_an_opt_out_is_never_undone_by_new_data() -> None:
    assert merge_status("unsubscribed", "subscribed") == "unsubscribed"
    assert merge_status("bounced", "subscribed") == "bounced"
    assert merge_status("subscribed", "unsubscribed") == "unsubscribed"
    assert merge_status("unsubscribed", "complained") == "complained"
