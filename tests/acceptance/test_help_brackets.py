"""``--help`` shows bracketed words as written: ``[[webhooks]]``, ``[test]``, ``[sales]``
(Rich markup would eat them)."""

from __future__ import annotations

import re
from typing import Any

import typer
from typer.testing import CliRunner

from nurture.cli import app


def _commands(command: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    found = [(path, command)]
    for name, sub in getattr(command, "commands", {}).items():
        found += _commands(sub, (*path, name))
    return found


def _texts(command: Any) -> list[str]:
    texts = [command.help or "", command.short_help or ""]
    texts += [getattr(param, "help", None) or "" for param in command.params]
    return texts


def test_every_bracketed_word_of_the_help_is_shown() -> None:
    root = typer.main.get_command(app)
    runner = CliRunner()
    checked = 0
    for path, command in _commands(root):
        wanted = {
            word.replace("\\[", "[")
            for text in _texts(command)
            for word in re.findall(r"\\?\[\\?\[?[\w.'-]+\]\]?", text)
        }
        wanted = {word for word in wanted if "\\" not in word}
        if not wanted:
            continue
        shown = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"}).output
        flat = " ".join(re.sub(r"[│╭╮╰╯─]", " ", shown).split())
        for word in wanted:
            assert word in flat, (path, word, shown)
            checked += 1
    assert checked >= 4
    webhooks = runner.invoke(app, ["webhooks", "--help"], env={"COLUMNS": "200"}).output
    assert "([[webhooks]])" in webhooks and "The [[webhooks]] endpoints" in webhooks
    preview = runner.invoke(app, ["preview", "--help"], env={"COLUMNS": "200"}).output
    assert "('[test]' before the subject" in " ".join(preview.split())
