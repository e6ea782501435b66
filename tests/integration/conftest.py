"""Fixtures the integration modules share: ``harness`` (the engine in-process against a
real SMTP server, on SQLite and PostgreSQL) from :mod:`tests.enginekit`."""

from __future__ import annotations

from tests.enginekit import harness as harness
