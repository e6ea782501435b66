"""Micro-benchmark: the CPU of composing and serialising one email (issue 23).

    python -m bench.bench_compose [--messages 5000] [--save DIR | --check DIR]

Composes emails from the example project (``templates/`` and ``sequences/`` at the
repository's root: every email step and variant, for leads of varied names and
companies), each tracked, and serialises them with :func:`nurture.mail.wire.as_text`,
as a pass does; prints the CPU milliseconds per message.

``--save DIR`` writes the first 200 messages to *DIR*; ``--check DIR`` compares them
with what was saved (the Message-ID and the MIME boundary, random by design, are
replaced by placeholders first; the time is pinned), to show that a change to the
making of messages leaves the bytes on the wire as they were.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine

from nurture import logs
from nurture.config import load_settings
from nurture.engine.context import Context
from nurture.language.expressions import LeadView
from nurture.language.sequence_files import load_sequences
from nurture.language.sequences import EmailAction
from nurture.language.templates import TemplateSet
from nurture.mail.compose import compose_email
from nurture.mail.wire import as_text
from nurture.store.leads import Lead

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT = 200
FIRST = ["Maria", "Jörg", "Zoë", "Li", "Ana-Sofía", "O'Brien", "Søren", "李", "Dmitri", ""]
LAST = ["García", "Smith", "Müller", "Nguyễn", "Ø", "van der Berg", "", "Ångström"]
COMPANIES = ["Acme", "Bücher & Co", "Ex=ample", "Initech, Inc.", "", "Umbrella 株式会社"]
SECRET = "bench-secret-0123456789abcdef"
NOW = datetime(2026, 11, 23, 15, 0, 7, tzinfo=UTC)


def _leads(count: int) -> list[Lead]:
    leads = []
    for n in range(count):
        first, last = FIRST[n % len(FIRST)], LAST[(n // 3) % len(LAST)]
        company = COMPANIES[(n // 7) % len(COMPANIES)]
        leads.append(Lead(
            id=n + 1, email=f"lead{n}@{'bücher.de' if n % 11 == 0 else 'example.com'}",
            first_name=first or None, last_name=last or None, company=company or None,
            title="VP Sales" if n % 2 else None, source="pricing-guide",
            attributes={"plan": "pro" if n % 3 else "free"},
        ))  # fmt: skip
    return leads


def _steps(ctx: Context) -> list[tuple[object, str, str]]:
    sequences, problems = load_sequences(ROOT / "sequences", ctx.templates.exists)
    assert not problems, problems
    steps = []
    for sequence in sequences:
        for step in sequence.steps:
            if isinstance(step.action, EmailAction):
                for template, _ in step.action.variants:
                    steps.append((sequence, step.id, template))
    return steps


def _normal(raw: str) -> str:
    """*raw* with its random parts (Message-ID, boundary) replaced by placeholders."""
    boundary = re.search(r'boundary="([^"]+)"', raw)
    if boundary:
        raw = raw.replace(boundary.group(1), "BOUNDARY")
    return re.sub(r"^Message-ID: .*$", "Message-ID: <ID>", raw, flags=re.M)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--save", type=Path)
    parser.add_argument("--check", type=Path)
    parser.add_argument("--template", help="only this template (throughput sends welcome)")
    args = parser.parse_args()
    logs.configure(level=logging.WARNING)
    config = load_settings(ROOT / "nurture.toml")
    ctx = Context(engine=create_engine("sqlite://"), config=config,
                  templates=TemplateSet(ROOT / "templates"), secret=SECRET)  # fmt: skip
    steps = [s for s in _steps(ctx) if args.template in (None, s[2])]
    leads = _leads(997)
    jobs = []
    for n in range(args.messages):
        lead = leads[n % len(leads)]
        sequence, step_id, template = steps[n % len(steps)]
        jobs.append((sequence, step_id, template, lead, LeadView.of(lead), f"trk{n:08d}"))

    def run(count: int) -> list[str]:
        out = []
        for n, (sequence, step_id, template, lead, view, tracking_id) in enumerate(jobs[:count]):
            now = NOW + timedelta(seconds=n // 50)
            email = compose_email(ctx, sequence, step_id, template, lead, view, now,  # type: ignore[arg-type]
                                  tracking_id)  # fmt: skip
            out.append(as_text(email.message))
        return out

    if args.save or args.check:
        texts = [_normal(raw) for raw in run(min(SNAPSHOT, args.messages))]
        if args.save:
            args.save.mkdir(parents=True, exist_ok=True)
            for n, raw in enumerate(texts):
                (args.save / f"{n:04d}.eml").write_bytes(raw.encode("utf-8"))
            print(f"saved {len(texts)} messages to {args.save}")
        else:
            assert args.check is not None
            differ = [n for n, raw in enumerate(texts)
                      if (args.check / f"{n:04d}.eml").read_bytes().decode("utf-8")
                      != raw]  # fmt: skip
            print(f"{len(texts) - len(differ)}/{len(texts)} messages byte-identical")
            if differ:
                print(f"differ: {differ[:20]}")
                sys.exit(1)
        return
    run(200)  # warm caches (templates compiled, imports)
    best = float("inf")
    for _ in range(args.repeat):
        began = time.process_time()
        run(args.messages)
        best = min(best, time.process_time() - began)
    print(f"{args.messages} messages: {best * 1000 / args.messages:.3f} ms CPU per message "
          f"(best of {args.repeat})")  # fmt: skip


if __name__ == "__main__":
    main()
