"""What a live edit of a sequence does to the leads already in it.

The rule, the same for the daemon and for ``nurture check``:

1. A lead continues at the step it waits at, by id; after it, the steps follow in the
   file's new order. A step it has had (by id) is never done again, and a step that now
   comes before the one it waits at is behind it: it does not get it.
2. A renamed step keeps its leads: an id that is gone is taken to be renamed to a new id
   whose step does exactly the same, wherever the file now has it (or, when the file
   has as many steps as before, to the new id at the same place). The deployment
   renames it for every lead in flight, and in what names the step (its events, its
   outbox messages, its tasks): a lead's history goes with the step.
3. A lead waiting at a removed step moves on to the first step after the last one it
   had (in the new order) that it has not had.

Pure: functions of the deployed version's steps and the new file.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import Any

from nurture.engine.advance import following, resolve_step
from nurture.language.sequences import Sequence, Step


def _is_line(name: str) -> bool:
    return name == "line" or name.endswith("_line")


def _without_lines(value: Any) -> Any:
    """*value* with every line number in it (a field ``line`` or ``*_line``, at any
    depth of dataclasses and tuples) set to 0."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {
            f.name: 0 if _is_line(f.name) else _without_lines(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if f.init
        }
        return dataclasses.replace(value, **changes)
    if type(value) is tuple:
        return tuple(_without_lines(item) for item in value)
    return value


def step_digest(step: Step) -> str:
    """What a step does, ignoring its id and where in the file it is written (no line
    number anywhere in it counts: a step moved by lines added above it is the same
    step). A step with no line number but its own has the digest it always had."""
    plain = dataclasses.replace(_without_lines(step), id="")
    text = repr(plain) + (step.condition.source if step.condition else "")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def renames(old: Seq[Seq[str]], new: Sequence) -> dict[str, str]:
    """Old step id -> new step id, for the ids of the deployed version (*old*: ``[id,
    digest]`` in order) that the new file no longer has (rule 2)."""
    old_ids = [step_id for step_id, _ in old]
    new_ids = [step.id for step in new.steps]
    fresh = [step for step in new.steps if step.id not in old_ids]
    gone = [(step_id, digest) for step_id, digest in old if step_id not in new_ids]
    mapping: dict[str, str] = {}
    for step_id, digest in gone:
        same = [s.id for s in fresh if step_digest(s) == digest and s.id not in mapping.values()]
        if len(same) == 1:
            mapping[step_id] = same[0]
    if len(old_ids) == len(new_ids):
        taken = set(mapping.values())
        for index, (step_id, _) in enumerate(old):
            candidate = new_ids[index]
            if step_id in mapping or step_id in new_ids:
                continue
            if candidate not in old_ids and candidate not in taken:
                mapping[step_id] = candidate
                taken.add(candidate)
    return mapping


@dataclass(frozen=True)
class Path:
    """What leads waiting at one step of the deployed version get under the new file."""

    #: The step they wait at, in the deployed version.
    waiting_at: str
    #: The steps they will get, in order (new ids); empty: they complete.
    gets: tuple[str, ...]
    #: Steps of the new file they will not get because they come before (new ids).
    skipped: tuple[str, ...]
    #: What they would have got under the deployed version (old ids, renamed).
    before: tuple[str, ...]

    @property
    def changed(self) -> bool:
        return self.gets != self.before


def path_after_edit(old: Seq[Seq[str]], new: Sequence, waiting_at: str) -> Path:
    """The steps a lead waiting at *waiting_at* (having had the steps before it in the
    deployed version *old*) gets once the new file is deployed."""
    mapping = renames(old, new)
    old_ids = [step_id for step_id, _ in old]
    index = old_ids.index(waiting_at) if waiting_at in old_ids else len(old_ids)
    done = tuple(mapping.get(s, s) for s in old_ids[:index])
    before = tuple(mapping.get(s, s) for s in old_ids[index:])
    step = resolve_step(new, mapping.get(waiting_at, waiting_at), done)
    gets: list[str] = []
    while step is not None:
        gets.append(step.id)
        step = new.step(following(new, step, (*done, *gets)) or "")
    had = set(done) | set(gets)
    skipped = tuple(s.id for s in new.steps if s.id not in had)
    return Path(waiting_at, tuple(gets), skipped, before)


def describe(path: Path, count: int) -> str:
    """One line for ``nurture check``: what *count* leads waiting at a step will get."""
    leads = f"{count} lead{'' if count == 1 else 's'}"
    steps = ", then ".join(repr(s) for s in path.gets)
    text = f"{leads} waiting at {path.waiting_at!r} will get {steps}, then complete"
    if not path.gets:
        text = f"{leads} waiting at {path.waiting_at!r} will complete without another step"
    if path.skipped:
        names = ", ".join(repr(s) for s in path.skipped)
        verb = "is" if len(path.skipped) == 1 else "are"
        text += f"; {names} {verb} now before {path.waiting_at!r} and will be skipped for them"
    return text
