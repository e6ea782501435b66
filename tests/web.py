"""Serving an app over real HTTP (uvicorn on a loopback port) for a test."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

#: A sequence that welcomes the leads of the test forms (source ``web-form``).
WEB_WELCOME = """\
name: web-welcome
audience: "lead.source == 'web-form'"
from: "Ana Ruiz <ana@example.com>"
steps:
  - id: welcome
    email: welcome
"""


@contextmanager
def serving(app: Any, port: int) -> Iterator[str]:
    """Run *app* on 127.0.0.1:*port* in a thread; yield its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        assert thread.is_alive(), "server stopped"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
