"""Web forms over real HTTP (uvicorn on a loopback port) with a real SMTP server: a
plain HTML form post makes a lead whose welcome email arrives; spam stores nothing;
double opt-in holds every email but the confirmation until the link is followed."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import select

from nurture import clock
from nurture.config import Config, load_settings
from nurture.engine.context import Context
from nurture.intake.forms import time_token
from nurture.stages.passes import tick
from nurture.store.database import open_engine, session_scope
from nurture.store.events import Event
from nurture.store.leads import Lead
from nurture.web import create_app
from tests.conftest import SmtpServer, free_port
from tests.web import WEB_WELCOME as SEQUENCE
from tests.web import serving

SECRET = "form-test-secret-0123456789"
CONTACT = """\
fields: {email: email, first_name: first_name, company: company, employees: employees}
required: [email, first_name]
set: {source: web-form}
origins: ["https://www.example.com"]
consent: {required: true, text: "Email me about Acme", version: "v3"}
min_seconds: 3
rate_limit: 3 per 10 minutes
"""
#: A newsletter form with a consent box and double opt-in.
OPT_IN = """\
fields: {email: email, first_name: first_name}
set: {source: web-form}
consent: {required: true, text: "Email me the newsletter", version: "n1"}
double_opt_in: true
confirm_from: "Ana Ruiz <ana@example.com>"
min_seconds: 0
"""
NEWSLETTER = """\
fields: {email: email, first_name: first_name}
set: {source: web-form}
success_url: https://www.example.com/check-your-inbox
double_opt_in: true
confirm_from: "Ana Ruiz <ana@example.com>"
min_seconds: 0
"""


@dataclass
class Site:
    url: str
    config: Config
    engine: Engine
    smtp: SmtpServer

    def client(self, ip_headers: dict[str, str] | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10, headers=ip_headers or {})

    def aged_token(self, form: str, seconds: float = 10) -> str:
        """The token the snippet's script got when the page loaded *seconds* ago."""
        return time_token(SECRET, form, clock.now().timestamp() - seconds)

    def tick(self) -> list[EmailMessage]:
        """One pass and its deliveries; the messages the SMTP server got by then."""
        asyncio.run(tick(Context.open(self.engine, self.config), clock.now()))
        return list(self.smtp.handler.messages)

    def leads(self) -> dict[str, Lead]:
        with session_scope(self.engine) as session:
            return {lead.email: lead for lead in session.exec(select(Lead))}

    def events(self, type: str) -> list[Event]:
        with session_scope(self.engine) as session:
            return list(session.exec(select(Event).where(Event.type == type)))


@pytest.fixture
def site(
    project: Path, db_url: str, smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Site]:
    for path in (project / "sequences").iterdir():
        path.unlink()
    (project / "sequences" / "web-welcome.yaml").write_text(SEQUENCE)
    (project / "forms" / "contact.yaml").write_text(CONTACT)
    (project / "forms" / "newsletter.yaml").write_text(NEWSLETTER)
    (project / "forms" / "optin.yaml").write_text(OPT_IN)
    port = free_port()
    monkeypatch.setenv("NURTURE_DATABASE_URL", db_url)
    monkeypatch.setenv("NURTURE_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("NURTURE_SMTP_PORT", str(smtp_server.port))
    monkeypatch.setenv("NURTURE_TRACKING_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("NURTURE_TRACKING_SECRET", SECRET)
    config = load_settings(project / "nurture.toml")
    engine = open_engine(db_url)
    with serving(create_app(config, engine), port) as url:
        yield Site(url, config, engine, smtp_server)
    engine.dispose()


def test_a_plain_html_form_post_makes_a_lead_and_its_welcome_email_arrives(site: Site) -> None:
    form = {"email": "Maria@Example.com", "first_name": "María", "company": "Brightpath",
            "employees": "120", "consent": "yes", "nickname": "",
            "_t": site.aged_token("contact")}  # fmt: skip
    with site.client() as http:
        posted = http.post("/f/contact", data=form, headers={
            "Origin": "https://www.example.com"}, follow_redirects=False)  # fmt: skip
        assert posted.status_code == 303, posted.text
        assert posted.headers["location"] == "/f/contact/thanks"
        assert "Thank you" in http.get("/f/contact/thanks").text
    lead = site.leads()["maria@example.com"]
    assert (lead.first_name, lead.company, lead.source) == ("María", "Brightpath", "web-form")
    assert lead.attributes == {"employees": "120"} and lead.status == "subscribed"
    assert lead.consent is not None
    assert (lead.consent["text"], lead.consent["version"]) == ("Email me about Acme", "v3")
    assert lead.consent["form"] == "contact" and lead.consent["ip"] == "127.0.0.1"
    [submitted] = site.events("form_submitted")
    assert submitted.data["form"] == "contact" and submitted.source == "form"
    [welcome] = site.tick()
    assert welcome["To"] == "María <maria@example.com>" or "maria@example.com" in welcome["To"]
    assert "pricing guide" in welcome["Subject"].lower()


def test_the_same_answer_whether_the_address_was_known(site: Site) -> None:
    def post(email: str) -> httpx.Response:
        with site.client() as http:
            return http.post(
                "/f/contact",
                json={
                    "email": email,
                    "first_name": "Ann",
                    "consent": True,
                    "_t": site.aged_token("contact"),
                },
                headers={"Origin": "https://www.example.com"},
            )

    first, again = post("ann@example.com"), post("ANN@example.com")
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json() == {"ok": True}
    assert first.headers["access-control-allow-origin"] == "https://www.example.com"
    assert len(site.leads()) == 1 and len(site.events("form_submitted")) == 2


def test_spam_stores_nothing(site: Site) -> None:
    good = {"email": "bot@example.com", "first_name": "Bot", "consent": "yes"}
    with site.client() as http:
        honeypot = http.post(
            "/f/contact",
            data={**good, "nickname": "buy now", "_t": site.aged_token("contact")},
            follow_redirects=False,
        )
        assert honeypot.status_code == 303  # the bot is told it worked
        fresh = http.get("/f/contact/t").json()["token"]  # the page just loaded
        too_fast = http.post("/f/contact", data={**good, "_t": fresh})
        assert too_fast.status_code == 400 and "wait a moment" in too_fast.text
        no_token = http.post("/f/contact", data=good)
        assert no_token.status_code == 400
        forged = http.post("/f/contact", data={**good, "_t": time_token("not-ours", "contact",
                                                                          0)})  # fmt: skip
        assert forged.status_code == 400
        other_site = http.post("/f/contact", data={**good, "_t": site.aged_token("contact")},
                               headers={"Origin": "https://evil.example"})  # fmt: skip
        assert other_site.status_code == 403 and "cannot be sent from this site" in (
            other_site.text
        )  # a page for a person, not JSON
        other_fetch = http.post("/f/contact", json={**good, "_t": site.aged_token("contact")},
                                headers={"Origin": "https://evil.example"})  # fmt: skip
        assert other_fetch.status_code == 403 and other_fetch.json()["ok"] is False
        no_consent = http.post("/f/contact", data={"email": "x@example.com", "first_name": "X",
                               "_t": site.aged_token("contact")})  # fmt: skip
        assert no_consent.status_code == 400 and "consent" in no_consent.text
        assert site.leads() == {}
        # Too many from one IP: every attempt that passed the checks above counts (the
        # one without consent too), and the fourth within ten minutes stores nothing.
        for index in range(2):
            ok = http.post("/f/contact", json={**good, "email": f"p{index}@example.com",
                           "_t": site.aged_token("contact")})  # fmt: skip
            assert ok.status_code == 200
        fourth = http.post("/f/contact", json={**good, "email": "p2@example.com",
                           "_t": site.aged_token("contact")})  # fmt: skip
        assert fourth.status_code == 429
    assert set(site.leads()) == {"p0@example.com", "p1@example.com"}


def test_unknown_forms_and_preflight(site: Site) -> None:
    with site.client() as http:
        assert http.post("/f/nope", data={"email": "a@example.com"}).status_code == 404
        assert http.get("/f/nope/t").status_code == 404
        allowed = http.options("/f/contact", headers={"Origin": "https://www.example.com",
                               "Access-Control-Request-Method": "POST"})  # fmt: skip
        assert allowed.status_code == 204
        assert allowed.headers["access-control-allow-methods"] == "POST"
        refused = http.options("/f/contact", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in refused.headers


def test_double_opt_in_holds_email_until_confirmed(site: Site) -> None:
    with site.client() as http:
        posted = http.post("/f/newsletter", data={"email": "nina@example.com",
                           "first_name": "Nina"}, follow_redirects=False)  # fmt: skip
        assert posted.headers["location"] == "https://www.example.com/check-your-inbox"
    assert site.leads()["nina@example.com"].status == "pending"
    [confirmation] = site.tick()  # the confirmation only: no welcome for a pending lead
    assert confirmation["Subject"] == "Please confirm your email address"
    link = re.search(r"(http://\S+/optin/\S+)", confirmation.get_content()).group(1)  # type: ignore[union-attr]
    with site.client() as http:
        shown = http.get(link)
        assert shown.status_code == 200 and '<form method="post">' in shown.text
        assert site.leads()["nina@example.com"].status == "pending"  # a GET changes nothing
        assert len(site.tick()) == 1
        assert http.post(link + "x").status_code == 404
        confirmed = http.post(link)
        assert confirmed.status_code == 200 and "confirmed" in confirmed.text
    assert site.leads()["nina@example.com"].status == "subscribed"
    assert [e.type for e in site.events("opt_in_confirmed")] == ["opt_in_confirmed"]
    messages = site.tick()
    assert len(messages) == 2 and "nina@example.com" in messages[1]["To"]
    # A known, subscribed lead sending the form again is not held back nor asked again.
    with site.client() as http:
        http.post("/f/newsletter", data={"email": "nina@example.com"})
    assert site.leads()["nina@example.com"].status == "subscribed"
    assert len(site.tick()) == 2


def _confirmation_link(message: EmailMessage) -> str:
    found = re.search(r"(http://\S+/optin/\S+)", message.get_content())
    assert found, message.get_content()
    return found.group(1)


def test_an_erased_address_comes_back_only_when_its_owner_confirms(site: Site) -> None:
    from nurture.intake.erasure import forget
    from nurture.store.suppression import suppressed

    with site.client() as http:
        http.post("/f/optin", data={"email": "eve@example.com", "consent": "yes"})
    with session_scope(site.engine) as session:
        forget(session, "eve@example.com")  # the transaction at the heart of an erasure
    form = {"email": "eve@example.com", "first_name": "Eve", "company": "X", "consent": "yes",
            "_t": site.aged_token("contact")}  # fmt: skip
    with site.client() as http:
        # A consent box ticked by whoever typed the address is not proof: nothing stored.
        http.post("/f/contact", data=form, headers={"Origin": "https://www.example.com"})
        assert "eve@example.com" not in site.leads()
        # Through double opt-in the lead comes back pending; only the link subscribes it.
        http.post("/f/optin", data={"email": "eve@example.com", "consent": "yes"})
    assert site.leads()["eve@example.com"].status == "pending"
    with session_scope(site.engine) as session:  # still erased until its owner confirms
        assert suppressed(session, ["eve@example.com"]) == {"eve@example.com"}
    link = _confirmation_link(site.tick()[-1])
    with site.client() as http:
        assert http.post(link).status_code == 200
    assert site.leads()["eve@example.com"].status == "subscribed"
    with session_scope(site.engine) as session:
        assert suppressed(session, ["eve@example.com"]) == set()


def test_an_old_opt_in_link_never_undoes_a_later_unsubscribe(site: Site) -> None:
    from nurture.store.events import record_event

    with site.client() as http:
        http.post("/f/optin", data={"email": "olga@example.com", "consent": "yes"})
    link = _confirmation_link(site.tick()[-1])
    with site.client() as http:
        assert http.post(link).status_code == 200
    lead = site.leads()["olga@example.com"]
    assert lead.status == "subscribed"
    with session_scope(site.engine) as session:
        record_event(session, lead.id or 0, "unsubscribed", source="test")
    assert site.leads()["olga@example.com"].status == "unsubscribed"
    with site.client() as http:
        page = http.get(link)
        assert page.status_code == 410 and "You unsubscribed after it was sent" in page.text
        assert http.post(link).status_code == 410
    assert site.leads()["olga@example.com"].status == "unsubscribed"


def test_a_stranger_cannot_flood_an_address_with_confirmations(site: Site) -> None:
    from datetime import timedelta

    from nurture.store.outbox import MessageKind, OutboxMessage

    def confirmations() -> int:
        with session_scope(site.engine) as session:
            rows = session.exec(select(OutboxMessage).where(
                OutboxMessage.kind == MessageKind.confirm.value)).all()  # fmt: skip
            return len(rows)

    for round_ in range(5):  # five tries, each "an hour" after the one before
        with site.client() as http:
            http.post("/f/optin", data={"email": "pat@example.com", "consent": "yes"})
        with session_scope(site.engine) as session:  # age every confirmation by an hour
            for row in session.exec(select(OutboxMessage)):
                row.created_at -= timedelta(hours=1)
                session.add(row)
        assert confirmations() == min(round_ + 1, 3)


def test_an_old_opt_in_link_never_undoes_an_unsubscribe_written_by_an_import(
    site: Site,
) -> None:
    from datetime import timedelta

    from nurture.store.leads import LeadChanges, upsert_leads

    with site.client() as http:
        http.post("/f/optin", data={"email": "ivy@example.com", "consent": "yes"})
    link = _confirmation_link(site.tick()[-1])
    with site.client() as http:
        assert http.post(link).status_code == 200
    later = clock.now() + timedelta(minutes=1)
    with clock.pinned(later), session_scope(site.engine) as session:  # a CRM sync
        upsert_leads(session, [LeadChanges("ivy@example.com", {"status": "unsubscribed"})])
    with site.client() as http:
        assert http.post(link).status_code == 410
    assert site.leads()["ivy@example.com"].status == "unsubscribed"


#: A form anyone may post often (no fill-time token, a loose rate limit), asking for the
#: fields sales acts on.
CALLBACK = """\
fields: {email: email, first_name: first_name, phone: phone, company: company,
         employees: employees}
set: {source: web-form}
consent: {required: true, text: "Call me back", version: "c1"}
min_seconds: 0
rate_limit: 50 per minute
"""
SAM = "sam@example.com"


def _known_lead(site: Site, **fields: str) -> Lead:
    """María, as sales' CRM knows her: owned by Sam, her phone, a consent on record."""
    from nurture.intake.incoming import LeadItem, Origin, take_leads
    from nurture.store.leads import LeadChanges

    values = {"first_name": "María", "phone": "+1 415 555 0142", "owner": SAM,
              "title": "VP Sales", "source": "web-form", **fields}  # fmt: skip
    item = LeadItem(LeadChanges("maria@example.com", values, {"employees": "120"}),
                    {"text": "Signed the contract", "version": "crm-1"})  # fmt: skip
    with session_scope(site.engine) as session:
        take_leads(session, [item], Origin(source="api", via_key="crm"))
    return site.leads()["maria@example.com"]


def _post(site: Site, form: str, **values: str) -> httpx.Response:
    with site.client() as http:
        return http.post(f"/f/{form}", json={"email": "maria@example.com", **values})


def test_a_form_post_fills_what_is_empty_and_never_overwrites_a_known_lead(site: Site) -> None:
    (site.config.forms_dir / "callback.yaml").write_text(CALLBACK)
    before = _known_lead(site)
    assert before.company is None and before.consent is not None
    # A stranger sends the form in María's name, with their own phone and details.
    posted = _post(site, "callback", first_name="Mallory", phone="+1 900 555 0100",
                   company="Evil Inc", employees="5000", consent="yes")  # fmt: skip
    assert posted.status_code == 200 and posted.json() == {"ok": True}
    after = site.leads()["maria@example.com"]
    assert (after.first_name, after.phone, after.owner) == ("María", "+1 415 555 0142", SAM)
    assert after.attributes == {"employees": "120"}
    assert after.consent == before.consent  # the record of her consent is not replaced
    assert after.company == "Evil Inc"  # an empty field is filled: nothing was there
    # What the form said is kept on the event, and sales reads it on the timeline.
    [submitted] = site.events("form_submitted")
    assert submitted.data["kept"] == {"first_name": "Mallory", "phone": "+1 900 555 0100",
                                      "employees": "5000"}  # fmt: skip
    assert submitted.data["submitted"]["phone"] == "+1 900 555 0100"
    assert submitted.data["consent"] == {"text": "Call me back", "version": "c1"}
    from nurture.sales.explain import happening

    line = happening(submitted, {})
    assert line.text == "Filled in the callback form"
    assert line.detail == ("form says first name Mallory, phone +1 900 555 0100, "
                           "employees 5000")  # fmt: skip
    # A new address is still created from the form, consent and all.
    posted = _post(site, "callback", email="new@example.com", phone="+1 212 555 0100",
                   consent="yes")  # fmt: skip
    new = site.leads()["new@example.com"]
    assert new.phone == "+1 212 555 0100" and new.consent is not None
    assert new.consent["text"] == "Call me back"


def test_names_with_line_breaks_are_refused_at_the_form_and_the_api(site: Site) -> None:
    (site.config.forms_dir / "callback.yaml").write_text(CALLBACK)
    for name in ("Ann\r\nBcc: x@evil.example", "Ann\nhttps://evil.example", "Ann\u2028X"):
        refused = _post(site, "callback", email="ann@example.com", first_name=name,
                        consent="yes")  # fmt: skip
        assert refused.status_code == 400 and "First name is not valid" in refused.text
    assert "ann@example.com" not in site.leads()
    from nurture.errors import InvalidValueError
    from nurture.intake.incoming import parse_lead

    for field in ("first_name", "last_name"):
        with pytest.raises(InvalidValueError, match=f"{field}: a line break is not allowed"):
            parse_lead({"email": "ann@example.com", field: "Ann\r\nLee"})


def test_the_confirmation_email_says_nothing_a_visitor_typed(site: Site) -> None:
    with site.client() as http:
        posted = http.post("/f/newsletter", data={"email": "nina@example.com",
                           "first_name": "Win a prize at www.evil.example"})  # fmt: skip
        assert posted.status_code in (200, 303)
    [confirmation] = site.tick()
    text = confirmation.get_content()
    assert "evil" not in text and "prize" not in text and "Win" not in text
    assert text.startswith("Hello,\r\n")
    assert "evil" not in str(confirmation["To"]) and "evil" not in str(confirmation["Subject"])


def _click(site: Site, message: EmailMessage) -> None:
    html = message.get_body(("html",))
    assert html is not None
    found = re.findall(r'href="([^"]+/c/[^"]+)"', html.get_content())
    assert found, html.get_content()
    browser = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Version/17.5"
    with site.client({"User-Agent": browser}) as http:
        assert http.get(found[0].replace("&amp;", "&"), follow_redirects=False).status_code == 302


def test_form_points_count_toward_a_hand_off_only_once_the_address_is_proven(
    site: Site,
) -> None:
    from datetime import timedelta

    (site.config.forms_dir / "callback.yaml").write_text(CALLBACK)
    _known_lead(site)
    earlier = clock.now() - timedelta(minutes=5)
    with clock.pinned(earlier):  # her welcome email went out a while ago
        [welcome] = site.tick()
    # A stranger posts the form four times (4 x 10 points: hot from 30, with her VP fit).
    for _ in range(4):
        assert _post(site, "callback", consent="yes").status_code == 200
    site.tick()
    lead = site.leads()["maria@example.com"]
    assert lead.stage == "cold" and lead.engagement == 0
    assert [e.points for e in site.events("form_submitted")] == [0, 0, 0, 0]
    # She clicks a link of our email: her address is proven, the posts count now.
    _click(site, welcome)
    site.tick()
    lead = site.leads()["maria@example.com"]
    assert lead.stage == "hot", (lead.engagement, lead.fit)
    assert [e.points for e in site.events("form_submitted")] == [10, 10, 10, 10]
    assert [e.machine for e in site.events("email_clicked")] == [False]


def test_a_confirmed_double_opt_in_proves_the_address_for_form_points(site: Site) -> None:
    with site.client() as http:
        http.post("/f/optin", data={"email": "olga@example.com", "consent": "yes"})
    link = _confirmation_link(site.tick()[-1])
    assert [e.points for e in site.events("form_submitted")] == [0]
    with site.client() as http:
        assert http.post(link).status_code == 200
    site.tick()
    assert [e.points for e in site.events("form_submitted")] == [10]
    assert site.leads()["olga@example.com"].engagement > 0


def test_a_fill_time_token_works_once(site: Site) -> None:
    (site.config.forms_dir / "signup.yaml").write_text(
        CONTACT.replace("3 per 10 minutes", "50 per minute"))  # fmt: skip
    token = site.aged_token("signup")
    assert token != site.aged_token("signup")  # two pages loaded in one second differ
    good = {"first_name": "Ann", "consent": True, "_t": token}
    origin = {"Origin": "https://www.example.com"}
    with site.client() as http:
        # Refused for what it says (no consent): the token is not spent...
        refused = http.post("/f/signup", json={**good, "consent": False,
                            "email": "ann@example.com"}, headers=origin)  # fmt: skip
        assert refused.status_code == 400
        # ... and works for the corrected post, once.
        first = http.post("/f/signup", json={**good, "email": "ann@example.com"},
                          headers=origin)  # fmt: skip
        assert first.status_code == 200 and first.json() == {"ok": True}
        # Replayed, for the same address or another: answered alike, nothing stored.
        for email in ("ann@example.com", "bob@example.com"):
            again = http.post("/f/signup", json={**good, "email": email}, headers=origin)
            assert again.status_code == 200 and again.json() == {"ok": True}
    assert set(site.leads()) == {"ann@example.com"}
    assert len(site.events("form_submitted")) == 1
