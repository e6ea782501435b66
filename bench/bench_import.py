"""Import benchmark: N generated leads from CSV into a fresh SQLite database.

    python -m bench.bench_import [--rows 100000] [--json FILE]

Prints rows per second for a first import (all created) and a second import of the same
file (all unchanged), which is the daily-sync case. Goal: 100k rows in under 8 s (long
term: 3 s).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import tempfile
import time
from pathlib import Path

from nurture.intake.importer import import_csv
from nurture.store.database import open_engine, upgrade

TIMEZONES = [
    "America/New_York",
    "America/Los_Angeles",
    "Europe/Warsaw",
    "Europe/London",
    "Asia/Tokyo",
    "Australia/Sydney",
    "",
]
SOURCES = ["pricing-guide", "webinar", "outbound", "recycled"]
#: The goal of issue 23 and the long-term one: seconds for the first import of 100k rows.
GOAL, LONG_TERM = 8, 3


def generate(path: Path, rows: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "email",
                "first_name",
                "last_name",
                "company",
                "title",
                "timezone",
                "owner",
                "source",
                "employees",
                "industry",
            ]
        )
        for i in range(rows):
            writer.writerow(
                [
                    f"lead{i}@company{i % 5000}.example.com",
                    f"First{i}",
                    f"Last{i}",
                    f"Company {i % 5000}",
                    rng.choice(["VP Sales", "Engineer", "Head of Ops", ""]),
                    rng.choice(TIMEZONES),
                    f"rep{i % 7}@example.com",
                    rng.choice(SOURCES),
                    str(rng.randint(1, 5000)),
                    rng.choice(["SaaS", "Retail", "Logistics"]),
                ]
            )


def measure(rows: int) -> dict[str, float]:
    """Import *rows* generated leads into a fresh SQLite database, twice."""
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        csv_path = directory / "leads.csv"
        generate(csv_path, rows)
        engine = open_engine(f"sqlite:///{directory / 'bench.db'}")
        upgrade(engine)
        results: dict[str, float] = {"rows": rows}
        for label in ("first_import", "reimport"):
            started = time.perf_counter()
            report = import_csv(engine, csv_path)
            elapsed = time.perf_counter() - started
            assert not report.rejected, report.rejected[:3]
            results[f"{label}_seconds"] = round(elapsed, 2)
            results[f"{label}_rows_per_second"] = round(rows / elapsed)
            print(
                f"{label}: {rows} rows in {elapsed:.2f} s = "
                f"{rows / elapsed:,.0f} rows/s ({report.summary()})"
            )
        engine.dispose()
    return results


def main() -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = measure(args.rows)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
