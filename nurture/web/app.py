"""The sales app (``/app/``): people, on a phone or a desktop, without a terminal.

- ``/app/login``: an address; a one-time sign-in link is emailed (the same answer
  whether the address may sign in or not; rate-limited). ``GET /app/signin/TOKEN``
  shows a button, the ``POST`` signs in (a link scanner's GET changes nothing).
- ``/app/``: my pending hand-offs, the sales inbox's (for ``notify_email`` and
  managers), today's and overdue tasks; managers see everyone's.
- ``/app/leads/ID``: who, why hot, the timeline, sequences; accept, reject, recycle,
  claim; the lead's tasks. ``/app/l/TOKEN``: the same page from a notice's link, no
  sign-in needed (bound to that lead and that salesperson).
- ``/app/tasks``: my tasks, done with an outcome or snoozed.

Server-rendered Jinja2, one stylesheet, no script; every form carries a CSRF token,
every answer is a POST.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from nurture import clock, logs
from nurture.errors import InvalidValueError, LeadNotFoundError, NurtureError
from nurture.language.fields import normalize_email
from nurture.language.scoring import ScoringRules, load_scoring
from nurture.language.timing import day_start, localize, zone
from nurture.reports import handoffs as handoff_report
from nurture.sales.mail import queue_sales_mail, render
from nurture.store.access import (
    AccessLink,
    LinkPurpose,
    People,
    check_link_csrf,
    find_link,
    issue_link,
    link_csrf,
    open_session,
    recent_signin_links,
    use_signin,
)
from nurture.store.database import session_scope
from nurture.store.handoffs import answer_handoff, claim_lead, pending_handoff
from nurture.store.leads import Lead
from nurture.store.outbox import MessageKind
from nurture.store.tasks import Task, complete_task, snooze_task, take_task
from nurture.web import desk
from nurture.web.auth import (
    CSRF_FIELD,
    SESSION_COOKIE,
    RateLimit,
    Viewer,
    cross_site,
    form_csrf,
    form_csrf_ok,
    form_token,
    same,
    set_form_cookie,
    set_session_cookie,
    viewer,
)
from nurture.web.state import WebState, record_id

#: Sign-in links one address is sent per :data:`SIGNIN_WINDOW`.
SIGNIN_PER_ADDRESS = 3
SIGNIN_WINDOW = timedelta(minutes=15)
#: Sign-in requests one client address may make per window (whatever the addresses).
SIGNIN_PER_CLIENT = 10
#: The largest form the app reads.
MAX_FORM = 16 * 1024
HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
}
#: What a page says after a POST (only these: nothing from the URL is shown as is).
MESSAGES = {
    "accepted": "Accepted: the lead is yours.",
    "rejected": "Rejected: kept as disqualified, with your reason.",
    "recycled": "Recycled: back to nurture.",
    "claimed": "Claimed: the lead is yours, stage accepted.",
    "done": "Task done.",
    "snoozed": "Task snoozed.",
    "taken": "Task taken: it is yours now.",
    "signed-out": "You are signed out.",
}
SNOOZES = {"1h": "1 hour", "tomorrow": "Tomorrow morning", "next-week": "Next Monday"}


@cache
def stylesheet() -> bytes:
    return resources.files("nurture.web").joinpath("static/app.css").read_bytes()


def snooze_until(choice: str, now: datetime, tz_name: str) -> datetime:
    """When a task snoozed with *choice* comes back (mornings at 09:00 local)."""
    tz = zone(tz_name)
    if choice == "1h":
        return now + timedelta(hours=1)
    days = 1
    if choice == "next-week":
        days = 7 - now.astimezone(tz).weekday()
    elif choice != "tomorrow":
        raise InvalidValueError(f"snooze for {', '.join(SNOOZES.values())}")
    day = day_start(now, tz, days_on=days).astimezone(tz).date()
    while choice == "tomorrow" and day.weekday() >= 5:
        day += timedelta(days=1)
    return localize(day, 9 * 60, tz)


def with_actions(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Task rows whose forms post to ``/app/tasks/ID``."""
    for row in rows:
        row["action"] = f"/app/tasks/{row['id']}"
    return rows


def router(state: WebState) -> APIRouter:
    """The people's routes of one project."""
    routes = APIRouter(include_in_schema=False)
    engine, secret, config = state.engine, state.secret, state.config
    settings = config.settings
    people = People(settings.sales)
    per_client = RateLimit(SIGNIN_PER_CLIENT, SIGNIN_WINDOW.total_seconds())

    def tz_of(email: str) -> str:
        return settings.sales.timezone_of(email, settings.project.default_timezone)

    def who_of(email: str) -> desk.Who:
        return desk.Who.of(people, email, tz_of(email))

    def rules() -> ScoringRules | None:
        loaded, _ = load_scoring(config.scoring_file)
        return loaded

    def show(name: str, status: int = 200, **values: Any) -> HTMLResponse:
        values.setdefault("who", None)
        values.setdefault("message", "")
        values.setdefault("error", "")
        values.setdefault("csrf", "")
        values.setdefault("project", settings.project.name)
        return HTMLResponse(render(f"app/{name}.html.j2", **values), status, headers=HEADERS)

    def go(url: str, message: str = "") -> RedirectResponse:
        target = url + (("&" if "?" in url else "?") + urlencode({"m": message}) if message else "")
        return RedirectResponse(target, status_code=303, headers=HEADERS)

    def message_of(request: Request) -> str:
        return MESSAGES.get(request.query_params.get("m", ""), "")

    async def form(request: Request) -> dict[str, str]:
        """The urlencoded form of a POST (at most :data:`MAX_FORM` bytes)."""
        body = await request.body()
        if len(body) > MAX_FORM:
            raise InvalidValueError("the form is too large")
        from urllib.parse import parse_qsl

        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
        except (UnicodeDecodeError, ValueError):
            raise InvalidValueError("the form could not be read") from None
        return {key: value for key, value in pairs}

    def refused(status: int = 403, text: str = "This form has expired: go back, reload the "
                "page and try again.") -> HTMLResponse:  # fmt: skip
        return show("message", status, title="Not allowed", text=text)

    def not_found() -> HTMLResponse:
        return show("message", 404, title="Not found",
                    text="This link is not valid, or it has expired.")  # fmt: skip

    def signed_in(request: Request) -> Viewer | None:
        return viewer(state, request)

    def to_login() -> RedirectResponse:
        return RedirectResponse("/app/login", status_code=303, headers=HEADERS)

    # --- static -------------------------------------------------------------------------

    @routes.get("/app/static/app.css")
    def css() -> Response:
        return Response(stylesheet(), media_type="text/css",
                        headers={"Cache-Control": "public, max-age=3600"})  # fmt: skip

    # --- signing in ---------------------------------------------------------------------

    @routes.get("/app/login")
    def login_page(request: Request) -> HTMLResponse:
        form_id = form_token(request)
        response = show("login", csrf=form_csrf(secret, form_id), message=message_of(request))
        set_form_cookie(state, response, form_id)
        return response

    def send_signin(email: str, ip: str) -> None:
        """Look the address up and, if it may sign in, queue its link. Done in the
        background, after the answer: known and unknown addresses are answered alike,
        in the same time."""
        now = clock.now()
        with session_scope(engine) as session:
            if not people.known(session, email):
                logs.action("sign-in refused: unknown address", ip=ip)
                return
            if recent_signin_links(session, email, now - SIGNIN_WINDOW) >= SIGNIN_PER_ADDRESS:
                logs.action("sign-in link not sent: too many asked", to=email, ip=ip)
                return
            lifetime = timedelta(minutes=settings.app.signin_minutes)
            token = issue_link(session, secret, LinkPurpose.signin, email, lifetime=lifetime,
                               now=now)  # fmt: skip
            queue_sales_mail(
                session, config, kind=MessageKind.signin, key=f"signin:{token[:16]}", to=email,
                subject=f"Sign in to {settings.project.name}'s sales workspace",
                template="signin", now=now,
                values={"url": f"{settings.tracking.base_url}/app/signin/{token}",
                        "minutes": settings.app.signin_minutes},
            )  # fmt: skip
            logs.action("sign-in link queued", to=email)

    @routes.post("/app/login")
    async def login(request: Request) -> HTMLResponse:
        try:
            fields = await form(request)
        except InvalidValueError:
            return refused(400, "The form could not be read.")
        if cross_site(request) or not form_csrf_ok(secret, request, fields.get(CSRF_FIELD, "")):
            return refused()
        given = fields.get("email", "").strip()
        try:
            email = normalize_email(given)
        except InvalidValueError:
            csrf = form_csrf(secret, form_token(request))
            return show("login", 422, csrf=csrf, email=given[:320],
                        error="That does not look like an email address.")  # fmt: skip
        ip = request.client.host if request.client else ""
        # The same answer whatever happened: nobody learns who may sign in, neither from
        # what it says nor from how long it takes (the address is looked up after it).
        answer = show("login_sent", email=email)
        if per_client.allow(ip):
            state.background.after(answer, "sign-in link", send_signin, email, ip)
        else:
            logs.action("sign-in requests from one client over the limit", ip=ip)
        return answer

    @routes.get("/app/signin/{token:token}")
    def signin_page(token: str, request: Request) -> HTMLResponse:
        with session_scope(engine) as session:
            link = find_link(session, secret, LinkPurpose.signin, token)
            email = link.email if link is not None else None
        if email is None:
            return show("message", 404, title="This sign-in link cannot be used",
                        text="It was used already, or it has expired. Ask for a new one.",
                        login=True)  # fmt: skip
        form_id = form_token(request)
        response = show("signin", csrf=form_csrf(secret, form_id), email=email, token=token)
        set_form_cookie(state, response, form_id)
        return response

    def start_session(token: str) -> str | None:
        now = clock.now()
        with session_scope(engine) as session:
            link = use_signin(session, secret, token, now)
            if link is None:
                return None
            cookie, _ = open_session(session, secret, link.email,
                                     days=settings.app.session_days, now=now)  # fmt: skip
            logs.action("signed in", who=link.email)
            return cookie

    @routes.post("/app/signin/{token:token}")
    async def signin(token: str, request: Request) -> Response:
        try:
            fields = await form(request)
        except InvalidValueError:
            return refused(400, "The form could not be read.")
        if cross_site(request) or not form_csrf_ok(secret, request, fields.get(CSRF_FIELD, "")):
            return refused()
        cookie = await run_in_threadpool(start_session, token)
        if cookie is None:
            return show("message", 404, title="This sign-in link cannot be used",
                        text="It was used already, or it has expired. Ask for a new one.",
                        login=True)  # fmt: skip
        response = go("/app/")
        set_session_cookie(state, response, cookie)
        return response

    @routes.post("/app/logout")
    async def logout(request: Request) -> Response:
        me = signed_in(request)
        try:
            fields = await form(request)
        except InvalidValueError:
            return refused(400, "The form could not be read.")
        if cross_site(request) or me is None or not same(me.csrf, fields.get(CSRF_FIELD, "")):
            return refused()

        def end() -> None:
            from nurture.store.access import find_session

            with session_scope(engine) as session:
                row = find_session(session, secret, request.cookies.get(SESSION_COOKIE, ""))
                if row is not None:
                    row.ended_at = clock.now()
                    session.add(row)

        await run_in_threadpool(end)
        response = go("/app/login", "signed-out")
        response.delete_cookie(SESSION_COOKIE, path="/app")
        return response

    # --- pages of a signed-in salesperson ------------------------------------------------

    @routes.get("/app/")
    def home(request: Request) -> Response:
        me = signed_in(request)
        if me is None:
            return to_login()
        who = who_of(me.email)
        with session_scope(engine) as session:
            queues = desk.home(session, who, clock.now())
        with_actions(queues["tasks"])
        return show("home", who=who, csrf=me.csrf, message=message_of(request),
                    tz=tz_of(me.email), snoozes=SNOOZES, **queues)  # fmt: skip

    @routes.get("/app/report/handoffs")
    def handoffs_report(request: Request) -> Response:
        """How our hot-lead definition is doing: for everyone on the sales side."""
        if signed_in(request) is None:
            return to_login()
        with session_scope(engine) as session:
            rows = handoff_report.gather(session, rules(), None, clock.now())
        data = handoff_report.summarize(rows, rules())
        return HTMLResponse(handoff_report.to_html(data, rows, config.settings.project.name))

    @routes.get("/app")
    def home_slash() -> RedirectResponse:
        return RedirectResponse("/app/", status_code=308)

    def tasks_view(me: Viewer, status: int = 200, **extra: Any) -> HTMLResponse:
        who = who_of(me.email)
        with session_scope(engine) as session:
            rows = desk.my_tasks(session, who, clock.now())
        return show("tasks", status, who=who, csrf=me.csrf, tasks=with_actions(rows),
                    tz=tz_of(me.email), snoozes=SNOOZES, **extra)  # fmt: skip

    @routes.get("/app/tasks")
    def tasks_page(request: Request) -> Response:
        me = signed_in(request)
        if me is None:
            return to_login()
        return tasks_view(me, message=message_of(request))

    @routes.get("/app/leads")
    def leads_page(request: Request) -> Response:
        me = signed_in(request)
        if me is None:
            return to_login()
        who = who_of(me.email)
        text = request.query_params.get("q", "")[:100]
        with session_scope(engine) as session:
            found = [
                {"id": lead.id, "name": lead.full_name or lead.email,
                 "company": lead.company or "", "stage": lead.stage,
                 "owner": lead.owner or ""}
                for lead in desk.search(session, who, text)
            ]  # fmt: skip
        return show("leads", who=who, csrf=me.csrf, leads=found, q=text)

    def lead_view(who: desk.Who, lead_id: int, status: int = 200, **extra: Any) -> HTMLResponse:
        with session_scope(engine) as session:
            lead = session.get(Lead, lead_id)
            if lead is None or not desk.may_open(session, who, lead):
                return not_found()
            loaded = rules()
            page = desk.lead_page(session, who, lead, loaded, clock.now())
        return show("lead", status, who=who, tz=tz_of(who.email), page=page, snoozes=SNOOZES,
                    reasons=loaded.reasons if loaded else {}, **extra)  # fmt: skip

    @routes.get("/app/leads/{lead_id}")
    def lead_page(lead_id: str, request: Request) -> Response:
        me = signed_in(request)
        if me is None:
            return to_login()
        found = record_id(lead_id)
        if found is None:
            return not_found()
        return lead_view(who_of(me.email), found, csrf=me.csrf, base=f"/app/leads/{found}",
                         message=message_of(request))  # fmt: skip

    # --- a notice's link ------------------------------------------------------------------

    def link_of(token: str) -> tuple[str, int] | None:
        with session_scope(engine) as session:
            link: AccessLink | None = find_link(session, secret, LinkPurpose.lead, token)
            if link is None or link.lead_id is None or not people.known(session, link.email):
                return None
            return link.email, link.lead_id

    @routes.get("/app/l/{token:token}")
    def link_page(token: str, request: Request) -> Response:
        found = link_of(token)
        if found is None:
            return not_found()
        email, lead_id = found
        who = desk.Who(
            email,
            False,
            people.sees_desk(email),
            zone(tz_of(email)),
            desk.Who.of(people, email, tz_of(email)).inbox,
        )
        return lead_view(who, lead_id, csrf=link_csrf(secret, token), base=f"/app/l/{token}",
                         via_link=True, message=message_of(request))  # fmt: skip

    # --- answers --------------------------------------------------------------------------

    Act = Callable[[Session, desk.Who, Lead, dict[str, str]], str]

    def act(who: desk.Who, lead_id: int, fields: dict[str, str], action: Act) -> str:
        with session_scope(engine) as session:
            lead = session.get(Lead, lead_id)
            if lead is None or not desk.may_open(session, who, lead):
                raise LeadNotFoundError("no such lead")
            return action(session, who, lead, fields)

    def answer(via: str) -> Act:
        def run(session: Session, who: desk.Who, lead: Lead, fields: dict[str, str]) -> str:
            assert lead.id is not None
            handoff = pending_handoff(session, lead.id)
            if handoff is None:
                raise InvalidValueError("This lead is not waiting for an answer any more.")
            if not desk.may_answer(who, handoff):
                raise InvalidValueError(f"This hand-off is {handoff.owner}'s to answer.")
            word = fields.get("answer", "")
            # A reason of the shared list (scoring.yaml's reasons), else "other" in words.
            chosen = fields.get("choice", "").strip()
            reason = fields.get("reason", "").strip()[:2000] or None
            if chosen and chosen != "other":
                reason = chosen[:2000]
            if word in ("reject", "recycle") and not reason:
                raise InvalidValueError(f"Say why you {word} this lead: the reason is kept.")
            done = answer_handoff(session, lead.email, word, reason, via=via, by=who.email)
            logs.action("hand-off answered", lead=lead.email, answer=done.status, by=who.email,
                        via=via)  # fmt: skip
            return done.status

        return run

    def claim(via: str) -> Act:
        def run(session: Session, who: desk.Who, lead: Lead, fields: dict[str, str]) -> str:
            claim_lead(session, lead, who.email, via=via)
            logs.action("lead claimed", lead=lead.email, by=who.email, via=via)
            return "claimed"

        return run

    def task_action(via: str, lead_bound: bool) -> Act:
        def run(session: Session, who: desk.Who, lead: Lead, fields: dict[str, str]) -> str:
            task_id = record_id(fields.get("task", "")) or 0
            task = session.get(Task, task_id) if task_id else None
            if task is None or (lead_bound and task.lead_id != lead.id):
                raise InvalidValueError("No such task.")
            if fields.get("do") == "take" and who.may_take(task):
                if not take_task(session, task_id, who.inbox, who.email):
                    raise InvalidValueError("Someone took this task already.")
                logs.action("task taken", task=task_id, lead=lead.email, by=who.email, via=via)
                return "taken"
            if not desk.may_work(who, task):
                raise InvalidValueError(f"This task is {task.assignee}'s.")
            if fields.get("do") == "snooze":
                until = snooze_until(fields.get("until", ""), clock.now(), tz_of(who.email))
                snooze_task(session, task_id, until)
                logs.action("task snoozed", task=task_id, lead=lead.email, until=until,
                            by=who.email, via=via)  # fmt: skip
                return "snoozed"
            complete_task(session, task_id, fields.get("outcome"), by=who.email, via=via)
            return "done"

        return run

    async def post_for_lead(
        request: Request, who: desk.Who | None, lead_id: int, csrf_ok: Callable[[str], bool],
        action: Act, back: str, extra: dict[str, Any],
    ) -> Response:  # fmt: skip
        try:
            fields = await form(request)
        except InvalidValueError:
            return refused(400, "The form could not be read.")
        if who is None:
            return to_login()
        if cross_site(request) or not csrf_ok(fields.get(CSRF_FIELD, "")):
            return refused()
        try:
            message = await run_in_threadpool(act, who, lead_id, fields, action)
        except LeadNotFoundError:
            return not_found()
        except NurtureError as exc:
            return lead_view(who, lead_id, error=str(exc), base=back, status=422, **extra)
        return go(back, message)

    def session_who(request: Request) -> tuple[desk.Who | None, Viewer | None]:
        me = signed_in(request)
        return (who_of(me.email) if me else None), me

    def in_app(name: str, action: Act) -> None:
        """``POST /app/leads/ID/NAME``: *action* for a signed-in salesperson."""

        async def route(lead_id: str, request: Request) -> Response:
            who, me = session_who(request)
            found = record_id(lead_id)
            if found is None:
                return not_found() if who is not None else to_login()
            csrf = me.csrf if me else ""
            return await post_for_lead(
                request, who, found, lambda given: same(csrf, given), action,
                f"/app/leads/{found}", {"csrf": csrf},
            )  # fmt: skip

        routes.add_api_route(f"/app/leads/{{lead_id}}/{name}", route, methods=["POST"])

    in_app("answer", answer("app"))
    in_app("claim", claim("app"))
    in_app("task", task_action("app", True))

    @routes.post("/app/tasks/{task_id}")
    async def task_in_list(task_id: str, request: Request) -> Response:
        me = signed_in(request)
        try:
            fields = await form(request)
        except InvalidValueError:
            return refused(400, "The form could not be read.")
        if me is None:
            return to_login()
        found = record_id(task_id)
        if found is None:
            return not_found()
        if cross_site(request) or not same(me.csrf, fields.get(CSRF_FIELD, "")):
            return refused()
        who = who_of(me.email)
        back = fields.get("back", "")
        back = back if back in ("/app/", "/app/tasks") else "/app/tasks"

        def run() -> str:
            with session_scope(engine) as session:
                task = session.get(Task, found)
                lead = session.get(Lead, task.lead_id) if task is not None else None
                if task is None or lead is None or not desk.may_open(session, who, lead):
                    raise InvalidValueError("No such task.")  # not one of theirs to see
                return task_action("app", False)(session, who, lead,
                                                 {**fields, "task": str(found)})  # fmt: skip

        try:
            message = await run_in_threadpool(run)
        except NurtureError as exc:
            return tasks_view(me, 422, error=str(exc))
        return go(back, message)

    def link_who(token: str) -> tuple[desk.Who | None, int]:
        found = link_of(token)
        if found is None:
            return None, 0
        email, lead_id = found
        return desk.Who(
            email,
            False,
            people.sees_desk(email),
            zone(tz_of(email)),
            desk.Who.of(people, email, tz_of(email)).inbox,
        ), lead_id

    def by_link(name: str, action: Act) -> None:
        """``POST /app/l/TOKEN/NAME``: *action* from a notice link's page."""

        async def route(token: str, request: Request) -> Response:
            who, lead_id = await run_in_threadpool(link_who, token)
            if who is None:
                return not_found()
            csrf = link_csrf(secret, token)
            return await post_for_lead(
                request, who, lead_id, lambda given: check_link_csrf(secret, token, given),
                action, f"/app/l/{token}", {"csrf": csrf, "via_link": True},
            )  # fmt: skip

        routes.add_api_route(f"/app/l/{{token}}/{name}", route, methods=["POST"])

    by_link("answer", answer("link"))
    by_link("claim", claim("link"))
    by_link("task", task_action("link", True))

    return routes
