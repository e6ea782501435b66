"""One bad value fails one item, over real HTTP and on both databases: moments outside
1970-2100, NUL characters and unpaired surrogates, over-long names and ids, a reason that
is not text. The good items of the same batch are kept."""

from __future__ import annotations

import json

from tests.integration import test_server
from tests.integration.test_server import API_KEY, Site

site = test_server.site

AUTH = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
MARIA = "maria@example.com"


def test_each_bad_event_gets_its_own_422_and_the_good_ones_are_kept(site: Site) -> None:
    batch = [
        {"type": "page_visited", "lead": MARIA, "id": "good-1", "data": {"path": "/pricing"}},
        {"type": "page_visited", "lead": MARIA, "at": "0001-01-01T00:00:00Z"},
        {"type": "page_visited", "lead": MARIA, "at": "9999-12-31T23:59:59-14:00"},
        {"type": "page_visited", "lead": MARIA, "data": {"path": "/a\u0000b"}},
        {"type": "page_visited", "lead": MARIA, "sequence": "s" * 201},
        {"type": "page_visited", "lead": MARIA, "id": "i" * 301},
        {"type": "page_visited", "lead": MARIA, "id": "good-2"},
    ]
    # A lone surrogate cannot be written by json.dumps as text: splice it in as an escape.
    body = json.dumps(batch)
    lone = '{"type": "page_visited", "lead": "' + MARIA + '", "sequence": "x\\ud800"}'
    body = body[:-1] + ", " + lone + "]"
    with site.client() as http:
        answer = http.post("/api/events", content=body.encode(), headers=AUTH)
    assert answer.status_code == 207, answer.text
    results = answer.json()["results"]
    statuses = [r["status"] for r in results]
    assert statuses == [201, 422, 422, 422, 422, 422, 201, 422]
    errors = [r.get("error", "") for r in results]
    assert errors[1].startswith("at: 0001-01-01") and "1970 to 2100" in errors[1]
    assert errors[2].startswith("at: 9999-12-31") and "1970 to 2100" in errors[2]
    assert "data.path: the NUL character" in errors[3]
    assert errors[4] == "sequence: longer than 200 characters"
    assert errors[5] == "id: longer than 300 characters"
    assert "sequence: an unpaired surrogate" in errors[7]
    assert sorted(e.source_id or "" for e in site.events("page_visited")) == ["good-1", "good-2"]


def test_a_handoff_answer_with_a_reason_that_is_not_text_is_a_422(site: Site) -> None:
    with site.client() as http:
        for reason in (12, ["a"], {"x": 1}):
            answer = http.post(
                "/api/handoff",
                headers=AUTH,
                json={"lead": MARIA, "answer": "reject", "reason": reason},
            )
            assert answer.status_code == 422
            assert answer.json()["detail"] == '"reason" must be a string'
        nul = {"lead": MARIA, "answer": "reject", "reason": "no\u0000"}
        assert http.post("/api/handoff", headers=AUTH, json=nul).status_code == 422


def test_non_finite_numbers_and_unstorable_attributes_are_refused_per_item(site: Site) -> None:
    with site.client() as http:
        for constant in ("NaN", "Infinity", "1e999"):
            body = (
                '{"type": "page_visited", "lead": "' + MARIA + '", "data": {"x": ' + constant + "}}"
            )
            answer = http.post("/api/events", content=body.encode(), headers=AUTH)
            assert answer.status_code == 400 and "finite number" in answer.text
        batch = [
            {"email": "good@example.com", "attributes": {"plan": "pro"}},
            {"email": "nul@example.com", "attributes": {"plan": "a\u0000b"}},
            {"email": "key@example.com", "attributes": {"a\u0000": "x"}},
            {"email": "consent@example.com", "consent": {"text": "ok\u0000"}},
        ]
        answer = http.post("/api/leads", json=batch, headers=AUTH)
    assert answer.status_code == 207, answer.text
    assert [r["status"] for r in answer.json()["results"]] == [201, 422, 422, 422]
    assert site.lead("good@example.com").attributes == {"plan": "pro"}
