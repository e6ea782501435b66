"""The advance stage alone: N enrolled leads whose next email is due, carried forward by
one :func:`~nurture.stages.advance.advance_due`, on SQLite and (given a URL) PostgreSQL.

    python -m bench.bench_advance [--leads 2000] [--pg postgresql+psycopg://...] [--profile]

Prints the stage's CPU per enrollment, the part of it spent in the database layers
(SQLAlchemy and the driver, by cProfile with ``--profile``), and the statements issued
per batch (counted by a ``before_cursor_execute`` listener; an ``executemany`` is one).
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import pstats
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, text

from bench.bench_import import generate
from bench.bench_pass import SEQUENCE
from nurture import clock, logs
from nurture.config import load_settings
from nurture.engine.context import Context
from nurture.intake.importer import import_csv
from nurture.project import init_project
from nurture.stages.advance import advance_due
from nurture.stages.passes import full_pass
from nurture.stages.reload import Reloader
from nurture.store.database import open_engine, upgrade

START = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
#: Where the database layers' code lives: time spent under these counts as DB CPU.
DB_PARTS = ("sqlalchemy", "sqlmodel", "psycopg", "sqlite3")


def _db_seconds(profile: cProfile.Profile) -> float:
    """The CPU spent in the database layers, by their outermost frames (no double count)."""
    stats = pstats.Stats(profile)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = 0.0
    for (filename, _line, _name), (_cc, _nc, _tt, cumulative, callers) in raw.items():
        if not any(part in filename for part in DB_PARTS):
            continue
        outer = [c for c in callers if not any(part in c[0] for part in DB_PARTS)]
        # Time reached from outside the DB layers: this frame's share from those callers.
        total += sum(callers[c][3] for c in outer) if outer else 0.0
        del cumulative
    return total


def run(url: str | None, leads: int, profile: bool) -> dict[str, float]:
    """One measurement on the database at *url* (``None``: a fresh SQLite file)."""
    logs.configure(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "project"
        init_project(project)
        for path in (project / "sequences").iterdir():
            path.unlink()
        (project / "sequences" / "bench.yaml").write_text(SEQUENCE)
        toml = (project / "nurture.toml").read_text()
        toml = toml.replace("per_sender_daily = 500", "per_sender_daily = 10000000")
        (project / "nurture.toml").write_text(toml)
        config = load_settings(project / "nurture.toml")
        engine = open_engine(url or config.database_url)
        upgrade(engine)
        generate(Path(tmp) / "leads.csv", leads)
        import_csv(engine, Path(tmp) / "leads.csv")
        ctx = Context.open(engine, config)
        reload = Reloader(ctx)
        with clock.pinned(START):  # enroll, and queue each welcome
            catalog, _ = full_pass(ctx, reload, START)
        with engine.begin() as connection:  # every welcome left: the case study is next
            connection.execute(text("UPDATE outbox SET status = 'sent', sent_at = :t"),
                               {"t": START})  # fmt: skip
            connection.execute(text("UPDATE enrollments SET base_at = :t, due_at = :t"),
                               {"t": START})  # fmt: skip
        later = START + timedelta(days=2, hours=1)
        statements: list[str] = []

        def count(*args: Any) -> None:
            statements.append(args[2])

        event.listen(engine, "before_cursor_execute", count)
        profiler = cProfile.Profile(time.process_time) if profile else None
        with clock.pinned(later):
            began, cpu = time.perf_counter(), time.process_time()
            if profiler is not None:
                profiler.enable()
            report = advance_due(ctx, catalog, later, rules=reload.scoring())
            if profiler is not None:
                profiler.disable()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - began
        event.remove(engine, "before_cursor_execute", count)
        engine.dispose()
    queued = report.emails_queued  # one per enrollment: each gets its case study
    assert queued > 0
    batches = -(-queued // ctx.batch_size)
    result = {
        "enrollments": queued,
        "cpu_ms_per_enrollment": round(cpu * 1000 / queued, 3),
        "wall_ms_per_enrollment": round(wall * 1000 / queued, 3),
        "statements_per_batch": round(len(statements) / batches, 1),
    }
    if profiler is not None:
        result["profiled_db_ms_per_enrollment"] = round(_db_seconds(profiler) * 1000 / queued, 3)
        result["profiled_cpu_ms_per_enrollment"] = round(
            pstats.Stats(profiler).total_tt * 1000 / queued, 3  # type: ignore[attr-defined]
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leads", type=int, default=2000)
    parser.add_argument("--pg", help="a PostgreSQL server URL (a fresh database is made there)")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    args = parser.parse_args()
    if not args.no_sqlite:
        print("sqlite", run(None, args.leads, args.profile))
    if args.pg:
        admin = create_engine(args.pg, isolation_level="AUTOCOMMIT")
        name = f"bench_advance_{uuid.uuid4().hex[:8]}"
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            print("postgresql", run(args.pg.rsplit("/", 1)[0] + f"/{name}", args.leads,
                                    args.profile))  # fmt: skip
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


if __name__ == "__main__":
    main()
