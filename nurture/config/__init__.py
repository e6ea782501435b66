"""Settings: ``nurture.toml`` in the project directory, overridden by ``NURTURE_*`` variables.

The file is found in the current directory or its parents, or named by ``--config`` or
``NURTURE_CONFIG``. Every key can be overridden by ``NURTURE_<SECTION>_<KEY>``, for
example ``NURTURE_DATABASE_URL`` or ``NURTURE_SMTP_PORT``.

The sections and their checks are :mod:`nurture.config.sections`; finding and reading the
file, :mod:`nurture.config.files`. Both are importable from here.
"""

from __future__ import annotations

from nurture.config.files import (
    LIST_SECTIONS,
    SECRET_WORDS,
    Config,
    find_config_file,
    load_settings,
    public_url,
    readable_secrets,
    resolve_database_url,
    secrets_in,
)
from nurture.config.sections import (
    CONFIG_FILENAME,
    DEFAULT_KEY_NAME,
    ENV_PREFIX,
    KEY_NAME,
    MIN_KEY,
    WEBHOOK_EVENTS,
    ApiSection,
    AppSection,
    DaemonSection,
    DatabaseSection,
    DeliverySection,
    LimitsSection,
    ProjectSection,
    RepliesSection,
    SalesSection,
    Section,
    SenderEntry,
    SenderReplies,
    SenderSection,
    SenderSmtp,
    ServerSection,
    Settings,
    SmtpSection,
    TrackingSection,
    WebhookEndpoint,
)

__all__ = [
    "CONFIG_FILENAME",
    "DEFAULT_KEY_NAME",
    "ENV_PREFIX",
    "KEY_NAME",
    "LIST_SECTIONS",
    "MIN_KEY",
    "SECRET_WORDS",
    "WEBHOOK_EVENTS",
    "ApiSection",
    "AppSection",
    "Config",
    "DaemonSection",
    "DatabaseSection",
    "DeliverySection",
    "LimitsSection",
    "ProjectSection",
    "RepliesSection",
    "SalesSection",
    "Section",
    "SenderEntry",
    "SenderReplies",
    "SenderSection",
    "SenderSmtp",
    "ServerSection",
    "Settings",
    "SmtpSection",
    "TrackingSection",
    "WebhookEndpoint",
    "find_config_file",
    "load_settings",
    "public_url",
    "readable_secrets",
    "resolve_database_url",
    "secrets_in",
]
