"""The ``nurture`` command line (Typer + Rich).

Every error nurture raises on purpose becomes one line on stderr and an exit code
(:func:`main`). A traceback is shown only with ``--debug`` or ``NURTURE_DEBUG=1``.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn
from rich.table import Table
from sqlalchemy import Engine

from nurture import __version__
from nurture.config import Config, load_settings
from nurture.errors import NurtureError

out = Console(highlight=False, soft_wrap=True)


def say(message: str) -> None:
    """Print one plain line on stdout (no markup, no wrapping)."""
    typer.echo(message)


def warn(message: str) -> None:
    """Print one plain line on stderr."""
    typer.echo(message, err=True)


@dataclass
class State:
    """What the root options say, and what is opened lazily from them."""

    config_path: Path | None = None
    debug: bool = False
    _config: Config | None = field(default=None, repr=False)
    _engine: Engine | None = field(default=None, repr=False)

    def config(self) -> Config:
        if self._config is None:
            self._config = load_settings(self.config_path)
        return self._config

    def engine(self, *, check_schema: bool = True) -> Engine:
        """The project's database; by default only if its schema is current."""
        from nurture.database import check_schema as check
        from nurture.database import open_engine

        if self._engine is None:
            self._engine = open_engine(self.config().database_url)
        if check_schema:
            check(self._engine)
        return self._engine


app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="nurture: lead-nurturing sequences, engagement scoring and hand-off to sales.",
)
db_app = typer.Typer(no_args_is_help=True, help="Manage the database schema.")
leads_app = typer.Typer(no_args_is_help=True, help="Import, list and inspect leads.")
app.add_typer(db_app, name="db")
app.add_typer(leads_app, name="leads")


def _version(value: bool) -> None:
    if value:
        say(f"nurture {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            envvar="NURTURE_CONFIG",
            help="The project's nurture.toml (default: found in this directory or a parent).",
        ),
    ] = None,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks of unexpected errors.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Run `nurture init DIR` to start a project."""
    ctx.obj = State(config_path=config, debug=debug)


def state(ctx: typer.Context) -> State:
    obj = ctx.find_object(State)
    assert obj is not None
    return obj


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Where to create the project.")],
) -> None:
    """Create a working project: nurture.toml, sequences, templates, scoring.yaml, leads.csv."""
    from nurture.project import init_project

    for path in init_project(directory):
        say(f"created {path}")
    say(f"Next: cd {directory} && nurture db upgrade && nurture leads import leads.csv")


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Bring the database to the schema this version of nurture needs."""
    from nurture.database import upgrade

    engine = state(ctx).engine(check_schema=False)
    before, after = upgrade(engine)
    where = engine.url.render_as_string(hide_password=True)
    if before == after:
        say(f"database {where} is already at schema {after}")
    else:
        say(f"database {where} upgraded from schema {before or 'none'} to {after}")


@db_app.command("current")
def db_current(ctx: typer.Context) -> None:
    """Print the database's schema revision and the one this nurture needs."""
    from nurture.database import current_revision, head_revision

    engine = state(ctx).engine(check_schema=False)
    say(f"current: {current_revision(engine) or 'none'}, needed: {head_revision()}")


@leads_app.command("import")
def leads_import(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="A CSV file with a header row and an email column.")],
    delimiter: Annotated[
        str | None,
        typer.Option(help="Column separator (default: guessed from the header: , ; tab |)."),
    ] = None,
) -> None:
    """Create or update leads from a CSV file (upsert by email).

    Known columns (email, first_name, last_name, company, title, phone, timezone, owner,
    source, stage, status) set fields; every other column becomes a custom attribute.
    Rejected rows are listed with their line numbers; the good rows are imported.
    Exit code 1 when any row was rejected.
    """
    from nurture.importer import import_csv

    engine = state(ctx).engine()
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
            on_progress=lambda done: progress.update(task, completed=done),
        )
    problems = sorted(
        [(p.line, "warning: " + p.message) for p in report.warnings]
        + [(p.line, "rejected: " + p.message) for p in report.rejected]
    )
    for line, message in problems:
        warn(f"{file}:{line}: {message}")
    say(report.summary())
    if report.rejected:
        raise typer.Exit(1)


@leads_app.command("list")
def leads_list(
    ctx: typer.Context,
    stage: Annotated[str | None, typer.Option(help="Only leads at this stage.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List leads, optionally only those at one stage."""
    from nurture.leads import parse_stage
    from nurture.store import list_leads, session_scope

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
    """Show one lead with all its fields and attributes."""
    from nurture.store import get_lead, session_scope

    with session_scope(state(ctx).engine()) as session:
        data = get_lead(session, email).to_dict()
    if as_json:
        say(json.dumps(data, indent=2, ensure_ascii=False))
        return
    table = Table(show_header=False, box=None)
    for key, value in data.items():
        if key != "attributes":
            table.add_row(key, "" if value is None else str(value))
    for key, value in sorted(data["attributes"].items()):
        table.add_row(f"lead.{key}", str(value))
    out.print(table)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: runs the command, turning errors into one line.

    Exits with the command's code: 0 on success, 1 for problems in the user's data,
    2 for settings, files or a database that stop the command, 70 for a bug.
    """
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or bool(os.environ.get("NURTURE_DEBUG"))
    try:
        app(args=args, prog_name="nurture")
    except NurtureError as exc:
        if debug:
            raise
        warn(f"nurture: {exc}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        warn("nurture: interrupted")
        sys.exit(130)
    except Exception as exc:
        if debug:
            raise
        warn(
            f"nurture: internal error: {type(exc).__name__}: {exc} "
            "(run with --debug for the traceback)"
        )
        sys.exit(70)
