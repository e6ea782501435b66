"""Finding and reading ``nurture.toml``: the project's :class:`Config`, its secrets
(never printed, and a settings file readable by others is named), and errors that
name the file and the key."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import (
    ValidationError,
)

from nurture.config.sections import CONFIG_FILENAME, ENV_PREFIX, Settings
from nurture.errors import ConfigError, ProjectError
from nurture.suggest import did_you_mean


class Config:
    """The loaded settings plus where they came from."""

    def __init__(self, settings: Settings, config_file: Path) -> None:
        self.settings = settings
        #: The ``nurture.toml`` that was read.
        self.config_file = config_file
        #: The project directory: the one holding ``nurture.toml``.
        self.project_dir = config_file.parent
        #: What a person should hear about the file (one line each), e.g. that it holds
        #: secrets others can read; the command line prints them once.
        self.warnings: list[str] = []

    @property
    def database_url(self) -> str:
        """The database URL, with a relative SQLite path resolved in the project directory."""
        return resolve_database_url(self.settings.database.url, self.project_dir)

    @property
    def sequences_dir(self) -> Path:
        return self.project_dir / "sequences"

    @property
    def templates_dir(self) -> Path:
        return self.project_dir / "templates"

    @property
    def scoring_file(self) -> Path:
        return self.project_dir / "scoring.yaml"

    @property
    def forms_dir(self) -> Path:
        return self.project_dir / "forms"

    @property
    def outbox_dir(self) -> Path:
        return self.project_dir / "outbox"


def resolve_database_url(url: str, project_dir: Path) -> str:
    """Turn the configured URL into one SQLAlchemy can open from any working directory."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if not url:
        return f"sqlite:///{project_dir / 'nurture.db'}"
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # the URL may hold a password: never shown
        raise ConfigError(
            "[database] url: cannot parse it (not a URL like sqlite:///nurture.db or "
            "postgresql://user@host/db)"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            path = Path(database)
            if not path.is_absolute():
                parsed = parsed.set(database=str(project_dir / path))
    return parsed.render_as_string(hide_password=False)


def find_config_file(start: Path | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """Return the ``nurture.toml`` to use, or raise :class:`ProjectError`."""
    environ = os.environ if environ is None else environ
    named = environ.get(f"{ENV_PREFIX}CONFIG")
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise ProjectError(f"NURTURE_CONFIG names {path}, which is not a file")
        return path.resolve()
    start = (start or Path.cwd()).resolve()
    for directory in (start, *start.parents):
        candidate = directory / CONFIG_FILENAME
        if candidate.is_file():
            return candidate
    raise ProjectError(
        f"no {CONFIG_FILENAME} in {start} or its parents: "
        "run `nurture init DIR` to make a project, or pass --config FILE"
    )


def load_settings(config_file: Path | None = None) -> Config:
    """Read *config_file* (or the one :func:`find_config_file` finds) and the environment."""
    path = config_file.expanduser().resolve() if config_file else find_config_file()
    if not path.is_file():
        raise ProjectError(f"{path}: no such configuration file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    _check_sections(path, data)
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(path, exc)) from None
    config = Config(settings, path)
    config.database_url  # noqa: B018 - validates the URL now rather than at first use
    exposed = readable_secrets(path, data)
    if exposed:
        config.warnings.append(exposed)
    return config


def secrets_in(data: dict[str, Any]) -> list[str]:
    """The settings of a ``nurture.toml`` (as read) that hold a secret, by name."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    found = []
    for section, key in (("smtp", "password"), ("replies", "password"),
                         ("tracking", "secret"), ("api", "key"), ("api", "keys"),
                         ("sales", "webhook_url")):  # fmt: skip
        table = data.get(section)
        if isinstance(table, dict) and table.get(key):
            found.append(f"[{section}] {key}")
    url = (data.get("database") or {}).get("url") if isinstance(data.get("database"), dict) else ""
    if isinstance(url, str) and url:
        try:
            if make_url(url).password:
                found.append("[database] url")
        except (ArgumentError, ValueError):
            pass
    if data.get("webhooks"):
        found.append("[[webhooks]] secret")
    senders = data.get("senders")
    if isinstance(senders, list) and any(
        isinstance(e, dict) and isinstance(e.get("smtp"), dict) and e["smtp"].get("password")
        for e in senders
    ):
        found.append("[[senders]] smtp password")
    if isinstance(senders, list) and any(
        isinstance(e, dict) and isinstance(e.get("replies"), dict) and e["replies"].get("password")
        for e in senders
    ):
        found.append("[[senders]] replies password")
    return found


def readable_secrets(path: Path, data: dict[str, Any]) -> str | None:
    """A warning if *path* holds secrets and users other than its owner may read it
    (as ssh warns of a private key), naming the file and the command that fixes it."""
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        return None
    found = secrets_in(data)
    if not found or not mode & 0o044:
        return None
    return (
        f"{path}: holds secrets ({', '.join(found)}) and other users can read it "
        f"(mode {mode:04o}): run `chmod 600 {path}` (or keep secrets in NURTURE_* "
        "variables)"
    )


#: Sections written as arrays of tables (``[[webhooks]]``).
LIST_SECTIONS = ("webhooks", "senders")


def _check_sections(path: Path, data: dict[str, Any]) -> None:
    known = list(Settings.model_fields)
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"{path}: unknown section [{key}]{did_you_mean(key, known)}")
        if key in LIST_SECTIONS:
            if not isinstance(value, list):
                raise ConfigError(f"{path}: {key} must be written as [[{key}]] entries")
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: {key} must be a [{key}] table, not a single value")


#: Settings whose values are never shown, even when they are wrong (a webhook URL holds
#: its own secret in its path, as Slack's do).
SECRET_WORDS = ("password", "secret", "key", "token", "url")


def public_url(url: str) -> str:
    """What of *url* may be printed: its scheme, host (and port) and path. The user,
    password, query and fragment are left out: they may hold credentials (a token in
    the query, ``https://user:password@host/``)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return "(a URL that cannot be read)"
    where = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{where}{f':{port}' if port else ''}{parts.path}"


def _keys_at(loc: list[str]) -> list[str]:
    """The keys the table holding the key at *loc* (``senders 0 smtp prot``) has."""
    import typing

    from pydantic import BaseModel

    model: type[BaseModel] = Settings
    for part in loc[:-1]:
        if part.isdigit():
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        candidates = [field.annotation, *typing.get_args(field.annotation)]
        for candidate in list(candidates):
            candidates += typing.get_args(candidate)
        found = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not found:
            return []
        model = found[0]
    return list(model.model_fields)


def _describe(path: Path, exc: ValidationError) -> str:
    """One line naming the first bad key and where its value came from."""
    error = exc.errors()[0]
    loc = [str(part) for part in error["loc"]]
    section, key = [*loc, ""][:2]
    if section in LIST_SECTIONS and key.isdigit():  # [[webhooks]] entry N, field
        # A key of a table inside the entry is named with it: ``replies port``.
        field = " ".join(part for part in loc[2:4] if not part.isdigit())
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "missing":
            message = "required setting is missing"
        elif error["type"] == "extra_forbidden":
            message = f"unknown setting{did_you_mean(loc[-1], _keys_at(loc))}"
        field = f"{field}: " if field else ""
        return f"{path}: [[{section}]] entry {int(key) + 1}: {field}{message}"
    if section in LIST_SECTIONS and not key:  # the entries together (two share a name)
        return f"{path}: [[{section}]]: {error['msg'].removeprefix('Value error, ')}"
    env_name = f"{ENV_PREFIX}{section}_{key}".upper()
    where = env_name if env_name in os.environ else f"{path}: [{section}] {key}"
    if error["type"] == "extra_forbidden":
        fields = Settings.model_fields.get(section)
        names = list(fields.annotation.model_fields) if fields and fields.annotation else []
        return f"{path}: [{section}] {key}: unknown setting{did_you_mean(key, names)}"
    if error["type"] == "missing":
        return f"{where}: required setting is missing"
    message = error["msg"]
    secret = any(word in str(part).lower() for part in loc for word in SECRET_WORDS)
    if error.get("input") is not None and error["type"] != "value_error" and not secret:
        message += f", got {error['input']!r}"
    elif message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
    return f"{where}: {message}"
