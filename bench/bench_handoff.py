"""Speed to sales: the time from the event that makes a lead hot (a meeting booked
through ``POST /api/events``, a ``hot_on`` event of the example's ``scoring.yaml``) to
the hand-off notice at the SMTP sink, while ``nurture run --serve`` works through a pass
of 10,000 due enrollments. Goal: p95 under 2 s, on SQLite and on PostgreSQL; exactly one
notice per hand-off (on PostgreSQL also with a second worker beside the first).

    python -m bench.bench_handoff [--quick] [--only sqlite|postgresql]

Each hot lead has an owner of its own, so the sink's recipient tells whose notice came.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    Unreachable,
    _wait_http,
    bench_main,
    free_port,
    installation,
    make_project,
    percentile,
    scratch_database,
    worker_env,
)
from bench.smtp_sink import SinkProcess, read_log

KEY = "bench-handoff-key-0123456789abcdef"


def _owner(index: int) -> str:
    return f"rep{index}@sales.example.com"


def _hot_candidates(engine: Any, count: int) -> None:
    """*count* leads that fit (a VP title, 120 employees), each with its own owner."""
    from nurture.store.database import session_scope
    from nurture.store.leads import LeadChanges, upsert_leads

    rows = [
        {"email": f"buyer{i}@prospect.example.com", "title": "VP Sales", "employees": "120",
         "owner": _owner(i), "source": "bench-hot", "company": f"Prospect {i}"}
        for i in range(count)
    ]  # fmt: skip
    with session_scope(engine) as session:
        upsert_leads(session, [LeadChanges(row["email"], row) for row in rows])


def measure(tmp: Path, database: str, *, due: int, posts: int, rate: float, workers: int
            ) -> dict[str, Any]:  # fmt: skip
    """One run on *database* (``sqlite`` or ``postgresql``) with *workers* daemons."""
    try:
        with scratch_database(database) as env:
            return _run(tmp, database, env, due=due, posts=posts, rate=rate, workers=workers)
    except Unreachable as exc:
        return {"skipped": str(exc)}


def _run(tmp: Path, database: str, env: dict[str, str], *, due: int, posts: int, rate: float,
         workers: int) -> dict[str, Any]:  # fmt: skip
    env = dict(env)
    project = make_project(tmp / f"{database}-{workers}")
    sink = SinkProcess(free_port(), tmp / f"{database}-{workers}-sink.log", delay=0.005).start()
    port = free_port()
    env.update({"NURTURE_SMTP_HOST": "127.0.0.1", "NURTURE_SMTP_PORT": str(sink.port),
                "NURTURE_SERVER_PORT": str(port), "NURTURE_DAEMON_INTERVAL": "60",
                "NURTURE_API_KEY": KEY, "NURTURE_SALES_DIGEST_AT": ""})  # fmt: skip
    _, engine, _ = installation(project, env, due, due=due)
    _hot_candidates(engine, posts)
    engine.dispose()
    url = f"http://127.0.0.1:{port}"
    log = tmp / f"{database}-{workers}-run.log"
    daemons = []
    with open(log, "w") as output:
        for index in range(workers):
            args = ["run", "--serve"] if index == 0 else ["run"]
            daemons.append(subprocess.Popen(
                [sys.executable, "-m", "nurture", *args],
                cwd=project, env=worker_env(env), stdout=output, stderr=output,
            ))  # fmt: skip
    posted: dict[str, float] = {}
    try:
        _wait_http(f"{url}/healthz", timeout=120)
        deadline = time.monotonic() + 300
        while not read_log(sink.log):  # the pass has begun sending
            if daemons[0].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the pass did not start: see {log}")
            time.sleep(0.05)
        with httpx.Client(timeout=30, headers={"X-API-Key": KEY}) as client:
            start = time.monotonic()
            for index in range(posts):
                pause = start + index / rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                posted[_owner(index)] = time.time()
                answer = client.post(
                    f"{url}/api/events",
                    json={"type": "meeting_booked", "lead": f"buyer{index}@prospect.example.com"},
                )
                if answer.status_code != 201:
                    raise RuntimeError(f"the API answered {answer.status_code}: {answer.text}")
        deadline = time.monotonic() + 600
        while True:
            received = {row[1]: row[0] for row in read_log(sink.log)}
            if all(owner in received for owner in posted) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        # A moment for a second notice that should never come.
        time.sleep(2)
    finally:
        for daemon in daemons:
            daemon.terminate()
        for daemon in daemons:
            daemon.wait(120)
        sink.stop()
    rows = read_log(sink.log)
    first: dict[str, float] = {}
    for moment, recipient, _ in rows:
        if recipient in posted:
            first.setdefault(recipient, moment)
    counts = Counter(recipient for _, recipient, _ in rows if recipient in posted)
    latencies = [first[owner] - posted[owner] for owner in posted if owner in first]
    return {
        "due": due,
        "posts": posts,
        "workers": workers,
        "handed_off": len(latencies),
        "duplicates": sum(n - 1 for n in counts.values()),
        "p50_ms": round(statistics.median(latencies) * 1000) if latencies else None,
        "p95_ms": round(percentile(latencies, 0.95) * 1000) if latencies else None,
        "max_ms": round(max(latencies) * 1000) if latencies else None,
    }


def run(
    tmp: Path, quick: bool, databases: tuple[str, ...] = ("sqlite", "postgresql")
) -> dict[str, Any]:
    """The benchmark on each database (``python -m bench --only handoff``); on
    PostgreSQL also with two workers."""
    due, posts, rate = (2_000, 20, 5.0) if quick else (10_000, 60, 5.0)
    results = {db: measure(tmp, db, due=due, posts=posts, rate=rate, workers=1)
               for db in databases}  # fmt: skip
    if "postgresql" in databases:
        results["postgresql-2-workers"] = measure(tmp, "postgresql", due=due, posts=posts,
                                                  rate=rate, workers=2)  # fmt: skip
    return results


def main() -> None:
    bench_main(__doc__, "nurture-bench-handoff-", run)


if __name__ == "__main__":
    main()
