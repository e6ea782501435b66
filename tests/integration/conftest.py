"""Fixtures the integration modules share: ``harness`` (the engine in-process against a
real SMTP server, on SQLite and PostgreSQL) from :mod:`tests.integration.test_engine`."""

from __future__ import annotations

from tests.integration.test_engine import harness as harness
