"""``nurture serve``: the tracking and API server (FastAPI).

- ``GET|HEAD /o/{token}.gif``: the open pixel, always served; records ``email_opened``.
- ``GET|HEAD /c/{token}``: a tracked link; redirects only to the URL the signed token
  names in that email's own list of links; anything else is a 404, never a redirect.
- ``GET /u/{token}``: a page with a confirm button (link scanners prefetch GETs, so a GET
  never unsubscribes); ``POST /u/{token}``: unsubscribes, including RFC 8058 one-click.
- ``POST /api/events``: events from other systems, one or a batch (``[api] key``).
- ``GET /healthz``.
"""

from __future__ import annotations

import hmac
import html
import json
import logging
from datetime import timedelta
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy import Engine, text, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool

from nurture import __version__, clock, logs
from nurture.config import Config
from nurture.errors import InvalidValueError, LeadNotFoundError, NurtureError
from nurture.events import Event, Recorded, record_event
from nurture.handoff import answer_handoff
from nurture.ingest import EventInput, ingest, ingest_many, parse_item
from nurture.leads import Lead
from nurture.messages import UNSUBSCRIBE_PURPOSE
from nurture.outbox import OutboxMessage
from nurture.store import session_scope
from nurture.tokens import project_secret, verify
from nurture.tracking import LINK_BURST, machine_reason, read_click, read_open


class ServerError(NurtureError):
    """The server could not run."""

    exit_code = 2


#: A transparent 1x1 GIF.
PIXEL = bytes.fromhex(
    "47494638396101000100800000000000ffffff21f90401000000002c000000000100010000020144003b"
)
NO_CACHE = {"Cache-Control": "no-store, no-cache, must-revalidate, private"}
#: The same open or click of the same email this soon again is the same engagement.
REPEAT_WINDOW = timedelta(minutes=10)
MAX_BATCH = 1000


def _item_result(index: int, outcome: Recorded | NurtureError) -> dict[str, Any]:
    """What the events API answers for one item of a batch."""
    if isinstance(outcome, LeadNotFoundError):
        return {"index": index, "status": 404, "error": str(outcome)}
    if isinstance(outcome, NurtureError):
        return {"index": index, "status": 422, "error": str(outcome)}
    return {
        "index": index,
        "status": 201 if outcome.new else 200,
        "id": outcome.event.id,
        "duplicate": not outcome.new,
    }


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    document = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;"
        "padding:0 1rem;line-height:1.5}button{font-size:1rem;padding:.6rem 1.2rem}</style>"
        f"</head><body>{body}</body></html>"
    )
    return HTMLResponse(document, status_code=status, headers=NO_CACHE)


def _not_found() -> HTMLResponse:
    return _page("Link not found", "<h1>This link is not valid</h1>", status=404)


def _client(request: Request) -> tuple[str, str]:
    ip = request.client.host if request.client else ""
    return ip, request.headers.get("user-agent", "")


def create_app(config: Config, engine: Engine) -> FastAPI:
    """The server's app for one project."""
    settings = config.settings
    secret = project_secret(settings.tracking.secret, engine)
    api_key = settings.api.key
    app = FastAPI(
        title=f"nurture API ({settings.project.name})",
        version=__version__,
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )

    def message_for(session: Session, tracking_id: str) -> OutboxMessage | None:
        query = select(OutboxMessage).where(OutboxMessage.tracking_id == tracking_id)
        return session.exec(query).first()

    def record_open(tracking_id: str, method: str, ip: str, agent: str) -> None:
        now = clock.now()
        with session_scope(engine) as session:
            row = message_for(session, tracking_id)
            if row is None:
                return
            reason = machine_reason(
                method=method, user_agent=agent, ip=ip, sent_at=row.sent_at, now=now
            )
            recorded = record_event(
                session,
                row.lead_id,
                "email_opened",
                sequence=row.sequence,
                step=row.step,
                data={"ip": ip, "user_agent": agent, "machine_reason": reason},
                at=now,
                source="pixel",
                machine=reason is not None,
                dedupe_within=REPEAT_WINDOW,
            )
            if recorded.new:
                logs.action(
                    "email opened",
                    lead=row.recipient,
                    sequence=row.sequence,
                    step=row.step,
                    machine=reason,
                )

    @app.api_route("/o/{token}", methods=["GET", "HEAD"], include_in_schema=False)
    def open_pixel(token: str, request: Request) -> Response:
        tracking_id = read_open(secret, token)
        if tracking_id is not None:
            ip, agent = _client(request)
            try:
                record_open(tracking_id, request.method, ip, agent)
            except Exception:  # the image is served whatever happens to the record
                logs.logger.exception("cannot record an open")
        return Response(PIXEL, media_type="image/gif", headers=NO_CACHE)

    @app.api_route("/c/{token}", methods=["GET", "HEAD"], include_in_schema=False)
    def click(token: str, request: Request) -> Response:
        found = read_click(secret, token)
        if found is None:
            return _not_found()
        tracking_id, index = found
        ip, agent = _client(request)
        now = clock.now()
        with session_scope(engine) as session:
            row = message_for(session, tracking_id)
            if row is None or index >= len(row.links):
                return _not_found()
            url = row.links[index]
            recent = list(
                session.exec(
                    select(Event)
                    .where(Event.lead_id == row.lead_id)
                    .where(Event.type == "email_clicked")
                    .where(col(Event.sequence) == row.sequence)
                    .where(col(Event.step) == row.step)
                    .where(col(Event.occurred_at) >= now - LINK_BURST)
                )
            )
            others = [e for e in recent if e.data.get("url") != url]
            reason = machine_reason(
                method=request.method,
                user_agent=agent,
                ip=ip,
                sent_at=row.sent_at,
                now=now,
                other_links_just_clicked=len(others),
            )
            if others and reason == "several links clicked at once":
                # The earlier clicks of the burst were the same scanner.
                session.execute(
                    update(Event)
                    .where(col(Event.id).in_([e.id for e in others]))
                    .values(machine=True)
                )
            recorded = record_event(
                session,
                row.lead_id,
                "email_clicked",
                sequence=row.sequence,
                step=row.step,
                data={"url": url, "ip": ip, "user_agent": agent, "machine_reason": reason},
                at=now,
                source="click",
                machine=reason is not None,
                dedupe_within=REPEAT_WINDOW if reason is None else None,
            )
            if recorded.new:
                logs.action(
                    "email clicked",
                    lead=row.recipient,
                    sequence=row.sequence,
                    step=row.step,
                    url=url,
                    machine=reason,
                )
        return RedirectResponse(url, status_code=302, headers=NO_CACHE)

    def unsubscribe_target(token: str) -> tuple[int, str, str] | None:
        payload = verify(secret, UNSUBSCRIBE_PURPOSE, token)
        if payload is None:
            return None
        lead_id, _, rest = payload.partition(":")
        sequence, _, step = rest.partition(":")
        return (int(lead_id), sequence, step) if lead_id.isdigit() else None

    @app.get("/u/{token}", include_in_schema=False)
    def unsubscribe_page(token: str) -> HTMLResponse:
        target = unsubscribe_target(token)
        if target is None:
            return _not_found()
        with session_scope(engine) as session:
            lead = session.get(Lead, target[0])
        if lead is None:
            return _not_found()
        if lead.status == "unsubscribed":
            return _page(
                "Unsubscribed",
                "<h1>You are unsubscribed</h1><p>You will get no more emails from us.</p>",
            )
        return _page(
            "Unsubscribe",
            f"<h1>Unsubscribe {html.escape(lead.email)}?</h1>"
            "<p>You will get no more emails from us.</p>"
            '<form method="post"><button type="submit">Unsubscribe</button></form>',
        )

    def unsubscribe_now(target: tuple[int, str, str], one_click: bool, ip: str) -> bool:
        lead_id, sequence, step = target
        with session_scope(engine) as session:
            lead = session.get(Lead, lead_id)
            if lead is None:
                return False
            recorded = record_event(
                session,
                lead_id,
                "unsubscribed",
                sequence=sequence or None,
                step=step or None,
                data={"via": "one-click" if one_click else "page", "ip": ip},
                source="unsubscribe",
                dedupe_within=timedelta(days=1),
            )
            if recorded.new:
                logs.action(
                    "unsubscribed",
                    lead=lead.email,
                    sequence=sequence,
                    step=step,
                    via="one-click" if one_click else "page",
                )
        return True

    @app.post("/u/{token}", include_in_schema=False)
    async def unsubscribe(token: str, request: Request) -> HTMLResponse:
        target = unsubscribe_target(token)
        if target is None:
            return _not_found()
        body = (await request.body())[:1000]
        one_click = b"List-Unsubscribe=One-Click" in body
        ip, _ = _client(request)
        if not await run_in_threadpool(unsubscribe_now, target, one_click, ip):
            return _not_found()
        return _page(
            "Unsubscribed",
            "<h1>You are unsubscribed</h1><p>You will get no more emails from us.</p>",
        )

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        """Whether the server and its database answer."""
        try:
            with engine.connect() as connection:
                connection.execute(text("select 1"))
        except Exception as exc:
            return JSONResponse({"status": "error", "error": type(exc).__name__}, 503)
        return JSONResponse({"status": "ok", "version": __version__})

    def authorized(request: Request) -> bool:
        given = request.headers.get("x-api-key") or ""
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            given = credential.strip()
        return bool(given) and hmac.compare_digest(given.encode(), api_key.encode())

    async def api_body(request: Request) -> tuple[Any, JSONResponse | None]:
        """The JSON body of an API call, or the answer refusing it (API off, wrong key,
        not JSON)."""
        if not api_key:
            return None, JSONResponse({"detail": "the API is off: set [api] key"}, 503)
        if not authorized(request):
            return None, JSONResponse({"detail": "missing or wrong API key"}, 401)
        try:
            return json.loads(await request.body()), None
        except (ValueError, UnicodeDecodeError):
            return None, JSONResponse({"detail": "the body must be JSON"}, 400)

    def store(items: list[Any]) -> list[dict[str, Any]]:
        outcome: dict[int, Recorded | NurtureError] = {}
        parsed: list[tuple[int, EventInput]] = []
        for index, item in enumerate(items):
            try:
                parsed.append((index, parse_item(item)))
            except InvalidValueError as exc:
                outcome[index] = exc
        try:  # the whole batch in a few statements
            with session_scope(engine) as session:
                done = ingest_many(session, [event for _, event in parsed], source="api")
                outcome.update(
                    (index, result) for (index, _), result in zip(parsed, done, strict=True)
                )
        except IntegrityError:
            # Another process stored one of these ids meanwhile: one at a time.
            with session_scope(engine) as session:
                for index, event in parsed:
                    try:
                        with session.begin_nested():
                            outcome[index] = ingest(session, event, source="api")
                    except NurtureError as exc:
                        outcome[index] = exc
        return [_item_result(index, outcome[index]) for index in range(len(items))]

    @app.post(
        "/api/events",
        summary="Record events",
        responses={
            201: {"description": "The event was recorded (one event sent)."},
            200: {"description": "Duplicate of an event recorded before, or a batch."},
            207: {"description": "A batch in which some items were refused (see results)."},
            400: {"description": "The body is not JSON, or the batch is too large."},
            401: {"description": "Missing or wrong API key."},
        },
    )
    async def post_events(request: Request) -> JSONResponse:
        """Record one event (a JSON object) or a batch (a JSON array of up to 1000).

        Each event: ``type`` (``form_submitted``, ``meeting_booked``, ``page_visited``,
        ``email_replied``, ... or your own ``snake_case`` name), ``lead`` (an email),
        optional ``sequence`` and ``step`` (the touch it answers), ``at`` (ISO 8601 with
        an offset; default now), ``data`` (an object) and ``id`` (your id for it: sending
        the same id again records nothing new). Items of a batch are judged one by one:
        the good ones are kept, each bad one gets its own 4xx in ``results``.
        """
        body, refused = await api_body(request)
        if refused is not None:
            return refused
        single = not isinstance(body, list)
        items = [body] if single else body
        if len(items) > MAX_BATCH:
            return JSONResponse({"detail": f"at most {MAX_BATCH} events per request"}, 400)
        results = await run_in_threadpool(store, items)
        if single:
            result = results[0]
            return JSONResponse({k: v for k, v in result.items() if k != "index"}, result["status"])
        bad = [r for r in results if r["status"] >= 400]
        summary = {
            "recorded": sum(r["status"] == 201 for r in results),
            "duplicates": sum(r["status"] == 200 for r in results),
            "refused": len(bad),
            "results": results,
        }
        return JSONResponse(summary, 207 if bad else 200)

    def answer(body: Any) -> tuple[int, dict[str, Any]]:
        if not isinstance(body, dict) or set(body) - {"lead", "answer", "reason"}:
            return 422, {
                "detail": 'send {"lead": EMAIL, "answer": accept|reject|recycle, "reason": TEXT}'
            }
        try:
            with session_scope(engine) as session:
                handoff = answer_handoff(
                    session,
                    str(body.get("lead") or ""),
                    str(body.get("answer") or ""),
                    body.get("reason"),
                    via="api",
                )
                result = {"lead": body["lead"], "status": handoff.status}
        except LeadNotFoundError as exc:
            return 404, {"detail": str(exc)}
        except InvalidValueError as exc:
            return 422, {"detail": str(exc)}
        return 200, result

    @app.post(
        "/api/handoff",
        summary="Answer a hand-off",
        responses={
            200: {"description": "Recorded."},
            401: {"description": "Missing or wrong API key."},
            404: {"description": "No such lead."},
            422: {"description": "Bad answer, a missing reason, or no pending hand-off."},
        },
    )
    async def post_handoff(request: Request) -> JSONResponse:
        """Sales' answer for a hot lead: ``{"lead": EMAIL, "answer": "accept"}``, or
        ``"reject"`` / ``"recycle"`` with a ``"reason"``. Accept: stage accepted. Reject:
        stage disqualified, kept with the reason. Recycle: back to nurture."""
        body, refused = await api_body(request)
        if refused is not None:
            return refused
        status, result = await run_in_threadpool(answer, body)
        return JSONResponse(result, status)

    return app


def serve(config: Config, engine: Engine, host: str, port: int) -> None:
    """Run the server until SIGTERM or Ctrl-C, then finish the requests in flight and
    return (exit code 0)."""
    import signal
    import threading

    server = background_server(config, engine, host, port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda number, _frame: stop.set())
    thread = threading.Thread(target=server.run, name="nurture-server")
    thread.start()
    logs.action("server listening", url=f"http://{host}:{port}")
    while not stop.wait(0.5):
        if not thread.is_alive():  # it could not start (the port is taken...)
            raise ServerError(f"the server on {host}:{port} stopped; see the log above")
    logs.action("stopping", reason="signal")
    server.should_exit = True
    thread.join()
    logs.action("server stopped")


def background_server(config: Config, engine: Engine, host: str, port: int) -> Any:
    """A uvicorn server for ``nurture run --serve``; ``.run()`` it in a thread and set
    ``.should_exit`` to stop it."""
    import uvicorn

    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    return uvicorn.Server(
        uvicorn.Config(
            create_app(config, engine), host=host, port=port, log_level="warning", access_log=False
        )
    )
