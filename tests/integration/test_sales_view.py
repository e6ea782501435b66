"""Issue 25: what sales sees agrees with itself after an answer, and never shows an
expression or a raw decimal (the app served by uvicorn, a real database)."""

from __future__ import annotations

import re

import pytest

from tests import salesdesk
from tests.salesdesk import SAM, Desk, csrf_of

sales_desk = salesdesk.sales_desk  # the fixture: the app served, María handed to Sam


def _answer(desk: Desk, answer: str, reason: str) -> str:
    """Sam answers from the notice's link; the lead page after it."""
    notice = desk.link(SAM, "handoff", "l")
    with desk.client() as sam:
        csrf = csrf_of(sam.get(notice).text)
        done = sam.post(f"{notice}/answer", data={"csrf": csrf, "answer": answer,
                                                  "reason": reason})  # fmt: skip
        assert done.status_code == 303
        return str(sam.get(notice).text)


@pytest.mark.parametrize("answer", ["reject", "recycle"])
def test_who_just_answered_sees_the_answer_not_claim_it(sales_desk: Desk, answer: str) -> None:
    page = _answer(sales_desk, answer, "no budget this year")
    assert "Claim it" not in page
    said = {"reject": "rejected", "recycle": "recycled"}[answer]
    assert f"{said} by {SAM}" in page and "no budget this year" in page


def test_after_a_recycle_no_old_points_stand_beside_engagement_zero(sales_desk: Desk) -> None:
    page = _answer(sales_desk, "recycle", "later")
    assert "Engagement 0" in page
    assert not re.search(r'class="pts engagement">\+', page)  # no +20, +10, +5 left
    assert "No scored events since" in page


def test_a_fit_rule_without_a_label_reads_plainly(sales_desk: Desk) -> None:
    path = sales_desk.project / "scoring.yaml"
    path.write_text(path.read_text().replace("    label: Decision-maker title", ""))
    notice = sales_desk.link(SAM, "handoff", "l")
    with sales_desk.client() as sam:
        page = sam.get(notice).text
    assert "Fits: title" in page
    assert "lead.title" not in page and "{{" not in page and "select(" not in page
    assert not re.search(r"\d\.\d", re.sub(r"<[^>]+>|[\w.-]+@[\w.-]+", "", page))


def test_check_warns_about_a_fit_rule_without_a_label(sales_desk: Desk) -> None:
    from nurture.reports.check import check_project

    path = sales_desk.project / "scoring.yaml"
    path.write_text(path.read_text().replace("    label: Decision-maker title", ""))
    result = check_project(sales_desk.config)
    assert any("without a label" in w.message for w in result.warnings)


def test_everyone_on_the_sales_side_reads_how_the_definition_is_doing(
    sales_desk: Desk,
) -> None:
    from tests.salesdesk import LEE

    with sales_desk.client() as lee:
        sales_desk.sign_in(lee, LEE)
        home = lee.get("/app/").text
        assert 'href="/app/report/handoffs"' in home
        page = lee.get("/app/report/handoffs")
        assert page.status_code == 200
        assert "How our hot-lead definition is doing" in page.text
        assert "<p>1 hand-offs: 0 accepted" in page.text  # María, waiting for Sam
    with sales_desk.client() as stranger:
        assert stranger.get("/app/report/handoffs").status_code in (303, 307)


def test_the_shared_reasons_are_offered_and_other_takes_words(sales_desk: Desk) -> None:
    from sqlmodel import select

    from nurture.store.database import session_scope
    from nurture.store.handoffs import Handoff

    path = sales_desk.project / "scoring.yaml"
    path.write_text(path.read_text() + "reasons:\n  reject: [student, competitor]\n"
                    "  recycle: [budget next quarter]\n")  # fmt: skip
    notice = sales_desk.link(SAM, "handoff", "l")
    with sales_desk.client() as sam:
        page = sam.get(notice).text
        assert 'value="student"' in page and 'value="budget next quarter"' in page
        assert 'value="other"' in page
        fields = {"csrf": csrf_of(page), "answer": "reject", "choice": "competitor", "reason": ""}
        done = sam.post(f"{notice}/answer", data=fields)
        assert done.status_code == 303
    with session_scope(sales_desk.engine) as session:
        handoff = session.exec(select(Handoff)).one()
        assert (handoff.status, handoff.reason) == ("rejected", "competitor")


def test_a_task_of_the_sales_inbox_is_on_the_tasks_page_and_taken_once(
    sales_desk: Desk,
) -> None:
    from sqlmodel import select

    from nurture import clock
    from nurture.store.database import session_scope
    from nurture.store.leads import Lead
    from nurture.store.tasks import Task
    from tests.salesdesk import LEE

    tom = "tom.becker@harbor-analytics.com"  # nobody's lead
    with session_scope(sales_desk.engine) as session:
        lead = session.exec(select(Lead).where(Lead.email == tom)).one()
        assert lead.owner is None
        task = Task(lead_id=lead.id or 0, sequence="manual", step="call", kind="call",
                    note="Call Tom", assignee="sales@example.com", due_at=clock.now())  # fmt: skip
        session.add(task)
        session.flush()
        task_id = task.id
    with sales_desk.client() as lee, sales_desk.client() as sam:
        sales_desk.sign_in(lee, LEE)
        sales_desk.sign_in(sam, SAM)
        page = lee.get("/app/tasks").text
        assert "Call Tom" in page and "Take it" in page
        sam_page = sam.get("/app/tasks").text
        taken = lee.post(f"/app/tasks/{task_id}", data={"csrf": csrf_of(page), "do": "take"})
        assert taken.status_code == 303
        again = sam.post(f"/app/tasks/{task_id}", data={"csrf": csrf_of(sam_page), "do": "take"})
        assert again.status_code == 422  # once
    with session_scope(sales_desk.engine) as session:
        assert session.get(Task, task_id).assignee == LEE  # type: ignore[union-attr]
