"""Recipients' links: what the people we email reach by clicking.

- ``GET|HEAD /o/{token}``: the open pixel, always served; records ``email_opened``.
- ``GET|HEAD /c/{token}``: a tracked link; redirects only to the URL the signed token
  names in that email's own list of links; anything else is a 404, never a redirect.
- ``GET /u/{token}``: a page with a confirm button (link scanners prefetch GETs, so a GET
  never unsubscribes); ``POST /u/{token}``: unsubscribes, including RFC 8058 one-click.
"""

from __future__ import annotations

import html
from datetime import datetime, timedelta

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import update
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool

from nurture import clock, logs
from nurture.mail.compose import TEST_LEAD_ID, UnsubscribeLink, read_unsubscribe_link
from nurture.mail.tracking import LINK_BURST, machine_reason, read_click, read_open
from nurture.store.arrivals import announce
from nurture.store.database import session_scope
from nurture.store.events import Event, record_event
from nurture.store.leads import Lead
from nurture.store.meta import links_bound_since
from nurture.store.outbox import MessageKind, OutboxMessage
from nurture.store.sending import wait_in_flight
from nurture.web.state import NO_CACHE, WebState, client, not_found, page

#: A transparent 1x1 GIF.
PIXEL = bytes.fromhex(
    "47494638396101000100800000000000ffffff21f90401000000002c000000000100010000020144003b"
)
#: The same open or click of the same email this soon again is the same engagement.
REPEAT_WINDOW = timedelta(minutes=10)


def _machine_hit(tracking_id: str, index: int, now: datetime) -> str:
    """One name for every machine hit of link *index* in the same repeat window."""
    window = int(now.timestamp() // REPEAT_WINDOW.total_seconds())
    return f"machine:{tracking_id}:{index}:{window}"


#: Longest an unsubscribe waits for a message being handed to the mail server to them.
IN_FLIGHT_WAIT = 10.0

#: What a test send's unsubscribe link shows (GET or POST): nothing changes.
TEST_UNSUBSCRIBE = (
    "<h1>This was a test email</h1><p>In a real email, this link unsubscribes the "
    "person it was sent to. Nothing was changed.</p>"
)


def _message_for(session: Session, tracking_id: str) -> OutboxMessage | None:
    query = select(OutboxMessage).where(OutboxMessage.tracking_id == tracking_id)
    return session.exec(query).first()


def router(state: WebState) -> APIRouter:
    """The recipients' routes of one project."""
    routes = APIRouter(include_in_schema=False)
    engine, secret = state.engine, state.secret

    def record_open(tracking_id: str, method: str, ip: str, agent: str) -> None:
        now = clock.now()
        with session_scope(engine) as session:
            row = _message_for(session, tracking_id)
            if row is None or row.lead_id is None:
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

    @routes.api_route("/o/{token:token}", methods=["GET", "HEAD"])
    def open_pixel(token: str, request: Request) -> Response:
        tracking_id = read_open(secret, token)
        if tracking_id is not None:
            ip, agent = client(request)
            try:
                record_open(tracking_id, request.method, ip, agent)
            except Exception:  # the image is served whatever happens to the record
                logs.logger.exception("cannot record an open")
        return Response(PIXEL, media_type="image/gif", headers=NO_CACHE)

    @routes.api_route("/c/{token:token}", methods=["GET", "HEAD"])
    def click(token: str, request: Request) -> Response:
        found = read_click(secret, token)
        if found is None:
            return not_found()
        tracking_id, index = found
        ip, agent = client(request)
        now = clock.now()
        woke: list[bool] = []
        with session_scope(engine) as session:
            row = _message_for(session, tracking_id)
            if row is not None and row.kind == MessageKind.test and index < len(row.links):
                return RedirectResponse(row.links[index], status_code=302, headers=NO_CACHE)
            if row is None or row.lead_id is None or index >= len(row.links):
                return not_found()
            url = row.links[index]
            recent = list(
                session.exec(
                    select(Event)
                    .where(Event.lead_id == row.lead_id)
                    .where(Event.type == "email_clicked")
                    .where(col(Event.sequence) == row.sequence)
                    .where(col(Event.step) == row.step)
                    .where(col(Event.occurred_at) >= now - REPEAT_WINDOW)
                )
            )
            others = [
                e for e in recent if e.data.get("url") != url and e.occurred_at >= now - LINK_BURST
            ]
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
            if reason is not None and any(e.machine and e.data.get("url") == url for e in recent):
                # A machine hitting the same link again within the window: once is enough.
                return RedirectResponse(url, status_code=302, headers=NO_CACHE)
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
                # Concurrent machine hits of one link: the database keeps one per window.
                source_id=None if reason is None else _machine_hit(tracking_id, index, now),
            )
            if recorded.new and reason is None:
                # A person's click may make the lead hot: the fast lane scores it now.
                announce(session, [row.lead_id])
                woke.append(True)
            if recorded.new:
                logs.action(
                    "email clicked",
                    lead=row.recipient,
                    sequence=row.sequence,
                    step=row.step,
                    url=url,
                    machine=reason,
                )
        if woke:
            state.arrived()
        return RedirectResponse(url, status_code=302, headers=NO_CACHE)

    @routes.get("/u/{token:token}")
    def unsubscribe_page(token: str) -> HTMLResponse:
        link = read_unsubscribe_link(secret, token)
        if link is None:
            return not_found()
        if link.lead_id == TEST_LEAD_ID:
            return page("Test email", TEST_UNSUBSCRIBE)
        lead = link_lead(link)
        if lead is None:
            return not_found()
        if lead.status == "unsubscribed":
            return page(
                "Unsubscribed",
                "<h1>You are unsubscribed</h1><p>You will get no more emails from us.</p>",
            )
        return page(
            "Unsubscribe",
            f"<h1>Unsubscribe {html.escape(lead.email)}?</h1>"
            "<p>You will get no more emails from us.</p>"
            '<form method="post"><button type="submit">Unsubscribe</button></form>',
        )

    def link_lead(link: UnsubscribeLink) -> Lead | None:
        """The lead *link* names, if it is still the person it was made for."""
        with session_scope(engine) as session:
            lead = session.get(Lead, link.lead_id)
            bound_since = links_bound_since(session)
        if lead is None or not link.names(secret, lead.email, lead.created_at, bound_since):
            return None
        return lead

    def unsubscribe_now(link: UnsubscribeLink, one_click: bool, ip: str) -> bool:
        lead_id, sequence, step = link.lead_id, link.sequence, link.step
        with session_scope(engine) as session:
            lead = session.get(Lead, lead_id)
            if lead is None or not link.names(secret, lead.email, lead.created_at,
                                               links_bound_since(session)):  # fmt: skip
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
        # Nothing on its way to them once the page says they are unsubscribed.
        wait_in_flight(engine, lead_id, IN_FLIGHT_WAIT)
        return True

    @routes.post("/u/{token:token}")
    async def unsubscribe(token: str, request: Request) -> HTMLResponse:
        link = read_unsubscribe_link(secret, token)
        if link is None:
            return not_found()
        if link.lead_id == TEST_LEAD_ID:
            return page("Test email", TEST_UNSUBSCRIBE)
        body = (await request.body())[:1000]
        one_click = b"List-Unsubscribe=One-Click" in body
        ip, _ = client(request)
        if not await run_in_threadpool(unsubscribe_now, link, one_click, ip):
            return not_found()
        return page(
            "Unsubscribed",
            "<h1>You are unsubscribed</h1><p>You will get no more emails from us.</p>",
        )

    return routes
