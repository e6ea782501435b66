"""Event ingestion: events per second through ``POST /api/events`` (batches of 1,000,
real HTTP to ``nurture serve`` in a process of its own) with the pass that scores
them, on SQLite and on PostgreSQL. Goal: at least 5,000/s scored alongside (long
term: 20,000/s).

    python -m bench.bench_events [--quick] [--only sqlite|postgresql]

Two rounds on 10,000 enrolled leads: the API alone and then one scoring pass (one
after the other); and the API with ``nurture run`` scoring alongside, as deployed,
until every event is scored (the figure of the goal).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, text

from bench.common import (
    Unreachable,
    _wait_http,
    bench_main,
    free_port,
    installation,
    make_project,
    scratch_database,
    worker_env,
)
from nurture import clock
from nurture.language.scoring import load_scoring
from nurture.sales.scorer import score_pass

#: The goal of issue 23 and the long-term one, events per second scored alongside.
GOAL, LONG_TERM = 5_000, 20_000
API_KEY = "bench-key-0123456789"


def measure(tmp: Path, database: str, *, leads: int, events: int, batch: int) -> dict[str, Any]:
    """One run on *database* (``sqlite`` or ``postgresql``)."""
    try:
        with scratch_database(database) as env:
            return _run(tmp, database, env, leads=leads, events=events, batch=batch)
    except Unreachable as exc:
        return {"skipped": str(exc)}


def _run(
    tmp: Path, database: str, env: dict[str, str], *, leads: int, events: int, batch: int
) -> dict[str, Any]:
    project = make_project(tmp / f"events-{database}")
    port = free_port()
    env = {**env, "NURTURE_API_KEY": API_KEY, "NURTURE_SERVER_PORT": str(port)}
    config, engine, ctx = installation(project, env, leads, due=0)
    rules, problems = load_scoring(config.scoring_file)
    assert rules is not None, problems
    url = f"http://127.0.0.1:{port}"
    results: dict[str, Any] = {"leads": leads, "events": events, "batch": batch}
    server_log = open(tmp / f"events-{database}-serve.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "nurture", "serve"],
        cwd=project, env=worker_env(env), stdout=server_log, stderr=server_log,
    )  # fmt: skip
    try:
        _wait_http(f"{url}/healthz")
        started = time.perf_counter()
        post_events(url, leads, events, batch, "one")
        posted = time.perf_counter() - started
        began = time.perf_counter()
        scored = score_pass(ctx, rules, clock.now())
        scoring = time.perf_counter() - began
        assert scored.events >= events, scored
        results.update(
            api_seconds=round(posted, 2),
            api_per_second=round(events / posted),
            scoring_seconds=round(scoring, 2),
            per_second_then_scored=round(events / (posted + scoring)),
        )
        log = tmp / f"events-{database}-run.log"
        with open(log, "w") as output:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "nurture", "run"],
                cwd=project, env=worker_env(env), stdout=output, stderr=output,
            )  # fmt: skip
            try:
                time.sleep(3)  # started and idle
                started = time.perf_counter()
                post_events(url, leads, events, batch, "two")
                while unscored(engine):
                    if daemon.poll() is not None:
                        raise RuntimeError(f"nurture run ended: see {log}")
                    time.sleep(0.05)
                alongside = time.perf_counter() - started
            finally:
                daemon.terminate()
                daemon.wait(60)
        results.update(
            alongside_seconds=round(alongside, 2),
            per_second_with_scoring=round(events / alongside),
        )
    finally:
        server.terminate()
        server.wait(30)
        server_log.close()
        engine.dispose()
    return results


def post_events(url: str, leads: int, events: int, batch: int, prefix: str) -> None:
    """*events* events for the bulk leads, *batch* to a request, each with its own id."""
    # Types other systems may report (opens and clicks are nurture's own evidence).
    types = ["page_visited", "form_submitted", "page_visited", "email_replied"]
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(timeout=120) as client:
        for n in range(events // batch):
            body = []
            for i in range(batch):
                k = (n * 7 + i * 13) % leads
                body.append({
                    "type": types[(n + i) % len(types)],
                    "lead": f"lead{k}@company{k % 5000}.example.com",
                    "id": f"{prefix}-{n}-{i}",
                })  # fmt: skip
            response = client.post(f"{url}/api/events", json=body, headers=headers)
            if response.status_code != 200:
                raise RuntimeError(f"the API answered {response.status_code}: "
                                   f"{response.text[:500]} (see the server's log)")  # fmt: skip


def unscored(engine: Engine) -> int:
    with engine.connect() as connection:
        query = text("SELECT count(*) FROM events WHERE scored IS false")  # its own index
        return int(connection.execute(query).scalar_one())


def run(
    tmp: Path, quick: bool, databases: tuple[str, ...] = ("sqlite", "postgresql")
) -> dict[str, Any]:
    """The benchmark on each database (``python -m bench --only events``)."""
    events = 10_000 if quick else 50_000
    return {db: measure(tmp, db, leads=10_000, events=events, batch=1000) for db in databases}


def main() -> None:
    bench_main(__doc__, "nurture-bench-events-", run)


if __name__ == "__main__":
    main()
