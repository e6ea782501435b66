"""The sections of ``nurture.toml``, each a model that checks its values, and
:class:`Settings`, which reads them with their ``NURTURE_*`` overrides."""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from nurture.suggest import did_you_mean

CONFIG_FILENAME = "nurture.toml"
ENV_PREFIX = "NURTURE_"
#: The name ``[api] key`` is known by in records.
DEFAULT_KEY_NAME = "default"
KEY_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: The shortest API key accepted, named or ``[api] key`` alike.
MIN_KEY = 16
#: What a ``[[webhooks]]`` entry may ask for.
WEBHOOK_EVENTS = (
    "lead.created", "lead.updated", "lead.stage_changed", "lead.hot", "lead.unsubscribed",
    "lead.confirmed", "form.submitted", "handoff.answered", "task.completed",
)  # fmt: skip


class Section(BaseModel):
    """Base of every ``[section]``: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


class ProjectSection(Section):
    #: The project's name, shown in logs and reports.
    name: str = "nurture"
    #: IANA timezone used for leads that have none.
    default_timezone: str = "UTC"

    @field_validator("default_timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        from nurture.language.fields import check_timezone

        return check_timezone(value)


class DatabaseSection(Section):
    #: SQLAlchemy URL; empty means ``nurture.db`` (SQLite) in the project directory.
    #: A relative SQLite path is taken from the project directory.
    url: str = ""


class SmtpSection(Section):
    #: SMTP server; empty means messages go to the Maildir ``outbox/`` of the project.
    host: str = ""
    port: int = Field(default=587, ge=1, le=65535)
    username: str = ""
    password: str = ""
    #: STARTTLS: ``true``, required (a server that does not offer it is sent nothing: a
    #: sending problem); ``"opportunistic"``, used when the server offers it; ``false``,
    #: never. Unset: required, except to a server on this machine (a loopback address
    #: or ``localhost``), where it is opportunistic.
    starttls: bool | Literal["opportunistic"] | None = None
    #: Implicit TLS from the first byte (usually port 465); ``starttls`` is then moot.
    tls: bool = False
    #: PEM file of the authority that signed the server's certificate (a private relay);
    #: empty: the system's trusted authorities. Certificates are always verified.
    ca_file: str = ""
    #: Connections kept open to the server at once.
    max_connections: int = Field(default=4, ge=1, le=100)
    #: Seconds to wait for the server.
    timeout: float = Field(default=30.0, gt=0)

    def starttls_mode(self) -> Literal["required", "opportunistic", "off"]:
        """What ``starttls`` means for this server (see the setting)."""
        if self.starttls is None:
            local = self.host.lower() in ("localhost", "localhost.") or _loopback(self.host)
            return "opportunistic" if local else "required"
        if self.starttls == "opportunistic":
            return "opportunistic"
        return "required" if self.starttls else "off"


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class SenderSection(Section):
    #: The sender's postal address, printed in every email (required by anti-spam law).
    postal_address: str = ""
    #: The sender's job title, for signatures (``sender.title``).
    title: str = ""


def _email(value: str) -> str:
    """An address setting, normalised as leads' addresses are."""
    from nurture.errors import InvalidValueError
    from nurture.language.fields import normalize_email

    try:
        return normalize_email(value)
    except InvalidValueError as exc:
        raise ValueError(str(exc)) from None


@lru_cache(maxsize=4096)
def address_key(address: str) -> str:
    """The :func:`sender_key` of the address in *address* (``"Sam Patel <sam@example.com>"``
    gives ``sam@example.com``). Cached: every email's sender is parsed, and the senders
    are few."""
    from email.utils import parseaddr

    return sender_key(parseaddr(address)[1])


@lru_cache(maxsize=4096)
def sender_key(address: str) -> str:
    """The one form of a sender's address (``sam@bücher.de``), as a message's sender is
    stored, looked up, routed and counted by: NFC, lower case, the domain in its Unicode
    form, as :func:`nurture.language.fields.normalize_email` gives leads' addresses
    (``sam@xn--bcher-kva.de`` and ``SAM@Bücher.de`` are one sender). An address that is
    not valid (``leads@localhost``) is kept NFC and lower-cased. Cached: a delivery run
    asks it of every message's sender, and the senders (and owners) are few beside
    the messages."""
    import unicodedata

    from nurture.errors import InvalidValueError
    from nurture.language.fields import normalize_email

    text = unicodedata.normalize("NFC", address.strip())
    if not text:
        return ""
    try:
        return normalize_email(text)
    except InvalidValueError:
        return text.lower()


def _optional_email(value: str) -> str:
    """An address setting that may be empty."""
    return _email(value) if value.strip() else ""


class TrackingSection(Section):
    #: Public base URL of the tracking server (``nurture serve``), for links in emails.
    base_url: str = "http://localhost:8080"
    #: Key that signs tracking and unsubscribe tokens. Empty: a random key is made once
    #: and kept in the database, shared by every worker on it.
    secret: str = ""
    #: Address for ``List-Unsubscribe: <mailto:...>``; empty leaves the mailto out.
    unsubscribe_mailto: str = ""

    _mailto = field_validator("unsubscribe_mailto")(lambda value: _optional_email(value))

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")


class ApiSection(Section):
    #: The key the API wants (``Authorization: Bearer KEY`` or ``X-API-Key``); its name
    #: is ``default``. Empty, and no ``keys``: the API is off.
    key: str = ""
    #: Named keys (``[api.keys]``: ``website = "..."``, ``crm = "..."``), so that one can
    #: be revoked alone; each event and lead change records the name of the key.
    keys: dict[str, str] = Field(default_factory=dict)

    @field_validator("key")
    @classmethod
    def _default_key(cls, value: str) -> str:
        if value and len(value) < MIN_KEY:
            raise ValueError(f"a key needs at least {MIN_KEY} characters")
        return value

    @field_validator("keys")
    @classmethod
    def _named_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for name, key in value.items():
            if not KEY_NAME.fullmatch(name):
                raise ValueError(f"key name {name!r}: use letters, digits, - and _")
            if len(key) < MIN_KEY:
                raise ValueError(f"{name}: a key needs at least {MIN_KEY} characters")
        if len(set(value.values())) != len(value):
            raise ValueError("two names share one key: give each its own")
        return value

    def named_keys(self) -> dict[str, str]:
        """Every key by name: ``[api.keys]``, and ``[api] key`` as ``default``."""
        named = dict(self.keys)
        if self.key:
            named.setdefault(DEFAULT_KEY_NAME, self.key)
        return named


class ServerSection(Section):
    #: Where ``nurture serve`` (and ``nurture run --serve``) listens.
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    #: Reverse proxies (addresses or networks, like ``10.0.0.0/8``) whose
    #: ``X-Forwarded-For`` names the client; from any other peer it is ignored.
    trusted_proxies: list[str] = []

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item.strip(), strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network") from None
        return [item.strip() for item in value]


class RepliesSection(Section):
    #: IMAP server of the mailbox replies (and the unsubscribe mailto) arrive in; empty:
    #: no reply detection.
    host: str = ""
    port: int = Field(default=993, ge=1, le=65535)
    username: str = ""
    password: str = ""
    #: Implicit TLS (port 993); else plain IMAP, upgraded with STARTTLS when ``starttls``.
    tls: bool = True
    starttls: bool = True
    #: PEM file of the authority that signed the server's certificate; empty: the system's.
    ca_file: str = ""
    mailbox: str = "INBOX"
    #: Seconds between polls of ``nurture run``.
    interval: float = Field(default=60.0, gt=0)
    #: The authserv-id the receiving mail server writes in its ``Authentication-Results``
    #: header (like ``mx.example.com``). A reply matched only by its From address
    #: earns points only when that server says the From domain passed; empty: never.
    authserv_id: str = ""


class SalesSection(Section):
    #: Salespeople who take hot leads that have no owner, in turn (round robin).
    team: list[str] = Field(default_factory=list)
    #: Who hears about a hot lead when nobody owns it and there is no team, and who gets
    #: the reminders.
    notify_email: str = ""
    #: Slack-compatible incoming webhook for hot-lead notices; empty: none.
    webhook_url: str = ""
    #: Business days sales has to answer a hand-off before one reminder goes out.
    accept_within: int = Field(default=2, ge=1, le=60)
    #: The From address of hand-off notifications (a display name is welcome:
    #: ``"Acme leads <nurture@example.com>"``).
    from_address: str = "nurture@localhost"
    #: Sales managers: they see every salesperson's leads, tasks and hand-offs in the app.
    managers: list[str] = Field(default_factory=list)
    #: Where a salesperson's reply to a notice goes (a person, not a robot); empty: the
    #: first manager, else ``notify_email``.
    reply_to: str = ""
    #: Local time of the daily digest (each salesperson's own timezone); empty: no digest.
    digest_at: str = "08:00"
    #: Sales' timezone: times in notices, the app and the digest (empty: the project's).
    timezone: str = ""
    #: One salesperson's own timezone, by address: ``{"ana@example.com" = "Europe/Madrid"}``.
    timezones: dict[str, str] = Field(default_factory=dict)
    #: Salespeople's names, by address (``{"sam@example.com" = "Sam Patel"}``); a team or
    #: managers entry written ``"Sam Patel <sam@example.com>"`` names one too. An import
    #: whose owner column holds a name finds the owner by it.
    names: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _named_entries(cls, data: Any) -> Any:
        """``"Sam Patel <sam@example.com>"`` in team or managers: the address stays
        there, the name goes to ``names``."""
        from email.utils import parseaddr

        if not isinstance(data, dict):
            return data
        data = dict(data)
        names = dict(data.get("names") or {})
        for key in ("team", "managers"):
            entries = data.get(key)
            if not isinstance(entries, list):
                continue
            plain = []
            for entry in entries:
                if isinstance(entry, str) and "<" in entry:
                    name, address = parseaddr(entry)
                    if address and name:
                        names.setdefault(address, name)
                        plain.append(address)
                        continue
                plain.append(entry)
            data[key] = plain
        if names:
            data["names"] = names
        return data

    @field_validator("names")
    @classmethod
    def _names(cls, value: dict[str, str]) -> dict[str, str]:
        from nurture.errors import InvalidValueError
        from nurture.language.fields import normalize_email

        try:
            return {normalize_email(k): str(v).strip() for k, v in value.items()}
        except InvalidValueError as exc:
            raise ValueError(str(exc)) from None

    def owners_by_name(self) -> dict[str, str]:
        """Each salesperson's name (as :func:`~nurture.language.fields.name_key` matches
        it) and address: ``names``, for the team, the managers and the sales inbox."""
        from nurture.language.fields import name_key

        return {name_key(name): email for email, name in self.names.items() if name.strip()}

    _notify = field_validator("notify_email")(lambda value: _optional_email(value))

    @field_validator("team", "managers")
    @classmethod
    def _emails(cls, value: list[str]) -> list[str]:
        return [_email(address) for address in value]

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from nurture.language.fields import check_timezone

        return check_timezone(value) if value else value

    @field_validator("timezones")
    @classmethod
    def _zones(cls, value: dict[str, str]) -> dict[str, str]:
        from nurture.errors import InvalidValueError
        from nurture.language.fields import check_timezone, normalize_email

        try:
            return {normalize_email(k): check_timezone(v) for k, v in value.items()}
        except InvalidValueError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("digest_at")
    @classmethod
    def _time_of_day(cls, value: str) -> str:
        from nurture.errors import InvalidValueError
        from nurture.language.timing import parse_time_of_day

        if value:
            try:
                parse_time_of_day(value)
            except InvalidValueError as exc:
                raise ValueError(str(exc)) from None
        return value

    def timezone_of(self, email: str | None, default: str) -> str:
        """The timezone of salesperson *email*: their own, else sales', else *default*."""
        return self.timezones.get(email or "", "") or self.timezone or default

    @field_validator("webhook_url")
    @classmethod
    def _http(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value


class AppSection(Section):
    #: Days a sign-in to the sales app lasts.
    session_days: int = Field(default=30, ge=1, le=365)
    #: Days the link in a hand-off notice opens the lead's page without signing in.
    link_days: int = Field(default=14, ge=1, le=90)
    #: Minutes a sign-in link sent by email stays valid (it works once).
    signin_minutes: int = Field(default=30, ge=5, le=1440)


class DeliverySection(Section):
    #: A message whose sending process died mid-send may or may not have reached the
    #: server. ``hold``: keep it for review (``nurture outbox``), never resend it on its
    #: own. ``resend``: send it again, with the same Message-ID.
    on_uncertain: Literal["hold", "resend"] = "hold"
    #: Seconds a claimed message stays with its worker without a heartbeat (the worker
    #: renews it three times per lease); after that the worker is taken to have died.
    lease: float = Field(default=60.0, ge=1)
    #: Seconds before the first retry of a send the server refused for now (or that
    #: could not connect); the wait doubles with each attempt, up to ``retry_max``.
    retry_after: float = Field(default=60.0, gt=0)
    retry_max: float = Field(default=3600.0, gt=0)


class LimitsSection(Section):
    #: Emails one sender mailbox may send per day (its local day in the project timezone).
    per_sender_daily: int = Field(default=500, ge=1)
    #: Emails one lead may get per day across all sequences (the lead's local day).
    per_lead_daily: int = Field(default=2, ge=1)
    #: Different leads of one recipient domain emailed per day (the project's day);
    #: free-mail domains (gmail.com...) are not counted. Unset: no limit.
    per_domain_daily: int | None = Field(default=None, ge=1)
    #: A ``[[senders]]`` entry whose hard bounces pass this share of its last 100 sends
    #: is paused (``0.05``: more than 5 bounces in 100). ``"5%"`` is read as 0.05.
    max_bounce_rate: float = Field(default=0.05, gt=0, le=1)

    @field_validator("max_bounce_rate", mode="before")
    @classmethod
    def _percent(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().endswith("%"):
            try:
                return float(value.strip()[:-1]) / 100
            except ValueError:
                raise ValueError(f"{value!r} is not a share like 0.05 or '5%'") from None
        return value


def key_name(value: str) -> str:
    """A name people type in commands (a sender's, a webhook's): letters, digits, - and _."""
    if not KEY_NAME.fullmatch(value):
        raise ValueError(f"name {value!r}: use letters, digits, - and _")
    return value


#: ``min_gap``: a number and seconds, minutes or hours (``"20 seconds"``, ``"1 minute"``).
_GAP = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|secs?|seconds?|m|mins?|minutes?|h|hours?)\s*$")
_GAP_UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_gap(text: Any) -> float:
    """``"20 seconds"`` -> 20.0; a bare number is seconds."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        match = _GAP.match(str(text).lower())
        if match is None:
            raise ValueError(f"bad gap {text!r}: write a number and a unit, like '20 seconds'")
        seconds = float(match.group(1)) * _GAP_UNITS[match.group(2)[0]]
    if seconds < 0 or seconds > 86400:
        raise ValueError(f"gap {text!r}: between 0 seconds and 24 hours")
    return seconds


#: The login a ``[[senders]]`` entry's own server starts from: none of the default's.
NO_LOGIN: dict[str, Any] = {"username": "", "password": ""}


class SenderSmtp(Section):
    """A ``[[senders]]`` entry's own SMTP account; what it leaves out is ``[smtp]``'s."""

    host: str = ""
    port: int | None = Field(default=None, ge=1, le=65535)
    username: str | None = None
    password: str | None = None
    starttls: bool | Literal["opportunistic"] | None = None
    tls: bool | None = None
    ca_file: str | None = None
    max_connections: int | None = Field(default=None, ge=1, le=100)
    timeout: float | None = Field(default=None, gt=0)


class SenderReplies(Section):
    """A ``[[senders]]`` entry's own reply mailbox; what it leaves out is ``[replies]``'s."""

    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    username: str | None = None
    password: str | None = None
    tls: bool | None = None
    starttls: bool | None = None
    ca_file: str | None = None
    mailbox: str | None = None
    interval: float | None = Field(default=None, gt=0)
    authserv_id: str | None = None


class Warmup(Section):
    """A new sender's daily cap: ``start`` on its first day, ``increase`` more each day."""

    start: int = Field(ge=1)
    increase: int = Field(ge=1)


class SenderEntry(Section):
    """One ``[[senders]]`` entry: a mailbox that sends for someone, and its pacing."""

    #: What sequences (``senders: [sam]``) and ``nurture senders`` call it.
    name: str
    #: ``"Sam Patel <sam@example.com>"``: the From, and the owner whose leads it serves.
    address: str
    #: Its own SMTP account; unset: ``[smtp]``.
    smtp: SenderSmtp | None = None
    #: Its own mailbox replies to its emails arrive in; unset keys: ``[replies]``'s.
    replies: SenderReplies | None = None
    #: Sends in any 24 hours (rolling); unset: only ``[limits] per_sender_daily``.
    daily: int | None = Field(default=None, ge=1)
    #: Sends in any hour (rolling).
    hourly: int | None = Field(default=None, ge=1)
    #: Seconds between two sends (``"20 seconds"``), each gap up to 50 % longer at random.
    min_gap: float = 0.0
    #: ``{ start = 20, increase = 10 }``: the daily cap of a new sender grows day by day.
    warmup: Warmup | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return key_name(value)

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        from email.utils import getaddresses, parseaddr

        if "\n" in value or "\r" in value:
            raise ValueError("address must be on one line")
        if len([a for a in getaddresses([value]) if a[1]]) > 1:
            raise ValueError(f"{value!r} names more than one address: a sender has one")
        _, email = parseaddr(value)
        if not email or "@" not in email:
            raise ValueError(f"{value!r} is not an address like 'Sam Patel <sam@example.com>'")
        _email(email)
        return value.strip()

    @field_validator("min_gap", mode="before")
    @classmethod
    def _gap(cls, value: Any) -> float:
        return parse_gap(value)

    @model_validator(mode="after")
    def _hourly_within_daily(self) -> SenderEntry:
        if self.hourly is not None and self.daily is not None and self.hourly > self.daily:
            raise ValueError(f"hourly {self.hourly} is more than daily {self.daily}")
        return self

    @model_validator(mode="after")
    def _warmup_within_daily(self) -> SenderEntry:
        if self.warmup is not None and self.daily is not None and self.warmup.start > self.daily:
            raise ValueError(
                f"warmup start {self.warmup.start} is more than daily {self.daily}"
            )
        return self

    @property
    def email(self) -> str:
        """Its address alone, normalised by :func:`sender_key` (the envelope sender, and
        the owner it serves)."""
        return address_key(self.address)

    def smtp_settings(self, default: SmtpSection) -> SmtpSection:
        """Its SMTP account: its own keys over ``[smtp]``'s (``[smtp]`` when it names no
        host). Its server never gets ``[smtp]``'s login: ``username`` and ``password``
        are its own or none."""
        if self.smtp is None or not self.smtp.host:
            return default
        own = self.smtp.model_dump(exclude_none=True)
        return default.model_copy(update={**NO_LOGIN, **own})

    def replies_settings(self, default: RepliesSection) -> RepliesSection | None:
        """Its reply mailbox: its own ``replies`` keys over ``[replies]``'s (``[replies]``
        when it has none); ``None`` when neither names a host. A mailbox that names its
        own ``host`` never gets ``[replies]``'s login (``username``, ``password``)."""
        merged = default
        if self.replies is not None:
            own = self.replies.model_dump(exclude_none=True)
            base = NO_LOGIN if self.replies.host else {}
            merged = default.model_copy(update={**base, **own})
        return merged if merged.host else None


class DaemonSection(Section):
    #: Seconds between passes of ``nurture run``.
    interval: float = Field(default=60.0, gt=0)
    #: Seconds between runs of the delivery loop (retries and deferred emails).
    delivery_interval: float = Field(default=15.0, gt=0)
    #: Enrollments claimed, and emails sent, per transaction.
    batch_size: int = Field(default=200, ge=1, le=10000)
    #: Whether the pass runs in a process of its own, on another core than the sending
    #: (``false``: a thread of the daemon's process, on one core with everything else).
    pass_process: bool = True


class WebhookEndpoint(Section):
    """One ``[[webhooks]]`` entry: where signed event deliveries go."""

    #: What ``nurture webhooks list`` and ``test`` call it.
    name: str
    url: str
    #: The event types it wants (``lead.created``, ...; ``"*"``: every one).
    events: list[str]
    #: Signs each delivery (``X-Nurture-Signature``); the receiver checks it.
    secret: str

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return key_name(value)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("events")
    @classmethod
    def _events(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError(f"name at least one event ({', '.join(WEBHOOK_EVENTS)}, or *)")
        for name in value:
            if name != "*" and name not in WEBHOOK_EVENTS:
                raise ValueError(
                    f"unknown event {name!r}{did_you_mean(name, list(WEBHOOK_EVENTS))}"
                )
        return value

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str) -> str:
        if len(value) < 16:
            raise ValueError("a secret needs at least 16 characters")
        return value

    def wants(self, event_type: str) -> bool:
        return "*" in self.events or event_type in self.events


class Settings(BaseSettings):
    """All settings of one project. Build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="_",
        env_nested_max_split=1,
        extra="forbid",
    )

    project: ProjectSection = ProjectSection()
    database: DatabaseSection = DatabaseSection()
    smtp: SmtpSection = SmtpSection()
    sender: SenderSection = SenderSection()
    tracking: TrackingSection = TrackingSection()
    limits: LimitsSection = LimitsSection()
    delivery: DeliverySection = DeliverySection()
    sales: SalesSection = SalesSection()
    app: AppSection = AppSection()
    api: ApiSection = ApiSection()
    server: ServerSection = ServerSection()
    replies: RepliesSection = RepliesSection()
    daemon: DaemonSection = DaemonSection()
    #: ``[[webhooks]]``: signed outbound event deliveries.
    webhooks: list[WebhookEndpoint] = Field(default_factory=list)
    #: ``[[senders]]``: the mailboxes sequences send from, each with its pacing.
    senders: list[SenderEntry] = Field(default_factory=list)

    @field_validator("senders")
    @classmethod
    def _unique_senders(cls, value: list[SenderEntry]) -> list[SenderEntry]:
        seen: dict[str, str] = {}
        for entry in value:
            if entry.name in seen:
                raise ValueError(f"two [[senders]] entries are named {entry.name!r}")
            if entry.email in seen.values():
                raise ValueError(f"two [[senders]] entries send from {entry.email}")
            seen[entry.name] = entry.email
        return value

    def sender_named(self, name: str) -> SenderEntry | None:
        """The ``[[senders]]`` entry called *name*."""
        return next((e for e in self.senders if e.name == name), None)

    def sender_of(self, email: str) -> SenderEntry | None:
        """The ``[[senders]]`` entry that sends from (and serves the owner) *email*."""
        wanted = sender_key(email)
        return next((e for e in self.senders if e.email == wanted), None)

    @field_validator("webhooks")
    @classmethod
    def _unique_names(cls, value: list[WebhookEndpoint]) -> list[WebhookEndpoint]:
        names = [endpoint.name for endpoint in value]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"two [[webhooks]] entries are named {name!r}")
        return value

    def webhook(self, name: str) -> WebhookEndpoint | None:
        """The ``[[webhooks]]`` entry called *name*."""
        return next((e for e in self.webhooks if e.name == name), None)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over the file, which is passed in as init values.
        return (env_settings, init_settings)
