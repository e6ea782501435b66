"""Imports from real CRMs: a HubSpot export, owners by name, the columns the examples
read (the real command line, in a subprocess)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.acceptance.conftest import Run
from tests.acceptance.test_language import demo

__all__ = ["demo"]

HUBSPOT = (
    "Record ID,First Name,Last Name,Email,Contact owner,Job Title,Company Name,"
    "Number of Employees,Annual Revenue,Industry,Country/Region,City,LinkedIn URL,Website\n"
    "101,Ann,Lee,ann@acme.example,Sam Patel,VP Sales,Acme,250,12000000,SaaS,Germany,Berlin,"
    "https://www.linkedin.com/in/ann-lee,https://acme.example\n"
    "102,Bob,Ray,bob@beta.example,Pat Nobody,CTO,Beta,12,,Retail,France,Paris,,\n"
    "103,Cy,Oh,Sam Patel,lee chen,Founder,Gamma,40,,,,,,\n"
)


def show(nurture: Run, project: Path, email: str) -> dict[str, object]:
    shown = nurture("leads", "show", email, "--json", cwd=project)
    assert shown.returncode == 0, shown.stderr
    return dict(json.loads(shown.stdout))


def test_a_hubspot_export_owners_by_name_and_the_columns_the_examples_read(
    nurture: Run, demo: Path
) -> None:
    (demo / "hubspot.csv").write_text(HUBSPOT, encoding="utf-8")
    result = nurture("--now", "2026-11-16T09:00Z", "leads", "import", "hubspot.csv", cwd=demo)
    assert result.returncode == 1, result.stderr  # one row is rejected
    assert "Traceback" not in result.stderr
    # The rejected row names its column.
    [rejected] = [line for line in result.stderr.splitlines() if "rejected" in line]
    assert rejected.startswith("hubspot.csv:4: rejected: invalid email 'Sam Patel'")
    assert rejected.endswith("(column 'Email')")
    assert "would also give" not in result.stderr
    # An owner nobody on the team is called: kept, with a warning naming the column.
    assert (
        "hubspot.csv:3: warning: column 'Contact owner': 'Pat Nobody' is neither an email nor "
        "the name of a salesperson"
    ) in result.stderr
    ann = show(nurture, demo, "ann@acme.example")
    assert ann["owner"] == "sam@example.com"  # "Sam Patel <sam@example.com>" in [sales] team
    assert ann["attributes"] == {
        "record_id": "101", "employees": "250", "annual_revenue": "12000000",
        "industry": "SaaS", "country": "Germany", "city": "Berlin",
        "linkedin_url": "https://www.linkedin.com/in/ann-lee", "website": "https://acme.example",
    }  # fmt: skip
    bob = show(nurture, demo, "bob@beta.example")
    assert bob["owner"] is None
    assert bob["attributes"]["contact_owner"] == "Pat Nobody"  # type: ignore[index]
    # The example scoring reads lead.employees: Ann's 250 count for her fit.
    assert nurture("--now", "2026-11-16T09:00Z", "tick", cwd=demo).returncode == 0
    assert "fit 30 " in nurture("leads", "show", "ann@acme.example", cwd=demo).stdout


def test_map_takes_any_attribute_name_that_is_not_exactly_a_field(nurture: Run, demo: Path) -> None:
    (demo / "hubspot.csv").write_text(HUBSPOT, encoding="utf-8")
    result = nurture("--now", "2026-11-16T09:00Z", "leads", "import", "hubspot.csv", "--map",
                     "Contact owner=crm_owner", cwd=demo)  # fmt: skip
    assert "Traceback" not in result.stderr
    assert (
        "warning: --map: 'crm_owner' is not a lead field (did you mean 'owner'?): the column "
        "is kept as the attribute crm_owner"
    ) in result.stderr
    ann = show(nurture, demo, "ann@acme.example")
    assert ann["owner"] is None
    assert ann["attributes"]["crm_owner"] == "Sam Patel"  # type: ignore[index]


def test_sales_names_match_owners_in_any_case(nurture: Run, demo: Path) -> None:
    toml = demo / "nurture.toml"
    text = toml.read_text().replace(
        'team = ["Sam Patel <sam@example.com>", "Lee Chen <lee@example.com>"]',
        'team = ["sam@example.com", "lee@example.com"]\nnames = {"lee@example.com" = "Lee Chen"}',
    )
    toml.write_text(text)
    (demo / "owners.csv").write_text("email,owner\ncy@gamma.example,  LEE   chen \n")
    result = nurture("leads", "import", "owners.csv", cwd=demo)
    assert result.returncode == 0, result.stderr
    assert show(nurture, demo, "cy@gamma.example")["owner"] == "lee@example.com"
