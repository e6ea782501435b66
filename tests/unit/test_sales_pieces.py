"""Pure pieces of the sales side: reply excerpts, plain-language reasons, digest
moments, task outcomes, and the import graph (scoring knows nothing of sales)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import pytest

from nurture.errors import InvalidValueError
from nurture.language.excerpt import first_lines
from nurture.language.timing import zone
from nurture.sales.digest import digest_due
from nurture.sales.explain import reasons, when
from nurture.store.tasks import Task, check_outcome


def test_scoring_does_not_import_the_hand_off() -> None:
    code = "import sys, nurture.sales.scorer; print('nurture.sales.notice' in sys.modules)"
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True)  # fmt: skip
    assert shown.stdout.strip() == "False"


def test_a_replys_first_lines_leave_the_quote_and_signature_out() -> None:
    text = "Hi Ana,\n\nCould we see a demo?\n\n-- \nMaría\n\nOn Tue, Ana wrote:\n> hello"
    assert first_lines(text) == "Hi Ana,\nCould we see a demo?"
    assert first_lines("> only a quote") == ""
    assert first_lines("x" * 1000).endswith("…") and len(first_lines("x" * 1000)) == 400


def test_reasons_group_repeats_and_say_when_in_the_readers_zone() -> None:
    now = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
    breakdown = {
        "events": [
            {"id": 1, "type": "email_replied", "at": "2026-11-24T15:32:00+00:00",
             "sequence": "s", "step": "welcome", "now": 19.5},
            {"id": 2, "type": "form_submitted", "at": "2026-11-24T15:00:00+00:00",
             "sequence": None, "step": None, "now": 9.0},
            {"id": 3, "type": "form_submitted", "at": "2026-11-24T16:00:00+00:00",
             "sequence": None, "step": None, "now": 9.5},
        ],
        "fit_rules": [{"if": "lead.title is defined", "points": 20, "label": "VP title"}],
    }  # fmt: skip
    found = reasons(breakdown, {}, {("s", "welcome"): "Your pricing guide"},
                    zone("America/New_York"), now)  # fmt: skip
    assert [r.text for r in found] == [
        'Replied to "Your pricing guide" on Tue 10:32',
        "Filled in a form 2 times, last on Tue 11:00",
        "VP title",
    ]
    assert when(datetime(2025, 3, 1, 12, tzinfo=UTC), zone("UTC"), now) == "Sat 1 Mar 2025 12:00"


def test_a_digest_is_due_on_business_mornings_only() -> None:
    monday = datetime(2026, 11, 23, 13, 30, tzinfo=UTC)  # 08:30 in New York
    assert digest_due(monday, "America/New_York", "08:00") == "2026-11-23"
    assert digest_due(monday, "America/New_York", "09:00") is None  # not yet
    assert digest_due(monday, "Asia/Tokyo", "08:00") is None  # 22:30 there: too late
    saturday = datetime(2026, 11, 28, 13, 30, tzinfo=UTC)
    assert digest_due(saturday, "America/New_York", "08:00") is None


def test_a_task_takes_only_the_outcomes_its_step_declares() -> None:
    task = Task(id=7, lead_id=1, sequence="outbound", step="call", kind="call",
                outcomes=["qualified", "not_now"])  # fmt: skip
    assert check_outcome(task, " qualified ") == "qualified"
    with pytest.raises(InvalidValueError, match="did you mean 'qualified'"):
        check_outcome(task, "qualifed")
    with pytest.raises(InvalidValueError, match="needs an outcome: one of qualified, not_now"):
        check_outcome(task, None)
    assert check_outcome(Task(id=8, lead_id=1, sequence="s", step="t", kind="todo"),
                         "left a voicemail") == "left a voicemail"  # fmt: skip
