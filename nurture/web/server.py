"""``nurture serve``: the app that puts the HTTP side together, and running it."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, text

from nurture import __version__, logs
from nurture.config import Config
from nurture.errors import NurtureError
from nurture.store.meta import project_secret
from nurture.web import api, forms, leads, tracking
from nurture.web import app as sales_app
from nurture.web.guard import Guard, TrustedProxies, content_security_policy
from nurture.web.state import PAGE_STYLE, WebState


class ServerError(NurtureError):
    """The server could not run."""

    exit_code = 2


def create_app(config: Config, engine: Engine, wake: Callable[[], None] | None = None) -> FastAPI:
    """The server's app for one project: recipients' links, forms, machines' API,
    health. *wake* tells a daemon in this process that leads arrived.

    Every route, of any router, is behind :class:`~nurture.web.guard.Guard` (body and
    JSON limits, security headers) and reads ``X-Forwarded-For`` only from ``[server]
    trusted_proxies``. There is no interactive API page (it would load a script from a
    CDN): the OpenAPI description is at ``/api/openapi.json``."""
    settings = config.settings
    state = WebState(config, engine, project_secret(settings.tracking.secret, engine), wake)
    app = FastAPI(
        title=f"nurture API ({settings.project.name})",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        """Whether the server and its database answer."""
        try:
            with engine.connect() as connection:
                connection.execute(text("select 1"))
        except Exception as exc:
            return JSONResponse({"status": "error", "error": type(exc).__name__}, 503)
        return JSONResponse({"status": "ok", "version": __version__})

    app.state.web = state  # what the routes share (tests wait for its background work)
    app.include_router(tracking.router(state))
    app.include_router(api.router(state))
    app.include_router(leads.router(state))
    app.include_router(forms.router(state))
    app.include_router(sales_app.router(state))
    app.add_middleware(Guard, csp=content_security_policy([PAGE_STYLE]))
    app.add_middleware(TrustedProxies, trusted_proxies=settings.server.trusted_proxies)
    return app


def serve(config: Config, engine: Engine, host: str, port: int) -> None:
    """Run the server until SIGTERM or Ctrl-C, then finish the requests in flight and
    return (exit code 0)."""
    server = background_server(config, engine, host, port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda number, _frame: stop.set())
    thread = threading.Thread(target=server.run, name="nurture-server")
    thread.start()
    logs.action("server listening", url=f"http://{host}:{port}")
    while not stop.wait(0.5):
        if not thread.is_alive():  # it could not start (the port is taken...)
            raise ServerError(f"the server on {host}:{port} stopped; see the log above")
    logs.action("stopping", reason="signal")
    server.should_exit = True
    thread.join()
    logs.action("server stopped")


def background_server(
    config: Config, engine: Engine, host: str, port: int, wake: Callable[[], None] | None = None
) -> Any:
    """A uvicorn server for ``nurture serve`` and ``nurture run --serve``; ``.run()`` it
    in a thread and set ``.should_exit`` to stop it. uvicorn's own reading of proxy
    headers is off: the app trusts only ``[server] trusted_proxies``."""
    import uvicorn

    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    return uvicorn.Server(
        uvicorn.Config(
            create_app(config, engine, wake),
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            proxy_headers=False,
        )
    )
