"""``nurture preview`` and ``nurture simulate``: what a sequence will do, before it does it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from nurture.cli.common import (
    Table,
    app,
    lead_view,
    load_sequence,
    out,
    say,
    scoring_rules,
    state,
    warn,
)
from nurture.config import Config
from nurture.errors import NurtureError, ProjectError


@app.command()
def preview(
    ctx: typer.Context,
    sequence_name: Annotated[str, typer.Argument(metavar="SEQUENCE", help="Sequence name.")],
    step_id: Annotated[str, typer.Argument(metavar="STEP", help="Step id.")],
    lead: Annotated[str, typer.Option("--lead", help="The lead's email.")],
    html_file: Annotated[
        Path | None, typer.Option("--html", help="Also write the HTML part to this file.")
    ] = None,
    variant: Annotated[
        str | None,
        typer.Option(
            "--variant",
            metavar="NAME",
            help="Show this A/B variant (a template of the step's variants), not the one "
            "the lead gets.",
        ),
    ] = None,
    send_to: Annotated[
        str | None,
        typer.Option(
            "--send-to",
            metavar="EMAIL",
            help="Also send this email, as a test ('\\[test]' before the subject, links "
            "working), to EMAIL through the configured transport; never counted in reports.",
        ),
    ] = None,
) -> None:
    """Show the email exactly as it would be sent to a lead (the bytes the outbox holds);
    nothing is stored or sent, unless --send-to sends it as a test to your own address."""
    import asyncio
    import secrets

    from nurture import clock
    from nurture.engine.context import Context
    from nurture.errors import InvalidValueError, OptionError
    from nurture.language.fields import normalize_email
    from nurture.language.sequences import EmailAction
    from nurture.mail.compose import compose_email, parse

    st = state(ctx)
    config = st.config()
    _, sequence = load_sequence(st, sequence_name)
    step = sequence.step(step_id)
    if step is None:
        ids = ", ".join(s.id for s in sequence.steps)
        raise NurtureError(f"no step {step_id!r} in {sequence.name} (steps: {ids})")
    if not isinstance(step.action, EmailAction):
        raise NurtureError(
            f"step {step_id!r} is a {step.kind}, not an email: try `nurture simulate`"
        )
    record, view = lead_view(st, lead)
    context = Context.open(st.engine(), config)
    template = step.action.template_for_lead(sequence.name, step.id, record.email)
    if variant is not None:
        from nurture.suggest import did_you_mean

        names = [name for name, _ in step.action.variants]
        if variant not in names:
            raise OptionError(
                f"--variant {variant!r} is not a variant of step {step.id!r}"
                f"{did_you_mean(variant, names)} (its variants: {', '.join(names)})"
            )
        template = variant
    tracking_id = "preview" if step.action.track else None
    choice = _sender_choice(st, sequence, record)
    email = compose_email(context, sequence, step.id, template, record, view, clock.now(),
                          tracking_id, choice=choice)  # fmt: skip
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
    own = step.action.template_for_lead(sequence.name, step.id, record.email)
    if len(step.action.variants) > 1:
        theirs = "the lead's" if template == own else f"the lead gets {own}"
        warn(f"template: {template} (variant {template}; {theirs})")
    else:
        warn(f"template: {template}")
    warn(f"sender: {choice.label()}")
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
    from nurture.engine.catalog import Catalog
    from nurture.mail.delivery import deliver
    from nurture.mail.transports import open_transport
    from nurture.store.database import session_scope
    from nurture.store.outbox import MessageKind, OutboxMessage, queue_message

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
    transport = open_transport(config.settings.smtp, config.outbox_dir, config.settings.senders)
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
    html_file: Annotated[
        Path | None,
        typer.Option("--html", help="Also write a page: the lead's path on the diagram."),
    ] = None,
) -> None:
    """Show the timeline a lead would get; nothing is sent or stored."""
    from nurture import clock
    from nurture.engine.simulate import Assumption
    from nurture.engine.simulate import simulate as run_simulation
    from nurture.language.scoring import scores_now
    from nurture.language.timing import zone

    st = state(ctx)
    config = st.config()
    templates, sequence = load_sequence(st, sequence_name)
    record, view = lead_view(st, lead)
    default_tz = config.settings.project.default_timezone
    tz_name = sequence.schedule.timezone_for(view.get("timezone"), default_tz)
    moment = st.moment("--start", start) if start else clock.now()
    assumptions = [Assumption.parse(text, sequence) for text in assume or []]

    def render_note(source: str, lead_view: Any) -> str:
        return templates.render_text(source, {"lead": lead_view}, str(sequence.path))

    rules = scoring_rules(config)
    sales = config.settings.sales
    entries = run_simulation(
        sequence, view, start=moment, days=days, assumptions=assumptions,
        default_timezone=default_tz, render_note=render_note, rules=rules,
        scores=scores_now(rules, record, moment),
        approachable=record.status == "subscribed"
        and bool(record.owner or sales.team or sales.notify_email),
    )  # fmt: skip
    if html_file is not None:
        from nurture.reports.pathpage import simulation_page

        page = simulation_page(sequence, entries, str(view.get("email")), tz_name,
                               config.settings.project.name)  # fmt: skip
        try:
            html_file.write_text(page, encoding="utf-8")
        except OSError as exc:
            raise ProjectError(f"--html {html_file}: cannot write: {exc.strerror}") from None
        warn(f"the lead's path written to {html_file}")
    emails = any(entry.kind == "email" for entry in entries)
    choice = _sender_choice(st, sequence, record) if emails else None
    if as_json:  # each email names its sender
        sender = None if choice is None else {"address": choice.address, "name": choice.name,
                                              "why": choice.why}  # fmt: skip
        rows = [{**entry.to_dict(), **({"sender": sender} if entry.kind == "email" else {})}
                for entry in entries]  # fmt: skip
        say(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if choice is not None:
        warn(f"sender: {choice.label()}")
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


def _sender_choice(st: Any, sequence: Any, record: Any) -> Any:
    """The sender *record*'s emails in *sequence* come from, as the daemon picks it now
    (its owner's, the one it got before, or the one with the most room left)."""
    from nurture import clock
    from nurture.mail.senders import SenderBook
    from nurture.store.database import session_scope

    with session_scope(st.engine()) as session:
        book = SenderBook(session, st.config().settings, [record.id], clock.now())
        return book.pick(sequence, record.id, record.owner)
