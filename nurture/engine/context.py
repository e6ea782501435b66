"""What every stage of a pass is given, opened once: the database, the settings, the
templates and the signing key. Nothing here changes while the daemon runs: the state
of a stage (the scoring rules of the last reload, a pause of delivery) is that stage's."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine

from nurture.config import Config
from nurture.language.sequences import Sequence
from nurture.language.templates import TemplateSet
from nurture.store.advancing import DueLead
from nurture.store.leads import Lead
from nurture.store.meta import project_secret
from nurture.store.workers import new_worker_id


@dataclass(frozen=True)
class Context:
    """What every stage of a pass needs, opened once, never changed after."""

    engine: Engine
    config: Config
    templates: TemplateSet
    secret: str
    batch_size: int = 200
    #: Who claims work in this process: the registered worker of ``nurture run``, or a
    #: one-off id for ``nurture tick``.
    worker_id: str = field(default_factory=lambda: new_worker_id())

    @classmethod
    def open(cls, engine: Engine, config: Config) -> Context:
        """The context of *config*'s project on *engine*."""
        settings = config.settings
        return cls(
            engine=engine,
            config=config,
            templates=TemplateSet(config.templates_dir),
            secret=project_secret(settings.tracking.secret, engine),
            batch_size=settings.daemon.batch_size,
        )

    @property
    def default_timezone(self) -> str:
        """The project's timezone, for leads that have none."""
        return self.config.settings.project.default_timezone

    def timezone_for(self, sequence: Sequence, lead: Lead | DueLead) -> str:
        """The timezone *sequence*'s schedule runs in for *lead*."""
        return sequence.schedule.timezone_for(lead.timezone, self.default_timezone)
