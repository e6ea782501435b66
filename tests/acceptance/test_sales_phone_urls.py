"""Long URLs (a page visited with UTM tags, a clicked link) never widen the sales app on
a phone: Debian's Chromium at 375 px, every app page with such data, no sideways
scroll. Screenshots are saved under the test's ``artifacts/`` folder."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from nurture import clock
from nurture.store.database import session_scope
from nurture.store.tasks import Task
from tests.acceptance.test_sales_browser import (
    PHONE,
    artifacts,
    browser,
    no_overflow,
    sign_in,
)
from tests.salesdesk import SAM, Desk, sales_desk

__all__ = ["artifacts", "browser", "sales_desk"]

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

LONG_PAGE = (
    "https://www.acme-analytics.example/resources/pricing/enterprise-plan-comparison-guide"
    "?utm_source=linkedin&utm_medium=paid_social&utm_campaign=q4_enterprise_pricing_guide"
    "_retargeting_emea&utm_content=carousel_variant_b_with_customer_logos&utm_term=revops"
    "&gclid=EAIaIQobChMI8f3k7r2V_wIVEpxoCR0xYw0KEAAYASAAEgJm9_D_BwE"
)
LONG_CLICK = "https://www.acme-analytics.example/case-studies/" + "-".join(["brightpath"] * 30)


def test_long_urls_wrap_on_every_app_page_at_375_px(
    sales_desk: Desk, browser: Any, artifacts: Path
) -> None:
    desk = sales_desk
    now = clock.now()
    desk.event("page_visited", now - timedelta(minutes=20), data={"url": LONG_PAGE})
    desk.event("email_clicked", now - timedelta(minutes=15), data={"url": LONG_CLICK},
               sequence="pricing-guide-welcome", step="welcome")  # fmt: skip
    desk.event("email_replied", now - timedelta(minutes=10),
               data={"first_lines": f"See {LONG_PAGE} please"},
               sequence="pricing-guide-welcome", step="welcome")  # fmt: skip
    desk.tick(now - timedelta(minutes=5))
    with session_scope(desk.engine) as session:  # a task whose note carries the link
        session.add(Task(lead_id=desk.lead().id or 0, sequence="pricing-guide-welcome",
                         step="hand-written", kind="todo", assignee=SAM,
                         note=f"Send her {LONG_PAGE} before the call", due_at=now))  # fmt: skip
    page = browser.new_page(viewport=PHONE, device_scale_factor=2, is_mobile=True)
    sign_in(desk, page, SAM)
    lead_url = page.get_by_role("link", name="María López").first.get_attribute("href")
    pages = {
        "home": f"{desk.url}/app/",
        "lead": f"{desk.url}{lead_url}",
        "tasks": f"{desk.url}/app/tasks",
        "search": f"{desk.url}/app/leads?q=maria",
        "notice-link": desk.link(SAM, "handoff", "l"),
    }
    for name, url in pages.items():
        page.goto(url)
        page.wait_for_load_state()
        page.screenshot(path=str(artifacts / f"urls-{name}-375.png"), full_page=True)
        no_overflow(page)
    page.goto(pages["lead"])
    page.locator("ul.reasons").screenshot(path=str(artifacts / "urls-why-hot-375.png"))
    box = page.locator("ul.reasons li", has_text="Visited").bounding_box()
    assert box is not None and box["x"] + box["width"] <= PHONE["width"]
    timeline = page.inner_text("ol.timeline")
    page.goto(pages["tasks"])
    assert "utm_campaign=q4_enterprise" in page.inner_text("main").replace("\n", "")
    assert "utm_campaign=q4_enterprise" in timeline.replace("\n", "")
