"""The house keeps its shape: imports flow downward through the layers written in
``pyproject.toml`` (import-linter) and ``ARCHITECTURE.md``, every module lives in a
layer, and no two modules import each other, even by a longer way round.

The checks run on a copy of the package in the tests that break it on purpose, so the
rules are shown to fail when they should."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]


def contract_layers(pyproject: Path) -> list[list[str]]:
    """The layers of the import-linter contract, top to bottom, each a list of siblings."""
    config = tomllib.loads(pyproject.read_text())["tool"]["importlinter"]
    [contract] = [c for c in config["contracts"] if c["type"] == "layers"]
    return [re.split(r"\s*[|:]\s*", layer) for layer in contract["layers"]]


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    """Run import-linter's contracts on the package under *root*."""
    return subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
        cwd=root,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )


def import_circles(root: Path) -> list[list[str]]:
    """Every group of modules of ``nurture`` (under *root*) that import each other,
    directly or through others (strongly connected components of the import graph)."""
    code = (
        "import json, grimp; g = grimp.build_graph('nurture', cache_dir=None, "
        "exclude_type_checking_imports=True); "
        "print(json.dumps({m: sorted(g.find_modules_directly_imported_by(m)) "
        "for m in g.modules}))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                         text=True, check=True, env={"PYTHONPATH": str(root)})  # fmt: skip
    import json

    graph: dict[str, list[str]] = json.loads(out.stdout)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, []):
            if target not in graph:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                circles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return circles


@pytest.fixture()
def copy(tmp_path: Path) -> Path:
    """A copy of the package and its pyproject.toml, to break on purpose."""
    shutil.copytree(ROOT / "nurture", tmp_path / "nurture",
                    ignore=shutil.ignore_patterns("__pycache__", "_example"))  # fmt: skip
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_imports_flow_downward_through_the_layers() -> None:
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_no_modules_import_each_other() -> None:
    assert import_circles(ROOT) == []


def test_every_module_lives_in_a_layer() -> None:
    layers = {name for layer in contract_layers(ROOT / "pyproject.toml") for name in layer}
    graph = grimp.build_graph("nurture", cache_dir=None)
    outside = sorted(
        module
        for module in graph.modules
        if module not in ("nurture", "nurture.__main__")
        and not any(module == top or module.startswith(top + ".") for top in layers)
    )
    assert outside == [], f"add these to a layer in pyproject.toml and ARCHITECTURE.md: {outside}"


def test_architecture_md_names_the_same_layers_as_the_contract() -> None:
    text = (ROOT / "ARCHITECTURE.md").read_text()
    block = text.split("<!-- layers -->", 1)[1].split("```", 2)[1]
    written = [
        re.split(r"\s*[|:]\s*", line.split("#", 1)[0].strip())
        for line in block.splitlines()
        if line.split("#", 1)[0].strip()
    ]
    assert written == contract_layers(ROOT / "pyproject.toml")


def test_an_upward_import_breaks_the_contract(copy: Path) -> None:
    # Given the store importing the engine that sits above it
    leads = copy / "nurture" / "store" / "leads.py"
    leads.write_text(leads.read_text() + "\nfrom nurture.engine import catalog  # noqa\n")
    # When the contracts are checked
    result = lint(copy)
    # Then they fail, naming the import
    assert result.returncode == 1
    assert "nurture.store.leads -> nurture.engine.catalog" in result.stdout


def test_siblings_may_not_import_each_other(copy: Path) -> None:
    notice = copy / "nurture" / "sales" / "notice.py"
    notice.write_text(notice.read_text() + "\nfrom nurture.intake import forms  # noqa\n")
    result = lint(copy)
    assert result.returncode == 1
    assert "nurture.sales.notice -> nurture.intake.forms" in result.stdout


def test_a_circle_inside_a_layer_is_found(copy: Path) -> None:
    # Given two modules of the store that import each other
    enrollments = copy / "nurture" / "store" / "enrollments.py"
    text = enrollments.read_text() + "\nfrom nurture.store import outbox  # noqa\n"
    enrollments.write_text(text)
    # Then the circle is named
    assert ["nurture.store.enrollments", "nurture.store.outbox"] in import_circles(copy)


def test_the_pass_process_starts_without_what_only_the_daemon_or_a_command_uses() -> None:
    """The pass process imports nurture before the daemon can hand it the pass: Alembic
    (schema changes) and httpx (webhook calls) are imported where they are used, which
    makes its start a fifth shorter (bench/README.md)."""
    found = subprocess.run(
        [sys.executable, "-c", "import sys, nurture.stages.process\n"
         "print(' '.join(m for m in ('alembic', 'httpx') if m in sys.modules))"],
        capture_output=True, text=True, cwd=ROOT, check=True,
    )  # fmt: skip
    assert found.stdout.strip() == ""
