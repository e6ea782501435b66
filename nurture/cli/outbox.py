"""``nurture outbox``: held, failed and sent email."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from nurture.cli.common import Table, app, out, say, state
from nurture.errors import NurtureError

outbox_app = typer.Typer(no_args_is_help=True, help="The outbox: held, failed and sent email.")
app.add_typer(outbox_app, name="outbox")


@outbox_app.command("list")
def outbox_list(
    ctx: typer.Context,
    status_: Annotated[
        str | None,
        typer.Option(
            "--status",
            help="queued (ready, deferred or retrying: the names of nurture status), leased, "
            "sending, sent, bounced, failed, cancelled, uncertain, held.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The newest 200 messages, optionally in one state, each with why it waits or
    failed. A queued message is ready, deferred or retrying, as in nurture status."""
    from nurture import clock
    from nurture.reports.status import QUEUE_STATES, list_outbox, queue_state
    from nurture.store.database import session_scope
    from nurture.store.outbox import OutboxStatus
    from nurture.suggest import did_you_mean

    names = [*QUEUE_STATES, *(s.value for s in OutboxStatus)]
    if status_ is not None and status_ not in names:
        raise NurtureError(
            f"--status {status_!r}: one of {', '.join(names)}{did_you_mean(status_, names)}"
        )
    now = clock.now()
    with session_scope(state(ctx).engine()) as session:
        rows = [
            {**m.to_dict(), "state": queue_state(m, now)}
            for m in list_outbox(session, status_, now)
        ]
    if as_json:
        say(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    table = Table()
    for column in ("id", "status", "recipient", "sequence", "step", "attempts", "why"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            str(row["id"]),
            row["state"],
            row["recipient"],
            row["sequence"],
            row["step"],
            str(row["attempts"]),
            row["last_error"] or "",
        )
    out.print(table)
    say(f"{len(rows)} messages")


def _outbox_set(ctx: typer.Context, ids: list[int], resend: bool) -> None:
    import nurture.store.models  # noqa: F401  (every table: a flush needs the leads table)
    from nurture import clock
    from nurture.store.database import session_scope
    from nurture.store.outbox import set_status

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
