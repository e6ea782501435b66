"""What the benchmarks share: projects, installations, free ports and the servers they wait for."""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, create_engine, insert, text, update

from nurture.config import Config, load_settings
from nurture.engine.context import Context
from nurture.project import init_project
from nurture.sales.scorer import FIT_CHECKED_KEY
from nurture.stages.enroll import LEADS_CHECKED_KEY
from nurture.stages.reload import Reloader
from nurture.stages.score import SCORING_DIGEST_KEY
from nurture.store.database import open_engine, session_scope, upgrade
from nurture.store.enrollments import DeployedSequence, Enrollment
from nurture.store.leads import Lead
from nurture.store.meta import Meta

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get(
    "NURTURE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
SEQUENCE = """\
name: blast
audience: "lead.source == 'bulk'"
from: "Ana Ruiz <ana@example.com>"
steps:
  - id: hello
    email: welcome
  - id: follow-up
    wait: 30 days
    email: case-study
"""
#: Settings every benchmark project gets (as NURTURE_* variables).
BASE_ENV = {
    "NURTURE_LIMITS_PER_SENDER_DAILY": "100000000",
    "NURTURE_LIMITS_PER_LEAD_DAILY": "100",
    "NURTURE_SENDER_POSTAL_ADDRESS": "Acme, 1 Main St, Springfield",
    "NURTURE_DAEMON_INTERVAL": "1",
    "NURTURE_DAEMON_DELIVERY_INTERVAL": "1",
    "NURTURE_SMTP_STARTTLS": "false",
}



def load(project: Path, env: dict[str, str]) -> Config:
    with environment({**BASE_ENV, **env}):
        return load_settings(project / "nurture.toml")


def prime(ctx: Context, now: datetime) -> None:
    """Mark the installation as running: sequences deployed and every incremental scan
    (audiences, fit, scoring rules) up to date, as after its first pass. Before
    :func:`populate`."""
    Reloader(ctx)(now)
    import hashlib

    digest = hashlib.sha256(ctx.config.scoring_file.read_bytes()).hexdigest()
    with session_scope(ctx.engine) as session:
        for key, value in (
            (LEADS_CHECKED_KEY, now.isoformat()),
            (FIT_CHECKED_KEY, now.isoformat()),
            (SCORING_DIGEST_KEY, digest),
        ):
            session.merge(Meta(key=key, value=value))
        session.execute(update(DeployedSequence).values(audience_checked_at=now))


def populate(engine: Engine, leads: int, *, due: int, now: datetime) -> None:
    """*leads* leads, each enrolled in ``blast`` a day ago: the first *due* wait for its
    first email (due now), the others got it and wait 30 days for the second. Inserted
    in bulk, as a long-running installation holds them (after :func:`prime`: deploying
    a sequence wakes its enrollments)."""
    chunk = 20_000
    later = now + timedelta(days=30)
    with engine.begin() as connection:
        for start in range(0, leads, chunk):
            rows = [
                {
                    "email": f"lead{i}@company{i % 5000}.example.com",
                    "first_name": f"First{i}",
                    "company": f"Company {i % 5000}",
                    "source": "bulk",
                    "stage": "cold",
                    "status": "subscribed",
                    "score_stage": "cold",
                    "attributes": {"employees": i % 500},
                    "engagement": 0.0,
                    "fit": 0.0,
                    "created_at": now - timedelta(days=1),
                    "updated_at": now - timedelta(days=1),
                }
                for i in range(start, min(start + chunk, leads))
            ]
            connection.execute(insert(Lead), rows)
        for start in range(0, leads, chunk):
            rows = [
                {
                    "lead_id": i + 1,
                    "sequence": "blast",
                    "cycle": 1,
                    "status": "active",
                    "next_step": "hello" if i < due else "follow-up",
                    "base_at": now - timedelta(days=1),
                    "due_at": now if i < due else later - timedelta(days=1),
                    "done_steps": [] if i < due else ["hello"],
                    "enrolled_by": "auto",
                    "enrolled_at": now - timedelta(days=1),
                    "updated_at": now - timedelta(days=1),
                }
                for i in range(start, min(start + chunk, leads))
            ]
            connection.execute(insert(Enrollment), rows)


def _wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer")
        time.sleep(0.2)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def installation(
    project: Path, env: dict[str, str], leads: int, *, due: int
) -> tuple[Config, Engine, Context]:
    """A migrated, primed database holding *leads* enrolled leads (*due* of them due)."""
    config = load(project, env)
    engine = open_engine(config.database_url)
    upgrade(engine)
    now = datetime.now(UTC).replace(microsecond=0)
    ctx = Context.open(engine, config)
    prime(ctx, now)
    populate(engine, leads, due=due, now=now)
    return config, engine, ctx


def make_project(directory: Path) -> Path:
    """The example project with one two-email sequence for leads of source ``bulk``."""
    init_project(directory)
    for path in (directory / "sequences").iterdir():
        path.unlink()
    (directory / "sequences" / "blast.yaml").write_text(SEQUENCE)
    return directory


def worker_env(env: dict[str, str]) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    return {**base, **BASE_ENV, **env, "PYTHONPATH": str(ROOT)}


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class Unreachable(Exception):
    """PostgreSQL cannot be reached: the benchmark on it is skipped, saying so."""


@contextmanager
def scratch_database(kind: str) -> Iterator[dict[str, str]]:
    """The settings of a database of *kind* for one run: none for SQLite (the project's
    own file); for PostgreSQL a database made for the run and dropped after it. Raises
    :class:`Unreachable` when PostgreSQL cannot be reached."""
    if kind != "postgresql":
        yield {}
        return
    name = f"nurture_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        admin.dispose()
        raise Unreachable(
            f"PostgreSQL not reachable at {PG_ADMIN_URL}: {type(exc).__name__}"
        ) from None
    try:
        yield {"NURTURE_DATABASE_URL": PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"}
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def percentile(values: list[float], share: float) -> float:
    """The value below which *share* of *values* lie (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def bench_main(doc: str | None, prefix: str, run: Callable[..., dict[str, Any]]) -> None:
    """The command line of a benchmark module: ``[--quick] [--only sqlite|postgresql]``,
    its results printed as JSON."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=["sqlite", "postgresql"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        databases = (args.only,) if args.only else ("sqlite", "postgresql")
        print(json.dumps(run(Path(tmp), args.quick, databases), indent=2))
