"""The HTTP side of nurture, grouped by who it serves.

- :mod:`nurture.web.tracking`: recipients' links (open pixel, clicks, unsubscribe);
- :mod:`nurture.web.api`: machines (``/api/...``, with an API key);
- :mod:`nurture.web.server`: the app that puts them together, and running it.
"""

from __future__ import annotations

from nurture.web.server import background_server, create_app, serve

__all__ = ["background_server", "create_app", "serve"]
