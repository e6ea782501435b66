"""Run the real ``nurture`` command in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def nurture(tmp_path: Path) -> Run:
    """``nurture(*args, cwd=..., env=...)`` runs the CLI and returns the finished process."""
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    base_env["COLUMNS"] = "200"

    def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None):
        return subprocess.run(
            [sys.executable, "-m", "nurture", *args],
            cwd=cwd or tmp_path,
            env={**base_env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=120,
        )

    return run
