"""``nurture enroll`` and ``nurture enrollments``: putting leads in sequences,
pausing and resuming them."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from nurture.cli.common import Table, app, load_sequence, out, say, scoring_rules, state, warn
from nurture.errors import NurtureError

#: A ``--where`` that would act on more leads than this asks first (unless ``--yes``).
CONFIRM_OVER = 10

DRY_RUN = typer.Option(
    "--dry-run", help="Say who, and what each would get first and when; change nothing."
)
YES = typer.Option("--yes", help="Do not ask before acting on more than 10 leads.")


@app.command()
def enroll(
    ctx: typer.Context,
    sequence_name: Annotated[str, typer.Argument(metavar="SEQUENCE", help="Sequence name.")],
    lead: Annotated[str | None, typer.Option("--lead", help="The lead's email.")] = None,
    where: Annotated[
        str | None,
        typer.Option("--where", help="Enroll every lead for which this expression is true."),
    ] = None,
    dry_run: Annotated[bool, DRY_RUN] = False,
    yes: Annotated[bool, YES] = False,
) -> None:
    """Enroll leads by hand, whatever the sequence's audience says.

    --dry-run lists who would be enrolled and what each would get first, and when. A
    --where that matches more than 10 leads asks first, unless --yes.
    """
    from nurture import clock
    from nurture.language.expressions import LeadView
    from nurture.stages.enroll import enroll as enroll_lead
    from nurture.stages.enroll import enroll_matching, previous_of, refusal
    from nurture.store.database import session_scope
    from nurture.store.leads import get_lead

    if (lead is None) == (where is None):
        raise NurtureError("enroll: give exactly one of --lead EMAIL or --where EXPR")
    st = state(ctx)
    _, sequence = load_sequence(st, sequence_name)
    now = clock.now()
    engine = st.engine()
    if lead is not None:
        with session_scope(engine) as session:
            record = get_lead(session, lead)
            if dry_run:
                why = refusal(record, sequence, previous_of(session, record, sequence), "hand")
            else:
                _, why = enroll_lead(session, record, sequence, now, by="hand")
            view = LeadView.of(record)
        if why:
            raise NurtureError(f"not enrolled: {why}")
        if dry_run:
            say(f"{lead}: {first_touch_line(st, sequence, view, now)}")
            say(f"(dry run, nothing written) would enroll {lead} in {sequence.name}")
            return
        say(f"enrolled {lead} in {sequence.name}: the next pass starts it")
        return
    assert where is not None
    expression = _where(where)
    rules = scoring_rules(st.config())
    preview = enroll_matching(engine, sequence, expression, now, by="hand", rules=rules,
                              dry_run=True)  # fmt: skip
    if dry_run:
        for view in preview.chosen:
            say(f"{view.get('email')}: {first_touch_line(st, sequence, view, now)}")
    for why in preview.refused:
        warn(f"not enrolled: {why}")
    if preview.errors:
        warn(f"--where could not be evaluated for {preview.errors} leads ({preview.first_error})")
    if dry_run:
        say(f"(dry run, nothing written) would enroll {preview.enrolled} leads in "
            f"{sequence.name}; {len(preview.refused)} matching leads would not be")  # fmt: skip
        raise typer.Exit(1 if preview.errors else 0)
    confirm(f"Enroll {preview.enrolled} leads in {sequence.name} now?", preview.enrolled, yes)
    report = enroll_matching(engine, sequence, expression, now, by="hand", rules=rules)
    say(
        f"enrolled {report.enrolled} leads in {sequence.name}; "
        f"{len(report.refused)} matching leads not enrolled"
    )
    if report.errors:
        raise typer.Exit(1)


def _where(where: str) -> Any:
    from nurture.language.expressions import compile_expression

    try:
        return compile_expression(where)
    except NurtureError as exc:
        raise NurtureError(f"--where: {exc}") from None


def confirm(question: str, count: int, yes: bool) -> None:
    """Ask before acting on more than :data:`CONFIRM_OVER` leads (unless *yes*); stop
    with exit 1 when the answer is not yes (or nobody can answer)."""
    if yes or count <= CONFIRM_OVER:
        return
    try:
        agreed = typer.confirm(question, default=False)
    except typer.Abort:
        agreed = False
    if not agreed:
        raise NurtureError(
            f"nothing done: {count} leads match (more than {CONFIRM_OVER}); "
            "--dry-run shows who, --yes does it without asking"
        )


def first_touch_line(st: Any, sequence: Any, view: Any, now: Any) -> str:
    """What *view* would get first from *sequence* enrolled at *now*, and when (in the
    lead's time), as ``nurture simulate`` computes it."""
    from nurture.engine.simulate import first_touch, simulate
    from nurture.language.timing import zone

    default_tz = st.config().settings.project.default_timezone
    entries = simulate(sequence, view, start=now, days=60, assumptions=[],
                       default_timezone=default_tz)  # fmt: skip
    entry = first_touch(entries)
    if entry is None:
        return "nothing within 60 days"
    local = entry.moment.astimezone(zone(entry.timezone)).strftime("%a %Y-%m-%d %H:%M %Z")
    step = f"step {entry.step}: " if entry.step else ""
    why = f" ({entry.reason})" if entry.reason else ""
    return f"{step}{entry.detail}, {local}{why}"


enrollments_app = typer.Typer(
    no_args_is_help=True, help="Leads in sequences: list, pause, resume and cancel them."
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
    from nurture.store.database import session_scope
    from nurture.store.enrollments import list_enrollments, parse_status

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

    from nurture.store.leads import Lead

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
    from nurture.store.database import session_scope
    from nurture.store.pausing import set_paused

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


@enrollments_app.command("cancel")
def enrollments_cancel(
    ctx: typer.Context,
    sequence_name: Annotated[str, typer.Argument(metavar="SEQUENCE", help="Sequence name.")],
    lead: Annotated[str | None, typer.Option("--lead", help="The lead's email.")] = None,
    where: Annotated[
        str | None,
        typer.Option("--where", help="Cancel for every enrolled lead this expression is true of."),
    ] = None,
    dry_run: Annotated[bool, DRY_RUN] = False,
    yes: Annotated[bool, YES] = False,
) -> None:
    """End active and paused enrollments by hand (exited: cancelled by hand); their
    emails not sent yet are cancelled. A --where over more than 10 leads asks first."""
    from nurture import clock
    from nurture.stages.enroll import enrolled_matching
    from nurture.store.database import session_scope
    from nurture.store.leads import get_lead
    from nurture.store.pausing import cancel_enrollments

    if (lead is None) == (where is None):
        raise NurtureError("enrollments cancel: give exactly one of --lead EMAIL or --where EXPR")
    st = state(ctx)
    _, sequence = load_sequence(st, sequence_name)
    now = clock.now()
    engine = st.engine()
    expression = _where(where if where is not None else "true")
    found = enrolled_matching(engine, sequence, expression, now, scoring_rules(st.config()))
    if lead is not None:
        with session_scope(engine) as session:
            email = get_lead(session, lead).email
        pairs = [(i, v) for i, v in zip(found.chosen_ids, found.chosen, strict=True)
                 if v.get("email") == email]  # fmt: skip
        if not pairs:
            raise NurtureError(f"{email} has no active or paused enrollment in {sequence.name}")
    else:
        pairs = list(zip(found.chosen_ids, found.chosen, strict=True))
        if found.errors:
            warn(f"--where could not be evaluated for {found.errors} leads ({found.first_error})")
    if dry_run:
        for _, view in pairs:
            say(f"would cancel: {view.get('email')}")
        say(f"(dry run, nothing written) would cancel {len(pairs)} enrollments in {sequence.name}")
        return
    if where is not None:
        confirm(f"Cancel {len(pairs)} enrollments in {sequence.name} now?", len(pairs), yes)
    ids = [lead_id for lead_id, _ in pairs]
    with session_scope(engine) as session:
        enrollments, emails = cancel_enrollments(session, sequence.name, ids, now=now)
    say(f"cancelled {enrollments} enrollments in {sequence.name}; {emails} queued emails cancelled")
    if found.errors and lead is None:
        raise typer.Exit(1)
