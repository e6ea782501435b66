"""The sequences the engine runs, and live edits of their files.

Every pass reloads ``sequences/``. A file that passes the checks becomes the deployed
version (kept in ``deployed_sequences``, shared by every worker); a file that does not
is reported and the last deployed version keeps running. When a sequence changes, its
active enrollments are woken so that each one is placed again against the new steps
(:func:`nurture.engine.resolve_step`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Engine, case, func, update
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from nurture.engine.edits import describe, path_after_edit, renames, step_digest
from nurture.errors import InputFileError
from nurture.language.sequence_files import SequenceFiles, load_sequences, parse_sequence
from nurture.language.sequences import EmailAction, Sequence
from nurture.language.templates import TemplateSet
from nurture.language.yamlfile import parse_yaml
from nurture.problems import Problem
from nurture.store.database import session_scope
from nurture.store.enrollments import (
    WAKES_ON_ANY,
    DeployedSequence,
    Enrollment,
    EnrollmentStatus,
)
from nurture.store.events import Event
from nurture.store.outbox import OutboxMessage
from nurture.store.tasks import Task


@dataclass
class Catalog:
    """The sequences a pass runs, by name, and what the reload found."""

    sequences: dict[str, Sequence] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    #: Names running their last good version because the file on disk has problems.
    kept: list[str] = field(default_factory=list)
    #: Names deployed by this reload (new or changed files).
    deployed: list[str] = field(default_factory=list)
    #: Names deployed earlier whose file is gone: their enrollments wait.
    missing: list[str] = field(default_factory=list)
    #: The last deployed version of each sequence that does not run now (its file is
    #: gone, or neither it nor its deployed version can be loaded as it stands): emails
    #: it queued earlier still keep its sending window and its exit rules.
    retired: dict[str, Sequence] = field(default_factory=dict)
    #: Sequences that run without some of their templates (deleted since they were
    #: deployed): name -> the missing templates. Steps that need one are held.
    missing_templates: dict[str, list[str]] = field(default_factory=dict)
    #: Names whose file here differs from the deployed version and is older than the
    #: copy it was deployed from: the deployed version runs.
    differs: list[str] = field(default_factory=list)

    def for_delivery(self, name: str) -> Sequence | None:
        """The version of sequence *name* whose rules its queued emails keep."""
        return self.sequences.get(name) or self.retired.get(name)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _from_source(row: DeployedSequence, templates: TemplateSet | None) -> Sequence | None:
    """The deployed version of a sequence, if it loads (with its templates, unless
    *templates* is ``None``: the rules alone)."""
    if templates is None:
        return _rules_of(row.path, row.source)
    return _parsed(row.path, row.source, templates.exists)


@lru_cache(maxsize=64)
def _rules_of(path: str, source: str) -> Sequence | None:
    """A deployed version's rules, whatever its templates (parsed once per version: a
    removed sequence's is asked for every pass)."""
    return _parsed(path, source, lambda name: True)


def _parsed(path: str, source: str, exists: Callable[[str], bool]) -> Sequence | None:
    try:
        data = parse_yaml(source, path)
    except InputFileError:
        return None
    sequence, problems = parse_sequence(Path(path), data, exists)
    return None if problems else sequence


def _missing_templates(sequence: Sequence, templates: TemplateSet) -> list[str]:
    names = {
        name
        for step in sequence.steps
        if isinstance(step.action, EmailAction)
        for name, _ in step.action.variants
    }
    return sorted(name for name in names if not templates.exists(name))


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _older_than_deployed(
    session: Session, name: str, digest: str, mtime: float | None
) -> DeployedSequence | None:
    """The deployed version of *name*, locked, if this worker's copy (*digest*, last
    modified at *mtime*) must not replace it: it is not newer than the copy the deployed
    version came from. ``None``: deploy ours."""
    row = session.get(DeployedSequence, name, with_for_update=True, populate_existing=True)
    if row is None or row.digest == digest or row.file_mtime is None:
        return None
    return row if mtime is None or mtime <= row.file_mtime else None


def load_catalog(
    engine: Engine,
    sequences_dir: Path,
    templates: TemplateSet,
    now: datetime,
    loaded: SequenceFiles | None = None,
    *,
    force: bool = False,
) -> Catalog:
    """Reload the sequence files (or take what *loaded* says of them), deploy the good
    changes, and keep the last good versions.

    A changed file is deployed only if it is newer than the file the deployed version
    came from (workers whose copies differ run one version: the newest; the others say
    so once). *force* (``nurture deploy``): deploy this worker's files whatever their age.
    """
    found, problems = loaded or load_sequences(sequences_dir, templates.exists)
    catalog = Catalog(problems=problems)
    bad_files = {Path(p.path).name for p in problems}
    with session_scope(engine) as session:
        deployed = {row.name: row for row in session.exec(select(DeployedSequence))}
        for sequence in found:
            source = _read(sequence.path)
            if source is None:
                continue
            catalog.sequences[sequence.name] = sequence
            row = deployed.get(sequence.name)
            digest = _digest(source)
            if row is not None and row.digest == digest:
                if row.wakes_on is None:  # deployed before nurture kept it
                    row.wakes_on = wakes_on(sequence)
                    session.add(row)
                continue
            mtime = _mtime(sequence.path)
            if row is not None and not force:
                newer = _older_than_deployed(session, sequence.name, digest, mtime)
                if newer is not None:  # ours is older: never deployed over a newer one
                    catalog.differs.append(sequence.name)
                    running = _from_source(newer, templates) or _from_source(newer, None)
                    if running is None:  # not even readable here: the others run it
                        del catalog.sequences[sequence.name]
                        continue
                    gone = _missing_templates(running, templates)
                    if gone:  # steps that need them are held on this worker
                        catalog.missing_templates[sequence.name] = gone
                    catalog.sequences[sequence.name] = running
                    continue
                if row.digest == digest:  # (refreshed) another worker deployed this copy
                    continue
            if force:  # chosen by hand: it counts as changed now (a roll back holds)
                mtime = max(mtime or 0.0, time.time())
            steps = [[step.id, step_digest(step)] for step in sequence.steps]
            if row is None:
                row = DeployedSequence(
                    name=sequence.name,
                    path=str(sequence.path),
                    source=source,
                    digest=digest,
                    steps=steps,
                    deployed_at=now,
                    file_mtime=mtime,
                    wakes_on=wakes_on(sequence),
                )
            else:
                mapping = renames(_deployed_steps(row), sequence)
                _rename_in_flight(session, sequence.name, mapping)
                row.path, row.source, row.digest, row.steps = (
                    str(sequence.path),
                    source,
                    digest,
                    steps,
                )
                row.audience_checked_at = None
                row.deployed_at = now
                row.file_mtime = mtime
                row.wakes_on = wakes_on(sequence)
            session.add(row)
            catalog.deployed.append(sequence.name)
            _wake_sequence(session, sequence.name, now)
        for name, row in deployed.items():
            if name in catalog.sequences:
                continue
            if Path(row.path).name in bad_files:
                kept = _from_source(row, templates)
                if kept is None:  # perhaps only templates are gone: run the other steps
                    kept = _from_source(row, None)
                    gone = _missing_templates(kept, templates) if kept is not None else []
                    if gone:
                        catalog.missing_templates[name] = gone
                    else:
                        kept = None
                if kept is not None:
                    catalog.sequences[name] = kept
                    catalog.kept.append(name)
                    continue
            if not (sequences_dir / Path(row.path).name).exists():
                catalog.missing.append(name)
            retired = _from_source(row, None)
            if retired is not None:
                catalog.retired[name] = retired
    return catalog


def _deployed_steps(row: DeployedSequence) -> list[list[str]]:
    """``[[step id, digest], ...]`` of a deployed version, the digests as
    :func:`step_digest` makes them now (a version deployed before it changed is read
    again from its source; as stored if that no longer loads)."""
    sequence = _rules_of(row.path, row.source)
    if sequence is None:
        return [list(pair) for pair in row.steps]
    return [[step.id, step_digest(step)] for step in sequence.steps]


def _rename_in_flight(session: Session, name: str, mapping: dict[str, str]) -> None:
    """Carry sequence *name* over renamed step ids (*mapping*: old id -> new id): its
    enrollments not yet ended, and what names the old steps (events, outbox messages,
    tasks), so that ``opened``, ``clicked``, ``occurred`` and ``outcome`` see a lead's
    history under the new id, and an open or a click of an email sent before the rename
    is recorded under it too (it takes the step from the message's outbox row)."""
    if not mapping:
        return
    ongoing = [EnrollmentStatus.active.value, EnrollmentStatus.paused.value,
               EnrollmentStatus.failed.value]  # fmt: skip
    # Locked: a pass elsewhere that holds one finishes first, and its step is renamed
    # from what it wrote, never from what was read before.
    for enrollment in session.exec(
        select(Enrollment)
        .where(col(Enrollment.sequence) == name)
        .where(col(Enrollment.status).in_(ongoing))
        .with_for_update()
        .execution_options(populate_existing=True)
    ):
        done = list(enrollment.done_steps or [])
        renamed = [mapping.get(step_id, step_id) for step_id in done]
        next_step = mapping.get(enrollment.next_step or "", enrollment.next_step)
        if renamed != done or next_step != enrollment.next_step:
            enrollment.done_steps, enrollment.next_step = renamed, next_step
            session.add(enrollment)
    session.flush()
    # After the enrollments are locked: what a pass holding one wrote is renamed too.
    # A new id is never an id of the deployed version, so no pair undoes another. One
    # statement per table (each reads the table once, however many steps are renamed).
    same = aliased(Task)
    taken = (
        select(same.id)
        .where(col(same.enrollment_id) == col(Task.enrollment_id))
        .where(col(same.step) == case(mapping, value=col(Task.step)))
    )
    session.execute(
        update(Task)
        .where(col(Task.sequence) == name)
        .where(col(Task.step).in_(list(mapping)))
        # One task per step of an enrollment: a task of an id its enrollment had in an
        # older version stays apart.
        .where(~taken.exists())
        .values(step=case(mapping, value=col(Task.step)))
        .execution_options(synchronize_session=False)
    )
    for table in (OutboxMessage, Event):
        session.execute(
            update(table)
            .where(col(table.sequence) == name)
            .where(col(table.step).in_(list(mapping)))
            .values(step=case(mapping, value=col(table.step)))
            .execution_options(synchronize_session=False)
        )


def wakes_on(sequence: Sequence) -> list[str]:
    """:attr:`DeployedSequence.wakes_on` of *sequence*: the event types that wake its
    enrollments, sorted (``["*"]``: any)."""
    types = sequence.woken_by()
    return [WAKES_ON_ANY] if types is None else sorted(types)


def _wake_sequence(session: Session, name: str, now: datetime) -> None:
    session.execute(
        update(Enrollment)
        .where(col(Enrollment.sequence) == name)
        .where(col(Enrollment.status) == EnrollmentStatus.active.value)
        .values(due_at=now, version=col(Enrollment.version) + 1)
    )


@dataclass(frozen=True)
class Impact:
    """What an edit of one sequence file does to the leads already in it."""

    sequence: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def edit_impact(session: Session, sequences: Seq[Sequence]) -> list[Impact]:
    """Compare each file with the deployed version: which in-flight leads a change moves."""
    impacts: list[Impact] = []
    deployed = {row.name: row for row in session.exec(select(DeployedSequence))}
    for sequence in sequences:
        row = deployed.get(sequence.name)
        if row is None:
            continue
        source = _read(sequence.path)
        if source is None or _digest(source) == row.digest:
            continue
        waiting = dict(
            session.exec(
                select(Enrollment.next_step, func.count())
                .where(Enrollment.sequence == sequence.name)
                .where(Enrollment.status == EnrollmentStatus.active.value)
                .group_by(Enrollment.next_step)
            ).all()
        )
        steps = _deployed_steps(row)
        old = dict((step_id, digest) for step_id, digest in steps)
        new = {step.id: step_digest(step) for step in sequence.steps}
        parts: list[str] = []
        for step_id in old:
            count = waiting.get(step_id, 0)
            if step_id not in new:
                verb = "moves" if count == 1 else "move"
                parts.append(f"step {step_id!r} removed ({_leads(count)} waiting at it {verb} on)")
            elif old[step_id] != new[step_id]:
                parts.append(f"step {step_id!r} changed ({_leads(count)} waiting at it)")
        added = [step_id for step_id in new if step_id not in old]
        if added:
            parts.append("steps added: " + ", ".join(repr(s) for s in added))
        mapping = renames(steps, sequence)
        if mapping:
            parts.append("renamed: " + ", ".join(f"{a!r} to {b!r}" for a, b in mapping.items()))
        if not parts:
            parts.append("settings changed")
        total = sum(waiting.values())
        message = f"changed since deployed: {'; '.join(parts)}; {_leads(total)} in flight"
        impacts.append(Impact(sequence.name, str(sequence.path), message))
        for step_id, _ in steps:  # what the leads waiting at each step get next
            count = waiting.get(step_id, 0)
            path = path_after_edit(steps, sequence, step_id)
            if count and (path.changed or path.skipped):
                impacts.append(Impact(sequence.name, str(sequence.path), describe(path, count)))
    return impacts


def _leads(count: int) -> str:
    return f"{count} lead" + ("" if count == 1 else "s")
