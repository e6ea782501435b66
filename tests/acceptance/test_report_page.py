"""``nurture report --html`` and ``nurture simulate --html``: the page a marketing team
opens on Monday, and one lead's path, read in Debian's Chromium at a phone's width
(390 px) and a desktop's (1280 px). Screenshots are saved under ``artifacts/``."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.conftest import Run
from tests.acceptance.test_sales_browser import artifacts, browser
from tests.reportdemo import build

__all__ = ["artifacts", "browser"]

NOW = ("--now", "2026-11-04T12:00Z")


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project that lived through a month (built once for these tests)."""
    directory = tmp_path_factory.mktemp("month") / "demo"
    build(directory)
    return directory


def sections(page: str) -> dict[str, str]:
    """The HTML of each sequence's section, by name."""
    found = re.findall(r'<section class="card" id="sequence-([^"]+)">(.*?)</section>', page, re.S)
    return dict(found)


def test_the_report_draws_each_sequence_with_its_figures(nurture: Run, month: Path) -> None:
    result = nurture(*NOW, "report", "--html", "report.html", cwd=month)
    assert result.returncode == 0, result.stderr
    page = (month / "report.html").read_text()
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org", "")
    by_name = sections(page)
    assert set(by_name) == {"outbound-first-touch", "pricing-guide-welcome", "recycled-reengage"}
    outbound = by_name["outbound-first-touch"]
    assert outbound.count('<svg class="diagram"') == 1
    for text in ("EMAIL · intro", "TASK · linkedin · connect", "wait 3 business days, at 09:15",
                 "if outcome(&#x27;call&#x27;) == &#x27;qualified&#x27;",
                 "outcomes: qualified · not_now · no_answer",
                 "opened by people", "Completed"):  # fmt: skip
        assert text in outbound, text
    assert re.search(r"done \d+: no_answer \d+ · not_now \d+", outbound)
    assert re.search(r"reached \d+ · skipped \d+", outbound)  # the seminar's condition
    welcome = by_name["pricing-guide-welcome"]
    assert "A/B split:" in welcome and "A: breakup-short 50%" in welcome
    assert re.search(r"exited after it \d+: replied \d+", welcome)
    assert re.search(r'data-label="exited after">\d+<', welcome)
    for state in ("enrolled", "active", "completed", "exited", "paused", "failed"):
        assert f">{state}</text>" in welcome, state
    assert "exited: replied:" in welcome
    # The A/B test against the first variant listed (breakup-short), not the first by name.
    data = json.loads(nurture(*NOW, "report", "--json", cwd=month).stdout)
    first, second = data["variants"]
    assert first["variant"] == "breakup-short" and first["compared_with"] is None
    assert second["variant"] == "breakup-long" and second["compared_with"] == "breakup-short"
    assert "breakup-short (A)" in page
    assert "Weekly trend: emails sent" in page and "2026-W41" in page


def _open(browser: Any, url: str, width: int) -> Any:
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.goto(url)
    page.wait_for_load_state()
    return page


def test_the_report_reads_on_a_phone_and_a_desktop(
    nurture: Run, month: Path, browser: Any, artifacts: Path
) -> None:
    assert nurture(*NOW, "report", "--html", "report.html", cwd=month).returncode == 0
    url = (month / "report.html").as_uri()
    for width in (390, 1280):
        page = _open(browser, url, width)
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        diagrams = page.locator("svg.diagram")
        assert diagrams.count() == 3
        box = diagrams.first.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width
        # The diagram's text is drawn at a readable size: 12 units at least at 390 px.
        assert box["width"] >= 300
        page.screenshot(path=str(artifacts / f"report-{width}.png"), full_page=True)
        page.locator("#sequence-pricing-guide-welcome").screenshot(
            path=str(artifacts / f"report-sequence-{width}.png")
        )
        page.close()


def test_simulate_html_draws_the_leads_path_on_the_same_diagram(
    nurture: Run, month: Path, browser: Any, artifacts: Path
) -> None:
    result = nurture("simulate", "outbound-first-touch", "--lead", "olivia.grant@fernleaf.co.uk",
                     "--start", "2026-11-16T09:00", "--assume", "qualified:call", "--html",
                     "path.html", cwd=month)  # fmt: skip
    assert result.returncode == 0, result.stderr
    page_html = (month / "path.html").read_text()
    assert '<svg class="diagram"' in page_html and "<script" not in page_html
    assert "gets it Mon 2026-11-16 14:00 GMT" in page_html  # intro, in her time
    assert "skipped Thu 2026-12-10 09:15 GMT" in page_html  # the break-up: she qualified
    assert 'stroke-dasharray="5 4"' in page_html
    for width in (390, 1280):
        page = _open(browser, (month / "path.html").as_uri(), width)
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        page.screenshot(path=str(artifacts / f"simulate-{width}.png"), full_page=True)
        page.close()
