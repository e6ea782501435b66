"""Machines' API (``/api/...``), behind ``[api] key`` and ``[api.keys]``.

- ``POST /api/events``: events from other systems, one or a batch.
- ``POST /api/handoff``: sales' answer for a hot lead.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from nurture import clock
from nurture.errors import InvalidValueError, LeadNotFoundError, NurtureError
from nurture.intake.ingest import EventInput, ingest, ingest_many, parse_item
from nurture.language.fields import ContactStatus, check_storable
from nurture.language.scoring import PRECISION, SCORED_STAGES, ScoringRules, load_scoring
from nurture.sales.explain import event_data_keys_text
from nurture.sales.scorer import FIT_CHECKED_KEY, PROOF_TYPES
from nurture.store.arrivals import announce
from nurture.store.bulk import one_of
from nurture.store.database import session_scope
from nurture.store.events import Recorded
from nurture.store.handoffs import answer_handoff
from nurture.store.leads import Lead
from nurture.store.meta import read_mark
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


class CurrentRules:
    """``scoring.yaml`` as it is now: read again only when the file changed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int] | None = None
        self._rules: ScoringRules | None = None

    def __call__(self) -> ScoringRules | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        if (stat.st_mtime_ns, stat.st_size) != self._seen:
            self._rules, _ = load_scoring(self.path)
            self._seen = (stat.st_mtime_ns, stat.st_size)
        return self._rules


def may_turn_hot(session: Session, rules: ScoringRules | None, new: list[Recorded]) -> list[int]:
    """The leads that their *new* events may make hot, for the fast lane (in one query):
    an event that earns points, a buying signal (``hot_on``) or a proof of the address,
    for a subscribed lead that scores may still move (``cold``, ``warm`` or ``hot``: not
    in sales' hands) and whose fit reaches the hot threshold (or changed since the pass
    last computed it). Every lead of *new* when the rules cannot
    be read."""
    if rules is None:
        return [r.event.lead_id for r in new]
    hot = rules.stages.get("hot")
    if hot is None:
        return []
    raising = {name for name, rule in rules.engagement.items() if rule.points > 0}
    raising |= {*rules.hot_on, *PROOF_TYPES}
    ids = sorted({r.event.lead_id for r in new if r.event.type in raising})
    if not ids:
        return []
    # The fit stored is the one the last pass computed for every lead changed by then
    # (the pass's own stage changes are stamped with its mark); a lead changed later may
    # fit now. (A change committed late, which the pass's overlap catches, waits for it.)
    since = read_mark(session, FIT_CHECKED_KEY, timedelta(0), clock.now())
    table = Lead.__table__  # type: ignore[attr-defined]
    columns = (table.c.id, table.c.stage, table.c.status, table.c.fit, table.c.updated_at)
    leads = session.execute(
        sa_select(*columns).where(one_of(session.get_bind().dialect, table.c.id, ids))
    )
    return [
        lead_id
        for lead_id, stage, status, fit, updated_at in leads
        if stage in SCORED_STAGES
        and status == ContactStatus.subscribed
        and (since is None or updated_at > since or round(fit, PRECISION) >= hot.fit)
    ]


def router(state: WebState) -> APIRouter:
    """The machines' routes of one project."""
    routes = APIRouter()
    engine = state.engine
    keys = ApiKeys(state.config.settings.api)
    rules = CurrentRules(state.config.scoring_file)

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
                # make hot is handed off in seconds); events that cannot make their
                # lead hot wait for the pass.
                new = [r for r in done if isinstance(r, Recorded) and r.new]
                announce(session, may_turn_hot(session, rules(), new))
        except IntegrityError:
            # Another process stored one of these ids meanwhile: one at a time.
            with session_scope(engine) as session:
                for index, event in parsed:
                    try:
                        with session.begin_nested():
                            outcome[index] = ingest(session, event, source="api", via_key=key)
                            found = outcome[index]
                            if isinstance(found, Recorded) and found.new:
                                announce(session, may_turn_hot(session, rules(), [found]))
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
