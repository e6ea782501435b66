"""Run the real ``nurture`` command in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from subprocess import Popen
from typing import Any

import pytest
from typer.testing import CliRunner

from nurture.cli import app
from tests.conftest import SmtpServer

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def nurture(tmp_path: Path) -> Run:
    """``nurture(*args, cwd=..., env=...)`` runs the CLI and returns the finished process."""
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    base_env["COLUMNS"] = "200"

    def run(
        *args: str,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        input: str | None = None,
    ):
        return subprocess.run(
            [sys.executable, "-m", "nurture", *args],
            cwd=cwd or tmp_path,
            env={**base_env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=120,
            input=input,
        )

    return run


class Cli:
    """The nurture commands, in this process (so freezegun can move the clock)."""

    def __init__(self, project: Path) -> None:
        self.config = project / "nurture.toml"
        self.runner = CliRunner()

    def __call__(self, *args: str, ok: bool = True) -> Any:
        result = self.runner.invoke(app, ["--config", str(self.config), *args])
        if ok:
            assert result.exit_code == 0, (args, result.output, result.exception)
        return result


@pytest.fixture
def cli(project: Path, monkeypatch: pytest.MonkeyPatch, smtp_server: SmtpServer) -> Cli:
    monkeypatch.setenv("NURTURE_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("NURTURE_SMTP_PORT", str(smtp_server.port))
    run = Cli(project)
    run("db", "upgrade")
    run("leads", "import", str(project / "leads.csv"))
    return run


BLAST = """\
name: blast
audience: "lead.source == 'bulk'"
from: "Ana Ruiz <ana@example.com>"
steps:
  - id: hello
    email: welcome
"""


def bulk_project(nurture: Run, directory: Path, leads: int, env: dict[str, str]) -> Path:
    """A project whose one sequence emails each of *leads* imported leads once; its
    database is migrated and the leads imported (with *env*, e.g. a PostgreSQL URL)."""
    assert nurture("init", directory.name, cwd=directory.parent).returncode == 0
    for path in (directory / "sequences").iterdir():
        path.unlink()
    (directory / "sequences" / "blast.yaml").write_text(BLAST)
    rows = "\n".join(f"lead{i}@example.com,bulk" for i in range(leads))
    (directory / "bulk.csv").write_text("email,source\n" + rows + "\n")
    for command in (("db", "upgrade"), ("leads", "import", "bulk.csv")):
        done = nurture(*command, cwd=directory, env=env)
        assert done.returncode == 0, done.stderr
    return directory


def worker(directory: Path, env: dict[str, str], *args: str, log: Path | None = None) -> Popen[str]:
    """Start ``nurture run`` in *directory* as an operator would: its own process."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    output = open(log, "a") if log is not None else subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, "-m", "nurture", "run", *args],
        cwd=directory,
        env={**base, **env},
        stdout=output,
        stderr=output,
        text=True,
    )
