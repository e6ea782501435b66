"""``nurture tasks``: sales tasks, listed and marked done."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from nurture.cli.common import Table, app, out, say, state, who

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
    from nurture.language.fields import normalize_email
    from nurture.store.database import session_scope
    from nurture.store.leads import Lead
    from nurture.store.tasks import TaskStatus, list_tasks

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
    from nurture.language.timing import zone

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
    from nurture.store.database import session_scope
    from nurture.store.tasks import complete_task

    with session_scope(state(ctx).engine()) as session:
        task = complete_task(session, task_id, outcome, by=who(), via="cli")
        kind, step, sequence = task.kind, task.step, task.sequence
    say(f"task {task_id} done ({kind} at {sequence}/{step})")


# --- intake: erasure, forms, webhooks ---------------------------------------------------
