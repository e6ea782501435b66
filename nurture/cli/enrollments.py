"""``nurture enroll`` and ``nurture enrollments``: putting leads in sequences,
pausing and resuming them."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from nurture.cli.common import Table, app, load_sequence, out, say, scoring_rules, state, warn
from nurture.errors import NurtureError


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
    from nurture.language.expressions import compile_expression
    from nurture.stages.enroll import enroll as enroll_lead
    from nurture.stages.enroll import enroll_matching
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
                             rules=scoring_rules(st.config()))  # fmt: skip
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
