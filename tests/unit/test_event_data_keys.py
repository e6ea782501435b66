"""The keys of an event's data that nurture reads are the ones the README and the
OpenAPI description name, and each is shown to sales."""

from __future__ import annotations

from pathlib import Path

from nurture.sales.explain import EVENT_DATA_KEYS, describe
from nurture.web.api import EVENTS_DESCRIPTION

README = Path(__file__).parents[2] / "README.md"


def test_each_documented_key_is_read_and_named_in_the_readme_and_openapi() -> None:
    readme = README.read_text(encoding="utf-8")
    for type_, key, _meaning in EVENT_DATA_KEYS:
        shown = " ".join(describe(type_, {key: "Marker 42"}, None, None, {})[1:])
        assert "Marker 42" in shown or "marker 42" in shown, (type_, key, shown)
        assert f"`data.{key}`" in EVENTS_DESCRIPTION
        assert f"`data.{key}`" in readme, key
    assert "`email_replied`: `data.first_lines`" in EVENTS_DESCRIPTION
