"""Machines' API (``/api/...``), behind ``[api] key`` and ``[api.keys]``.

- ``POST /api/events``: events from other systems, one or a batch.
- ``POST /api/handoff``: sales' answer for a hot lead.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from nurture.errors import InvalidValueError, LeadNotFoundError, NurtureError
from nurture.intake.ingest import EventInput, ingest, ingest_many, parse_item
from nurture.language.fields import check_storable
from nurture.sales.explain import event_data_keys_text
from nurture.store.arrivals import announce
from nurture.store.database import session_scope
from nurture.store.events import Recorded
from nurture.store.handoffs import answer_handoff
from nurture.web.keys import ApiKeys, batch_answer, batch_items
from nurture.web.state import WebState

#: The longest reason a hand-off answer may give.
MAX_REASON = 2000

#: What ``POST /api/events`` says of itself in the OpenAPI description, with the keys of
#: ``data`` that nurture reads (the reply's text only as ``data.first_lines``).
EVENTS_DESCRIPTION = f"""Record one event (a JSON object) or a batch (a JSON array of up to 1000).

Each event: `type` (`form_submitted`, `meeting_booked`, `page_visited`, `email_replied`,
... or your own `snake_case` name), `lead` (an email), optional `sequence` and `step`
(the touch it answers), `at` (ISO 8601 with an offset; default now), `data` (an object,
at most 16 KiB) and `id` (your id for it: sending the same id again records nothing new).
Items of a batch are judged one by one: the good ones are kept, each bad one gets its
own 4xx in `results`.

The keys of `data` that nurture reads (other keys are kept, and shown nowhere):

{event_data_keys_text()}
"""


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
    keys = ApiKeys(state.config.settings.api)

    def store(items: list[Any], key: str) -> list[dict[str, Any]]:
        outcome: dict[int, Recorded | NurtureError] = {}
        parsed: list[tuple[int, EventInput]] = []
        for index, item in enumerate(items):
            try:
                parsed.append((index, parse_item(item)))
            except InvalidValueError as exc:
                outcome[index] = exc
        try:  # the whole batch in a few statements
            with session_scope(engine) as session:
                done = ingest_many(
                    session, [event for _, event in parsed], source="api", via_key=key
                )
                outcome.update(
                    (index, result) for (index, _), result in zip(parsed, done, strict=True)
                )
                # A meeting booked, a form: the fast lane scores them now (a lead they
                # make hot is handed off in seconds).
                announce(session, [r.event.lead_id for r in done
                                   if isinstance(r, Recorded) and r.new])  # fmt: skip
        except IntegrityError:
            # Another process stored one of these ids meanwhile: one at a time.
            with session_scope(engine) as session:
                for index, event in parsed:
                    try:
                        with session.begin_nested():
                            outcome[index] = ingest(session, event, source="api", via_key=key)
                            found = outcome[index]
                            if isinstance(found, Recorded) and found.new:
                                announce(session, [found.event.lead_id])
                    except NurtureError as exc:
                        outcome[index] = exc
        return [_item_result(index, outcome[index]) for index in range(len(items))]

    @routes.post(
        "/api/events",
        summary="Record events",
        description=EVENTS_DESCRIPTION,
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
        key, body, refused = await keys.body(request)
        if refused is not None:
            return refused
        found = batch_items(body, "events")
        if isinstance(found, JSONResponse):
            return found
        items, single = found
        results = await run_in_threadpool(store, items, key)
        if any(r["status"] == 201 for r in results):
            state.arrived()
        return batch_answer(
            results,
            single,
            {
                "recorded": sum(r["status"] == 201 for r in results),
                "duplicates": sum(r["status"] == 200 for r in results),
            },
        )

    def answer(body: Any, key: str) -> tuple[int, dict[str, Any]]:
        if not isinstance(body, dict) or set(body) - {"lead", "answer", "reason", "by"}:
            return 422, {
                "detail": 'send {"lead": EMAIL, "answer": accept|reject|recycle, "reason": TEXT,'
                ' "by": WHO}'
            }
        by = body.get("by")
        if by is not None and (not isinstance(by, str) or not 0 < len(by.strip()) <= 320):
            return 422, {"detail": '"by" names who answered: text of at most 320 characters'}
        for name in ("lead", "answer", "reason"):
            value = body.get(name)
            if value is not None and not isinstance(value, str):
                return 422, {"detail": f'"{name}" must be a string'}
        reason = body.get("reason")
        if reason is not None and len(reason) > MAX_REASON:
            return 422, {"detail": f'"reason": at most {MAX_REASON} characters'}
        try:
            for name in ("lead", "answer", "reason", "by"):
                if isinstance(body.get(name), str):
                    check_storable(name, body[name])
        except InvalidValueError as exc:
            return 422, {"detail": str(exc)}
        try:
            with session_scope(engine) as session:
                handoff = answer_handoff(
                    session,
                    str(body.get("lead") or ""),
                    str(body.get("answer") or ""),
                    body.get("reason"),
                    via="api",
                    by=by.strip() if by else "api",
                    via_key=key,
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
        ``"reject"`` / ``"recycle"`` with a ``"reason"``; ``"by"`` names who answered
        (kept with the answer; default ``api``). Accept: stage accepted. Reject:
        stage disqualified, kept with the reason. Recycle: back to nurture."""
        key, body, refused = await keys.body(request)
        if refused is not None:
            return refused
        status, result = await run_in_threadpool(answer, body, key)
        return JSONResponse(result, status)

    return routes
