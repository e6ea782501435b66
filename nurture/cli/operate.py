"""``nurture tick``, ``run``, ``serve``, ``event`` and ``status``: running the engine
and watching it."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from nurture.cli.common import Table, app, load_sequence, out, say, state, summary
from nurture.errors import NurtureError


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
    from nurture.engine.context import Context
    from nurture.stages.passes import tick as run_tick

    logs.configure(json=log_json)
    st = state(ctx)
    config = st.config()
    moment = st.moment("--now", now) if now else clock.now()
    with clock.pinned(moment):
        context = Context.open(st.engine(), config)
        _, report, delivered = asyncio.run(run_tick(context, moment))
    say(
        f"tick at {moment.isoformat()}: "
        + summary(
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
    from nurture.intake.ingest import EventInput, ingest
    from nurture.store.database import session_scope

    st = state(ctx)
    values: dict[str, str] = {}
    for item in data or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise NurtureError(f"--data {item!r}: write key=value")
        values[key.strip()] = value
    if step and not sequence:
        raise NurtureError("--step needs --sequence too")
    from nurture.store.events import check_type, ever_recorded, likely_typo
    from nurture.suggest import did_you_mean

    if sequence:
        _, found = load_sequence(st, sequence)
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
    from nurture.reports.status import collect_status
    from nurture.store.database import session_scope
    from nurture.store.enrollments import HELD

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
    say("outbox: " + summary(list(o.items())))
    for name, reasons in data["outbox_reasons"].items():
        for item in reasons:
            when = st.local(item["next_attempt_at"])
            say(f"  {name}: {item['messages']}: {item['reason']} (next attempt {when})")
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
        say("webhooks: " + summary(list(data["webhooks"].items())))
    for failing in data["audience_failures"]:
        say(
            f"audience of {failing['sequence']} fails for some leads ({failing['leads']} at "
            f"the last look, e.g. {failing['error']}): they are never enrolled; "
            "`nurture check` says how to fix it"
        )
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
