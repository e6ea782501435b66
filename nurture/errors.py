"""The exception tree. Every error nurture raises on purpose is a :class:`NurtureError`.

Each class's docstring is its default message. The CLI prints ``str(error)`` on one line
and exits with ``error.exit_code``: 1 for problems found in the user's data, 2 for a
setting, file or database that stops the command from running at all.
"""

from __future__ import annotations


class NurtureError(Exception):
    """Something went wrong in nurture."""

    exit_code = 1

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigError(NurtureError):
    """The configuration is invalid."""

    exit_code = 2


class ProjectError(NurtureError):
    """The project directory is missing or incomplete."""

    exit_code = 2


class DatabaseError(NurtureError):
    """The database cannot be used."""

    exit_code = 2


class SchemaBehindError(DatabaseError):
    """The database schema is older than this version of nurture: run `nurture db upgrade`."""


class InputFileError(NurtureError):
    """An input file cannot be read."""


class LeadNotFoundError(NurtureError):
    """No lead has that email address."""


class InvalidValueError(NurtureError, ValueError):
    """A value is not valid for its field."""


class OptionError(NurtureError):
    """A command-line option has a value nurture cannot use."""

    exit_code = 2
