"""Putting text from outside (lead data) into a Slack message safely.

Slack reads ``<...>`` in a message as a link, a mention or ``<!channel>``, and ```` ``` ````
closes a code block. Every piece of lead data that enters a Slack-compatible body goes
through :func:`escape` (or :func:`code_block`), and every text object is
:func:`mrkdwn` with ``verbatim`` set, so Slack does not turn bare URLs and channel
names into links either. See https://api.slack.com/reference/surfaces/formatting.
"""

from __future__ import annotations

import re
from typing import Any

_FENCE = re.compile(r"`{3,}")
#: Between backticks, so that no run of three is left.
_ZERO_WIDTH_SPACE = "\u200b"


def escape(text: str) -> str:
    """*text* shown as written: ``&``, ``<`` and ``>`` escaped as Slack documents."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def code_block(text: str) -> str:
    """*text* in a preformatted block that it cannot close."""
    unfenced = _FENCE.sub(lambda m: _ZERO_WIDTH_SPACE.join(m.group(0)), text)
    return "```" + escape(unfenced) + "```"


def mrkdwn(text: str) -> dict[str, Any]:
    """A ``mrkdwn`` text object for *text* (already escaped), without auto-linking."""
    return {"type": "mrkdwn", "text": text, "verbatim": True}


def section(text: str) -> dict[str, Any]:
    """A section block showing *text* (already escaped)."""
    return {"type": "section", "text": mrkdwn(text)}
