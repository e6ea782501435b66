"""Speed to lead: the time from a form POST to the SMTP sink receiving the new lead's
welcome email, while ``nurture run --serve`` works through a pass of 10,000 due
enrollments. Goal: p95 under 2 s, on SQLite and on PostgreSQL.

    python -m bench.bench_intake [--quick] [--only sqlite|postgresql]

Forms are posted at a steady rate from the moment the pass's first email reaches the
sink; ``during_pass`` says how many were posted before its last one did.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
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

WELCOME = """\
name: web-welcome
audience: "lead.source == 'web-form'"
from: "Ana Ruiz <ana@example.com>"
steps:
  - id: welcome
    email: welcome
"""
FORM = """\
fields: {email: email, first_name: first_name}
set: {source: web-form}
min_seconds: 0
rate_limit: 100000 per minute
"""


def measure(tmp: Path, database: str, *, due: int, posts: int, rate: float) -> dict[str, Any]:
    """One run on *database* (``sqlite`` or ``postgresql``)."""

    try:
        with scratch_database(database) as env:
            return _run(tmp, database, env, due=due, posts=posts, rate=rate)
    except Unreachable as exc:
        return {"skipped": str(exc)}


def _run(
    tmp: Path, database: str, env: dict[str, str], *, due: int, posts: int, rate: float
) -> dict[str, Any]:
    env = dict(env)
    project = make_project(tmp / database)
    (project / "sequences" / "web-welcome.yaml").write_text(WELCOME)
    (project / "forms" / "bench.yaml").write_text(FORM)
    sink = SinkProcess(free_port(), tmp / f"{database}-sink.log", delay=0.005).start()
    port = free_port()
    env.update({"NURTURE_SMTP_HOST": "127.0.0.1", "NURTURE_SMTP_PORT": str(sink.port),
                "NURTURE_SERVER_PORT": str(port), "NURTURE_DAEMON_INTERVAL": "60"})  # fmt: skip
    _, engine, _ = installation(project, env, due, due=due)
    engine.dispose()
    url = f"http://127.0.0.1:{port}"
    log = tmp / f"{database}-run.log"
    with open(log, "w") as output:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "nurture", "run", "--serve"],
            cwd=project, env=worker_env(env), stdout=output, stderr=output,
        )  # fmt: skip
    posted: dict[str, float] = {}
    try:
        _wait_http(f"{url}/healthz", timeout=120)
        deadline = time.monotonic() + 300
        while not read_log(sink.log):  # the pass has begun sending
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the pass did not start: see {log}")
            time.sleep(0.05)
        with httpx.Client(timeout=30) as client:
            start = time.monotonic()
            for index in range(posts):
                pause = start + index / rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                email = f"visitor{index}@web.example.com"
                posted[email] = time.time()
                answer = client.post(f"{url}/f/bench", data={"email": email,
                                     "first_name": "Vi"}, follow_redirects=False)  # fmt: skip
                if answer.status_code != 303:
                    raise RuntimeError(f"form answered {answer.status_code}: {answer.text}")
        deadline = time.monotonic() + 600
        while True:
            received = {row[1]: row[0] for row in read_log(sink.log)}
            if all(email in received for email in posted) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        daemon.terminate()
        daemon.wait(120)
        sink.stop()
    rows = read_log(sink.log)
    bulk = [moment for moment, recipient, _ in rows if recipient not in posted]
    pass_end = max(bulk) if len(bulk) >= due else float("inf")
    latencies = [received[e] - posted[e] for e in posted if e in received]
    return {
        "due": due,
        "posts": posts,
        "rate_per_second": rate,
        "arrived": len(latencies),
        "during_pass": sum(1 for moment in posted.values() if moment < pass_end),
        "bulk_sent": len(bulk),
        "p50_ms": round(statistics.median(latencies) * 1000) if latencies else None,
        "p95_ms": round(percentile(latencies, 0.95) * 1000) if latencies else None,
        "max_ms": round(max(latencies) * 1000) if latencies else None,
    }


def run(
    tmp: Path, quick: bool, databases: tuple[str, ...] = ("sqlite", "postgresql")
) -> dict[str, Any]:
    """The benchmark on each database (``python -m bench --only intake``)."""
    due, posts, rate = (2_000, 20, 5.0) if quick else (10_000, 60, 5.0)
    return {db: measure(tmp, db, due=due, posts=posts, rate=rate) for db in databases}


def main() -> None:
    bench_main(__doc__, "nurture-bench-intake-", run)


if __name__ == "__main__":
    main()
