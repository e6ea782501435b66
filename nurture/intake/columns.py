"""The columns of a CSV export: what each header means (a lead field, or a custom
attribute under the name the example scoring and sequences use) and ``--map``.

Pure: names in, names out."""

from __future__ import annotations

import re
from collections.abc import Iterable

from nurture.errors import InvalidValueError
from nurture.language.fields import SETTABLE_FIELDS
from nurture.suggest import close_match, did_you_mean

#: Other spellings of the known columns (after :func:`column_key`), as the usual exports
#: write them (HubSpot, Salesforce, Pipedrive, Zoho, Mailchimp, Outlook, Google Contacts,
#: LinkedIn, Apollo...). Where a file has several columns for one field (Outlook's
#: "Business Phone" and "Mobile Phone"), the one earliest in its list wins and the others
#: stay custom attributes.
FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "email": (
        "e_mail",
        "email_address",
        "e_mail_address",
        "emailaddress",
        "mail",
        "work_email",
        "business_email",
        "primary_email",
        "contact_email",
        "person_email",
        "email_1",
        "e_mail_1_value",
        "email_1_value",
        "email_s",
    ),
    "first_name": ("firstname", "first", "given_name", "fname", "person_first_name"),
    "last_name": ("lastname", "last", "surname", "family_name", "lname", "person_last_name"),
    "company": (
        "company_name",
        "organization",
        "organisation",
        "organization_name",
        "account_name",
        "account",
        "employer",
        "organization_1_name",
    ),
    "title": ("job_title", "position", "designation", "job_position", "role"),
    "phone": (
        "phone_number",
        "telephone",
        "work_phone",
        "business_phone",
        "direct_phone",
        "work_direct_phone",
        "phone_1_value",
        "mobile",
        "mobile_phone",
        "mobile_number",
    ),
    "timezone": ("tz", "time_zone", "timezone_name"),
    "owner": ("lead_owner", "contact_owner", "owner_email", "record_owner", "account_owner"),
    "source": ("lead_source", "original_source", "source_name"),
    "stage": ("lead_stage",),
    "status": ("contact_status",),
}
ALIASES = {alias: name for name, aliases in FIELD_ALIASES.items() for alias in aliases}
#: Columns of the usual exports that are not lead fields but that the example scoring
#: and sequences read, by the attribute name they read (``lead.employees``); a column
#: named otherwise keeps its own name (``Favourite Colour`` -> ``lead.favourite_colour``).
ATTRIBUTE_ALIASES: dict[str, tuple[str, ...]] = {
    "employees": (
        "employees", "number_of_employees", "no_of_employees", "num_employees",
        "employee_count", "company_size", "headcount", "company_headcount",
    ),
    "annual_revenue": ("annual_revenue", "revenue", "company_revenue"),
    "industry": ("industry", "company_industry"),
    "country": ("country", "country_region", "business_country_region", "company_country"),
    "city": ("city", "business_city", "company_city"),
    "linkedin_url": (
        "linkedin_url", "linkedin", "linkedin_profile", "person_linkedin_url", "linkedin_link",
    ),
    "website": ("website", "website_url", "company_website", "web_page", "domain_url"),
}  # fmt: skip
ATTRIBUTES = {alias: name for name, aliases in ATTRIBUTE_ALIASES.items() for alias in aliases}


def column_key(header: str) -> str:
    """``"First Name"`` -> ``"first_name"``: the name a column is known by."""
    return re.sub(r"[^0-9a-z]+", "_", header.strip().lower()).strip("_")


def attribute_rank(key: str) -> int:
    """How good a spelling of its attribute *key* is (0 best), for choosing between two
    columns that give one attribute."""
    name = ATTRIBUTES.get(key)
    return ATTRIBUTE_ALIASES[name].index(key) if name else 0


def parse_mapping(pairs: Iterable[str]) -> dict[str, str]:
    """``--map "Column Name=field"`` options -> {column key: field or attribute name}.

    The field is a lead field (``email``, ``company``...), ``-`` to ignore the column,
    or any other name for a custom attribute (a near miss of a field too: see
    :func:`mapping_warnings`).
    """
    mapping: dict[str, str] = {}
    for pair in pairs:
        column, sep, target = pair.rpartition("=")
        if not sep or not column.strip() or not target.strip():
            raise InvalidValueError(f'--map {pair!r}: write it as "Column Name=field"')
        wanted = target.strip()
        if wanted != "-":
            wanted = column_key(wanted)
            if not wanted:
                raise InvalidValueError(f"--map {pair!r}: {target.strip()!r} is not a name")
        mapping[column_key(column)] = wanted
    return mapping


def mapping_warnings(mapping: dict[str, str]) -> list[str]:
    """What to tell about a ``--map``: a target that is close to a lead field but is not
    one is kept as that attribute, and said so with a did-you-mean."""
    return [
        f"--map: {target!r} is not a lead field{did_you_mean(target, SETTABLE_FIELDS)}: "
        f"the column is kept as the attribute {target}"
        for target in mapping.values()
        if target != "-" and target not in SETTABLE_FIELDS and close_match(target, SETTABLE_FIELDS)
    ]
