"""Every table of nurture, imported in one place so the metadata is complete."""

from __future__ import annotations

from nurture.leads import Lead
from nurture.tokens import Meta

__all__ = ["Lead", "Meta"]
