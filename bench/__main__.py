"""The benchmark suite: one command runs every benchmark, prints a table against the
goals, and writes the figures as JSON.

    python -m bench [--quick] [--only NAME ...] [--json bench-results.json]

Benchmarks (names for ``--only``):

- ``throughput``: emails per second from due enrollments to the 250 of an SMTP sink in
  a process of its own, against a raw aiosmtplib blast of the same, pre-built messages
  to the same sink over as many connections, on SQLite and PostgreSQL. Goal: at least
  0.5 of the raw blast (long term 0.8).
- ``idle``: the cost of a pass when nothing is due, with 10k, 100k and 1M enrolled
  leads on SQLite. Goal: flat, under 20 ms at 1M.
- ``memory``: peak RSS of ``nurture run`` on the 1M-lead database while it works
  through 1,000 due touches. Goal: under 200 MB. (Runs after ``idle``, on its database.)
- ``events``: events per second through ``POST /api/events`` batches of 1,000, with
  ``nurture run`` scoring them alongside, on SQLite and PostgreSQL
  (``bench/bench_events.py``). Goal: at least 5,000/s (long term 20,000/s).
- ``import``: a 100k-lead CSV into SQLite, then the same file again (all unchanged).
  Goal: under 8 s (long term 3 s).
- ``scaleout``: throughput with 1, 2 and 4 workers on PostgreSQL, sending to a sink that
  answers after 50 ms (so the figure shows how workers share the load, not the cores).
- ``intake``: speed to lead, from a form POST to the sink receiving the welcome email,
  while ``nurture run --serve`` works through a pass of 10,000 due enrollments, on SQLite
  and PostgreSQL. Goal: p95 under 500 ms (long term 200 ms).
- ``handoff``: speed to sales, from a meeting booked through the API (the event that
  makes a lead hot) to the hand-off notice at the sink, during the same pass of 10,000,
  on SQLite and PostgreSQL (and two workers on PostgreSQL). Goal: p95 under 2 s,
  exactly one notice per hand-off.

``--quick`` runs smaller sizes (for a smoke test; the goals are for the full sizes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosmtplib
from sqlalchemy import create_engine, text, update
from sqlmodel import col, select

from bench.bench_events import GOAL as EVENTS_GOAL
from bench.bench_events import LONG_TERM as EVENTS_LONG_TERM
from bench.bench_events import run as run_events
from bench.bench_handoff import run as run_handoff
from bench.bench_import import GOAL as IMPORT_GOAL
from bench.bench_import import LONG_TERM as IMPORT_LONG_TERM
from bench.bench_import import measure as measure_import
from bench.bench_intake import run as run_intake
from bench.common import (
    PG_ADMIN_URL,
    Unreachable,
    free_port,
    installation,
    make_project,
    scratch_database,
    worker_env,
)
from bench.smtp_sink import SinkProcess
from nurture import clock, logs
from nurture.config import Config
from nurture.daemon import Daemon
from nurture.mail.delivery import with_date
from nurture.stages.passes import full_pass
from nurture.stages.reload import Reloader
from nurture.store.database import open_engine, session_scope
from nurture.store.enrollments import Enrollment
from nurture.store.outbox import OutboxMessage

#: Issue 23's goals, and the long-term ones: the end-to-end ratio to the raw blast, and
#: the p95 from a form post to the welcome at the sink during a pass of 10,000.
THROUGHPUT_GOAL, THROUGHPUT_LONG_TERM = 0.5, 0.8
SPEED_TO_LEAD_GOAL, SPEED_TO_LEAD_LONG_TERM = 500, 200

# --- 1. throughput ----------------------------------------------------------------------


async def raw_blast(messages: list[tuple[bytes, str, str]], port: int, connections: int) -> float:
    """Send pre-built messages over *connections* reused connections; return seconds."""
    queue = list(reversed(messages))

    async def one() -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await client.connect()
        while queue:
            raw, sender, recipient = queue.pop()
            await client.sendmail(sender, [recipient], raw)
        await client.quit()

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(connections)))
    return time.perf_counter() - started


def _cpu_seconds() -> tuple[float, float]:
    """CPU seconds (user and system) of this process, and of its ended children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def bench_throughput(tmp: Path, quick: bool) -> dict[str, Any]:
    """The throughput benchmark on SQLite and on PostgreSQL."""
    results: dict[str, Any] = {}
    for database in ("sqlite", "postgresql"):
        try:
            with scratch_database(database) as env:
                results[database] = _throughput(tmp / database, quick, env)
        except Unreachable as exc:
            results[database] = {"skipped": str(exc)}
    return results


def _throughput(tmp: Path, quick: bool, database_env: dict[str, str]) -> dict[str, Any]:
    emails = 1000 if quick else 5000
    connections = 4
    tmp.mkdir(parents=True, exist_ok=True)
    sink = SinkProcess(free_port(), tmp / "sink.log").start()
    try:
        project = make_project(tmp / "throughput")
        env = {
            **database_env,
            "NURTURE_SMTP_HOST": "127.0.0.1",
            "NURTURE_SMTP_PORT": str(sink.port),
            "NURTURE_SMTP_MAX_CONNECTIONS": str(connections),
        }
        config, engine, _ = installation(project, env, emails, due=emails)
        now = datetime.now(UTC)
        # End to end: the daemon (in this process) until nothing is due: its pass queues
        # the due emails batch by batch while its delivery loop sends them.
        daemon = Daemon(engine, config, until_idle=True)
        before = _cpu_seconds()
        started = time.time()
        asyncio.run(daemon.main())
        after = _cpu_seconds()  # the pass process has ended: counted among the children
        received = sink.received()
        assert len(received) == emails, len(received)
        end_to_end = max(moment for moment, _, _ in received) - started
        # The raw blast: the very same messages, already built, to the same sink.
        with session_scope(engine) as session:
            messages = [
                (with_date(row.raw, now), row.sender, row.recipient)
                for row in session.exec(select(OutboxMessage))
            ]
        raw = asyncio.run(raw_blast(messages, sink.port, connections))
        engine.dispose()
    finally:
        sink.stop()
    ours, blast = emails / end_to_end, emails / raw
    return {
        "emails": emails,
        "connections": connections,
        # CPU per email of the daemon's process (the sending) and of its pass process.
        "daemon_cpu_ms_per_email": round((after[0] - before[0]) / emails * 1000, 3),
        "pass_process_cpu_ms_per_email": round((after[1] - before[1]) / emails * 1000, 3),
        "end_to_end_seconds": round(end_to_end, 2),
        "raw_blast_seconds": round(raw, 2),
        "end_to_end_per_second": round(ours),
        "raw_blast_per_second": round(blast),
        "ratio": round(ours / blast, 3),
    }


# --- 2. idle pass, 5. memory --------------------------------------------------------------


def bench_idle(tmp: Path, quick: bool, memory: bool) -> dict[str, Any]:
    sizes = [10_000, 100_000] if quick else [10_000, 100_000, 1_000_000]
    results: dict[str, Any] = {}
    for size in sizes:
        project = make_project(tmp / f"idle-{size}")
        started = time.perf_counter()
        config, engine, ctx = installation(project, {}, size, due=0)
        print(f"  idle: {size:,} leads and enrollments written in "
              f"{time.perf_counter() - started:.1f} s", flush=True)  # fmt: skip
        reload = Reloader(ctx)
        full_pass(ctx, reload, clock.now())  # warm: files read, statements compiled
        timings = []
        for _ in range(15):
            began = time.perf_counter()
            _, report = full_pass(ctx, reload, clock.now())
            timings.append((time.perf_counter() - began) * 1000)
            assert not any(vars(report).values()), report
        results[f"{size}"] = round(statistics.median(timings), 1)
        engine.dispose()
        if memory and size == sizes[-1]:
            results["memory"] = bench_memory(project, config, size)
    return results


def bench_memory(project: Path, config: Config, size: int) -> dict[str, Any]:
    """``nurture run --until-idle`` on the big database with 1,000 touches due."""
    due = 1000
    engine = open_engine(config.database_url)
    with engine.begin() as connection:
        connection.execute(
            update(Enrollment)
            .where(col(Enrollment.id) <= due)
            .values(due_at=datetime.now(UTC), next_step="hello", done_steps=[])
        )
    engine.dispose()
    sink = SinkProcess(free_port(), project / "sink.log").start()
    try:
        env = worker_env({"NURTURE_SMTP_HOST": "127.0.0.1", "NURTURE_SMTP_PORT": str(sink.port)})
        log = project / "run.log"  # a file: a pipe nobody reads would stall the daemon
        began = time.perf_counter()
        with open(log, "w") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "nurture", "run", "--until-idle"],
                cwd=project,
                env=env,
                stdout=output,
                stderr=output,
            )
            _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - began
        process.returncode = os.waitstatus_to_exitcode(status)
        assert process.returncode == 0, log.read_text()[-2000:]
        sent = len(sink.received())
    finally:
        sink.stop()
    return {
        "leads": size,
        "due": due,
        "sent": sent,
        "seconds": round(elapsed, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
    }


# --- 6. scale-out -----------------------------------------------------------------------


def bench_scaleout(tmp: Path, quick: bool) -> dict[str, Any]:
    touches, delay = (400 if quick else 1200), 0.05
    try:
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text("select 1"))
    except Exception as exc:
        return {"skipped": f"PostgreSQL not reachable at {PG_ADMIN_URL}: {type(exc).__name__}"}
    results: dict[str, Any] = {"touches": touches, "sink_delay_ms": delay * 1000}
    for workers in (1, 2, 4):
        name = f"nurture_bench_{uuid.uuid4().hex[:10]}"
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
        sink = SinkProcess(free_port(), tmp / f"scale-{workers}.log", delay=delay).start()
        try:
            project = make_project(tmp / f"scale-{workers}")
            env = {
                "NURTURE_DATABASE_URL": url,
                "NURTURE_SMTP_HOST": "127.0.0.1",
                "NURTURE_SMTP_PORT": str(sink.port),
                "NURTURE_SMTP_MAX_CONNECTIONS": "2",
                "NURTURE_DAEMON_BATCH_SIZE": "50",
            }
            _, engine, _ = installation(project, env, touches, due=touches)
            engine.dispose()
            started = time.time()
            processes = [
                subprocess.Popen(
                    [sys.executable, "-m", "nurture", "run", "--until-idle"],
                    cwd=project,
                    env=worker_env(env),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for _ in range(workers)
            ]
            for process in processes:
                assert process.wait(900) == 0
            received = sink.received()
            assert len(received) == touches, len(received)
            last = max(moment for moment, _, _ in received)
            results[f"{workers}"] = round(touches / (last - started))
        finally:
            sink.stop()
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
    return results


# --- the table ----------------------------------------------------------------------------


def table(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(benchmark, figure, goal, verdict) rows."""
    rows: list[tuple[str, str, str, str]] = []

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    for database, t in results.get("throughput", {}).items():
        name = f"1. throughput ({database}, SMTP sink)"
        if "skipped" in t:
            rows.append((name, t["skipped"], "-", "skipped"))
            continue
        rows.append((
            name,
            f"{t['end_to_end_per_second']}/s vs raw {t['raw_blast_per_second']}/s = "
            f"{t['ratio']:.2f}",
            f">= {THROUGHPUT_GOAL} of raw (long term {THROUGHPUT_LONG_TERM})",
            verdict(t["ratio"] >= THROUGHPUT_GOAL and t["emails"] >= 5000),
        ))  # fmt: skip
    if "idle" in results:
        idle = results["idle"]
        sizes = [key for key in idle if key.isdigit()]
        figure = ", ".join(f"{int(size):,}: {idle[size]} ms" for size in sizes)
        biggest = max(sizes, key=int)
        rows.append((
            "2. idle pass (SQLite)", figure, "flat, < 20 ms at 1M",
            verdict(int(biggest) >= 1_000_000 and idle[biggest] < 20),
        ))  # fmt: skip
        if "memory" in idle:
            m = idle["memory"]
            rows.append((
                "5. memory: nurture run",
                f"{m['peak_rss_mb']} MB peak RSS ({m['leads']:,} leads, {m['sent']} sent)",
                "< 200 MB", verdict(m["peak_rss_mb"] < 200 and m["leads"] >= 1_000_000),
            ))  # fmt: skip
    for database, e in results.get("events", {}).items():
        name = f"3. event ingestion ({database})"
        if "skipped" in e:
            rows.append((name, e["skipped"], "-", "skipped"))
            continue
        rows.append((
            name,
            f"{e['per_second_with_scoring']:,}/s scored alongside (API alone "
            f"{e['api_per_second']:,}/s; API then scoring {e['per_second_then_scored']:,}/s)",
            f">= {EVENTS_GOAL:,}/s (long term {EVENTS_LONG_TERM:,}/s)",
            verdict(e["per_second_with_scoring"] >= EVENTS_GOAL and e["events"] >= 50_000),
        ))  # fmt: skip
    if "import" in results:
        i = results["import"]
        rows.append((
            "4. import (SQLite)",
            f"{i['rows']:,} rows in {i['first_import_seconds']} s (again, unchanged: "
            f"{i['reimport_seconds']} s)",
            f"< {IMPORT_GOAL} s (100k; long term < {IMPORT_LONG_TERM} s)",
            verdict(i["first_import_seconds"] < IMPORT_GOAL and i["rows"] >= 100_000),
        ))  # fmt: skip
    if "scaleout" in results:
        s = results["scaleout"]
        if "skipped" in s:
            rows.append(("6. scale-out (PostgreSQL)", s["skipped"], "-", "skipped"))
        else:
            figure = ", ".join(f"{n} worker(s): {s[n]}/s" for n in ("1", "2", "4"))
            rows.append(("6. scale-out (PostgreSQL)", figure, "grows with workers",
                         verdict(s["4"] > s["2"] > s["1"])))  # fmt: skip
    if "intake" in results:
        for database, figures in results["intake"].items():
            if "skipped" in figures:
                rows.append((f"7. speed to lead ({database})", figures["skipped"], "-",
                             "skipped"))  # fmt: skip
                continue
            p95 = figures["p95_ms"]
            rows.append((
                f"7. speed to lead ({database})",
                f"p50 {figures['p50_ms']} ms, p95 {p95} ms ({figures['arrived']}/"
                f"{figures['posts']} arrived, {figures['during_pass']} posted during a pass "
                f"of {figures['due']:,})",
                f"p95 < {SPEED_TO_LEAD_GOAL} ms (long term {SPEED_TO_LEAD_LONG_TERM} ms)",
                verdict(p95 is not None and p95 < SPEED_TO_LEAD_GOAL and figures["due"] >= 10_000
                        and figures["arrived"] == figures["posts"]),
            ))  # fmt: skip
    for database, figures in results.get("handoff", {}).items():
        if "skipped" in figures:
            rows.append((f"8. speed to sales ({database})", figures["skipped"], "-", "skipped"))
            continue
        p95 = figures["p95_ms"]
        rows.append((
            f"8. speed to sales ({database})",
            f"p50 {figures['p50_ms']} ms, p95 {p95} ms ({figures['handed_off']}/"
            f"{figures['posts']} handed off, {figures['duplicates']} duplicate notices, "
            f"pass of {figures['due']:,})",
            "p95 < 2 s, one notice each",
            verdict(p95 is not None and p95 < 2000 and figures["due"] >= 10_000
                    and figures["handed_off"] == figures["posts"]
                    and figures["duplicates"] == 0),
        ))  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    names = ["throughput", "idle", "memory", "events", "import", "scaleout", "intake", "handoff"]
    parser.add_argument("--only", nargs="+", choices=names, help="run only these")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke test)")
    parser.add_argument("--json", type=Path, default=Path("bench-results.json"))
    args = parser.parse_args()
    chosen = set(args.only or names)
    logs.configure(level=logging.WARNING)
    results: dict[str, Any] = {"quick": args.quick, "cpus": os.cpu_count()}
    runs: list[tuple[str, Callable[[Path], dict[str, Any]]]] = [
        ("throughput", lambda tmp: bench_throughput(tmp, args.quick)),
        ("idle", lambda tmp: bench_idle(tmp, args.quick, "memory" in chosen)),
        ("events", lambda tmp: run_events(tmp, args.quick)),
        ("import", lambda _: measure_import(20_000 if args.quick else 100_000)),
        ("scaleout", lambda tmp: bench_scaleout(tmp, args.quick)),
        ("intake", lambda tmp: run_intake(tmp, args.quick)),
        ("handoff", lambda tmp: run_handoff(tmp, args.quick)),
    ]
    for name, run in runs:
        if name not in chosen and not (name == "idle" and "memory" in chosen):
            continue
        print(f"running {name}...", flush=True)
        with tempfile.TemporaryDirectory(prefix=f"nurture-bench-{name}-") as tmp:
            results[name] = run(Path(tmp))
        print(f"  {json.dumps(results[name])}", flush=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    rows = table(results)
    widths = [max(len(row[i]) for row in [("benchmark", "figure", "goal", "verdict"), *rows])
              for i in range(4)]  # fmt: skip
    for row in [("benchmark", "figure", "goal", "verdict"), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    print(f"(JSON written to {args.json})")


if __name__ == "__main__":
    main()
