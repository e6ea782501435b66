"""Webhook calls: the hand-off notice to ``[sales] webhook_url`` (Slack-compatible) and
signed event deliveries to the ``[[webhooks]]`` endpoints.

Every call is a :class:`~nurture.store.handoffs.Webhook` row, stored before it is made and
made until it succeeds, once. A ``[[webhooks]]`` delivery is a JSON body ``{"id",
"type", "created", "data"}`` signed as Stripe and GitHub do:
``X-Nurture-Signature: t=TIMESTAMP,v1=HEX`` where HEX is HMAC-SHA256 of the endpoint's
secret over ``"TIMESTAMP.BODY"``; it is retried with backoff until a 2xx (for up to
:data:`GIVE_UP`), with the same ``id`` every time, so the receiver can drop repeats.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from nurture import clock, hooks, logs
from nurture.config import Settings, WebhookEndpoint, public_url
from nurture.engine.context import Context
from nurture.mail.pacing import send_backoff
from nurture.store.database import session_scope
from nurture.store.handoffs import Webhook, WebhookStatus
from nurture.store.leads import Lead
from nurture.store.outbound import WebhookEvent, new_id

if TYPE_CHECKING:  # imported where calls are made: the pass process, which only
    # queues them, starts without it
    import httpx

#: A ``[[webhooks]]`` delivery refused for this long is given up as failed.
GIVE_UP = timedelta(days=3)
SIGNATURE_HEADER = "X-Nurture-Signature"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Nurture-Signature`` value for *body* sent at *timestamp* (Unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_signature(secret: str, header: str, body: bytes, now: int, tolerance: int = 300) -> bool:
    """Whether *header* signs *body* under *secret* within *tolerance* seconds of *now*:
    what a receiver does (shown in the README; the tests' receiver uses it)."""
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    try:
        timestamp = int(parts.get("t", ""))
    except ValueError:
        return False
    if abs(now - timestamp) > tolerance:
        return False
    expected = signature(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def encode(body: dict[str, Any]) -> bytes:
    """The exact bytes sent (and signed)."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def lead_payload(lead: Lead) -> dict[str, Any]:
    """A lead as deliveries and the leads API show it: its fields and its scores."""
    return {**lead.to_dict(), "engagement": round(lead.engagement, 2), "fit": lead.fit}


def delivery_body(
    event_id: str, kind: str, created: datetime, data: dict[str, Any]
) -> dict[str, Any]:
    return {"id": event_id, "type": kind, "created": created.isoformat(), "data": data}


def dispatch(ctx: Context, limit: int = 500) -> int:
    """Turn the queued webhook events into one delivery per endpoint that wants each;
    return how many deliveries were queued. Events nobody wants are dropped.

    A lead erased while a batch is built takes its deliveries with it: the schema
    refuses a delivery about a lead that is gone, and the batch is built again."""
    queued, refused = 0, 0
    while True:
        try:
            made = _dispatch_batch(ctx, limit)
        except IntegrityError:
            refused += 1
            if refused > DISPATCH_ATTEMPTS:
                raise
            continue
        if made is None:
            return queued
        queued += made


#: Times a batch of webhook events is built again after an erasure took a lead from it.
DISPATCH_ATTEMPTS = 5


def _dispatch_batch(ctx: Context, limit: int) -> int | None:
    """One batch of :func:`dispatch`: how many deliveries it queued (``None``: no event
    was waiting)."""
    endpoints = ctx.config.settings.webhooks
    queued = 0
    with session_scope(ctx.engine) as session:
        # The batch as plain (id, type) rows: most are wanted by no endpoint (none may be
        # set), and only those wanted are read whole.
        table = WebhookEvent.__table__  # type: ignore[attr-defined]
        batch = list(
            session.connection().execute(
                sa_select(table.c.id, table.c.type)
                .order_by(table.c.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        )
        if not batch:
            return None
        wanted = [row.id for row in batch if any(e.wants(row.type) for e in endpoints)]
        rows = list(
            session.exec(select(WebhookEvent).where(col(WebhookEvent.id).in_(wanted)))
        ) if wanted else []  # fmt: skip
        lead_ids = {row.lead_id for row in rows if row.lead_id is not None}
        leads = {
            lead.id: lead
            for lead in session.exec(select(Lead).where(col(Lead.id).in_(lead_ids)))
        } if lead_ids else {}  # fmt: skip
        for row in sorted(rows, key=lambda r: r.id or 0):
            wanting = [e for e in endpoints if e.wants(row.type)]
            lead = leads.get(row.lead_id) if row.lead_id is not None else None
            if lead is None:
                continue
            body = delivery_body(
                row.public_id, row.type, row.created_at,
                {"lead": lead_payload(lead), **row.data},
            )  # fmt: skip
            for endpoint in wanting:
                session.add(_delivery(endpoint, body, row.type, row.lead_id, row.created_at))
                queued += 1
        hooks.reach("dispatch.before_write", session)
        session.connection().execute(
            delete(table).where(table.c.id.in_([row.id for row in batch]))
        )
    return queued


def _delivery(
    endpoint: WebhookEndpoint,
    body: dict[str, Any],
    kind: str,
    lead_id: int | None,
    now: datetime,
) -> Webhook:
    return Webhook(
        idempotency_key=f"{body['id']}:{endpoint.name}",
        url=endpoint.url,
        body=body,
        endpoint=endpoint.name,
        event_type=kind,
        lead_id=lead_id,
        next_attempt_at=now,
        created_at=now,
    )


@dataclass(frozen=True)
class Request:
    """One call, ready to make."""

    id: int
    url: str
    content: bytes
    headers: dict[str, str]
    #: A ``[[webhooks]]`` delivery (retried until a 2xx), not the hand-off notice.
    signed: bool


def prepare(call: Webhook, settings: Settings, now: datetime) -> Request | str:
    """The request for *call*, signed now for a ``[[webhooks]]`` endpoint; or why it
    cannot be made (its entry is gone from the settings)."""
    assert call.id is not None
    content = encode(call.body)
    headers = {"Content-Type": "application/json", "Idempotency-Key": call.idempotency_key}
    if call.endpoint is None:
        return Request(call.id, call.url, content, headers, signed=False)
    endpoint = settings.webhook(call.endpoint)
    if endpoint is None:
        return f"no [[webhooks]] entry is named {call.endpoint!r} any more"
    headers[SIGNATURE_HEADER] = signature(endpoint.secret, int(now.timestamp()), content)
    headers["X-Nurture-Event"] = call.event_type or ""
    return Request(call.id, endpoint.url, content, headers, signed=True)


async def post(client: httpx.AsyncClient, request: Request) -> tuple[str | None, bool]:
    """Make one call: (``None``, _) on a 2xx, else the error and whether to retry. The
    hand-off notice retries a 408, 429, 5xx or network error; a signed delivery retries
    anything but a 2xx."""
    import httpx

    try:
        response = await client.post(request.url, content=request.content,
                                      headers=request.headers)  # fmt: skip
    except httpx.HTTPError as exc:  # its text may name the URL: never its credentials
        said = str(exc).replace(request.url, public_url(request.url))
        return f"{type(exc).__name__}: {said}", True
    if response.is_success:
        return None, False
    status = response.status_code
    return f"HTTP {status}", request.signed or status in (408, 429) or status >= 500


async def deliver_webhooks(ctx: Context, request_timeout: float = 10.0) -> tuple[int, int]:
    """Make every due webhook call; return (sent, to retry)."""
    await asyncio.to_thread(dispatch, ctx)
    now = clock.now()
    settings = ctx.config.settings

    def due() -> list[Request | tuple[int, str]]:
        """Claim the due calls: other workers skip them, and they come due again only if
        this one dies before recording how they went (the receiver sees the same
        Idempotency-Key, and the same event id)."""
        with session_scope(ctx.engine) as session:
            calls = list(
                session.exec(
                    select(Webhook)
                    .where(Webhook.status == WebhookStatus.queued.value)
                    .where(col(Webhook.next_attempt_at) <= now)
                    .order_by(col(Webhook.id))
                    .limit(ctx.batch_size)
                    .with_for_update(skip_locked=True)
                )
            )
            claimed_until = now + timedelta(seconds=request_timeout * (len(calls) + 6))
            prepared: list[Request | tuple[int, str]] = []
            for call in calls:
                call.next_attempt_at = claimed_until
                session.add(call)
                made = prepare(call, settings, now)
                prepared.append(made if isinstance(made, Request) else (call.id or 0, made))
            return prepared

    calls = await asyncio.to_thread(due)
    if not calls:
        return 0, 0
    results: list[tuple[int, str | None, bool]] = []
    import httpx

    async with httpx.AsyncClient(timeout=request_timeout) as client:
        for call in calls:
            if isinstance(call, tuple):
                results.append((call[0], call[1], False))
                continue
            if not await asyncio.to_thread(_still_there, ctx, call.id):
                continue  # erased with its lead since it was claimed: never made
            error, retry = await post(client, call)
            results.append((call.id, error, retry))
    return await asyncio.to_thread(_record, ctx, results)


def _still_there(ctx: Context, call_id: int) -> bool:
    """Whether the call is still stored (an erasure deletes the calls about a person)."""
    with session_scope(ctx.engine) as session:
        return session.get(Webhook, call_id) is not None


def _record(ctx: Context, results: list[tuple[int, str | None, bool]]) -> tuple[int, int]:
    sent = retrying = 0
    moment = clock.now()
    with session_scope(ctx.engine) as session:
        for call_id, error, retry in results:
            call = session.get(Webhook, call_id)
            if call is None:
                continue
            call.attempts += 1
            call.last_error = error
            if error is None:
                call.status, call.sent_at = WebhookStatus.sent.value, moment
                sent += 1
            elif retry and not (call.endpoint and moment - call.created_at > GIVE_UP):
                call.next_attempt_at = moment + send_backoff(ctx, call.attempts)
                retrying += 1
                logs.action("webhook will be retried", level=logging.WARNING,
                            key=call.idempotency_key, error=error)  # fmt: skip
            else:
                call.status = WebhookStatus.failed.value
                logs.action("webhook failed", level=logging.ERROR, key=call.idempotency_key,
                            error=error)  # fmt: skip
            session.add(call)
    return sent, retrying


def list_deliveries(
    session: Session, endpoint: str | None = None, status: str | None = None, limit: int = 50
) -> list[Webhook]:
    """The newest calls (to one endpoint, in one status), newest first."""
    query = select(Webhook)
    if endpoint is not None:
        query = query.where(col(Webhook.endpoint) == endpoint)
    if status is not None:
        query = query.where(col(Webhook.status) == status)
    return list(session.exec(query.order_by(col(Webhook.id).desc()).limit(limit)))


async def send_test(
    ctx: Context, endpoint: WebhookEndpoint, request_timeout: float = 10.0
) -> Webhook:
    """Send a signed ``webhook.test`` event to *endpoint* now, record it, and return the
    record (``sent``, or ``failed`` with the answer: a test is not retried)."""
    now = clock.now()
    body = delivery_body(new_id(), "webhook.test", now, {"endpoint": endpoint.name})
    call = _delivery(endpoint, body, "webhook.test", None, now)

    def store() -> Webhook:
        with session_scope(ctx.engine) as session:
            session.add(call)
            session.flush()
            return call

    stored = await asyncio.to_thread(store)
    made = prepare(stored, ctx.config.settings, now)
    assert isinstance(made, Request)
    import httpx

    async with httpx.AsyncClient(timeout=request_timeout) as client:
        error, _ = await post(client, made)
    assert stored.id is not None
    await asyncio.to_thread(_record, ctx, [(stored.id, error, False)])
    with session_scope(ctx.engine) as session:
        row = session.get(Webhook, stored.id)
        assert row is not None
        return row
