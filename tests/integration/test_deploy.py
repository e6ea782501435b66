"""Workers whose copies of a sequence file differ run one deployed version (the newest
copy's) instead of deploying theirs in turn; ``nurture deploy`` chooses on purpose."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import select

from nurture.engine.catalog import load_catalog
from nurture.language.templates import TemplateSet
from nurture.store.database import open_engine, session_scope, upgrade
from nurture.store.enrollments import DeployedSequence

MOMENT = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
SEQUENCE = """\
name: nudge
audience: "lead.source == 'web'"
from: "Ana Ruiz <ana@example.com>"
steps:
  - id: hello
    email: welcome
  - id: later
    wait: {wait}
    email: case-study
"""


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = open_engine(db_url)
    upgrade(engine)
    yield engine
    engine.dispose()


def machine(tmp_path: Path, project: Path, name: str, wait: str, mtime: float) -> Path:
    """A worker's copy of the project, its nudge.yaml last modified at *mtime*."""
    root = tmp_path / name
    shutil.copytree(project / "templates", root / "templates")
    (root / "sequences").mkdir()
    path = root / "sequences" / "nudge.yaml"
    path.write_text(SEQUENCE.format(wait=wait))
    os.utime(path, (mtime, mtime))
    return root


def load(engine: Engine, root: Path, *, force: bool = False) -> tuple[str, list[str], bool]:
    """One reload by the worker at *root*: the wait it runs, what it says differs, and
    whether it deployed."""
    catalog = load_catalog(engine, root / "sequences", TemplateSet(root / "templates"),
                           MOMENT, force=force)  # fmt: skip
    wait = catalog.sequences["nudge"].steps[1].wait
    return str(wait), catalog.differs, "nudge" in catalog.deployed


def deployed(engine: Engine) -> DeployedSequence:
    with session_scope(engine) as session:
        return session.exec(select(DeployedSequence)).one()


def test_workers_with_different_copies_run_the_newest_and_stop_taking_turns(
    engine: Engine, project: Path, tmp_path: Path
) -> None:
    old = machine(tmp_path, project, "old", "2 days", 1_700_000_000)
    new = machine(tmp_path, project, "new", "3 days", 1_800_000_000)
    first = load(engine, old)
    assert first[2]  # nothing deployed yet: the old copy is deployed
    assert load(engine, new)[2]  # a newer copy replaces it
    versions = set()
    for _ in range(3):  # they keep passing in turn: nothing is deployed again
        for root in (old, new):
            wait, differs, redeployed = load(engine, root)
            versions.add(wait)
            assert not redeployed
            assert differs == (["nudge"] if root == old else [])
    assert len(versions) == 1 and "3 days" in deployed(engine).source
    # The old machine's copy is edited now: newest again, so it is deployed.
    path = old / "sequences" / "nudge.yaml"
    path.write_text(SEQUENCE.format(wait="5 days"))
    os.utime(path, (1_900_000_000, 1_900_000_000))  # a later edit
    assert load(engine, old)[2] and not load(engine, new)[2]
    assert "5 days" in deployed(engine).source


def test_nurture_deploy_chooses_a_copy_whatever_its_age(
    engine: Engine, project: Path, tmp_path: Path
) -> None:
    # Both copies were last edited years ago; a roll back counts as a change made now.
    new = machine(tmp_path, project, "new", "3 days", 1_700_000_000)
    old = machine(tmp_path, project, "old", "2 days", 1_600_000_000)
    load(engine, new)
    assert not load(engine, old)[2]
    assert load(engine, old, force=True)[2]  # a roll back to the older copy
    assert "2 days" in deployed(engine).source
    assert not load(engine, old)[2] and load(engine, new)[1] == ["nudge"]


def test_a_newer_version_whose_template_is_not_here_yet_still_wins(
    engine: Engine, project: Path, tmp_path: Path
) -> None:
    old = machine(tmp_path, project, "old", "2 days", 1_700_000_000)
    new = machine(tmp_path, project, "new", "3 days", 1_800_000_000)
    (new / "templates" / "fresh.html.j2").write_text("---\nsubject: New\n---\n<p>New</p>\n")
    path = new / "sequences" / "nudge.yaml"
    path.write_text(SEQUENCE.format(wait="3 days") + "  - id: extra\n    email: fresh\n")
    os.utime(path, (1_800_000_000, 1_800_000_000))
    load(engine, old)
    assert load(engine, new)[2]
    for _ in range(3):  # the old machine runs the new version, its new step held there
        catalog = load_catalog(engine, old / "sequences", TemplateSet(old / "templates"),
                               MOMENT)  # fmt: skip
        assert catalog.differs == ["nudge"] and not catalog.deployed
        assert [s.id for s in catalog.sequences["nudge"].steps] == ["hello", "later", "extra"]
        assert catalog.missing_templates == {"nudge": ["fresh"]}
        assert not load(engine, new)[2]
    assert "extra" in deployed(engine).source


def test_a_rename_onto_an_id_an_enrollment_had_in_an_older_version_keeps_its_tasks_apart(
    engine: Engine,
) -> None:
    from nurture.engine.catalog import _rename_in_flight
    from nurture.store.enrollments import Enrollment
    from nurture.store.leads import Lead
    from nurture.store.tasks import Task

    with session_scope(engine) as session:
        lead = Lead(email="maria@example.com", created_at=MOMENT, updated_at=MOMENT)
        session.add(lead)
        session.flush()
        old, new = (Enrollment(lead_id=lead.id or 0, sequence="nudge", cycle=cycle,
                               base_at=MOMENT, status="completed") for cycle in (1, 2))  # fmt: skip
        session.add_all([old, new])
        session.flush()
        # The old cycle had a step 'call' (since removed) and then 'ring'; 'ring' is now
        # renamed 'call': the old cycle's two tasks must stay two tasks.
        for enrollment, step in ((old, "call"), (old, "ring"), (new, "ring")):
            session.add(Task(lead_id=lead.id or 0, enrollment_id=enrollment.id, sequence="nudge",
                             step=step, kind="call", due_at=MOMENT, created_at=MOMENT))  # fmt: skip
    with session_scope(engine) as session:
        _rename_in_flight(session, "nudge", {"ring": "call"})
    with session_scope(engine) as session:
        steps = {(t.enrollment_id, t.step) for t in session.exec(select(Task))}
    assert steps == {(old.id, "call"), (old.id, "ring"), (new.id, "call")}
