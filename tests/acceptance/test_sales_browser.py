"""The sales workspace in a real browser: Debian's headless Chromium driven by
Playwright, against the app served by uvicorn. Screenshots of the home page and a
lead's page, at a phone's width and a desktop's, are saved under the test's
``artifacts/`` folder (the path is printed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from nurture import clock
from nurture.store.database import session_scope
from nurture.store.outbox import OutboxMessage
from nurture.store.tasks import Task, TaskStatus, complete_task
from tests.conftest import IN_CI
from tests.salesdesk import LEE, MARIA, SAM, Desk, sales_desk

__all__ = ["sales_desk"]

CHROMIUM = os.environ.get("NURTURE_TEST_CHROMIUM", "/usr/bin/chromium")
PHONE = {"width": 375, "height": 812}
DESKTOP = {"width": 1280, "height": 900}
OLIVIA = "olivia.grant@fernleaf.co.uk"  # outbound, owned by lee@example.com

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if IN_CI:
            raise
        pytest.skip("playwright is not installed")
    if not Path(CHROMIUM).exists():
        if IN_CI:
            pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium")
        pytest.skip(f"{CHROMIUM} is missing")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run",
                  "--disable-dev-shm-usage"],
        )  # fmt: skip
        yield launched
        launched.close()


@pytest.fixture
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    named = os.environ.get("NURTURE_TEST_ARTIFACTS", "")
    directory = Path(named) if named else tmp_path_factory.mktemp("artifacts")
    directory.mkdir(parents=True, exist_ok=True)
    print(f"screenshots in {directory}")
    return directory


def nurture_cli(desk: Desk, *args: str) -> subprocess.CompletedProcess[str]:
    """The real command line, on the test's project and database."""
    env = {**os.environ, "NURTURE_DATABASE_URL": str(desk.engine.url.render_as_string(False))}
    return subprocess.run(
        [sys.executable, "-m", "nurture", "--config", str(desk.project / "nurture.toml"), *args],
        capture_output=True, text=True, env=env, check=True, timeout=60,
    )  # fmt: skip


def sign_in(desk: Desk, page: Any, email: str) -> None:
    page.goto(f"{desk.url}/app/login")
    page.get_by_label("Email").fill(email)
    page.get_by_role("button", name="Email me a sign-in link").click()
    page.get_by_role("heading", name="Check your email").wait_for()
    page.goto(desk.link(email, "signin", "signin"))
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Hot leads for you").wait_for()


def no_overflow(page: Any) -> None:
    """Nothing wider than the screen: no sideways scrolling on a phone."""
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], width


def test_sign_in_open_a_hot_lead_see_why_accept(
    sales_desk: Desk, browser: Any, artifacts: Path
) -> None:
    desk = sales_desk
    phone = browser.new_page(viewport=PHONE, device_scale_factor=2, is_mobile=True)
    sign_in(desk, phone, SAM)
    assert "Replied to" in phone.inner_text("ul.leads")
    no_overflow(phone)
    phone.screenshot(path=str(artifacts / "home-phone.png"), full_page=True)
    phone.get_by_role("link", name="María López").first.click()
    phone.get_by_role("heading", name="María López").wait_for()
    why = phone.inner_text("ul.reasons")
    assert "Replied to" in why and "Decision-maker title" in why and "+20" in why
    assert "Could we see a demo next week?" in phone.inner_text("blockquote")
    assert phone.get_by_role("link", name="Call +1 415 555 0142").get_attribute("href") == (
        "tel:+14155550142"
    )
    no_overflow(phone)
    phone.screenshot(path=str(artifacts / "lead-phone.png"), full_page=True)
    desktop = browser.new_page(viewport=DESKTOP)
    desktop.context.add_cookies(phone.context.cookies())
    desktop.goto(f"{desk.url}/app/")
    desktop.screenshot(path=str(artifacts / "home-desktop.png"), full_page=True)
    desktop.goto(phone.url)
    desktop.screenshot(path=str(artifacts / "lead-desktop.png"), full_page=True)
    phone.get_by_role("button", name="Accept: I take it").click()
    phone.get_by_text("Accepted: the lead is yours.").wait_for()
    shown = json.loads(nurture_cli(desk, "leads", "show", MARIA, "--json").stdout)
    assert shown["stage"] == "accepted"
    assert shown["handoffs"][-1]["status"] == "accepted"


def test_a_notice_link_without_signing_in_recycles_the_lead(sales_desk: Desk, browser: Any) -> None:
    desk = sales_desk
    page = browser.new_page(viewport=PHONE, is_mobile=True)
    page.goto(desk.link(SAM, "handoff", "l"))
    page.get_by_role("heading", name="María López").wait_for()
    assert page.get_by_role("link", name="Sign out").count() == 0
    page.get_by_text("Recycle: not now, back to nurture").click()
    page.get_by_label("Why (kept with the lead)").last.fill("budget next quarter")
    page.get_by_role("button", name="Recycle", exact=True).click()
    page.get_by_text("Recycled: back to nurture.").wait_for()
    lead = desk.lead()
    assert lead.stage == "cold" and lead.attributes["recycle_reason"] == "budget next quarter"
    timeline = page.inner_text("ol.timeline")
    assert "Recycled by sam@example.com from the notice's link" in timeline


def call_task(desk: Desk) -> Task | None:
    """Olivia's qualifying call, once the sequence has made it."""
    olivia = desk.lead(OLIVIA).id
    with session_scope(desk.engine) as session:
        return session.exec(
            select(Task).where(Task.lead_id == olivia).where(Task.step == "call")
        ).first()


def test_a_call_done_with_outcome_qualified_sends_the_seminar_invitation(
    sales_desk: Desk, browser: Any
) -> None:
    desk = sales_desk
    # Two weeks of the outbound sequence: lee does each LinkedIn task when it is due,
    # until Olivia's qualifying call is on his list.
    moment = clock.now() + timedelta(hours=1)
    while call_task(desk) is None:
        assert moment < clock.now() + timedelta(days=21), "no call task"
        desk.tick(moment)
        with clock.pinned(moment), session_scope(desk.engine) as session:
            for task in session.exec(select(Task).where(Task.kind == "linkedin")
                                     .where(Task.status == TaskStatus.open.value)):  # fmt: skip
                complete_task(session, task.id or 0, "connected", by=LEE)
        moment += timedelta(hours=4)
    page = browser.new_page(viewport=PHONE, is_mobile=True)
    sign_in(desk, page, LEE)
    page.goto(f"{desk.url}/app/tasks")
    task = page.locator("li.task", has_text="Olivia Grant").filter(has_text="Call")
    task.get_by_label("qualified").check()
    task.get_by_role("button", name="Done").click()
    page.get_by_text("Task done.").wait_for()
    done = call_task(desk)
    assert done is not None and done.outcome == "qualified" and done.done_by == LEE
    # The sequence branches: the seminar invitation goes, a week of passes later.
    later = max(moment, clock.now()) + timedelta(hours=1)
    for _ in range(60):
        desk.tick(later)
        later += timedelta(hours=4)
    with session_scope(desk.engine) as session:
        steps = set(
            session.exec(select(OutboxMessage.step).where(OutboxMessage.recipient == OLIVIA))
        )
    assert {"intro", "follow-up", "seminar"} <= steps and "breakup" not in steps
