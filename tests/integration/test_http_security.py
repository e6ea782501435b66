"""What protects every route of the server, over real HTTP (uvicorn on a loopback
port, started as ``nurture serve`` starts it): body limits, JSON depth, security
headers, no CDN docs page, and X-Forwarded-For only from trusted proxies."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from nurture.config import load_settings
from nurture.mail.compose import UNSUBSCRIBE_PURPOSE
from nurture.store.database import session_scope
from nurture.store.leads import LeadChanges, upsert_leads
from nurture.store.meta import LINKS_BOUND_KEY, Meta, project_secret
from nurture.tokens import sign
from nurture.web.guard import MAX_JSON_DEPTH
from tests.conftest import free_port
from tests.integration import test_server
from tests.integration.test_server import API_KEY, BROWSER, Site, links, running_server

site = test_server.site

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def _chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        yield b"x" * min(size, total - sent)
        sent += size


def test_bodies_over_the_route_class_limit_get_413_and_change_nothing(site: Site) -> None:
    found = links(site.deliver())
    with site.client() as http:
        # Unsubscribe and link routes: a few KB, announced or streamed without a length.
        announced = http.post(found["unsubscribe"], content=b"x" * 5000)
        assert announced.status_code == 413
        streamed = http.post(found["unsubscribe"], content=_chunks(50 * 1024 * 1024))
        assert streamed.status_code == 413
        assert http.post(found["unsubscribe"], content=b"List-Unsubscribe=One-Click").is_success
    assert [e.data["via"] for e in site.events("unsubscribed")] == ["one-click"]
    with site.client() as http:
        # The API: 1 MiB a request, whether one large event or a large batch.
        big = {"x": "y" * 2**21}
        big_event = {"type": "page_visited", "lead": "maria@example.com", "data": big}
        assert http.post("/api/events", json=big_event, headers=AUTH).status_code == 413
        batch = [
            {"type": "page_visited", "lead": "maria@example.com", "data": {"x": "y" * 50_000}}
        ] * 1000
        refused = http.post("/api/events", json=batch, headers=AUTH)
        assert refused.status_code == 413 and "1048576 bytes" in refused.json()["detail"]
        # Under the limit the same event is taken.
        small = {**big_event, "data": {"x": "y" * 1000}}
        assert http.post("/api/events", json=small, headers=AUTH).status_code == 201
    assert len(site.events("page_visited")) == 1


def test_deeply_nested_json_is_a_400_not_a_500(site: Site) -> None:
    deep = "[" * 2000 + "]" * 2000
    deep_data = (
        '{"type": "page_visited", "lead": "maria@example.com", "data": '
        + '{"a": ' * 990
        + "1"
        + "}" * 990
        + "}"
    )
    within = {"type": "page_visited", "lead": "maria@example.com", "data": {}}
    inner: dict[str, object] = within["data"]  # type: ignore[assignment]
    for _ in range(MAX_JSON_DEPTH - 3):
        inner["a"] = {}
        inner = inner["a"]  # type: ignore[assignment]
    with site.client() as http:
        for body in (deep, deep_data):
            for kind in ("application/json", "text/plain"):
                answer = http.post(
                    "/api/events", content=body, headers={**AUTH, "Content-Type": kind}
                )
                assert answer.status_code == 400, (kind, answer.text)
                assert "deeper than" in answer.json()["detail"]
        # Brackets inside strings are text, not nesting.
        texty = {**within, "data": {"note": "[" * 5000}}
        assert http.post("/api/events", json=texty, headers=AUTH).status_code == 201
        assert http.post("/api/events", json=within, headers=AUTH).status_code == 201
    assert len(site.events("page_visited")) == 2


def test_every_answer_carries_security_headers_and_docs_load_nothing_from_a_cdn(
    site: Site,
) -> None:
    found = links(site.deliver())
    with site.client() as http:
        answers = [
            http.get(found["unsubscribe"]),
            http.get(found["pixel"]),
            http.get(found["clicks"][0], follow_redirects=False),
            http.get("/c/not-a-token"),
            http.post("/api/events", json={}, headers=AUTH),
            http.get("/api/openapi.json"),
            http.get("/healthz"),
        ]
        docs = http.get("/api/docs")
    for answer in answers:
        assert answer.headers["x-content-type-options"] == "nosniff", answer.url
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["referrer-policy"] == "no-referrer"
        csp = answer.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert "script-src" not in csp and "http" not in csp
    assert answers[5].status_code == 200 and answers[5].json()["paths"]["/api/events"]
    assert docs.status_code == 404 and "cdn" not in docs.text.lower()


def test_forwarded_for_is_believed_only_from_trusted_proxies(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = links(site.deliver())
    # Apple's privacy proxy range, claimed by an untrusted peer: ignored.
    spoofed = {"X-Forwarded-For": "17.0.0.1", "User-Agent": BROWSER}
    with site.client() as http:
        http.get(found["clicks"][0], headers=spoofed, follow_redirects=False)
    [clicked] = site.events("email_clicked")
    assert clicked.data["ip"] == "127.0.0.1" and not clicked.machine

    monkeypatch.setenv("NURTURE_SERVER_TRUSTED_PROXIES", json.dumps(["127.0.0.0/8"]))
    config = load_settings(site.project / "nurture.toml")
    assert config.settings.server.trusted_proxies == ["127.0.0.0/8"]
    with running_server(config, site.engine, free_port()) as url:
        proxied = {"X-Forwarded-For": "203.0.113.9, 127.0.0.5", "User-Agent": BROWSER}
        with httpx.Client(base_url=url, timeout=10) as http:
            path = found["clicks"][1].removeprefix(site.url)
            http.get(path, headers=proxied, follow_redirects=False)
    second = [e for e in site.events("email_clicked") if e.id != clicked.id]
    assert [e.data["ip"] for e in second] == ["203.0.113.9"]


def test_trusted_proxies_must_be_addresses(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    from nurture.errors import ConfigError

    monkeypatch.setenv("NURTURE_SERVER_TRUSTED_PROXIES", json.dumps(["proxy.example"]))
    with pytest.raises(ConfigError, match=r"proxy\.example' is not an IP address or network"):
        load_settings(site.project / "nurture.toml")


def test_tokens_are_opaque_strict_and_old_unsubscribe_links_keep_working(site: Site) -> None:
    found = links(site.deliver())
    token = found["unsubscribe"].rsplit("/", 1)[1]
    lead_id = site.lead().id
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert b"tracked" not in raw and b"hello" not in raw and f"{lead_id}:".encode() not in raw
    click = found["clicks"][0]
    with site.client() as http:
        # A "/" is no token character, at the end too (no redirect to the link without
        # it), nor is a newline (a route's "$" matches before a final one).
        for spelling in (click + "=", click + "==", click + "/", found["unsubscribe"] + "/",
                         click + "%0A", click + "%0A/",
                         click.replace("-", "+").replace("_", "/")):  # fmt: skip
            if spelling != click:
                assert http.get(spelling, follow_redirects=False).status_code == 404, spelling
        assert http.post(found["unsubscribe"] + "%0A").status_code == 404
        assert site.lead().status != "unsubscribed"
        # An email sent before tokens were sealed, to a lead that existed then (before
        # links named their person): its signed, readable link still works.
        with session_scope(site.engine) as session:
            session.merge(Meta(key=LINKS_BOUND_KEY, value=datetime.now(UTC).isoformat()))
        secret = project_secret("", site.engine)
        legacy = sign(secret, UNSUBSCRIBE_PURPOSE, f"{lead_id}:tracked:hello")
        assert "You are unsubscribed" in http.post(f"/u/{legacy}").text
    assert site.lead().status == "unsubscribed"


def test_a_machine_hitting_one_link_again_and_again_is_stored_once(site: Site) -> None:
    found = links(site.deliver())
    with site.client() as http:
        for _ in range(100):
            assert http.head(found["clicks"][0]).status_code == 302
        http.get(found["clicks"][0], follow_redirects=False)  # then the person
    clicks = site.events("email_clicked")
    assert sorted(e.machine for e in clicks) == [False, True]


def test_a_machine_hitting_one_link_at_once_from_many_connections_is_stored_once(
    site: Site,
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    link = links(site.deliver())["clicks"][0]

    def hit(_: int) -> int:
        with site.client() as http:
            return http.head(link).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert set(pool.map(hit, range(40))) == {302}
    assert [e.machine for e in site.events("email_clicked")] == [True]


def test_event_ids_are_per_lead_and_never_answer_with_another_leads_event(
    site: Site,
) -> None:
    with session_scope(site.engine) as session:
        upsert_leads(session, [LeadChanges("ben@example.com", {"first_name": "Ben"})])
    event = {"type": "meeting_booked", "id": "cal-1"}
    with site.client() as http:
        first = http.post("/api/events", json={**event, "lead": "maria@example.com"}, headers=AUTH)
        other = http.post("/api/events", json={**event, "lead": "ben@example.com"}, headers=AUTH)
        again = http.post("/api/events", json={**event, "lead": "maria@example.com"}, headers=AUTH)
        batch = http.post(
            "/api/events",
            json=[{**event, "lead": "ben@example.com"}, {**event, "lead": "maria@example.com"}],
            headers=AUTH,
        )
    assert first.status_code == 201 and other.status_code == 201
    assert other.json()["id"] != first.json()["id"]
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert [r["id"] for r in batch.json()["results"]] == [other.json()["id"], first.json()["id"]]
    assert len(site.events("meeting_booked")) == 2


def test_the_api_refuses_the_types_nurture_records_itself(site: Site) -> None:
    lead = "maria@example.com"
    owned = ["email_sent", "email_opened", "email_clicked", "auto_reply", "stage_changed",
             "handoff_accepted", "lead_created", "opt_in_confirmed"]  # fmt: skip
    with site.client() as http:
        for type_ in owned:
            answer = http.post("/api/events", json={"type": type_, "lead": lead}, headers=AUTH)
            assert answer.status_code == 422, type_
            assert "recorded by nurture itself" in answer.json()["error"]
        mixed = http.post(
            "/api/events",
            json=[{"type": "email_clicked", "lead": lead}, {"type": "email_replied", "lead": lead}],
            headers=AUTH,
        )
        assert mixed.status_code == 207
        assert [r["status"] for r in mixed.json()["results"]] == [422, 201]
        # What other systems see may come in, opt-outs included.
        opt_out = http.post(
            "/api/events", json={"type": "unsubscribed", "lead": lead}, headers=AUTH
        )
        assert opt_out.status_code == 201
    assert site.events("email_clicked") == [] and site.lead().status == "unsubscribed"
