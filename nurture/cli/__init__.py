"""The ``nurture`` command line (Typer + Rich), one module per group of commands.

Every error nurture raises on purpose becomes one line on stderr and an exit code
(:func:`main`). A traceback is shown only with ``--debug`` or ``NURTURE_DEBUG=1``.
The modules register their commands on :data:`nurture.cli.common.app` when imported, in
the order ``nurture --help`` lists them.
"""

from __future__ import annotations

import os
import sys

# isort: off
# Each module registers its commands when imported, in the order --help lists them.
from nurture.cli import project, leads, sequences, operate, enrollments  # noqa: F401
from nurture.cli import sales, outbox, senders, tasks, integrations  # noqa: F401

# isort: on
from nurture.cli.common import app, safe_text, warn
from nurture.errors import NurtureError

__all__ = ["app", "main", "safe_text"]


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: runs the command, turning errors into one line.

    Exits with the command's code: 0 on success, 1 for problems in the user's data,
    2 for settings, files or a database that stop the command, 70 for a bug.
    """
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or bool(os.environ.get("NURTURE_DEBUG"))
    try:
        app(args=args, prog_name="nurture")
    except NurtureError as exc:
        if debug:
            raise
        warn(f"nurture: {exc}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        warn("nurture: interrupted")
        sys.exit(130)
    except Exception as exc:
        if debug:
            raise
        warn(f"nurture: internal error: {_safe_error(exc)} (run with --debug for the traceback)")
        sys.exit(70)


def _safe_error(exc: Exception) -> str:
    """An unexpected error in one line that never shows data: a database error's SQL and
    its parameters (every row's personal data) are left out."""
    from sqlalchemy.exc import DBAPIError, StatementError

    if isinstance(exc, DBAPIError) and exc.orig is not None:
        first = str(exc.orig).strip().splitlines()[:1]
        return f"database error: {type(exc.orig).__name__}: {first[0] if first else ''}"
    if isinstance(exc, StatementError):
        return f"database error: {type(exc.orig or exc).__name__}"
    return f"{type(exc).__name__}: {exc}"
