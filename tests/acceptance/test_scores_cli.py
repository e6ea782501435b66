"""The lead's scores in the commands' expressions: ``enroll --where``, ``simulate``
(where ``--assume`` events earn their points by scoring.yaml) and ``check``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from freezegun import freeze_time

from tests.acceptance.conftest import Cli
from tests.integration.test_scores_in_expressions import SCORED

#: The example fit rule's words, as scoring.yaml lists them.
DECISION_MAKERS = ("vp", "vice president", "head", "chief", "cto", "cfo", "ceo", "coo", "cmo",
                   "director", "founder")  # fmt: skip


def test_enroll_where_simulate_and_check_see_the_scores(cli: Cli, project: Path) -> None:
    # Given the example project: leads with a decision-maker title have fit 20 once scored
    cli("tick", "--now", "2026-11-23T08:00")
    (project / "sequences" / "by-fit.yaml").write_text(
        SCORED.replace("name: welcome", "name: by-fit").replace(
            "lead.source == 'guide' and fit >= 20", "fit >= 999"
        )
    )
    # When marketing enrolls by hand the leads with fit >= 20
    with freeze_time("2026-11-23T16:10:00Z"):
        result = cli("enroll", "by-fit", "--where", "fit >= 20")
    with open(project / "leads.csv", encoding="utf-8") as handle:
        fits = [row["email"] for row in csv.DictReader(handle)
                if any(word in row["title"].lower() for word in DECISION_MAKERS)]  # fmt: skip
    assert fits, "the example has leads with fit 20"
    # Then exactly those are enrolled
    assert f"enrolled {len(fits)} leads in by-fit" in result.stdout
    # And simulate follows `if: engagement > 0` with what --assume earns by scoring.yaml
    lead = fits[0]
    quiet = cli("simulate", "by-fit", "--lead", lead, "--start", "2026-11-23T10:00",
                "--json")  # fmt: skip
    clicked = cli("simulate", "by-fit", "--lead", lead, "--start", "2026-11-23T10:00",
                  "--assume", "clicked:welcome", "--json")  # fmt: skip
    kinds = {e["step"]: e["kind"] for e in json.loads(quiet.stdout) if e["step"]}
    assert kinds["case-study"] == "skipped"
    kinds = {e["step"]: e["kind"] for e in json.loads(clicked.stdout) if e["step"]}
    assert kinds["case-study"] == "email"
    # And a meeting assumed after the welcome earns 40 points: `engagement >= 30` exits
    met = cli("simulate", "by-fit", "--lead", lead, "--start", "2026-11-23T10:00",
              "--assume", "meeting_booked:welcome", "--json")  # fmt: skip
    entries = json.loads(met.stdout)
    assert entries[-1]["kind"] == "exited" and entries[-1]["reason"] == "engagement >= 30"


def test_check_evaluates_the_audience_with_the_sample_lead_s_fit(cli: Cli, project: Path) -> None:
    # Given an audience whose second half is only looked at for leads with some fit, and
    # a sample lead (the first row of leads.csv, a VP) that scoring.yaml gives fit 30
    (project / "sequences" / "by-fit.yaml").write_text(
        SCORED.replace("name: welcome", "name: by-fit").replace(
            "lead.source == 'guide' and fit >= 20", "fit >= 20 and lead.no_such_column > 5"
        )
    )
    # When check runs
    result = cli("check", ok=False)
    # Then the audience is evaluated with that fit, and its undefined name is reported
    assert result.exit_code == 1
    assert "audience fails on the sample lead" in result.stdout
    assert "no_such_column" in result.stdout
