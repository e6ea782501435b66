"""``[limits] per_domain_daily``: at most N different leads of one recipient domain are
emailed in one day (free-mail domains are not counted), with a real SMTP server, on
SQLite and PostgreSQL; the cap holds between two workers whose claims overlap."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from freezegun import freeze_time
from sqlalchemy import Engine
from sqlmodel import select

from nurture import hooks
from nurture.config import load_settings
from nurture.engine.context import Context
from nurture.stages.passes import run_pass
from nurture.store.counters import Cap, SendCount, give_back, member_key, take
from nurture.store.database import session_scope
from tests.enginekit import Harness, la
from tests.integration.test_send_promises import MOMENT, _once, ctx_and_catalog, deliver_now

REASON = "domain brightpath.io: 2 leads emailed today, next at 00:00 (America/New_York)"


def _brightpath(harness: Harness, monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    monkeypatch.setenv("NURTURE_LIMITS_PER_DOMAIN_DAILY", "2")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    harness.config = load_settings(harness.project / "nurture.toml")
    harness.add_leads(
        *({"email": f"{name}@brightpath.io", "source": "guide"} for name in ("ana", "bo", "cy")),
        {"email": "dee@gmail.com", "source": "guide"},
        {"email": "eve@gmail.com", "source": "guide"},
        {"email": "fay@gmail.com", "source": "guide"},
    )


def test_two_leads_of_one_domain_a_day_and_free_mail_is_not_counted(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a cap of 2 leads a domain a day, three leads at brightpath.io, three at gmail
    _brightpath(harness, monkeypatch)
    # When the sequence emails them all on Monday
    harness.tick(MOMENT)
    # Then two of brightpath.io get it, every gmail.com lead does, and the third waits
    # for the project's next day, saying why
    to = sorted(str(message["To"]) for message in harness.sent())
    assert sum("@brightpath.io" in address for address in to) == 2
    assert sum("@gmail.com" in address for address in to) == 3
    assert any("maria@example.com" in address for address in to)
    [waiting] = [row for row in harness.outbox() if row.status == "queued"]
    assert waiting.recipient.endswith("@brightpath.io")
    assert waiting.last_error == REASON
    assert waiting.next_attempt_at == la(2026, 11, 23, 21, 0)  # 00:00 in New York
    # And the counter says two leads of brightpath.io, and counts no gmail.com one
    with session_scope(harness.engine) as session:
        counts = {c.key: c.n for c in session.exec(select(SendCount))}
    assert counts["domain:brightpath.io:2026-11-23"] == 2
    assert not any("gmail.com" in key for key in counts if key.startswith("domain:"))
    # When the next day comes, the third goes
    harness.tick(la(2026, 11, 24, 9, 30))
    assert sum("@brightpath.io" in str(m["To"]) for m in harness.sent()) == 3


def test_two_workers_whose_claims_overlap_never_pass_the_domain_cap(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    _brightpath(harness, monkeypatch, NURTURE_DAEMON_BATCH_SIZE="3")
    with freeze_time(MOMENT, real_asyncio=True):
        first, catalog = ctx_and_catalog(harness, MOMENT)
        run_pass(first, catalog, MOMENT)
        second = Context.open(harness.engine, harness.config)

        # Given worker one has read its batch (nothing counted yet for brightpath.io),
        # when worker two claims and sends everything it can at that moment
        def other_worker(*_: Any) -> None:
            thread = threading.Thread(target=deliver_now, args=(second, catalog))
            thread.start()
            thread.join(60)

        with hooks.at("claim.after_read", _once(other_worker)):
            deliver_now(first, catalog)
    # Then only two leads of brightpath.io got an email, once each
    brightpath = [str(m["To"]) for m in harness.sent() if "@brightpath.io" in str(m["To"])]
    assert len(brightpath) == 2 and len(set(brightpath)) == 2
    waiting = [row for row in harness.outbox() if row.recipient.endswith("@brightpath.io")
               and row.status == "queued"]  # fmt: skip
    assert [row.last_error for row in waiting] == [REASON]


def test_a_lead_counts_once_and_gives_its_place_back_with_its_last_send(engine: Engine) -> None:
    def cap(lead: int) -> Cap:
        return Cap(member_key(str(lead), "domain:acme.com:2026-11-23"), "2026-11-23", 2,
                   MOMENT, "full")  # fmt: skip

    def count() -> int:
        with session_scope(engine) as session:
            row = session.get(SendCount, "domain:acme.com:2026-11-23")
            return row.n if row is not None else 0

    with engine.begin() as connection:
        # Given lead 1 emailed twice and lead 2 once: two leads counted, the cap is full
        assert take(connection, cap(1)) and take(connection, cap(1)) and take(connection, cap(2))
        assert not take(connection, cap(3))
        # When one of lead 1's sends did not go, it still counts; when the other did not
        # either, its place is given back
        give_back(connection, [cap(1).key])
    assert count() == 2
    with engine.begin() as connection:
        assert not take(connection, cap(3))
        give_back(connection, [cap(1).key])
    assert count() == 1
    with engine.begin() as connection:
        assert take(connection, cap(3))
    assert count() == 2
