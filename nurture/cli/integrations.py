"""``nurture forms`` and ``nurture webhooks``: what connects nurture to a website
and to other systems."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from nurture.cli.common import Table, app, out, say, state
from nurture.errors import ConfigError, NurtureError, ProjectError

forms_app = typer.Typer(no_args_is_help=True, help="Web forms (forms/NAME.yaml).")
app.add_typer(forms_app, name="forms")


@forms_app.command("snippet")
def forms_snippet(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The form's name (forms/NAME.yaml).")],
) -> None:
    """Print an HTML snippet to paste into a page: the form posting to \\[tracking]
    base_url/f/NAME, its honeypot, and the script that sets the fill-time token."""
    from nurture.intake.forms import load_forms, snippet

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
    no_args_is_help=True, help="Signed outbound webhooks (\\[\\[webhooks]]): deliveries and tests."
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
    """The \\[\\[webhooks]] endpoints, then the newest deliveries (and hand-off notices)."""
    from nurture.config import public_url
    from nurture.mail.webhooks import list_deliveries
    from nurture.store.database import session_scope
    from nurture.store.handoffs import WebhookStatus

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
    # Never the URL's user, password or query: they may be its credentials.
    endpoints = [{"name": e.name, "url": public_url(e.url), "events": e.events}
                 for e in settings.webhooks]  # fmt: skip
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
    name: Annotated[str, typer.Argument(help="The \\[\\[webhooks]] entry's name.")],
) -> None:
    """Send a signed webhook.test event to one endpoint now and say how it answered."""
    import asyncio

    from nurture.config import public_url
    from nurture.engine.context import Context
    from nurture.mail.webhooks import send_test

    st = state(ctx)
    endpoint = st.config().settings.webhook(name)
    if endpoint is None:
        raise ConfigError(f"no [[webhooks]] entry is named {name!r}")
    call = asyncio.run(send_test(Context.open(st.engine(), st.config()), endpoint))
    if call.status != "sent":
        raise NurtureError(
            f"{name}: {public_url(endpoint.url)} answered {call.last_error} (delivery {call.id})"
        )
    say(f"{name}: {public_url(endpoint.url)} answered 2xx (delivery {call.id})")
