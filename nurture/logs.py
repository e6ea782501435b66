"""Logging: one line per action, for people or (``--log-json``) for machines.

Code logs through :func:`action`, naming what happened and the facts as fields, so the
same call gives ``... email sent lead=a@b.c sequence=welcome`` and a JSON object.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from nurture import clock

logger = logging.getLogger("nurture")

#: Attributes every LogRecord has; the rest are the action's fields.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class TextFormatter(logging.Formatter):
    """``2026-11-23T09:00:00Z INFO email sent lead=... step=...``."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        fields = " ".join(
            f"{key}={_quote(value)}"
            for key, value in vars(record).items()
            if key not in _STANDARD and value is not None
        )
        line = f"{moment} {record.levelname} {record.getMessage()}"
        if fields:
            line += " " + fields
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _quote(value: Any) -> str:
    """A value as one token of a log line: quoted when it has spaces, quotes or control
    characters, which are escaped (a lead's name can never forge a line or move the
    cursor of the terminal that reads the log)."""
    text = str(value)
    if not text or any(ch in text for ch in ' ="') or _CONTROL.search(text):
        escaped = text.replace("\\", "\\\\").replace('"', '\\"')
        escaped = escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
        return '"' + _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", escaped) + '"'
    return text


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _clock_time(record: logging.LogRecord) -> bool:
    """Stamp a record with nurture's clock when it is pinned (``--now``): a rehearsal's
    log reads at the moment it rehearses."""
    if clock.is_pinned():
        record.created = clock.now().timestamp()
        record.msecs = (record.created % 1) * 1000
    return True


#: How :func:`configure` was last called (``None``: never), for a child process to do
#: the same (:func:`configured`).
_configured: dict[str, Any] | None = None


def configured() -> dict[str, Any] | None:
    """The arguments of the last :func:`configure` in this process, or ``None``: a child
    process calls :func:`configure` with them to log as its parent does."""
    return None if _configured is None else dict(_configured)


class _Stderr(logging.StreamHandler):
    """A handler writing to ``sys.stderr`` as it is when a record comes, not as it was
    when the log was configured (a command run inside a test, or a redirect, swaps it
    and may close the one it swapped in)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _stream: Any) -> None:
        pass


def configure(*, json: bool = False, level: int = logging.INFO) -> None:
    """Send nurture's log to stderr, one line per record."""
    global _configured
    _configured = {"json": json, "level": level}
    handler = _Stderr()
    if json:
        formatter = JsonFormatter(
            "{asctime}{levelname}{message}",
            style="{",
            datefmt="%Y-%m-%dT%H:%M:%SZ",
            rename_fields={"asctime": "time", "levelname": "level"},
        )
        formatter.converter = time.gmtime
        handler.setFormatter(formatter)
    else:
        handler.setFormatter(TextFormatter())
    handler.addFilter(_clock_time)
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
    # APScheduler warns each time a job is still running at its next turn (a long pass
    # or delivery run is normal here: the turn is skipped, by design).
    logging.getLogger("apscheduler").setLevel(logging.ERROR)


def action(what: str, *, level: int = logging.INFO, **fields: Any) -> None:
    """Log one action with its fields."""
    logger.log(level, what, extra={k: v for k, v in fields.items() if v is not None})
