"""The ``nurture`` command line (Typer + Rich).

Every error nurture raises on purpose becomes one line on stderr and an exit code
(:func:`main`). A traceback is shown only with ``--debug`` or ``NURTURE_DEBUG=1``.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn
from rich.table import Table as RichTable
from rich.text import Text
from sqlalchemy import Engine

from nurture import __version__
from nurture.config import Config, load_settings
from nurture.errors import ConfigError, NurtureError, ProjectError

#: Characters that would drive the terminal (escape sequences, carriage returns,
#: bells): lead data from outside never reaches the terminal with them.
_TERMINAL_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def safe_text(value: object) -> str:
    """*value* as text a terminal shows as it is: control characters become ``?``."""
    return _TERMINAL_CONTROL.sub("?", str(value))


class Table(RichTable):
    """A Rich table whose cells are plain text: no markup, no control characters."""

    def add_row(self, *cells: Any, **options: Any) -> None:
        super().add_row(
            *(Text(safe_text(c)) if isinstance(c, str) else c for c in cells), **options
        )


out = Console(highlight=False, soft_wrap=True, markup=False, emoji=False)


def say(message: str) -> None:
    """Print one plain line on stdout (no markup, no wrapping, no control characters)."""
    typer.echo(safe_text(message))


def warn(message: str) -> None:
    """Print one plain line on stderr (no control characters)."""
    typer.echo(safe_text(message), err=True)


@dataclass
class State:
    """What the root options say, and what is opened lazily from them."""

    config_path: Path | None = None
    debug: bool = False
    #: The global ``--now`` (or ``NURTURE_NOW``) as typed, if any.
    now_text: str | None = None
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

    def timezone(self) -> str:
        """The project's default timezone: the one rule for moments typed without an offset."""
        return self.config().settings.project.default_timezone

    def local(self, moment: Any, lead_timezone: str | None = None) -> str:
        """A stored moment (ISO text or datetime, UTC) as the project's wall-clock time,
        ``2026-11-16 09:00 PST``, with the lead's own beside it when the lead lives
        elsewhere (``(their Tue 00:00)``); ``""`` for none."""
        from datetime import datetime
        from zoneinfo import ZoneInfo

        if not moment:
            return ""
        value = datetime.fromisoformat(moment) if isinstance(moment, str) else moment
        shown = value.astimezone(ZoneInfo(self.timezone())).strftime("%Y-%m-%d %H:%M %Z")
        if lead_timezone and lead_timezone != self.timezone():
            theirs = value.astimezone(ZoneInfo(lead_timezone)).strftime("%a %H:%M")
            shown += f" (their {theirs})"
        return str(shown)

    def moment(self, option: str, text: str, *, project: bool = True) -> Any:
        """A moment typed for *option*, in UTC (no offset: the project's timezone)."""
        from nurture.clock import parse_moment
        from nurture.errors import InvalidValueError, OptionError

        local = project and not _has_offset(text)
        try:
            return parse_moment(text, self.timezone() if local else "UTC", what=option)
        except InvalidValueError as exc:
            raise OptionError(str(exc)) from None


def _has_offset(text: str) -> bool:
    """Whether an ISO 8601 moment names its offset (then no project is needed to read it)."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(text.strip()).tzinfo is not None
    except ValueError:
        return True  # parse_moment reports it, without reading any project


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
    now: Annotated[
        str | None,
        typer.Option(
            "--now",
            envvar="NURTURE_NOW",
            metavar="ISO8601",
            help="Run the command as if it were this moment (without an offset: the "
            "project's default timezone): what it reads, writes and logs. `run` and "
            "`serve` start their clock there.",
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Run `nurture init DIR` to start a project."""
    st = State(config_path=config, debug=debug, now_text=now or None)
    ctx.obj = st
    if st.now_text:
        from nurture import clock

        # `init` has no project yet: its (unused) clock reads offset-less moments as UTC.
        moment = st.moment("--now", st.now_text, project=ctx.invoked_subcommand != "init")
        running = ctx.invoked_subcommand in ("run", "serve")
        ctx.with_resource(clock.pinned(moment, running=running))


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
    'Job Title', 'Contact owner'...), set fields; every other column becomes a custom
    attribute. Rejected rows are listed with their line numbers; the good rows are
    imported. A timezone that is not an IANA name keeps the lead on the project's
    timezone, with a warning. Exit code 1 when any row was rejected.
    """
    from nurture.errors import InputFileError, InvalidValueError, OptionError
    from nurture.importer import import_csv, parse_mapping

    try:
        mapping = parse_mapping(map_ or [])
    except InvalidValueError as exc:
        raise OptionError(str(exc)) from None
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
            mapping=mapping,
            dry_run=dry_run,
            on_progress=lambda done: progress.update(task, completed=done),
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
    """Show one lead with all its fields and attributes, and why it scores what it does."""
    from sqlmodel import col, select

    from nurture import clock
    from nurture.handoff import Handoff
    from nurture.scorer import breakdown
    from nurture.scoring import load_scoring
    from nurture.store import get_lead, session_scope

    st = state(ctx)
    rules, _ = load_scoring(st.config().scoring_file)
    with session_scope(st.engine()) as session:
        lead = get_lead(session, email)
        data = lead.to_dict()
        if rules is not None:
            data["score"] = breakdown(session, rules, lead, clock.now())
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
        if key not in ("attributes", "score", "handoffs"):
            table.add_row(key, "" if value is None else str(value))
    for key, value in sorted(data["attributes"].items()):
        table.add_row(f"lead.{key}", str(value))
    out.print(table)
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


def _sequence(st: State, name: str) -> tuple[Any, Any]:
    """The project's templates and the named sequence, or exit 1 listing its problems."""
    from nurture.sequences import load_sequences
    from nurture.templates import TemplateSet

    config = st.config()
    templates = TemplateSet(config.templates_dir)
    sequences, problems = load_sequences(config.sequences_dir, templates.exists)
    for sequence in sequences:
        if sequence.name == name or sequence.path.stem == name:
            return templates, sequence
    own = [p for p in problems if Path(p.path).stem == name]
    if own:
        for problem in own:
            warn(str(problem))
        raise NurtureError(f"sequence {name!r} has problems: fix them, then try again")
    known = ", ".join(sorted(s.name for s in sequences)) or "none"
    raise NurtureError(f"no sequence {name!r} in {config.sequences_dir} (known: {known})")


def _scoring_rules(config: Any) -> Any:
    """The project's scoring rules, or ``None`` when scoring.yaml has problems (then
    expressions see the scores as stored, without decay)."""
    from nurture.scoring import load_scoring

    return load_scoring(config.scoring_file)[0]


def _lead_view(st: State, email: str) -> tuple[Any, Any]:
    from nurture.expressions import LeadView
    from nurture.store import get_lead, session_scope

    with session_scope(st.engine()) as session:
        lead = get_lead(session, email)
    return lead, LeadView.of(lead)


@app.command()
def check(
    ctx: typer.Context,
    strict: Annotated[
        bool, typer.Option("--strict", help="Warnings fail the check too (exit 1).")
    ] = False,
) -> None:
    """Check every sequence, template and scoring.yaml; list every problem as path:line.

    Warnings (a likely typo of an event name, a custom event nothing has recorded yet,
    links that would not reach anyone) are listed as path:line: warning: ...; they fail
    the check only with --strict.
    """
    from nurture.checker import check_project

    st = state(ctx)
    result = check_project(st.config())
    result.problems.extend(_leads_problems(st, result))
    result.warnings.extend(_unrecorded_events(st, result.custom_events))
    result.warnings.sort(key=lambda p: (p.path, p.line or 0))
    for problem in result.problems:
        say(str(problem))
    for warning in result.warnings:
        where = warning.path if warning.line is None else f"{warning.path}:{warning.line}"
        say(f"{where}: warning: {warning.message}")
    for impact in _edit_impact(st, result.sequences):
        say(str(impact))
    say(result.summary())
    if result.problems or (strict and result.warnings):
        raise typer.Exit(1)


def _leads_problems(st: State, result: Any) -> list[Any]:
    """What would fail for the leads in the database (nothing without one)."""
    from nurture import clock
    from nurture.checker import check_against_leads

    try:
        engine = st.engine()
    except NurtureError:
        return []
    return check_against_leads(st.config(), engine, result.sequences, result.scoring, clock.now())


def _unrecorded_events(st: State, custom: dict[str, Any]) -> list[Any]:
    """Custom event names nothing has recorded yet; nothing without a database."""
    from nurture.events import ever_recorded
    from nurture.problems import Problem
    from nurture.store import session_scope

    if not custom:
        return []
    try:
        engine = st.engine()
    except NurtureError:
        return []
    with session_scope(engine) as session:
        seen = ever_recorded(session, custom)
    return [
        Problem(where.path, where.line,
                f"custom event {name!r}: nothing has recorded it yet (nurture event, the "
                "API or a form records it; check the spelling)")
        for name, where in sorted(custom.items())
        if name not in seen
    ]  # fmt: skip


def _edit_impact(st: State, sequences: list[Any]) -> list[Any]:
    """What each edited sequence does to in-flight leads; nothing without a database."""
    from nurture.catalog import edit_impact
    from nurture.store import session_scope

    try:
        engine = st.engine()
    except NurtureError:
        return []  # no database yet, or one behind: nothing is in flight to report
    with session_scope(engine) as session:
        return edit_impact(session, sequences)


@app.command()
def deploy(ctx: typer.Context) -> None:
    """Deploy this machine's sequence files now, even where a worker elsewhere deployed a
    newer copy (every worker runs the deployed version at its next pass).

    Workers deploy changed files on their own: a file newer than the copy the deployed
    version came from. Use this to roll back to an older copy, or to choose between
    machines whose copies differ. A file with problems is never deployed.
    """
    from nurture import clock
    from nurture.catalog import load_catalog
    from nurture.templates import TemplateSet

    st = state(ctx)
    config = st.config()
    catalog = load_catalog(st.engine(), config.sequences_dir, TemplateSet(config.templates_dir),
                           clock.now(), force=True)  # fmt: skip
    for problem in catalog.problems:
        say(str(problem))
    for name in sorted(catalog.deployed):
        say(f"deployed {name}")
    unchanged = sorted(set(catalog.sequences) - set(catalog.deployed) - set(catalog.kept))
    if unchanged:
        say("already deployed: " + ", ".join(unchanged))
    for name in sorted(catalog.kept):
        say(f"kept the deployed version of {name}: its file has problems")
    if catalog.problems:
        raise typer.Exit(1)


@app.command()
def preview(
    ctx: typer.Context,
    sequence_name: Annotated[str, typer.Argument(metavar="SEQUENCE", help="Sequence name.")],
    step_id: Annotated[str, typer.Argument(metavar="STEP", help="Step id.")],
    lead: Annotated[str, typer.Option("--lead", help="The lead's email.")],
    html_file: Annotated[
        Path | None, typer.Option("--html", help="Also write the HTML part to this file.")
    ] = None,
    send_to: Annotated[
        str | None,
        typer.Option(
            "--send-to",
            metavar="EMAIL",
            help="Also send this email, as a test ('[test]' before the subject, links "
            "working), to EMAIL through the configured transport; never counted in reports.",
        ),
    ] = None,
) -> None:
    """Show the email exactly as it would be sent to a lead (the bytes the outbox holds);
    nothing is stored or sent, unless --send-to sends it as a test to your own address."""
    import asyncio
    import secrets

    from nurture import clock
    from nurture.errors import InvalidValueError, OptionError
    from nurture.leads import normalize_email
    from nurture.messages import parse
    from nurture.runner import Context, compose_email
    from nurture.sequences import EmailAction

    st = state(ctx)
    config = st.config()
    _, sequence = _sequence(st, sequence_name)
    step = sequence.step(step_id)
    if step is None:
        ids = ", ".join(s.id for s in sequence.steps)
        raise NurtureError(f"no step {step_id!r} in {sequence.name} (steps: {ids})")
    if not isinstance(step.action, EmailAction):
        raise NurtureError(
            f"step {step_id!r} is a {step.kind}, not an email: try `nurture simulate`"
        )
    record, view = _lead_view(st, lead)
    context = Context.open(st.engine(), config)
    template = step.action.template_for_lead(sequence.name, step.id, record.email)
    tracking_id = "preview" if step.action.track else None
    email = compose_email(context, sequence, step.id, template, record, view, clock.now(),
                          tracking_id)  # fmt: skip
    message = parse(email.message.as_string())  # exactly what would be queued
    html_part = message.get_body(("html",))
    text_part = message.get_body(("plain",))
    html = html_part.get_content() if html_part is not None else ""
    text = text_part.get_content() if text_part is not None else ""
    for key, value in message.items():
        say(f"{key}: {value}")
    say("")
    say("----- text/plain -----")
    say(text.rstrip("\n"))
    say("----- text/html -----")
    say(html.rstrip("\n"))
    warn(f"template: {template}")
    if email.links:
        warn(f"{len(email.links)} links are tracked: " + ", ".join(email.links))
    if html_file is not None:
        try:
            html_file.write_text(html, encoding="utf-8")
        except OSError as exc:
            raise ProjectError(f"--html {html_file}: cannot write: {exc.strerror}") from None
        warn(f"HTML part written to {html_file}")
    if send_to is not None:
        try:
            address = normalize_email(send_to)
        except InvalidValueError as exc:
            raise OptionError(f"--send-to: {exc}") from None
        test_id = secrets.token_urlsafe(12)
        test = compose_email(context, sequence, step.id, template, record, view, clock.now(),
                             test_id if step.action.track else None, test_to=address)  # fmt: skip
        outcome = asyncio.run(_send_test(context, test, address, sequence.name, step.id,
                                         test_id, config))  # fmt: skip
        if outcome.status != "sent":
            raise NurtureError(f"the test to {address} was not sent: {outcome.last_error}")
        say(f"test sent to {address} (subject '[test] …'; never counted in reports)")


async def _send_test(
    ctx: Any, email: Any, address: str, sequence: str, step: str, test_id: str, config: Config
) -> Any:
    """Queue a test send and deliver that one message now; return its outbox row."""
    from nurture import clock
    from nurture.catalog import Catalog
    from nurture.delivery import deliver
    from nurture.outbox import MessageKind, OutboxMessage, queue_message
    from nurture.store import session_scope
    from nurture.transports import open_transport

    now = clock.now()
    with session_scope(ctx.engine) as session:
        row = queue_message(
            session, email.message, kind=MessageKind.test, key=f"test:{test_id}", lead_id=None,
            sequence=sequence, step=step, sender=email.sender.email, recipient=address,
            timezone=config.settings.project.default_timezone, now=now,
            tracking_id=test_id, links=email.links,
        )  # fmt: skip
        session.flush()
        row_id = int(row.id or 0)
    transport = open_transport(config.settings.smtp, config.outbox_dir)
    try:
        await deliver(ctx, Catalog(), transport, only_messages=[row_id])
    finally:
        await transport.close()
    with session_scope(ctx.engine) as session:
        return session.get(OutboxMessage, row_id)


@app.command()
def simulate(
    ctx: typer.Context,
    sequence_name: Annotated[str, typer.Argument(metavar="SEQUENCE", help="Sequence name.")],
    lead: Annotated[str, typer.Option("--lead", help="The lead's email.")],
    start: Annotated[
        str | None,
        typer.Option(
            help="ISO 8601 start (default: now; without an offset: the project's timezone)."
        ),
    ] = None,
    days: Annotated[int, typer.Option(min=1, max=3650, help="How many days to simulate.")] = 60,
    assume: Annotated[
        list[str] | None,
        typer.Option(help="EVENT:STEP the lead does, e.g. clicked:welcome (repeatable)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the timeline a lead would get; nothing is sent or stored."""
    from nurture import clock
    from nurture.scoring import scores_now
    from nurture.simulate import Assumption
    from nurture.simulate import simulate as run_simulation
    from nurture.timing import zone

    st = state(ctx)
    config = st.config()
    templates, sequence = _sequence(st, sequence_name)
    record, view = _lead_view(st, lead)
    default_tz = config.settings.project.default_timezone
    tz_name = sequence.schedule.timezone_for(view.get("timezone"), default_tz)
    moment = st.moment("--start", start) if start else clock.now()
    assumptions = [Assumption.parse(text, sequence) for text in assume or []]

    def render_note(source: str, lead_view: Any) -> str:
        return templates.render_text(source, {"lead": lead_view}, str(sequence.path))

    rules = _scoring_rules(config)
    sales = config.settings.sales
    entries = run_simulation(
        sequence, view, start=moment, days=days, assumptions=assumptions,
        default_timezone=default_tz, render_note=render_note, rules=rules,
        scores=scores_now(rules, record, moment),
        approachable=record.status == "subscribed"
        and bool(record.owner or sales.team or sales.notify_email),
    )  # fmt: skip
    if as_json:
        say(json.dumps([entry.to_dict() for entry in entries], indent=2, ensure_ascii=False))
        return
    tz = zone(tz_name)
    table = Table(title=f"{sequence.name} for {view.get('email')} ({tz_name})")
    for column in ("local time", "UTC", "step", "what", "why"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        table.add_row(
            entry.moment.astimezone(tz).strftime("%a %Y-%m-%d %H:%M %Z"),
            entry.moment.strftime("%Y-%m-%d %H:%M"),
            entry.step or "",
            entry.detail,
            entry.reason,
        )
    out.print(table)


def _summary(pairs: list[tuple[str, int]]) -> str:
    return ", ".join(f"{label} {count}" for label, count in pairs)


@app.command()
def tick(
    ctx: typer.Context,
    now: Annotated[
        str | None,
        typer.Option(
            "--now",
            help="Run the pass as if it were this ISO 8601 moment (without an offset: the "
            "project's default timezone).",
        ),
    ] = None,
    log_json: Annotated[bool, typer.Option("--log-json", help="Log lines as JSON.")] = False,
) -> None:
    """One full pass: enroll, advance every due enrollment, queue and deliver; then a summary."""
    import asyncio

    from nurture import clock, logs
    from nurture.daemon import tick as run_tick
    from nurture.runner import Context

    logs.configure(json=log_json)
    st = state(ctx)
    config = st.config()
    moment = st.moment("--now", now) if now else clock.now()
    with clock.pinned(moment):
        context = Context.open(st.engine(), config)
        _, report, delivered = asyncio.run(run_tick(context, moment))
    say(
        f"tick at {moment.isoformat()}: "
        + _summary(
            [
                ("enrolled", report.enrolled),
                ("emails queued", report.emails_queued),
                ("emails sent", delivered.sent),
                ("tasks created", report.tasks_created),
                ("notifications", report.notifications),
                ("skipped", report.skipped),
                ("exited", report.exited),
                ("turned hot", report.hot),
                ("completed", report.completed),
                ("deferred", delivered.deferred),
                ("retrying", delivered.retrying),
                ("bounced", delivered.bounced),
                ("failed", report.failed + delivered.failed),
            ]
        )
    )


@app.command()
def run(
    ctx: typer.Context,
    log_json: Annotated[bool, typer.Option("--log-json", help="Log lines as JSON.")] = False,
    until_idle: Annotated[
        bool,
        typer.Option(
            "--until-idle", help="Stop once nothing is due (for demos, CI and cron-style use)."
        ),
    ] = False,
    with_server: Annotated[
        bool, typer.Option("--serve", help="Also run the tracking and API server.")
    ] = False,
) -> None:
    """The daemon: a pass every \\[daemon] interval seconds; SIGTERM or Ctrl-C stops it cleanly."""
    import asyncio

    from nurture import logs
    from nurture.daemon import Daemon

    logs.configure(json=log_json)
    st = state(ctx)
    daemon = Daemon(st.engine(), st.config(), until_idle=until_idle, serve=with_server)
    asyncio.run(daemon.main())


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (\\[server] host).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (\\[server] port).")] = None,
    log_json: Annotated[bool, typer.Option("--log-json", help="Log lines as JSON.")] = False,
) -> None:
    """The tracking and API server: open pixel, click redirects, unsubscribe, /api/events."""
    from nurture import logs
    from nurture.web import serve as run_server

    logs.configure(json=log_json)
    st = state(ctx)
    settings = st.config().settings.server
    run_server(st.config(), st.engine(), host or settings.host, port or settings.port)


@app.command()
def event(
    ctx: typer.Context,
    type_: Annotated[str, typer.Argument(metavar="TYPE", help="e.g. meeting_booked.")],
    lead: Annotated[str, typer.Option("--lead", help="The lead's email.")],
    sequence: Annotated[str | None, typer.Option(help="The touch's sequence.")] = None,
    step: Annotated[str | None, typer.Option(help="The touch's step.")] = None,
    at: Annotated[
        str | None,
        typer.Option(
            help="ISO 8601 moment (default: now; without an offset: the project's timezone)."
        ),
    ] = None,
    data: Annotated[
        list[str] | None, typer.Option(help="key=value to store with it (repeatable).")
    ] = None,
    custom: Annotated[
        bool,
        typer.Option(
            "--custom",
            help="TYPE is a new custom event even though it looks like a known one.",
        ),
    ] = False,
) -> None:
    """Record an event for a lead; it acts at once (exits, unsubscribes, conditions).

    A TYPE that looks like a typo of a known one (clicked, email_click) and was never
    recorded is refused with a did-you-mean (--custom records it all the same); a
    --step must be a step of the --sequence.
    """
    from nurture.ingest import EventInput, ingest
    from nurture.store import session_scope

    st = state(ctx)
    values: dict[str, str] = {}
    for item in data or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise NurtureError(f"--data {item!r}: write key=value")
        values[key.strip()] = value
    if step and not sequence:
        raise NurtureError("--step needs --sequence too")
    from nurture.events import check_type, ever_recorded, likely_typo
    from nurture.suggest import did_you_mean

    if sequence:
        _, found = _sequence(st, sequence)
        ids = [s.id for s in found.steps]
        if step and step not in ids:
            raise NurtureError(
                f"--step {step!r} is not a step of {found.name}{did_you_mean(step, ids)} "
                f"(steps: {', '.join(ids)})"
            )
        sequence = found.name
    moment = st.moment("--at", at) if at else None
    event_input = EventInput(type=check_type(type_), lead=lead, sequence=sequence, step=step,
                             at=moment, data=values)  # fmt: skip
    with session_scope(st.engine()) as session:
        guess = None if custom else likely_typo(type_)
        if guess and not ever_recorded(session, [type_]):
            raise NurtureError(
                f"event type {type_!r} is not one nurture knows (did you mean {guess!r}?); "
                "to record a new custom event of that name, add --custom"
            )
        recorded = ingest(session, event_input, source="cli")
        when = recorded.event.occurred_at.isoformat()
    if recorded.new:
        say(f"recorded {type_} for {lead} at {when}")
    else:
        say(f"{type_} for {lead} was already recorded at {when}")


@app.command()
def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """What is due, queued, deferred and failed."""
    from nurture import clock
    from nurture.enrollments import HELD
    from nurture.status import collect_status
    from nurture.store import session_scope

    st = state(ctx)
    with session_scope(st.engine()) as session:
        data = collect_status(session, clock.now())
    if as_json:
        say(json.dumps(data, indent=2, ensure_ascii=False))
        return
    table = Table(
        "sequence", "active", "completed", "exited", "paused", "failed", title="enrollments"
    )
    for name, counts in sorted(data["enrollments"]["by_sequence"].items()):
        table.add_row(
            name,
            *(
                str(counts.get(key, 0))
                for key in ("active", "completed", "exited", "paused", "failed")
            ),
        )
    out.print(table)
    problem = data["sending_problem"]
    if problem:
        ids = " ".join(str(i) for i in problem["failed"][:20])
        say(
            f"SENDING PROBLEM since {st.local(problem['at'])}: the mail server refuses to "
            f"send for us ({problem['reply']}); {len(problem['failed'])} messages failed, "
            "their leads stay subscribed; delivery pauses and tries again. Fix [smtp], "
            f"then: nurture outbox resend {ids}"
        )
    e, o = data["enrollments"], data["outbox"]
    say(
        f"due now: {e['due_now']}; waiting for tasks: {e['waiting_for_tasks']}; "
        f"next due: {st.local(e['next_due']) or 'nothing scheduled'}"
    )
    say("outbox: " + _summary(list(o.items())))
    say(f"open tasks: {data['tasks']['open']}")
    h = data["handoffs"]
    say(f"hand-offs waiting for sales: {h['pending']} ({h['overdue']} past their answer time)")
    for worker in data["workers"]:
        if worker["alive"]:
            say(
                f"worker {worker['host']} pid {worker['pid']}: {worker['role']}, "
                f"last heartbeat {st.local(worker['heartbeat_at'])}"
            )
    if data["webhooks"]:
        say("webhooks: " + _summary(list(data["webhooks"].items())))
    for held in data["held"]:
        say(
            f"held: {held['enrollments']} in {held['sequence']} at {held['step']}: "
            f"{held['reason'].removeprefix(HELD)}"
        )
    for failure in data["failures"]:
        say(
            f"failed: {failure['lead']} in {failure['sequence']} at {failure['step']}: "
            f"{failure['error']}"
        )


@app.command()
def enroll(
    ctx: typer.Context,
    sequence_name: Annotated[str, typer.Argument(metavar="SEQUENCE", help="Sequence name.")],
    lead: Annotated[str | None, typer.Option("--lead", help="The lead's email.")] = None,
    where: Annotated[
        str | None,
        typer.Option("--where", help="Enroll every lead for which this expression is true."),
    ] = None,
) -> None:
    """Enroll leads by hand, whatever the sequence's audience says."""
    from nurture import clock
    from nurture.expressions import compile_expression
    from nurture.runner import enroll as enroll_lead
    from nurture.runner import enroll_matching
    from nurture.store import get_lead, session_scope

    if (lead is None) == (where is None):
        raise NurtureError("enroll: give exactly one of --lead EMAIL or --where EXPR")
    st = state(ctx)
    _, sequence = _sequence(st, sequence_name)
    now = clock.now()
    engine = st.engine()
    if lead is not None:
        with session_scope(engine) as session:
            made, why = enroll_lead(session, get_lead(session, lead), sequence, now, by="hand")
        if made is None:
            raise NurtureError(f"not enrolled: {why}")
        say(f"enrolled {lead} in {sequence.name}: the next pass starts it")
        return
    assert where is not None
    try:
        expression = compile_expression(where)
    except NurtureError as exc:
        raise NurtureError(f"--where: {exc}") from None
    report = enroll_matching(engine, sequence, expression, now, by="hand",
                             rules=_scoring_rules(st.config()))  # fmt: skip
    for why in report.refused:
        warn(f"not enrolled: {why}")
    if report.errors:
        warn(f"--where could not be evaluated for {report.errors} leads ({report.first_error})")
    say(
        f"enrolled {report.enrolled} leads in {sequence.name}; "
        f"{len(report.refused)} matching leads not enrolled"
    )
    if report.errors:
        raise typer.Exit(1)


enrollments_app = typer.Typer(
    no_args_is_help=True, help="Leads in sequences: list them, pause and resume them."
)
app.add_typer(enrollments_app, name="enrollments")


@enrollments_app.command("list")
def enrollments_list(
    ctx: typer.Context,
    sequence: Annotated[str | None, typer.Option("--sequence", help="Only this one.")] = None,
    lead: Annotated[str | None, typer.Option("--lead", help="Only this lead's.")] = None,
    status_: Annotated[
        str | None,
        typer.Option("--status", help="active, completed, exited, paused or failed."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Enrollments with their state, next step, due moment and reason."""
    from nurture.enrollments import list_enrollments, parse_status
    from nurture.store import session_scope

    wanted = parse_status(status_) if status_ else None
    st = state(ctx)
    with session_scope(st.engine()) as session:
        rows = [
            {**enrollment.to_dict(), "lead": email}
            for enrollment, email in list_enrollments(
                session, sequence=sequence, lead=lead, status=wanted
            )
        ]
    if as_json:
        say(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    from sqlmodel import col, select

    from nurture.leads import Lead

    with session_scope(st.engine()) as session:
        emails = sorted({row["lead"] for row in rows})
        query = select(Lead.email, Lead.timezone).where(col(Lead.email).in_(emails))
        zones = {email: zone for email, zone in session.exec(query).all()}
    table = Table("id", "lead", "sequence", "status", "next step", "due", "reason")
    for row in rows:
        due = st.local(row["due_at"], zones.get(row["lead"]))
        table.add_row(str(row["id"]), row["lead"], row["sequence"], row["status"],
                      row["next_step"] or "", due, row["reason"] or "")  # fmt: skip
    out.print(table)
    say(f"{len(rows)} enrollments")


def _pause_or_resume(ctx: typer.Context, sequence: str, lead: str | None, pause: bool) -> None:
    from nurture import clock
    from nurture.enrollments import set_paused
    from nurture.store import session_scope

    with session_scope(state(ctx).engine()) as session:
        count = set_paused(session, sequence, lead, pause=pause, now=clock.now())
    what = "paused" if pause else "resumed"
    say(f"{what} {count} enrollments in {sequence}" + (f" for {lead}" if lead else ""))


@enrollments_app.command("pause")
def enrollments_pause(
    ctx: typer.Context,
    sequence: Annotated[str, typer.Argument(metavar="SEQUENCE", help="Sequence name.")],
    lead: Annotated[str | None, typer.Option("--lead", help="Only this lead.")] = None,
) -> None:
    """Pause active enrollments: nothing is sent or created for them until resumed."""
    _pause_or_resume(ctx, sequence, lead, pause=True)


@enrollments_app.command("resume")
def enrollments_resume(
    ctx: typer.Context,
    sequence: Annotated[str, typer.Argument(metavar="SEQUENCE", help="Sequence name.")],
    lead: Annotated[str | None, typer.Option("--lead", help="Only this lead.")] = None,
) -> None:
    """Resume paused enrollments, and retry failed ones (after fixing what failed them)."""
    _pause_or_resume(ctx, sequence, lead, pause=False)


handoff_app = typer.Typer(no_args_is_help=True, help="Answer a hot lead: accept, reject, recycle.")
app.add_typer(handoff_app, name="handoff")


def _who() -> str:
    """Who runs a command, for the record of an answer: the system user."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _answer(ctx: typer.Context, email: str, answer: str, reason: str | None) -> None:
    from nurture.handoff import answer_handoff
    from nurture.store import session_scope

    with session_scope(state(ctx).engine()) as session:
        handoff = answer_handoff(session, email, answer, reason, via="cli", by=_who())
        status = handoff.status
    follow = {
        "accepted": "stage accepted",
        "rejected": "stage disqualified, kept with the reason",
        "recycled": "back to nurture: stage cold, engagement reset; the next pass enrolls it",
    }[status]
    say(f"{email}: {status} ({follow})")


@handoff_app.command("accept")
def handoff_accept(
    ctx: typer.Context, email: Annotated[str, typer.Argument(help="The lead's email.")]
) -> None:
    """Take the lead: its stage becomes accepted."""
    _answer(ctx, email, "accept", None)


@handoff_app.command("reject")
def handoff_reject(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The lead's email.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept with the lead).")],
) -> None:
    """Not a prospect: stage disqualified, kept with the reason, never deleted."""
    _answer(ctx, email, "reject", reason)


@handoff_app.command("recycle")
def handoff_recycle(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The lead's email.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept with the lead).")],
) -> None:
    """Not now: back to nurture (stage cold, engagement reset, re-enrolled by audiences)."""
    _answer(ctx, email, "recycle", reason)


@app.command()
def rescore(ctx: typer.Context) -> None:
    """Score every lead again now (a pass does it by itself when scoring.yaml changes)."""
    from nurture import clock
    from nurture.handoff_notice import hand_off_hot_leads
    from nurture.runner import Context
    from nurture.scorer import rescore as run_rescore
    from nurture.scoring import load_scoring

    st = state(ctx)
    config = st.config()
    rules, problems = load_scoring(config.scoring_file)
    if rules is None:
        for problem in problems:
            warn(str(problem))
        raise NurtureError("scoring.yaml has problems: fix them, then rescore")
    now = clock.now()
    run_ctx = Context.open(st.engine(), config)
    report = run_rescore(run_ctx, rules, now)
    hand_off_hot_leads(run_ctx, rules, now)  # the notices go out with the next delivery
    say(
        f"rescored {report.leads} leads from {report.events} events: "
        f"{report.stage_changes} changed stage, {report.hot} turned hot"
    )
    for email, old, new in report.changes:
        say(f"  {email}: {old} -> {new}")


@app.command()
def report(
    ctx: typer.Context,
    since: Annotated[
        str | None, typer.Option(help="Only emails, events and hand-offs since this date.")
    ] = None,
    html_file: Annotated[
        Path | None, typer.Option("--html", help="Also write a self-contained HTML page.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The funnel: stages and conversion, time to hot, each step's results, hand-offs."""
    import itertools

    from nurture import clock
    from nurture.report import confidence, counted, funnel, shown, to_html
    from nurture.store import session_scope

    st = state(ctx)
    config = st.config()
    start = st.moment("--since", since) if since else None
    with session_scope(st.engine()) as session:
        data = funnel(session, since=start, now=clock.now())
    if html_file is not None:
        try:
            html_file.write_text(to_html(data, config.settings.project.name), encoding="utf-8")
        except OSError as exc:
            raise ProjectError(f"--html {html_file}: cannot write: {exc.strerror}") from None
        warn(f"report written to {html_file}")
    if as_json:
        say(json.dumps(data, indent=2, ensure_ascii=False))
        return
    stages = Table("stage", "leads now", "ever reached", title="stages")
    for stage, count in data["stages"].items():
        stages.add_row(stage, str(count), str(data["reached"].get(stage, "")))
    out.print(stages)
    for item in data["conversion"]:
        rate = f"{100 * item['rate']:.1f}%" if item["rate"] is not None else "-"
        say(f"{item['from']} -> {item['to']}: {item['leads']} leads ({rate})")
    hot = data["days_to_hot"]
    say(
        f"days from first touch to hot: median {shown(hot['median'])}, p90 {shown(hot['p90'])} "
        f"({hot['leads']} leads)"
    )
    for sequence, rows in itertools.groupby(data["steps"], key=lambda r: r["sequence"]):
        steps = Table("step", "sent", "deliv.", "opened", "clicked", "replied", "unsub.", "tasks",
                      title=sequence, title_justify="left")  # fmt: skip
        for row in rows:
            steps.add_row(row["step"], str(row["sent"]), str(row["delivered"]),
                          *(counted(row, what) for what in ("opened", "clicked", "replied")),
                          str(row["unsubscribed"]), str(row["tasks_done"]))  # fmt: skip
        out.print(steps)
    if data["variants"]:
        tests = Table("step", "variant", "deliv.", "clicked", "replied", "difference",
                      title="A/B variants", title_justify="left")  # fmt: skip
        for row in data["variants"]:
            versus = row["compared_with"]
            sure = (
                f"clicks {confidence(row['clicked_p_value'])}, "
                f"replies {confidence(row['replied_p_value'])}"
                if versus else "(the first variant)"
            )  # fmt: skip
            tests.add_row(f"{row['sequence']}/{row['step']}", row["variant"],
                          str(row["delivered"]), counted(row, "clicked"),
                          counted(row, "replied"), sure)  # fmt: skip
        out.print(tests)
    h = data["handoffs"]
    say(
        f"hand-offs: {h['total']} ({h['accepted']} accepted, {h['rejected']} rejected, "
        f"{h['recycled']} recycled, {h['pending']} waiting); median time to answer "
        f"{shown(h['hours_to_answer_median'])} hours"
    )


outbox_app = typer.Typer(no_args_is_help=True, help="The outbox: held, failed and sent email.")
app.add_typer(outbox_app, name="outbox")


@outbox_app.command("list")
def outbox_list(
    ctx: typer.Context,
    status_: Annotated[
        str | None,
        typer.Option(
            "--status",
            help="queued, leased, sending, sent, bounced, failed, cancelled, uncertain, held.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The newest 200 messages, optionally in one state."""
    from nurture.outbox import OutboxStatus, list_messages
    from nurture.store import session_scope

    if status_ is not None and status_ not in {s.value for s in OutboxStatus}:
        raise NurtureError(
            f"--status {status_!r}: one of " + ", ".join(s.value for s in OutboxStatus)
        )
    with session_scope(state(ctx).engine()) as session:
        rows = [m.to_dict() for m in list_messages(session, status_)]
    if as_json:
        say(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    table = Table()
    for column in ("id", "status", "recipient", "sequence", "step", "attempts", "why"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            str(row["id"]),
            row["status"],
            row["recipient"],
            row["sequence"],
            row["step"],
            str(row["attempts"]),
            row["last_error"] or "",
        )
    out.print(table)
    say(f"{len(rows)} messages")


def _outbox_set(ctx: typer.Context, ids: list[int], resend: bool) -> None:
    from nurture import clock
    from nurture.outbox import set_status
    from nurture.store import session_scope

    with session_scope(state(ctx).engine()) as session:
        results = set_status(session, ids, resend=resend, now=clock.now())
    for message_id, what in results:
        say(f"message {message_id}: {what}")
    if any(what not in ("queued again", "cancelled") for _, what in results):
        raise typer.Exit(1)


@outbox_app.command("resend")
def outbox_resend(
    ctx: typer.Context,
    ids: Annotated[list[int], typer.Argument(metavar="ID...", help="Message ids.")],
) -> None:
    """Send uncertain or failed messages again, with their own Message-ID."""
    _outbox_set(ctx, ids, resend=True)


@outbox_app.command("cancel")
def outbox_cancel(
    ctx: typer.Context,
    ids: Annotated[list[int], typer.Argument(metavar="ID...", help="Message ids.")],
) -> None:
    """Never send these uncertain, failed, queued or held (paused) messages."""
    _outbox_set(ctx, ids, resend=False)


tasks_app = typer.Typer(no_args_is_help=True, help="Sales tasks: list them, mark them done.")
app.add_typer(tasks_app, name="tasks")


@tasks_app.command("list")
def tasks_list(
    ctx: typer.Context,
    owner: Annotated[str | None, typer.Option("--owner", help="Only this assignee's.")] = None,
    due: Annotated[bool, typer.Option("--due", help="Only tasks due now.")] = False,
    show_all: Annotated[
        bool, typer.Option("--all", help="Also done, expired and cancelled tasks.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Open tasks, soonest first."""
    from sqlmodel import col, select

    from nurture import clock
    from nurture.leads import Lead, normalize_email
    from nurture.store import session_scope
    from nurture.tasks import TaskStatus, list_tasks

    st = state(ctx)
    statuses = tuple(s.value for s in TaskStatus) if show_all else (TaskStatus.open.value,)
    with session_scope(st.engine()) as session:
        tasks = list_tasks(
            session,
            owner=normalize_email(owner) if owner else None,
            due_by=clock.now() if due else None,
            statuses=statuses,
        )
        ids = {task.lead_id for task in tasks}
        leads = {lead.id: lead for lead in session.exec(select(Lead).where(col(Lead.id).in_(ids)))}
    rows = []
    for task in tasks:
        lead = leads[task.lead_id]
        name = lead.full_name
        rows.append(
            {
                **task.to_dict(),
                "lead": {
                    "email": lead.email,
                    "name": name,
                    "company": lead.company,
                    "phone": lead.phone,
                    "timezone": lead.timezone,
                },
            }
        )
    if as_json:
        say(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    table = Table()
    for column in ("id", "due", "kind", "lead", "company", "phone", "their time",
                   "assignee", "note"):  # fmt: skip
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            str(row["id"]),
            st.local(row["due_at"]),
            row["kind"],
            f"{row['lead']['name']} <{row['lead']['email']}>",
            row["lead"]["company"] or "",
            row["lead"]["phone"] or "",
            _local_now(row["lead"]["timezone"], st.config().settings.project.default_timezone),
            row["assignee"] or "unassigned",
            row["note"],
        )
    out.print(table)
    say(f"{len(rows)} tasks")


def _local_now(timezone: str | None, default: str) -> str:
    """The lead's wall-clock time now, for deciding whether to call."""
    from nurture import clock
    from nurture.timing import zone

    return clock.now().astimezone(zone(timezone or default)).strftime("%a %H:%M %Z")


@tasks_app.command("done")
def tasks_done(
    ctx: typer.Context,
    task_id: Annotated[int, typer.Argument(metavar="ID", help="The task's id.")],
    outcome: Annotated[
        str | None,
        typer.Option(
            "--outcome",
            help="What came of it: one of the outcomes the task's step declares "
            "(e.g. qualified), else free text such as 'left voicemail'.",
        ),
    ] = None,
) -> None:
    """Mark a task done; its sequence goes on, and conditions see e.g. call_completed
    and outcome('call')."""
    from nurture.store import session_scope
    from nurture.tasks import complete_task

    with session_scope(state(ctx).engine()) as session:
        task = complete_task(session, task_id, outcome, by=_who(), via="cli")
        kind, step, sequence = task.kind, task.step, task.sequence
    say(f"task {task_id} done ({kind} at {sequence}/{step})")


# --- intake: erasure, forms, webhooks ---------------------------------------------------


@leads_app.command("forget")
def leads_forget(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The person's email address.")],
) -> None:
    """Erase a person (right to erasure): the lead, its events, enrollments, tasks and
    every message to them; the address stays only as a keyed hash on the suppression
    list, so no import, form or API call emails them again unless they opt in anew."""
    from nurture.erasure import forget
    from nurture.store import session_scope

    with session_scope(state(ctx).engine()) as session:
        erased = forget(session, email)
    if erased.found:
        gone = ", ".join(f"{count} {name}" for name, count in erased.removed.items() if count)
        say(f"erased {erased.email}" + (f" ({gone})" if gone else "") + "; suppressed")
    else:
        say(f"no lead {erased.email}: the address is suppressed all the same")


forms_app = typer.Typer(no_args_is_help=True, help="Web forms (forms/NAME.yaml).")
app.add_typer(forms_app, name="forms")


@forms_app.command("snippet")
def forms_snippet(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The form's name (forms/NAME.yaml).")],
) -> None:
    """Print an HTML snippet to paste into a page: the form posting to \\[tracking]
    base_url/f/NAME, its honeypot, and the script that sets the fill-time token."""
    from nurture.forms import load_forms, snippet

    config = state(ctx).config()
    forms, problems = load_forms(config.forms_dir)
    form = forms.get(name)
    if form is None:
        found = [str(p) for p in problems if p.path.endswith(f"/{name}.yaml")]
        if found:
            raise NurtureError("; ".join(found))
        known = ", ".join(sorted(forms)) or "none"
        raise ProjectError(f"no form {name!r} in {config.forms_dir} (forms: {known})")
    typer.echo(snippet(form, config.settings.tracking.base_url), nl=False)


webhooks_app = typer.Typer(
    no_args_is_help=True, help="Signed outbound webhooks ([[webhooks]]): deliveries and tests."
)
app.add_typer(webhooks_app, name="webhooks")


@webhooks_app.command("list")
def webhooks_list(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Option("--name", help="Only this endpoint.")] = None,
    status_: Annotated[str | None, typer.Option("--status", help="queued, sent or failed.")] = None,
    limit: Annotated[int, typer.Option(help="How many deliveries.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The [[webhooks]] endpoints, then the newest deliveries (and hand-off notices)."""
    from nurture.handoff import WebhookStatus
    from nurture.store import session_scope
    from nurture.webhooks import list_deliveries

    st = state(ctx)
    settings = st.config().settings
    if status_ is not None and status_ not in {s.value for s in WebhookStatus}:
        raise NurtureError(f"--status {status_!r}: one of queued, sent, failed")
    if name is not None and settings.webhook(name) is None:
        raise ConfigError(f"no [[webhooks]] entry is named {name!r}")
    with session_scope(st.engine()) as session:
        rows: list[dict[str, Any]] = [
            {
                "id": call.id, "endpoint": call.endpoint or "[sales] webhook_url",
                "event": call.event_type or call.idempotency_key.split(":")[0],
                "status": call.status, "attempts": call.attempts,
                "created_at": call.created_at.isoformat(),
                "next_attempt_at": call.next_attempt_at.isoformat()
                if call.status == "queued" else None,
                "sent_at": call.sent_at.isoformat() if call.sent_at else None,
                "last_error": call.last_error,
            }
            for call in list_deliveries(session, name, status_, limit)
        ]  # fmt: skip
    endpoints = [{"name": e.name, "url": e.url, "events": e.events} for e in settings.webhooks]
    if as_json:
        say(json.dumps({"endpoints": endpoints, "deliveries": rows}, indent=2))
        return
    for endpoint in endpoints:
        say(f"{endpoint['name']}: {endpoint['url']} ({', '.join(endpoint['events'])})")
    if not endpoints:
        say("no [[webhooks]] entries in nurture.toml")
    table = Table()
    for column in ("id", "endpoint", "event", "status", "attempts", "when", "why"):
        table.add_column(column, overflow="fold")
    for row in rows:
        when = row["sent_at"] or row["next_attempt_at"] or row["created_at"]
        table.add_row(str(row["id"]), row["endpoint"], row["event"], row["status"],
                      str(row["attempts"]), when[:19], row["last_error"] or "")  # fmt: skip
    out.print(table)
    say(f"{len(rows)} deliveries")


@webhooks_app.command("test")
def webhooks_test(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The [[webhooks]] entry's name.")],
) -> None:
    """Send a signed webhook.test event to one endpoint now and say how it answered."""
    import asyncio

    from nurture.runner import Context
    from nurture.webhooks import send_test

    st = state(ctx)
    endpoint = st.config().settings.webhook(name)
    if endpoint is None:
        raise ConfigError(f"no [[webhooks]] entry is named {name!r}")
    call = asyncio.run(send_test(Context.open(st.engine(), st.config()), endpoint))
    if call.status != "sent":
        raise NurtureError(
            f"{name}: {endpoint.url} answered {call.last_error} (delivery {call.id})"
        )
    say(f"{name}: {endpoint.url} answered 2xx (delivery {call.id})")


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
        warn(f"nurture: internal error: {_safe_error(exc)} (run with --debug for the traceback)")
        sys.exit(70)


def _safe_error(exc: Exception) -> str:
    """An unexpected error in one line that never shows data: a database error's SQL and
    its parameters (every row's personal data) are left out."""
    from sqlalchemy.exc import DBAPIError, StatementError

    if isinstance(exc, DBAPIError) and exc.orig is not None:
        first = str(exc.orig).strip().splitlines()[:1]
        return f"database error: {type(exc.orig).__name__}: {first[0] if first else ''}"
    if isinstance(exc, StatementError):
        return f"database error: {type(exc.orig or exc).__name__}"
    return f"{type(exc).__name__}: {exc}"
