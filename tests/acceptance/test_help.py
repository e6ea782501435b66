"""``nurture --help`` tells the truth: boolean options read as flags."""

from __future__ import annotations

from typing import Any

import typer
from typer.testing import CliRunner

from nurture.cli import app


def _paths(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    for name, sub in getattr(command, "commands", {}).items():
        found += _paths(sub, (*path, name))
    return found


def test_every_help_shows_boolean_options_as_flags() -> None:
    root = typer.main.get_command(app)
    paths = _paths(root)
    assert ("tasks", "list") in paths and ("preview",) in paths
    runner = CliRunner()
    for path in paths:
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "120"})
        assert result.exit_code == 0, (path, result.output)
        assert "<bool>" not in result.output and "BOOLEAN" not in result.output, (
            path,
            result.output,
        )
    top = runner.invoke(app, ["--help"], env={"COLUMNS": "120"}).output
    debug = next(line for line in top.splitlines() if "--debug" in line)
    assert debug.split("--debug", 1)[1].split()[0] == "Show"  # no value after the flag
    assert "NURTURE_NOW" in top
