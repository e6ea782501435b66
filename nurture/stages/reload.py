"""The reload stage: the sequences, templates and scoring rules as the files say now,
parsed again only when a file changed, with what changed logged once."""

import logging
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from nurture import logs
from nurture.engine.catalog import Catalog, load_catalog
from nurture.engine.context import Context
from nurture.language.scoring import ScoringRules, load_scoring
from nurture.language.sequence_files import SequenceFiles, load_sequences
from nurture.problems import Problem


def files_stamp(*directories: Path) -> tuple[tuple[str, int, int], ...]:
    """The name, modification time and size of every file in *directories*: when it is
    the same as before, nothing there needs parsing again."""
    stamps = []
    for directory in directories:
        try:
            entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
        except OSError:
            continue
        for entry in entries:
            try:
                info = entry.stat()
            except OSError:
                continue
            stamps.append((entry.path, info.st_mtime_ns, info.st_size))
    return tuple(stamps)


class Reloader:
    """Reloads the sequences and the scoring rules for each pass (parsing them again
    only when a file changed) and logs what changed, once per change. A *quiet* one (the
    pass process's, beside the daemon's own) logs only the deploys it made itself: the
    problems of the files are the daemon's to tell, once."""

    def __init__(self, ctx: Context, *, quiet: bool = False) -> None:
        self.ctx = ctx
        self.quiet = quiet
        self._reported: set[str] = set()
        self._scoring_reported: set[str] = set()
        self._sequences: tuple[Any, SequenceFiles] | None = None
        self._rules: tuple[bytes, tuple[ScoringRules | None, list[Problem]]] | None = None
        #: The scoring rules the last reload read: expressions see each lead's engagement
        #: decayed by their half-life (``None``: scoring.yaml unreadable, as stored).
        self.rules: ScoringRules | None = None

    def __call__(self, now: datetime) -> Catalog:
        config = self.ctx.config
        stamp = files_stamp(config.sequences_dir, config.templates_dir)
        if self._sequences is None or self._sequences[0] != stamp:
            loaded = load_sequences(config.sequences_dir, self.ctx.templates.exists)
            self._sequences = (stamp, loaded)
        catalog = load_catalog(self.ctx.engine, config.sequences_dir, self.ctx.templates, now,
                               loaded=self._sequences[1])  # fmt: skip
        for name in catalog.deployed:
            logs.action("sequence deployed", sequence=name)
        if not self.quiet:
            self._tell(catalog)
        return catalog

    def _tell(self, catalog: Catalog) -> None:
        """Log what is wrong with the files, once per change."""
        current = {str(problem) for problem in catalog.problems}
        for line in sorted(current - self._reported):
            logs.action("sequence file has problems", level=logging.WARNING, problem=line)
        for name in catalog.kept:
            if f"kept:{name}" not in self._reported:
                logs.action("keeping the last good version", level=logging.WARNING, sequence=name)
                current.add(f"kept:{name}")
        for name, templates in sorted(catalog.missing_templates.items()):
            key = f"templates:{name}:{','.join(templates)}"
            if key not in self._reported:
                logs.action("templates are missing: the steps that use them are held, the "
                            "rest of the sequence runs", level=logging.WARNING, sequence=name,
                            templates=", ".join(templates))  # fmt: skip
                current.add(key)
        for name in catalog.differs:
            if f"differs:{name}" not in self._reported:
                logs.action("this worker's copy of the sequence file differs from the deployed "
                            "version and is older: running the deployed one (nurture deploy "
                            "deploys this copy)", level=logging.WARNING, sequence=name)  # fmt: skip
                current.add(f"differs:{name}")
        for name in catalog.missing:
            if f"missing:{name}" not in self._reported:
                logs.action(
                    "sequence file is gone: its leads wait", level=logging.WARNING, sequence=name
                )
                current.add(f"missing:{name}")
        self._reported = current

    def scoring(self) -> ScoringRules | None:
        """The scoring rules; problems in ``scoring.yaml`` are logged once per change and
        leave scores as they are until fixed. The last rules read stay in :attr:`rules`."""
        path = self.ctx.config.scoring_file
        try:
            content = path.read_bytes()
        except OSError:
            content = b""
        if self._rules is None or self._rules[0] != content or not content:
            self._rules = (content, load_scoring(path))
        rules, problems = self._rules[1]
        current = {str(problem) for problem in problems}
        told = current if self.quiet else self._scoring_reported
        for line in sorted(current - told):
            logs.action(
                "scoring.yaml has problems: scores wait", level=logging.WARNING, problem=line
            )
        self._scoring_reported = current
        self.rules = rules
        return rules
