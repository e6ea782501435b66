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


EVERY_KIND = """\
  - id: hello
    email: t1
  - id: call
    wait: 1 day
    task: call
    timeout: 2 days
    note: |
      Call {{ lead.first_name }}
  - id: ping
    wait: 1 day
    if: "lead.stage != 'hot'"
    notify: "{{ lead.email }} got the intro"
  - id: tag
    update: {stage: warm}
  - id: offer
    wait: 2 days
    email: {variants: {t2: 1, t3: 1}}
"""
#: Inserted above every step: it moves each of them down by three lines.
INSERTED = "  - id: intro\n    wait: 1 hour\n    email: t0\n"


def test_a_step_moved_by_lines_added_above_it_is_the_same_step(tmp_path: Path) -> None:
    before = load(tmp_path, EVERY_KIND).steps
    after = load(tmp_path, INSERTED + EVERY_KIND).steps[1:]
    assert [s.line for s in before] != [s.line for s in after]  # every step moved
    assert [s.kind for s in before] == ["email", "task", "notify", "update", "email"]
    assert [step_digest(s) for s in before] == [step_digest(s) for s in after]
    # What a step does still counts: a different note is a different step.
    other = load(tmp_path, EVERY_KIND.replace("Call {{", "Ring {{")).steps[1]
    assert step_digest(other) != step_digest(before[1])


def test_steps_renamed_below_an_inserted_step_keep_their_leads(tmp_path: Path) -> None:
    old = deployed(load(tmp_path, EVERY_KIND))
    text = EVERY_KIND
    for step_id in ("hello", "call", "ping", "tag", "offer"):
        text = text.replace(f"  - id: {step_id}\n", f"  - id: 0-{step_id}\n")
    new = load(tmp_path, INSERTED + text)
    assert renames(old, new) == {s: f"0-{s}" for s in ("hello", "call", "ping", "tag", "offer")}
    for waiting_at in ("call", "ping", "offer"):  # not the new email, now before them
        path = path_after_edit(old, new, waiting_at)
        assert path.gets[0] == f"0-{waiting_at}" and not path.changed
        assert path.skipped == ("intro",)
