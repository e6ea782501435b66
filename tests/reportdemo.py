"""A project with a month of history, for the report's tests and the README's picture:
the example project, 60 more leads, passes every four hours from Monday 2026-10-05,
and people who open, click, reply and answer calls, decided by a hash (the same every
run). Nothing reads the real clock."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlmodel import col, select

from nurture import clock
from nurture.config import load_settings
from nurture.engine.context import Context
from nurture.intake.importer import import_csv
from nurture.project import init_project
from nurture.stages.passes import tick
from nurture.store.database import open_engine, session_scope, upgrade
from nurture.store.events import record_event
from nurture.store.outbox import OutboxMessage, OutboxStatus
from nurture.store.tasks import Task, TaskStatus, complete_task

START = datetime(2026, 10, 5, 13, 0, tzinfo=UTC)
END = START + timedelta(days=30)
ZONES = ("America/New_York", "America/Chicago", "Europe/London", "Europe/Berlin")


def chance(*parts: object) -> float:
    """A number in [0, 1) fixed by *parts*."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32


def build(directory: Path) -> Path:
    """Create the project in *directory* and live through its month; return the
    project's ``nurture.toml``."""
    init_project(directory)
    rows = [
        f"lead{n:02d}@example.com,Lead{n},Number {n},Company {n},"
        f"{'VP Sales' if n % 3 == 0 else 'Analyst'},{ZONES[n % 4]},"
        f"{'pricing-guide' if n % 2 == 0 else 'outbound'},{20 + 7 * n}"
        for n in range(60)
    ]
    (directory / "more.csv").write_text(
        "email,first_name,last_name,company,title,timezone,source,employees\n"
        + "\n".join(rows)
        + "\n"
    )
    config_file = directory / "nurture.toml"
    config = load_settings(config_file)
    engine = open_engine(config.database_url)
    upgrade(engine)
    with clock.pinned(START - timedelta(hours=1)):
        import_csv(engine, directory / "leads.csv")
        import_csv(engine, directory / "more.csv")
    context = Context.open(engine, config)
    seen: set[int] = set()
    moment = START
    while moment < END:
        with clock.pinned(moment):
            asyncio.run(tick(context, moment))
            _people_answer(engine, moment, seen)
        moment += timedelta(hours=4)
    engine.dispose()
    return config_file


def _people_answer(engine: object, moment: datetime, seen: set[int]) -> None:
    """After each pass: the emails that went out are opened, clicked and replied to by
    some people; due calls are done with an outcome."""
    with session_scope(engine) as session:  # type: ignore[arg-type]
        sent = session.exec(
            select(OutboxMessage)
            .where(col(OutboxMessage.status) == OutboxStatus.sent.value)
            .where(col(OutboxMessage.kind) == "email")
        ).all()
        for message in sent:
            if message.id in seen or message.lead_id is None:
                continue
            seen.add(message.id or 0)
            key = (message.lead_id, message.step, message.template)
            liking = 0.25 if message.template == "breakup-short" else 0.12
            touch = {"sequence": message.sequence, "step": message.step}
            at = moment + timedelta(minutes=30)
            if chance("open", *key) < 0.55:
                record_event(session, message.lead_id, "email_opened", at=at, source="test",
                             **touch)  # fmt: skip
                if chance("click", *key) < liking * 2:
                    record_event(session, message.lead_id, "email_clicked", at=at,
                                 source="test", data={"url": "https://acme.example/guide"},
                                 **touch)  # fmt: skip
                if chance("reply", *key) < liking / 2:
                    record_event(session, message.lead_id, "email_replied", at=at,
                                 source="test", data={"first_lines": "Tell me more."},
                                 **touch)  # fmt: skip
                    if chance("meeting", *key) < 0.5:
                        record_event(session, message.lead_id, "meeting_booked",
                                     at=at + timedelta(hours=1), source="test")  # fmt: skip
            if chance("unsubscribe", *key) < 0.02:
                record_event(session, message.lead_id, "unsubscribed", at=at, source="test",
                             **touch)  # fmt: skip
        tasks = session.exec(
            select(Task).where(col(Task.status) == TaskStatus.open.value)
            .where(col(Task.due_at) <= moment)
        ).all()  # fmt: skip
        for task in tasks:
            roll = chance("task", task.id)
            outcome = None
            if task.outcomes:
                outcome = task.outcomes[int(roll * len(task.outcomes)) % len(task.outcomes)]
            complete_task(session, task.id or 0, outcome, by="sam@example.com")
