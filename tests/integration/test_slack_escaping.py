"""Lead data in the Slack-compatible hand-off body cannot ping a channel, make a link or
close a code block (a loopback webhook receiver over real HTTP)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from nurture.config import load_settings
from nurture.sales.slack import code_block, escape
from nurture.store.database import session_scope
from nurture.store.leads import LeadChanges, upsert_leads
from tests.integration import test_handoff
from tests.integration.test_handoff import MARIA, START, HookServer, Sales

sales = test_handoff.sales
hook = test_handoff.hook

EVIL_NAME = "<!channel> <https://evil.example|Re-authenticate>"
EVIL_COMPANY = "Acme``` <@U024BE7LH> &amp; <!here>"


def _texts(node: Any) -> list[str]:
    """Every string Slack renders: ``text`` at the top and in each block."""
    if isinstance(node, dict):
        found = [node["text"]] if isinstance(node.get("text"), str) else []
        for key, value in node.items():
            if key != "nurture":
                found += _texts(value)
        return found
    if isinstance(node, list):
        return [text for item in node for text in _texts(item)]
    return []


def test_slack_escaping_helpers() -> None:
    assert escape("a < b & c > d") == "a &lt; b &amp; c &gt; d"
    assert escape("&amp;") == "&amp;amp;"  # what was written is what is shown
    block = code_block("one ``` two ````` three\n<!channel>")
    assert block.startswith("```") and block.endswith("```")
    assert block.count("```") == 2 and "<" not in block


def test_lead_data_in_the_hand_off_webhook_is_escaped(
    sales: Sales, hook: HookServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NURTURE_SALES_WEBHOOK_URL", hook.url)
    sales.config = load_settings(sales.project / "nurture.toml")
    with session_scope(sales.engine) as session:
        evil = {"first_name": EVIL_NAME, "company": EVIL_COMPANY}
        upsert_leads(session, [LeadChanges(MARIA, evil)])
    sales.tick(START)
    sales.engaged(START + timedelta(hours=1))
    sales.tick(START + timedelta(hours=1, minutes=5))
    [(body, _)] = hook.handler.received
    texts = _texts(body)
    assert len(texts) >= 3
    for text in texts:
        assert "<" not in text and ">" not in text, text
        assert "&amp; <!here>" not in text
    assert "&lt;!channel&gt; &lt;https://evil.example|Re-authenticate&gt;" in body["text"]
    sections = [b["text"] for b in body["blocks"] if b.get("type") == "section"]
    code = next(t["text"] for t in sections if t["text"].startswith("```"))
    assert code.count("```") == 2  # the lead's ``` does not close the block
    for text_object in sections:
        assert text_object["verbatim"] is True  # no auto-linking of lead data
    # Receivers that read the facts get them as they are.
    assert body["nurture"]["lead"] == MARIA
