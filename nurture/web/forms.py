"""Web forms (``forms/NAME.yaml``, see :mod:`nurture.intake.forms`) and double opt-in.

- ``POST /f/NAME``: a plain HTML form (``application/x-www-form-urlencoded``, answered
  303 to the thank-you or error URL) or ``fetch`` (JSON, answered JSON). The lead is
  created or updated by the import's rules, ``form_submitted`` is recorded, and the
  answer never reveals whether the address was known. Spam (the honeypot filled, sent
  faster than ``min_seconds`` after the page loaded, more than ``rate_limit`` from one
  IP) stores nothing.
- ``GET /f/NAME/t``: the fill-time token the snippet's script fetches.
- ``OPTIONS /f/NAME``: CORS preflight for the form's ``origins``.
- ``GET /optin/{token}``: a page with a button (a GET changes nothing);
  ``POST /optin/{token}``: confirms a double opt-in.
"""

from __future__ import annotations

import html
import logging
from datetime import UTC, datetime, timedelta
from email.utils import make_msgid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from limits import parse as parse_limit
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from sqlmodel import Session, col, func, select
from starlette.concurrency import run_in_threadpool

from nurture import clock, logs
from nurture.errors import InvalidValueError
from nurture.intake.forms import (
    TOKEN_INPUT,
    TOKEN_MAX_AGE,
    Form,
    filled_too_fast,
    load_forms,
    read_submission,
    time_token,
    token_key,
)
from nurture.intake.incoming import LeadItem, Origin, Taken, take_leads
from nurture.language.fields import ContactStatus
from nurture.mail.compose import Sender, build_notification
from nurture.store.arrivals import announce
from nurture.store.database import session_scope
from nurture.store.events import Event, record_event
from nurture.store.leads import Lead
from nurture.store.meta import use_once
from nurture.store.outbox import MessageKind, OutboxMessage, queue_message
from nurture.store.suppression import lift
from nurture.tokens import seal, unseal
from nurture.web.guard import read_json
from nurture.web.state import NO_CACHE, WebState, client, not_found, page

OPTIN_PURPOSE = "optin"
#: A confirmation link older than this no longer confirms.
OPTIN_MAX_AGE = timedelta(days=14)
#: One confirmation email per lead per this long, however often the form is sent...
CONFIRM_EVERY = timedelta(minutes=10)
#: ... and at most this many a day: a stranger typing someone's address cannot flood them.
CONFIRMS_PER_DAY = 3
#: Tokens carry whole seconds and are made a moment before the rows of the same
#: submission: what happened within this long of a link belongs to its submission.
LINK_SLACK = timedelta(seconds=10)
#: The page of an opt-in link sent before the person last unsubscribed.
STALE_OPTIN = (
    "<h1>This link has expired</h1><p>You unsubscribed after it was sent, so it no longer "
    "subscribes you. To hear from us again, fill in the form once more.</p>"
)
MAX_FIELDS = 100


class Forms:
    """The project's forms, read again when a file in ``forms/`` changes."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._stamp: tuple[tuple[str, int], ...] | None = None
        self._forms: dict[str, Form] = {}

    def get(self, name: str) -> Form | None:
        try:
            stamp = tuple(
                (p.name, p.stat().st_mtime_ns) for p in sorted(self.directory.glob("*.yaml"))
            )
        except OSError:
            stamp = ()
        if stamp != self._stamp:
            forms, problems = load_forms(self.directory)
            for problem in problems:
                logs.action("form file has problems", level=logging.WARNING, problem=str(problem))
            self._forms, self._stamp = forms, stamp
        return self._forms.get(name)


def _cors(form: Form, request: Request) -> dict[str, str]:
    origin = request.headers.get("origin", "")
    if origin and origin in form.origins:
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
    return {"Vary": "Origin"}


def _read_body(raw: bytes, content_type: str) -> dict[str, str]:
    """The submitted values, from a form post or JSON; :class:`InvalidValueError` if
    neither."""
    kind = content_type.split(";")[0].strip().lower()
    if kind == "application/json":
        data = read_json(raw)
        if not isinstance(data, dict) or len(data) > MAX_FIELDS:
            raise InvalidValueError("send a JSON object of the form's inputs")
        values: dict[str, str] = {}
        for key, value in data.items():
            if isinstance(value, bool):
                values[str(key)] = "yes" if value else ""
            elif isinstance(value, str | int | float) or value is None:
                values[str(key)] = "" if value is None else str(value)
            else:
                raise InvalidValueError(f"{key}: send text")
        return values
    if kind in ("application/x-www-form-urlencoded", ""):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidValueError("the form was not sent as UTF-8") from None
        try:
            pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS)
        except ValueError:
            raise InvalidValueError("too many inputs") from None
        return dict(pairs)
    raise InvalidValueError("send the form as application/x-www-form-urlencoded or JSON")


def submitted_data(form: Form, item: LeadItem, ip: str, taken: Taken) -> dict[str, Any]:
    """The ``form_submitted`` event's data: the form, the IP, what was sent (fields and
    attributes, and the consent ticked), and ``kept``: the values that differ from
    what the lead holds, which the post did not write (sales reads "form says ...")."""
    fields = {k: v for k, v in item.changes.fields.items() if k != "status"}
    data: dict[str, Any] = {"form": form.name, "ip": ip,
                            "submitted": {**fields, **item.changes.attributes}}  # fmt: skip
    if item.consent is not None:
        data["consent"] = {k: v for k, v in item.consent.items() if k != "ip"}
    if taken.kept:
        data["kept"] = dict(taken.kept)
    return data


def optin_url(base_url: str, secret: str, lead_id: int, form: str, now: datetime) -> str:
    token = seal(secret, OPTIN_PURPOSE, f"{lead_id}:{form}:{int(now.timestamp())}")
    return f"{base_url}/optin/{token}"


def router(state: WebState) -> APIRouter:
    """The form routes of one project."""
    routes = APIRouter(include_in_schema=False)
    engine, secret, settings = state.engine, state.secret, state.config.settings
    forms = Forms(state.config.forms_dir)
    limiter = MovingWindowRateLimiter(MemoryStorage())

    def answer(form: Form, request: Request, as_json: bool, error: str | None) -> Response:
        headers = {**NO_CACHE, **_cors(form, request)}
        if as_json:
            body = {"ok": error is None, **({"error": error} if error else {})}
            return JSONResponse(body, 200 if error is None else 400, headers=headers)
        if error is None:
            target = form.success_url or f"/f/{form.name}/thanks"
            return RedirectResponse(target, status_code=303, headers=headers)
        if form.error_url:
            return RedirectResponse(form.error_url, status_code=303, headers=headers)
        return page("Please try again", f"<h1>Please try again</h1><p>{html.escape(error)}</p>",
                    status=400)  # fmt: skip

    def queue_confirmation(session: Session, form: Form, lead: Lead, now: datetime) -> None:
        assert lead.id is not None
        sent = list(
            session.exec(
                select(OutboxMessage.created_at)
                .where(OutboxMessage.lead_id == lead.id)
                .where(OutboxMessage.kind == MessageKind.confirm.value)
                .where(col(OutboxMessage.created_at) > now - timedelta(days=1))
            )
        )
        if len(sent) >= CONFIRMS_PER_DAY or any(at > now - CONFIRM_EVERY for at in sent):
            logs.action("confirmation not sent again so soon", form=form.name)
            return
        sender = Sender.parse(form.confirm_from, settings.sender.postal_address)
        link = optin_url(settings.tracking.base_url, secret, lead.id, form.name, now)
        # Nothing a visitor typed goes into it (no name: it could carry a line or a
        # link): whoever typed the address, the email says only what we wrote.
        body = (
            "Hello,\n\n"
            "Please confirm that you want to hear from us by opening this link:\n\n"
            f"{link}\n\nIf you did not ask for this, ignore this email: without your "
            f"confirmation we will not email you.\n\n--\n{settings.sender.postal_address}\n"
        )
        message = build_notification(sender=sender, to_email=lead.email,
                                     subject=form.confirm_subject, body=body, date=now,
                                     message_id=make_msgid(domain=sender.domain))  # fmt: skip
        queue_message(session, message, kind=MessageKind.confirm,
                      key=f"optin:{lead.id}:{int(now.timestamp() * 1000)}", lead_id=lead.id,
                      sequence=f"form:{form.name}", step="confirm", sender=sender.email,
                      recipient=lead.email, timezone=settings.project.default_timezone,
                      now=now)  # fmt: skip

    def store(form: Form, values: dict[str, str], ip: str) -> None:
        item = read_submission(form, values, ip)
        now = clock.now()
        with session_scope(engine) as session:
            # The fill-time token works once: spent with what it brings, in one
            # transaction (a post refused above leaves it for the corrected one).
            token = values.get(TOKEN_INPUT, "")
            if form.min_seconds > 0 and not use_once(
                session, token_key(token), now + timedelta(seconds=TOKEN_MAX_AGE), now
            ):
                logs.action("form spam: fill-time token used already", form=form.name, ip=ip)
                return  # answered as a success: a second click on Send changes nothing
            [taken] = take_leads(session, [item], Origin(source="form", form=form.name))
            if not isinstance(taken, Taken):
                logs.action("form post for an erased address: nothing stored", form=form.name)
                return  # the answer is the same: it never tells what was known
            record_event(session, taken.lead_id, "form_submitted",
                         data=submitted_data(form, item, ip, taken), at=now,
                         source="form")  # fmt: skip
            # Locked: posts racing for one address count its confirmations one at a time.
            lead = session.get(Lead, taken.lead_id, with_for_update=True)
            assert lead is not None
            if form.double_opt_in and lead.status in (ContactStatus.pending,
                                                      ContactStatus.unsubscribed):  # fmt: skip
                queue_confirmation(session, form, lead, now)
            announce(session, [taken.lead_id])
        logs.action("form submitted", form=form.name, result=taken.result)

    @routes.post("/f/{name}")
    async def submit(name: str, request: Request) -> Response:
        form = forms.get(name)
        if form is None:
            return not_found()
        as_json = "json" in request.headers.get("content-type", "")
        origin = request.headers.get("origin")
        if origin and form.origins and origin not in form.origins:
            if as_json:
                return JSONResponse({"ok": False, "error": "origin not allowed"}, 403)
            return page("Not sent", "<h1>Not sent</h1><p>This form cannot be sent from this "
                        "site.</p>", status=403)  # fmt: skip
        ip, _ = client(request)
        try:
            values = _read_body(await request.body(), request.headers.get("content-type", ""))
        except InvalidValueError as exc:
            return answer(form, request, as_json, str(exc))
        if (values.get(form.honeypot) or "").strip():
            logs.action("form spam: honeypot filled", form=name, ip=ip)
            return answer(form, request, as_json, None)  # let the bot think it worked
        too_fast = filled_too_fast(
            secret, form, values.get(TOKEN_INPUT, ""), clock.now().timestamp()
        )
        if too_fast is not None:
            logs.action("form spam: refused", form=name, ip=ip, reason=too_fast)
            return answer(form, request, as_json, "Please wait a moment and send the form again")
        if not limiter.hit(parse_limit(form.rate_limit), "form", name, ip):
            logs.action("form spam: rate limit", form=name, ip=ip)
            response = answer(form, request, as_json, "Too many tries: please come back later")
            response.status_code = 429 if as_json or not form.error_url else 303
            return response
        try:
            await run_in_threadpool(store, form, values, ip)
        except InvalidValueError as exc:
            return answer(form, request, as_json, str(exc))
        state.arrived()
        return answer(form, request, as_json, None)

    @routes.options("/f/{name}")
    def preflight(name: str, request: Request) -> Response:
        form = forms.get(name)
        if form is None:
            return not_found()
        headers = _cors(form, request)
        if "Access-Control-Allow-Origin" in headers:
            headers.update({"Access-Control-Allow-Methods": "POST",
                            "Access-Control-Allow-Headers": "Content-Type",
                            "Access-Control-Max-Age": "600"})  # fmt: skip
        return Response(status_code=204, headers=headers)

    @routes.get("/f/{name}/t")
    def token(name: str) -> Response:
        if forms.get(name) is None:
            return not_found()
        return JSONResponse({"token": time_token(secret, name)},
                            headers={**NO_CACHE, "Access-Control-Allow-Origin": "*"})  # fmt: skip

    @routes.get("/f/{name}/thanks")
    def thanks(name: str) -> HTMLResponse:
        form = forms.get(name)
        if form is None:
            return not_found()
        more = "Please check your inbox to confirm." if form.double_opt_in else ""
        return page("Thank you", f"<h1>Thank you</h1><p>{more}</p>")

    def optin_target(token: str) -> tuple[int, str, datetime] | None:
        payload = unseal(secret, OPTIN_PURPOSE, token)
        parts = (payload or "").split(":")
        if len(parts) != 3 or not parts[0].isdigit() or not parts[2].isdigit():
            return None
        issued = datetime.fromtimestamp(int(parts[2]), UTC)
        if clock.now() - issued > OPTIN_MAX_AGE:
            return None
        return int(parts[0]), parts[1], issued

    def link_is_stale(session: Session, lead: Lead, issued: datetime) -> bool:
        """Whether the opt-in link issued at *issued* (whole seconds) may no longer
        subscribe *lead*: the lead was made after it (an erased person's id, reused), or
        opted out after it. An old link never undoes an opt-out; the form sends a new one."""
        if lead.created_at > issued + LINK_SLACK:
            return True
        if lead.status == ContactStatus.pending:
            return False
        last = session.exec(
            select(func.max(Event.occurred_at))
            .where(Event.lead_id == lead.id)
            .where(col(Event.type).in_(["unsubscribed", "complained"]))
        ).one()
        if last is not None:
            return last >= issued
        # An opt-out written as a status (an import, the API) is not dated: the link
        # holds only if nothing about the lead changed since it was sent.
        return lead.status != ContactStatus.subscribed and lead.updated_at > issued + LINK_SLACK

    @routes.get("/optin/{token:token}")
    def optin_page(token: str) -> HTMLResponse:
        target = optin_target(token)
        if target is None:
            return not_found()
        with session_scope(engine) as session:
            lead = session.get(Lead, target[0])
            stale = lead is not None and link_is_stale(session, lead, target[2])
        if lead is None:
            return not_found()
        if lead.status == ContactStatus.subscribed:
            return page("Confirmed", "<h1>You are confirmed</h1><p>Thank you.</p>")
        if stale:
            return page("Link expired", STALE_OPTIN, status=410)
        return page(
            "Confirm",
            f"<h1>Confirm {html.escape(lead.email)}?</h1>"
            "<p>Confirm that you want to hear from us.</p>"
            '<form method="post"><button type="submit">Confirm</button></form>',
        )

    def confirm(target: tuple[int, str, datetime], ip: str) -> bool | None:
        """Confirm the opt-in; ``False``: no such lead; ``None``: the link is older than
        the lead's last opt-out."""
        lead_id, form_name, issued = target
        now = clock.now()
        with session_scope(engine) as session:
            lead = session.get(Lead, lead_id, with_for_update=True)
            if lead is None:
                return False
            if link_is_stale(session, lead, issued):
                logs.action("opt-in link older than the opt-out: refused", form=form_name)
                return None
            if lead.status in (ContactStatus.pending, ContactStatus.unsubscribed):
                lift(session, [lead.email])  # an erased address, back by its owner's word
                lead.status = ContactStatus.subscribed.value
                lead.updated_at = now
                session.add(lead)
                record_event(session, lead_id, "opt_in_confirmed", data={"form": form_name,
                             "ip": ip}, at=now, source="form")  # fmt: skip
                announce(session, [lead_id])
                logs.action("opt-in confirmed", form=form_name)
        return True

    @routes.post("/optin/{token:token}")
    async def optin(token: str, request: Request) -> HTMLResponse:
        target = optin_target(token)
        ip, _ = client(request)
        done = await run_in_threadpool(confirm, target, ip) if target is not None else False
        if done is None:
            return page("Link expired", STALE_OPTIN, status=410)
        if not done:
            return not_found()
        state.arrived()
        return page("Confirmed", "<h1>You are confirmed</h1><p>Thank you.</p>")

    return routes
