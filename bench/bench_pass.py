"""Engine benchmark: passes over N generated leads on SQLite, delivering to a Maildir.

    python -m bench.bench_pass [--leads 20000] [--json FILE]

Measures a first pass (score every lead's fit, enroll the audience, queue the first
email of each), its delivery, an idle pass (nothing due: should cost next to nothing
whatever N is), and the pass two days later that queues the second email of each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.bench_import import generate
from nurture import clock, logs
from nurture.config import load_settings
from nurture.engine.context import Context
from nurture.intake.importer import import_csv
from nurture.mail.delivery import deliver
from nurture.mail.transports import MaildirTransport
from nurture.project import init_project
from nurture.stages.passes import full_pass
from nurture.stages.reload import Reloader
from nurture.store.database import open_engine, upgrade

SEQUENCE = """\
name: bench
audience: "lead.source == 'pricing-guide'"
from: "Ana Ruiz <ana@example.com>"
steps:
  - id: welcome
    email: welcome
  - id: case-study
    wait: 2 days
    email: case-study
"""


def main() -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leads", type=int, default=20_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logs.configure(level=logging.WARNING)
    results: dict[str, float] = {"leads": args.leads}
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "project"
        init_project(project)
        for path in (project / "sequences").iterdir():
            path.unlink()
        (project / "sequences" / "bench.yaml").write_text(SEQUENCE)
        generate(Path(tmp) / "leads.csv", args.leads)
        # The benchmark measures throughput, not the sender's daily cap.
        (project / "nurture.toml").write_text(
            (project / "nurture.toml")
            .read_text()
            .replace("per_sender_daily = 500", "per_sender_daily = 10000000")
        )
        config = load_settings(project / "nurture.toml")
        engine = open_engine(config.database_url)
        upgrade(engine)
        import_csv(engine, Path(tmp) / "leads.csv")
        ctx = Context.open(engine, config)
        transport = MaildirTransport(config.outbox_dir)
        reload = Reloader(ctx)
        start = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)

        def timed(label: str, moment: datetime) -> None:
            with clock.pinned(moment):
                began = time.perf_counter()
                catalog, report = full_pass(ctx, reload, moment)
                passed = time.perf_counter() - began
                began = time.perf_counter()
                delivered = asyncio.run(deliver(ctx, catalog, transport))
                sent_in = time.perf_counter() - began
            results[f"{label}_pass_seconds"] = round(passed, 3)
            results[f"{label}_delivery_seconds"] = round(sent_in, 3)
            queued = report.emails_queued
            rate = f" = {queued / passed:,.0f} emails/s" if queued else ""
            print(
                f"{label}: pass {passed:.3f} s (enrolled {report.enrolled}, queued "
                f"{queued}{rate}); delivery {sent_in:.3f} s (sent {delivered.sent}"
                + (f" = {delivered.sent / sent_in:,.0f}/s)" if delivered.sent else ")")
            )

        timed("first", start)
        timed("after_delivery", start + timedelta(minutes=10))
        timed("idle", start + timedelta(minutes=20))
        timed("second_email", start + timedelta(days=2))
        engine.dispose()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
