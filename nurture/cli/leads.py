"""``nurture leads``: import, list, show and forget leads."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

from nurture.cli.common import Table, leads_app, out, say, state, warn


@leads_app.command("import")
def leads_import(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="A CSV file with a header row and an email column.")],
    delimiter: Annotated[
        str | None,
        typer.Option(help="Column separator (default: guessed from the header: , ; tab |)."),
    ] = None,
    map_: Annotated[
        list[str] | None,
        typer.Option(
            "--map",
            metavar='"COLUMN=FIELD"',
            help="Which column gives which field, e.g. --map 'Work Email=email' "
            "(repeat it; FIELD '-' ignores the column; another name keeps it as that "
            "attribute).",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Say what would be created, updated and rejected; write nothing."
        ),
    ] = False,
    rejects: Annotated[
        Path | None,
        typer.Option(
            help="Write the rejected rows to this CSV file with a reject_reason column, "
            "to fix and import again (readable by you only)."
        ),
    ] = None,
) -> None:
    """Create or update leads from a CSV file (upsert by email).

    Known columns (email, first_name, last_name, company, title, phone, timezone, owner,
    source, stage, status), and the usual spellings of CRM exports ('E-mail Address',
    'Job Title', 'Contact owner'...), set fields; 'Number of Employees', 'Annual
    Revenue', 'Industry', 'Country', 'City', 'LinkedIn URL', 'Website'... become the
    attributes the examples read (employees, annual_revenue...); every other column
    becomes a custom attribute under its own name. An owner given by name is matched to
    \\[sales] names. Rejected rows are listed with their line numbers; the good rows are
    imported. A timezone that is not an IANA name keeps the lead on the project's
    timezone, with a warning. Exit code 1 when any row was rejected.
    """
    from nurture.errors import InputFileError, InvalidValueError, OptionError
    from nurture.intake.importer import import_csv, mapping_warnings, parse_mapping

    try:
        mapping = parse_mapping(map_ or [])
    except InvalidValueError as exc:
        raise OptionError(str(exc)) from None
    for note in mapping_warnings(mapping):
        warn(f"warning: {note}")
    st = state(ctx)
    owners = st.config().settings.sales.owners_by_name()
    engine = st.engine()
    size = file.stat().st_size if file.is_file() else 0
    progress = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=size < 1_000_000 or not sys.stderr.isatty(),
    )
    with progress:
        task = progress.add_task(f"importing {file.name}", total=size)
        report = import_csv(
            engine,
            file,
            delimiter=delimiter,
            mapping=mapping,
            dry_run=dry_run,
            on_progress=lambda done: progress.update(task, completed=done),
            owners=owners,
        )
    problems = sorted(
        [(p.line, "warning: " + p.message) for p in report.warnings]
        + [(p.line, "rejected: " + p.message) for p in report.rejected]
    )
    for line, message in problems:
        warn(f"{file}:{line}: {message}")
    say(report.summary())
    if rejects is not None and report.rejected:
        try:
            count = report.write_rejects(rejects)
        except OSError as exc:
            raise InputFileError(
                f"{rejects}: cannot write the rejected rows: {exc.strerror}"
            ) from None
        say(f"{count} rejected rows written to {rejects}")
    if report.rejected:
        raise typer.Exit(1)


@leads_app.command("list")
def leads_list(
    ctx: typer.Context,
    stage: Annotated[str | None, typer.Option(help="Only leads at this stage.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List leads, optionally only those at one stage."""
    from nurture.language.fields import parse_stage
    from nurture.store.database import session_scope
    from nurture.store.leads import list_leads

    wanted = parse_stage(stage) if stage else None
    with session_scope(state(ctx).engine()) as session:
        leads = list_leads(session, stage=wanted)
        rows = [lead.to_dict() for lead in leads]
    if as_json:
        say(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    table = Table("email", "name", "company", "stage", "status", "owner", "timezone")
    for row in rows:
        name = " ".join(part for part in (row["first_name"], row["last_name"]) if part)
        table.add_row(
            row["email"],
            name,
            row["company"] or "",
            row["stage"],
            row["status"],
            row["owner"] or "",
            row["timezone"] or "",
        )
    out.print(table)
    say(f"{len(rows)} leads")


@leads_app.command("show")
def leads_show(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The lead's email address.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show one lead with all its fields and attributes, and why it scores what it does."""
    from sqlmodel import col, select

    from nurture import clock
    from nurture.language.scoring import load_scoring
    from nurture.language.timing import zone
    from nurture.mail.absence import still_away
    from nurture.sales.explain import sequence_state
    from nurture.sales.scorer import breakdown
    from nurture.store.database import session_scope
    from nurture.store.enrollments import Enrollment
    from nurture.store.events import events_of
    from nurture.store.handoffs import Handoff
    from nurture.store.leads import get_lead

    st = state(ctx)
    rules, _ = load_scoring(st.config().scoring_file)
    now = clock.now()
    with session_scope(st.engine()) as session:
        lead = get_lead(session, email)
        data = lead.to_dict()
        tz = zone(lead.timezone or st.config().settings.project.default_timezone)
        data["away"] = still_away(events_of(session, lead.id or 0), now.astimezone(tz).date())
        data["sequences"] = [
            sequence_state(e, tz, now)
            for e in session.exec(select(Enrollment).where(Enrollment.lead_id == lead.id)
                                  .order_by(col(Enrollment.enrolled_at)))
        ]  # fmt: skip
        if rules is not None:
            data["score"] = breakdown(session, rules, lead, now)
        data["handoffs"] = [
            {"became_hot_at": h.became_hot_at.isoformat(), "owner": h.owner,
             "status": h.status, "reason": h.reason}
            for h in session.exec(
                select(Handoff).where(Handoff.lead_id == lead.id).order_by(col(Handoff.id))
            )
        ]  # fmt: skip
    if as_json:
        say(json.dumps(data, indent=2, ensure_ascii=False))
        return
    table = Table(show_header=False, box=None)
    for key, value in data.items():
        if key not in ("attributes", "score", "handoffs", "sequences"):
            table.add_row(key, "" if value is None else str(value))
    for key, value in sorted(data["attributes"].items()):
        table.add_row(f"lead.{key}", str(value))
    out.print(table)
    for line in data["sequences"]:
        say(line)
    score = data.get("score")
    if score is not None:
        marks = ", ".join(
            f"{name} at engagement {t['engagement']:g}"
            + (f" and fit {t['fit']:g}" if t["fit"] else "")
            for name, t in score["thresholds"].items()
        )
        say("")
        say(
            f"engagement {score['engagement']:g}, fit {score['fit']:g} ({marks}; "
            f"half-life {score['half_life'] or 'none'})"
        )
        events = Table("points now", "earned", "event", "touch", "at (UTC)", title="engagement")
        for item in score["events"]:
            touch = "/".join(p for p in (item["sequence"], item["step"]) if p)
            events.add_row(
                f"{item['now']:g}",
                f"{item['points']:g}",
                item["type"],
                touch,
                item["at"][:16].replace("T", " "),
            )
        out.print(events)
        rules_table = Table("points", "fit rule that matched", title="fit")
        for rule in score["fit_rules"]:
            rules_table.add_row(f"{rule['points']:g}", rule["if"])
        out.print(rules_table)
    for item in data["handoffs"]:
        say(
            f"hand-off {item['became_hot_at'][:16]} to {item['owner'] or 'the sales inbox'}: "
            f"{item['status']}" + (f" ({item['reason']})" if item["reason"] else "")
        )


@leads_app.command("forget")
def leads_forget(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The person's email address.")],
) -> None:
    """Erase a person (right to erasure): the lead, its events, enrollments, tasks and
    every message to them; the address stays only as a keyed hash on the suppression
    list, so no import, form or API call emails them again unless they opt in anew."""
    from nurture.intake.erasure import erase

    st = state(ctx)
    erased = erase(st.engine(), email, st.config().outbox_dir)
    if erased.found:
        gone = ", ".join(f"{count} {name}" for name, count in erased.removed.items() if count)
        say(f"erased {erased.email}" + (f" ({gone})" if gone else "") + "; suppressed")
    else:
        say(f"no lead {erased.email}: the address is suppressed all the same")
