"""A lead's account and email domain, and the day an absent lead's sequences go on
(pure)."""

from __future__ import annotations

from datetime import date

from nurture.language.accounts import account_of, account_reply_words, company_domain
from nurture.language.timing import Window, next_business_day


def test_the_account_is_the_company_else_the_domain_unless_free_mail() -> None:
    ana, leo = account_of("BrightPath", "ana@gmail.com"), account_of("brightpath", "l@b.io")
    assert ana is not None and leo is not None and ana.key == leo.key
    assert ana.name == "BrightPath"
    assert account_of(" BrightPath ", "ana@gmail.com").key == "company:brightpath"  # type: ignore[union-attr]
    assert account_of(None, "Tom@ACME.com").key == "domain:acme.com"  # type: ignore[union-attr]
    assert account_of("", "tom@acme.com").name == "acme.com"  # type: ignore[union-attr]
    assert account_of(None, "ivy@gmail.com") is None
    assert account_of(None, "ivy@outlook.com") is None
    assert company_domain("ivy@GMAIL.com") is None
    assert company_domain("ana@brightpath.io") == "brightpath.io"


def test_a_colleague_s_reply_in_words() -> None:
    data = {"name": "Ana Ruiz", "account": "BrightPath"}
    assert account_reply_words(data) == "Ana Ruiz at BrightPath replied"


def test_the_next_business_day_skips_weekends_and_the_window_s_holidays() -> None:
    assert next_business_day(date(2026, 12, 2)) == date(2026, 12, 3)  # Wed → Thu
    assert next_business_day(date(2026, 12, 4)) == date(2026, 12, 7)  # Fri → Mon
    assert next_business_day(date(2026, 12, 24), Window(holidays="PL")) == date(2026, 12, 28)
