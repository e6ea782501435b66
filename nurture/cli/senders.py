"""``nurture senders``: the ``[[senders]]`` mailboxes, their pacing and health; resume one
that was paused."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from nurture.cli.common import Table, app, out, say, state
from nurture.errors import NurtureError

senders_app = typer.Typer(
    no_args_is_help=True,
    help="Senders (\\[\\[senders]]): their sends, caps, warm-up and health; resume a paused one.",
)
app.add_typer(senders_app, name="senders")


@senders_app.command("list")
def senders_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Each sender: its sends in the last 24 hours and hour, its caps, its warm-up
    level, its health and why it is paused."""
    from nurture import clock
    from nurture.mail.senders import sender_paces
    from nurture.store.database import session_scope
    from nurture.store.sender_health import figures

    st = state(ctx)
    now = clock.now()
    settings = st.config().settings
    paces = sender_paces(settings)
    warming = {e.name for e in settings.senders if e.warmup is not None}
    with session_scope(st.engine()) as session:
        rows = [figures(session.connection(), pace, now).to_dict() for pace in paces.values()]
    if as_json:
        say(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    table = Table()
    for column in ("name", "address", "24 h", "hour", "daily", "hourly", "warm-up",
                   "bounces", "complaints", "state"):  # fmt: skip
        table.add_column(column, overflow="fold")
    for row in rows:
        health = row["health"]
        table.add_row(
            row["name"], row["address"], str(row["sent_last_24h"]), str(row["sent_last_hour"]),
            _cap(row["daily"]), _cap(row["hourly"]),
            _warmup(row["warmup_level"], row["name"] in warming),
            f"{health['hard_bounces']} of {health['of_sends']}", str(health["complaints_24h"]),
            f"paused: {row['pause_reason']}" if row["paused"] else "sending",
        )  # fmt: skip
    out.print(table)
    say(f"{len(rows)} senders" if rows else "no [[senders]] in nurture.toml")


def _cap(value: int | None) -> str:
    return "-" if value is None else str(value)


def _warmup(level: int | None, configured: bool) -> str:
    """Today's warm-up cap, ``done`` once it reached ``daily``; ``-``: no warm-up."""
    if not configured:
        return "-"
    return "done" if level is None else f"{level} today"


@senders_app.command("resume")
def senders_resume(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The sender's name.")],
) -> None:
    """Resume a paused sender: its held emails go again (caps and windows still apply),
    and its health counts from now."""
    from nurture import clock
    from nurture.store.database import session_scope
    from nurture.store.sender_health import resume
    from nurture.suggest import did_you_mean

    st = state(ctx)
    settings = st.config().settings
    entry = settings.sender_named(name)
    if entry is None:
        known = [e.name for e in settings.senders]
        raise NurtureError(f"no sender {name!r} in [[senders]]{did_you_mean(name, known)}")
    with session_scope(st.engine()) as session:
        was, released = resume(session, entry.name, entry.email, clock.now())
    if not was:
        say(f"sender {entry.name} was not paused ({released} held emails released)")
        return
    say(f"sender {entry.name} resumed: {released} held emails released")
