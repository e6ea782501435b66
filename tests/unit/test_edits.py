"""The live-edit rule: what leads in flight get after a sequence file changes."""

from __future__ import annotations

from pathlib import Path

from nurture.engine.edits import describe, path_after_edit, renames, step_digest
from nurture.language.sequence_files import load_sequence
from nurture.language.sequences import Sequence

HEAD = 'name: s\naudience: "true"\nfrom: "Ana <ana@example.com>"\nsteps:\n'


def steps(*pairs: tuple[str, str]) -> str:
    return "".join(f"  - id: {i}\n    wait: 1 day\n    email: {t}\n" for i, t in pairs)


def load(tmp_path: Path, body: str) -> Sequence:
    path = tmp_path / "s.yaml"
    path.write_text(HEAD + body)
    loaded, problems = load_sequence(path, lambda name: True)
    assert problems == [] and loaded is not None
    return loaded


def deployed(sequence: Sequence) -> list[list[str]]:
    return [[step.id, step_digest(step)] for step in sequence.steps]


ABC = (("a", "t1"), ("b", "t2"), ("c", "t3"))


def test_a_reorder_is_explained_before_it_is_deployed(tmp_path: Path) -> None:
    old = deployed(load(tmp_path, steps(*ABC)))
    new = load(tmp_path, steps(ABC[0], ABC[2], ABC[1]))
    path = path_after_edit(old, new, "b")
    assert (path.gets, path.skipped, path.changed) == (("b",), ("c",), True)
    assert describe(path, 3) == (
        "3 leads waiting at 'b' will get 'b', then complete; 'c' is now before 'b' and "
        "will be skipped for them"
    )
    after_c = path_after_edit(old, new, "c")  # they had b already: nothing changes for them
    assert (after_c.gets, after_c.changed) == (("c",), False)


def test_renaming_every_step_keeps_leads_where_they_are(tmp_path: Path) -> None:
    old = deployed(load(tmp_path, steps(*ABC)))
    new = load(tmp_path, steps(("01-a", "t1"), ("02-b", "t2"), ("03-c", "t3")))
    assert renames(old, new) == {"a": "01-a", "b": "02-b", "c": "03-c"}
    path = path_after_edit(old, new, "c")
    assert (path.gets, path.skipped, path.changed) == (("03-c",), (), False)


def test_a_rename_with_a_change_is_matched_by_place(tmp_path: Path) -> None:
    old = deployed(load(tmp_path, steps(*ABC)))
    new = load(tmp_path, steps(("a", "t1"), ("second", "t9"), ("c", "t3")))
    assert renames(old, new) == {"b": "second"}
    assert path_after_edit(old, new, "b").gets == ("second", "c")


def test_a_removed_step_moves_its_leads_on_and_an_added_one_before_them_is_skipped(
    tmp_path: Path,
) -> None:
    old = deployed(load(tmp_path, steps(*ABC)))
    new = load(tmp_path, steps(("intro", "t0"), ("a", "t1"), ("c", "t3")))
    assert renames(old, new) == {}  # not as many steps, nothing alike: a removal
    path = path_after_edit(old, new, "b")
    assert (path.gets, path.skipped) == (("c",), ("intro",))
    assert describe(path, 1).startswith("1 lead waiting at 'b' will get 'c', then complete")
