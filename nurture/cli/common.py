"""What every command shares: the Typer app and its options, the project a command
works on (:class:`State`), and printing safely (lead data never drives the terminal)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text
from sqlalchemy import Engine

from nurture import __version__
from nurture.config import Config, load_settings
from nurture.errors import NurtureError

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
            for line in self._config.warnings:  # once per command
                warn(f"warning: {line}")
        return self._config

    def engine(self, *, check_schema: bool = True) -> Engine:
        """The project's database; by default only if its schema is current."""
        from nurture.store.database import check_schema as check
        from nurture.store.database import open_engine

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

        local = project and not has_offset(text)
        try:
            return parse_moment(text, self.timezone() if local else "UTC", what=option)
        except InvalidValueError as exc:
            raise OptionError(str(exc)) from None


def has_offset(text: str) -> bool:
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
        # The whole process: the server's threads and the daemon's read this clock too.
        ctx.with_resource(clock.pinned(moment, running=running, process=True))


def state(ctx: typer.Context) -> State:
    obj = ctx.find_object(State)
    assert obj is not None
    return obj


def load_sequence(st: State, name: str) -> tuple[Any, Any]:
    """The project's templates and the named sequence, or exit 1 listing its problems."""
    from nurture.language.sequence_files import load_sequences
    from nurture.language.templates import TemplateSet

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


def scoring_rules(config: Any) -> Any:
    """The project's scoring rules, or ``None`` when scoring.yaml has problems (then
    expressions see the scores as stored, without decay)."""
    from nurture.language.scoring import load_scoring

    return load_scoring(config.scoring_file)[0]


def lead_view(st: State, email: str) -> tuple[Any, Any]:
    from nurture.language.expressions import LeadView
    from nurture.store.database import session_scope
    from nurture.store.leads import get_lead

    with session_scope(st.engine()) as session:
        lead = get_lead(session, email)
    return lead, LeadView.of(lead)


def summary(pairs: list[tuple[str, int]]) -> str:
    return ", ".join(f"{label} {count}" for label, count in pairs)


def who() -> str:
    """Who runs a command, for the record of an answer: the system user."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
