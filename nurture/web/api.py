"""Machines' API (``/api/...``), behind ``[api] key``.

- ``POST /api/events``: events from other systems, one or a batch.
- ``POST /api/handoff``: sales' answer for a hot lead.
"""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from nurture.errors import InvalidValueError, LeadNotFoundError, NurtureError
from nurture.events import Recorded
from nurture.handoff import answer_handoff
from nurture.ingest import EventInput, ingest, ingest_many, parse_item
from nurture.store import session_scope
from nurture.web.guard import read_json
from nurture.web.state import WebState

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


def router(state: WebState) -> APIRouter:
    """The machines' routes of one project."""
    routes = APIRouter()
    engine = state.engine
    api_key = state.config.settings.api.key

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
            return read_json(await request.body()), None
        except InvalidValueError as exc:
            return None, JSONResponse({"detail": str(exc)}, 400)

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

    @routes.post(
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

    @routes.post(
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

    return routes
