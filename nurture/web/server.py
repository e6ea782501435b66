"""``nurture serve``: the app that puts the HTTP side together, and running it."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, text

from nurture import __version__, logs
from nurture.config import Config
from nurture.errors import NurtureError
from nurture.tokens import project_secret
from nurture.web import api, tracking
from nurture.web.state import WebState


class ServerError(NurtureError):
    """The server could not run."""

    exit_code = 2


def create_app(config: Config, engine: Engine) -> FastAPI:
    """The server's app for one project: recipients' links, machines' API, health."""
    settings = config.settings
    state = WebState(config, engine, project_secret(settings.tracking.secret, engine))
    app = FastAPI(
        title=f"nurture API ({settings.project.name})",
        version=__version__,
        docs_url="/api/docs",
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

    app.include_router(tracking.router(state))
    app.include_router(api.router(state))
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


def background_server(config: Config, engine: Engine, host: str, port: int) -> Any:
    """A uvicorn server for ``nurture run --serve``; ``.run()`` it in a thread and set
    ``.should_exit`` to stop it."""
    import uvicorn

    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    return uvicorn.Server(
        uvicorn.Config(
            create_app(config, engine), host=host, port=port, log_level="warning", access_log=False
        )
    )
