"""The leads API, for CRMs and scripts (behind the API keys):

- ``POST /api/leads``: one lead or a batch of up to 1000, upserted by email by the
  import's rules, each item answered on its own (207 for a mixed batch);
- ``GET /api/leads/{email}``: the lead with its scores, stage, owner, consent,
  enrollments and timeline;
- ``GET /api/leads?stage=&owner=&updated_since=&cursor=&limit=``: pages in a stable
  order (last change, then id), for incremental sync;
- ``DELETE /api/leads/{email}``: erase the person (see :mod:`nurture.intake.erasure`).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import and_, or_
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from starlette.concurrency import run_in_threadpool

from nurture import logs
from nurture.errors import InvalidValueError, LeadNotFoundError, NurtureError
from nurture.intake.erasure import erase as erase_person
from nurture.intake.incoming import LeadItem, Origin, SuppressedError, Taken, parse_lead, take_leads
from nurture.intake.ingest import parse_moment
from nurture.language.fields import normalize_email, parse_stage
from nurture.mail.webhooks import lead_payload
from nurture.store.database import session_scope
from nurture.store.enrollments import Enrollment
from nurture.store.events import events_of
from nurture.store.leads import Lead, get_lead
from nurture.tokens import seal, unseal
from nurture.web.keys import MAX_BATCH, ApiKeys, batch_answer, batch_items
from nurture.web.state import WebState

PAGE = 100
CURSOR_PURPOSE = "leads-cursor"


def _result(index: int, outcome: Taken | NurtureError) -> dict[str, Any]:
    if isinstance(outcome, SuppressedError):
        return {"index": index, "status": 409, "error": str(outcome)}
    if isinstance(outcome, NurtureError):
        return {"index": index, "status": 422, "error": str(outcome)}
    status = 201 if outcome.result == "created" else 200
    return {"index": index, "status": status, "email": outcome.email, "result": outcome.result}


def lead_detail(lead: Lead, enrollments: list[Enrollment], events: list[Any]) -> dict[str, Any]:
    """``GET /api/leads/{email}``: the lead, its enrollments and its timeline."""
    return {
        **lead_payload(lead),
        "enrollments": [
            {k: v for k, v in e.to_dict().items() if k not in ("id", "lead_id")}
            for e in enrollments
        ],
        "timeline": [
            {
                "at": e.occurred_at.isoformat(),
                "type": e.type,
                "sequence": e.sequence,
                "step": e.step,
                "source": e.source,
                "key": e.via_key,
                "machine": e.machine,
                "data": e.data,
            }
            for e in events
        ],
    }


def router(state: WebState) -> APIRouter:
    """The leads API of one project."""
    routes = APIRouter()
    engine, secret = state.engine, state.secret
    keys = ApiKeys(state.config.settings.api)

    def upsert(items: list[Any], key: str) -> list[dict[str, Any]]:
        outcome: dict[int, Taken | NurtureError] = {}
        parsed: list[tuple[int, LeadItem]] = []
        first: dict[str, int] = {}
        for index, item in enumerate(items):
            try:
                lead = parse_lead(item)
            except InvalidValueError as exc:
                outcome[index] = exc
                continue
            email = lead.changes.email
            if email in first:
                outcome[index] = InvalidValueError(
                    f"{email} is also item {first[email]}: send one item per lead"
                )
                continue
            first[email] = index
            parsed.append((index, lead))
        origin = Origin(source="api", via_key=key)
        for attempt in (1, 2):
            try:
                with session_scope(engine) as session:
                    done = take_leads(session, [lead for _, lead in parsed], origin)
                break
            except IntegrityError:  # another call created one of these leads just now
                if attempt == 2:
                    raise
        for (index, _), result in zip(parsed, done, strict=True):
            outcome[index] = result
        return [_result(index, outcome[index]) for index in range(len(items))]

    @routes.post(
        "/api/leads",
        summary="Create or update leads",
        responses={
            201: {"description": "The lead was created (one lead sent)."},
            200: {"description": "Updated, unchanged, or a batch."},
            207: {"description": "A batch in which some items were refused (see results)."},
            409: {"description": "The address was erased at the person's request."},
            422: {"description": "A bad field (named in the answer)."},
        },
    )
    async def post_leads(request: Request) -> JSONResponse:
        """One lead (a JSON object) or a batch (an array of up to 1000), upserted by
        email (case-insensitively): ``email``, ``first_name``, ``last_name``,
        ``company``, ``title``, ``phone``, ``timezone``, ``owner``, ``source``,
        ``stage``, ``status``, ``attributes`` (an object) and ``consent`` (``{"text",
        "version"}``: a new opt-in). Empty values keep what is stored; an unsubscribe is
        never undone; an erased address is refused (409) unless the item has a consent.
        """
        key, body, refused = await keys.body(request)
        if refused is not None:
            return refused
        found = batch_items(body, "leads")
        if isinstance(found, JSONResponse):
            return found
        items, single = found
        results = await run_in_threadpool(upsert, items, key)
        state.arrived()
        return batch_answer(
            results,
            single,
            {
                "created": sum(r["status"] == 201 for r in results),
                "updated": sum(r.get("result") == "updated" for r in results),
                "unchanged": sum(r.get("result") == "unchanged" for r in results),
            },
        )

    def read_one(email: str) -> dict[str, Any]:
        with session_scope(engine) as session:
            lead = get_lead(session, email)
            enrollments = list(
                session.exec(select(Enrollment).where(Enrollment.lead_id == lead.id))
            )
            assert lead.id is not None
            return lead_detail(lead, enrollments, events_of(session, lead.id))

    @routes.get("/api/leads/{email}", summary="One lead")
    async def get_one(email: str, request: Request) -> JSONResponse:
        """The lead with its scores, stage, owner, consent, enrollments and timeline."""
        _, refused = keys.check(request)
        if refused is not None:
            return refused
        try:
            return JSONResponse(await run_in_threadpool(read_one, email))
        except (LeadNotFoundError, InvalidValueError):
            return JSONResponse({"detail": "no such lead"}, 404)

    def read_page(
        stage: str | None, owner: str | None, since: datetime | None,
        after: tuple[datetime, int] | None, limit: int,
    ) -> tuple[list[Lead], bool]:  # fmt: skip
        query = select(Lead).order_by(col(Lead.updated_at), col(Lead.id))
        if stage:
            query = query.where(Lead.stage == stage)
        if owner:
            query = query.where(Lead.owner == owner)
        if since is not None:
            query = query.where(col(Lead.updated_at) >= since)
        if after is not None:
            moment, lead_id = after
            query = query.where(
                or_(
                    col(Lead.updated_at) > moment,
                    and_(col(Lead.updated_at) == moment, col(Lead.id) > lead_id),
                )
            )
        with session_scope(engine) as session:
            rows = list(session.exec(query.limit(limit + 1)))
        return rows[:limit], len(rows) > limit

    def position(cursor: str) -> tuple[datetime, int]:
        payload = unseal(secret, CURSOR_PURPOSE, cursor)
        moment, _, lead_id = (payload or "").partition("|")
        try:
            return datetime.fromisoformat(moment), int(lead_id)
        except ValueError:
            raise InvalidValueError("cursor: not a cursor this API gave") from None

    @routes.get("/api/leads", summary="Leads, page by page")
    async def get_page(
        request: Request,
        stage: str | None = None,
        owner: str | None = None,
        updated_since: str | None = None,
        cursor: str | None = None,
        limit: int = PAGE,
    ) -> JSONResponse:
        """Leads in a stable order (last change, then id), ``limit`` (at most 1000) at a
        time. Keep ``next_cursor`` and pass it as ``cursor`` for the next page, now or
        later: leads changed since come after it (incremental sync)."""
        _, refused = keys.check(request)
        if refused is not None:
            return refused
        try:
            if not 1 <= limit <= MAX_BATCH:
                raise InvalidValueError(f"limit: 1 to {MAX_BATCH}")
            wanted_stage = parse_stage(stage).value if stage else None
            wanted_owner = normalize_email(owner) if owner else None
            since = parse_moment(updated_since) if updated_since else None
            after = position(cursor) if cursor else None
        except InvalidValueError as exc:
            return JSONResponse({"detail": str(exc)}, 422)
        leads, more = await run_in_threadpool(
            read_page, wanted_stage, wanted_owner, since, after, limit
        )
        next_cursor = cursor
        if leads:
            last = leads[-1]
            next_cursor = seal(secret, CURSOR_PURPOSE, f"{last.updated_at.isoformat()}|{last.id}")
        return JSONResponse(
            {"leads": [lead_payload(lead) for lead in leads], "next_cursor": next_cursor,
             "has_more": more}
        )  # fmt: skip

    def erase(email: str, key: str) -> dict[str, Any]:
        erased = erase_person(engine, email, state.config.outbox_dir)
        logs.action("lead erased", level=logging.WARNING, found=erased.found, key=key)
        return {"erased": erased.found, "suppressed": True}

    @routes.delete("/api/leads/{email}", summary="Erase a person")
    async def delete_one(email: str, request: Request) -> JSONResponse:
        """Erase the person (right to erasure): the lead, its events, enrollments,
        tasks and every message to them go; a keyed hash of the address stays on the
        suppression list so nothing emails them again unless they opt in anew."""
        key, refused = keys.check(request)
        if refused is not None:
            return refused
        try:
            return JSONResponse(await run_in_threadpool(erase, email, key))
        except InvalidValueError as exc:
            return JSONResponse({"detail": str(exc)}, 422)

    return routes
