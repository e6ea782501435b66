"""``nurture init``, ``db``, ``check`` and ``deploy``: a project, its database and its files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from nurture.cli.common import State, app, db_app, say, state
from nurture.errors import NurtureError


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
    from nurture.store.database import upgrade

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
    from nurture.store.database import current_revision, head_revision

    engine = state(ctx).engine(check_schema=False)
    say(f"current: {current_revision(engine) or 'none'}, needed: {head_revision()}")


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
    from nurture.reports.check import check_project

    st = state(ctx)
    result = check_project(st.config())
    result.problems.extend(_leads_problems(st, result))
    result.warnings.extend(_unrecorded_events(st, result.custom_events))
    result.problems.sort(key=lambda p: (p.path, p.line or 0))
    result.warnings.sort(key=lambda p: (p.path, p.line or 0))
    for problem in result.problems:
        say(str(problem))
    for warning in result.warnings:
        where = warning.path if warning.line is None else f"{warning.path}:{warning.line}"
        say(f"{where}: warning: {warning.message}")
    for impact in _edit_impact(st, result.sequences):
        say(str(impact))
    for line in _scoring_impact(st, result.scoring):
        say(line)
    say(result.summary(strict=strict))
    if result.problems or (strict and result.warnings):
        raise typer.Exit(1)


def _scoring_impact(st: State, rules: Any) -> list[str]:
    """When scoring.yaml differs from the version the scores were computed with: what
    the change would do (:mod:`nurture.reports.dryrun`; nothing is written)."""
    import hashlib

    from nurture import clock
    from nurture.reports.dryrun import dry_run, sentences
    from nurture.stages.score import SCORING_DIGEST_KEY
    from nurture.store.database import session_scope
    from nurture.store.meta import Meta

    config = st.config()
    if rules is None:
        return []
    try:
        engine = st.engine()
        digest = hashlib.sha256(config.scoring_file.read_bytes()).hexdigest()
    except (NurtureError, OSError):
        return []
    sales = config.settings.sales
    with session_scope(engine) as session:
        mark = session.get(Meta, SCORING_DIGEST_KEY)
        if mark is None or mark.value == digest:
            return []
        someone = bool(sales.team or sales.notify_email)
        result = dry_run(session, rules, clock.now(), someone=someone,
                         default_tz=config.settings.project.default_timezone)  # fmt: skip
        session.rollback()
    lines = sentences(result)
    return [
        f"{config.scoring_file}: changed since the scores were computed: {lines[0]}",
        *lines[1:],
    ]


def _leads_problems(st: State, result: Any) -> list[Any]:
    """What would fail for the leads in the database (nothing without one)."""
    from nurture import clock
    from nurture.reports.leadcheck import check_against_leads

    try:
        engine = st.engine()
    except NurtureError:
        return []
    return check_against_leads(st.config(), engine, result.sequences, result.scoring, clock.now())


def _unrecorded_events(st: State, custom: dict[str, Any]) -> list[Any]:
    """Custom event names nothing has recorded yet; nothing without a database."""
    from nurture.problems import Problem
    from nurture.store.database import session_scope
    from nurture.store.events import ever_recorded

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
    from nurture.engine.catalog import edit_impact
    from nurture.store.database import session_scope

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
    from nurture.engine.catalog import load_catalog
    from nurture.language.templates import TemplateSet

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
