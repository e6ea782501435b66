"""``nurture check``: every sequence, template and ``scoring.yaml`` of a project, at once.

Templates are rendered against the sample lead (the first row of the project's
``leads.csv``), so an undefined variable shows up here rather than in a lead's inbox.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from nurture import clock
from nurture.config import Config
from nurture.errors import InputFileError, InvalidValueError, NurtureError
from nurture.intake.forms import load_forms
from nurture.language.expressions import EventSet, LeadView, Scores, View, context, truth
from nurture.language.scoring import ScoringRules, fit_label, fit_of, load_scoring
from nurture.language.sequence_files import load_sequences
from nurture.language.sequences import NotifyAction, Sequence, TaskAction
from nurture.language.templates import HTML_SUFFIX, VARIABLES, TemplateSet, inside_folder
from nurture.mail.compose import Sender, sequence_sender
from nurture.problems import Problem, problem_from_error
from nurture.reports.logic import check_event_names, check_outcomes
from nurture.suggest import did_you_mean

SAMPLE_LEAD = {
    "email": "sample.lead@example.com",
    "first_name": "Sam",
    "last_name": "Sample",
    "company": "Example Corp",
    "title": "Head of Operations",
    "timezone": "America/New_York",
    "owner": "owner@example.com",
    "source": "sample",
    "stage": "cold",
    "status": "subscribed",
}


def counted(number: int, word: str) -> str:
    """``1 problem``, ``3 problems``."""
    return f"{number} {word}{'' if number == 1 else 's'}"


@dataclass
class CheckResult:
    sequences: list[Sequence] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)
    scoring: ScoringRules | None = None
    forms: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    #: What will work but is probably not what was meant (``--strict`` fails on them).
    warnings: list[Problem] = field(default_factory=list)
    #: Custom event names the sequences and scoring.yaml use, with where they stand.
    custom_events: dict[str, Problem] = field(default_factory=dict)
    #: Sequence files read (valid or not).
    sequence_files: int = 0

    def summary(self, *, strict: bool = False) -> str:
        """The last line: what was checked, and how many problems in how many files
        (``3 problems in 1 file``); with *strict*, warnings count as failures."""
        what = ", ".join(
            part
            for part in (
                counted(self.sequence_files, "sequence"),
                counted(len(self.templates), "template"),
                counted(len(self.forms), "form") if self.forms else "",
                "scoring.yaml" if self.scoring else "",
            )
            if part
        )
        warned = counted(len(self.warnings), "warning")
        if self.problems:
            files = len({problem.path for problem in self.problems})
            tail = f", {warned}" if self.warnings else ""
            return (
                f"{counted(len(self.problems), 'problem')} in {counted(files, 'file')}{tail}; "
                f"checked {what}"
            )
        if strict and self.warnings:
            return f"failed (--strict): {warned}, no problems; checked {what}"
        tail = f", {warned}" if self.warnings else ""
        return f"ok: {what} checked, no problems{tail}"


def sample_lead(project_dir: Path) -> LeadView:
    """The first valid row of the project's ``leads.csv``, else a built-in sample."""
    from nurture.intake.importer import ImportReport, open_text, read_records

    path = project_dir / "leads.csv"
    values: dict[str, Any] = dict(SAMPLE_LEAD)
    if path.is_file():
        try:
            with path.open("rb") as raw, open_text(raw) as text:
                report = ImportReport(path=str(path))
                record = next(read_records(str(path), text, report), None)
        except (InputFileError, UnicodeDecodeError):
            record = None
        if record is not None:
            values = {"stage": "cold", "status": "subscribed", **record.changes.attributes}
            values.update(record.changes.fields)
            values["email"] = record.changes.email
    first, last = values.get("first_name"), values.get("last_name")
    values["name"] = " ".join(p for p in (first, last) if p) or values["email"]
    return LeadView(values)


def check_project(config: Config) -> CheckResult:
    """Check everything a marketer writes; collect every problem, never stop at one."""
    result = CheckResult()
    templates = TemplateSet(config.templates_dir)
    result.templates = templates.names()
    sequences, problems = load_sequences(config.sequences_dir, templates.exists, result.templates)
    result.sequences = sequences
    if config.sequences_dir.is_dir():
        result.sequence_files = sum(
            1 for path in config.sequences_dir.iterdir() if path.suffix in (".yaml", ".yml")
        )
    result.problems.extend(problems)
    postal = config.settings.sender.postal_address
    if not postal.strip():
        result.problems.append(
            Problem(
                str(config.config_file),
                None,
                "[sender] postal_address is empty: "
                "every email must carry the sender's postal address",
            )
        )
    result.problems.extend(_links_outside(templates.directory))
    lead = sample_lead(config.project_dir)
    users = _template_users(sequences)
    for name in result.templates:
        sequence = users.get(name)
        result.problems.extend(_check_template(templates, name, lead, sequence, config))
    forms, problems = load_forms(config.forms_dir)
    result.forms = sorted(forms)
    result.problems.extend(problems)
    scoring, problems = load_scoring(config.scoring_file)
    result.scoring = scoring
    result.problems.extend(problems)
    # The sample lead's scores: its fit by scoring.yaml, no engagement yet.
    scores = Scores(0.0, fit_of(scoring, lead, clock.now())[0]) if scoring else Scores()
    for sequence in sequences:
        result.problems.extend(_check_sequence_texts(templates, sequence, lead, config, scores))
    if scoring is not None:
        result.problems.extend(_check_fit_rules(scoring, lead, config.scoring_file))
        result.warnings.extend(
            Problem(str(config.scoring_file), rule.line,
                    f"fit rule without a label: sales reads {fit_label(rule)!r}; "
                    "say what it means with label: (like 'Decision-maker title')")
            for rule in scoring.fit if not rule.label
        )  # fmt: skip
    events = check_event_names(sequences, scoring, config.scoring_file, _line_of)
    result.problems.extend(events.problems)
    result.warnings.extend(events.warnings)
    result.custom_events.update(events.custom)
    for sequence in sequences:
        result.problems.extend(check_outcomes(sequence))
        result.problems.extend(_check_senders(sequence, config))
        if sequence.sender == "owner" and not sequence.fallback_from:
            result.warnings.append(Problem(
                str(sequence.path), _line_of(sequence.path, "from"),
                "from: owner without fallback_from: a lead whose owner has no [[senders]] "
                f"entry gets its email from [sales] from_address "
                f"({config.settings.sales.from_address})"))  # fmt: skip
    result.warnings.extend(_check_links_reach_people(config))
    result.problems.sort(key=lambda p: (p.path, p.line or 0))
    result.warnings.sort(key=lambda p: (p.path, p.line or 0))
    return result


def _line_of(path: Path, word: str) -> int | None:
    """The first line of *path* that names *word* (for names the parsed form keeps no
    line for)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    pattern = re.compile(rf"(?<![\w.]){re.escape(word)}(?![\w])")
    return next((n for n, text in enumerate(lines, 1) if pattern.search(text)), None)


def _check_links_reach_people(config: Config) -> list[Problem]:
    """A real mail server with links to this machine: every link would be dead."""
    smtp_host = config.settings.smtp.host.strip().lower()
    base_url = config.settings.tracking.base_url
    if not smtp_host or _is_local(smtp_host):
        return []
    host = (urlsplit(base_url).hostname or "").lower()
    if host and not _is_local(host):
        return []
    return [
        Problem(
            str(config.config_file), _line_of(config.config_file, "base_url"),
            f"[tracking] base_url is {base_url!r} while [smtp] host is a real server: "
            "unsubscribe and tracking links in sent emails would not open for anyone; "
            "set it to the public https address of nurture serve",
        )
    ]  # fmt: skip


def _is_local(host: str) -> bool:
    if host in ("localhost", "") or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _links_outside(folder: Path) -> list[Problem]:
    """Templates and partials that are links to files outside the templates folder."""
    if not folder.is_dir():
        return []
    return [
        Problem(str(path), None, "links to a file outside the templates folder: refused "
                "(copy the file into the folder instead)")
        for path in sorted(folder.iterdir())
        if path.is_symlink() and not inside_folder(path, folder)
    ]  # fmt: skip


def _template_users(sequences: list[Sequence]) -> dict[str, Sequence]:
    users: dict[str, Sequence] = {}
    for sequence in sequences:
        for step in sequence.steps:
            for name, _ in getattr(step.action, "variants", ()):
                users.setdefault(name, sequence)
    return users


def sender_for(sequence: Sequence | None, config: Config) -> Sender:
    if sequence is not None:
        return sequence_sender(config, sequence)
    sender = config.settings.sender
    return Sender.parse("Sender <sender@example.com>", sender.postal_address, sender.title)


def _check_senders(sequence: Sequence, config: Config) -> list[Problem]:
    """A ``senders:`` list or a ``fallback_from`` naming a sender ``[[senders]]`` lacks."""
    known = [entry.name for entry in config.settings.senders]
    where = str(sequence.path)
    listed = f" (known: {', '.join(known) or 'none'})"
    problems = [
        Problem(where, sequence.senders_line or None,
                f"unknown sender {name!r} in senders: no [[senders]] entry has that name"
                f"{did_you_mean(name, known) or listed}")
        for name in sequence.senders if name not in known
    ]  # fmt: skip
    fallback = sequence.fallback_from
    if fallback and "@" not in fallback and fallback not in known:
        problems.append(Problem(where, _line_of(sequence.path, "fallback_from"),
                                f"fallback_from: no [[senders]] entry is named {fallback!r}"
                                f"{did_you_mean(fallback, known)}"))  # fmt: skip
    return problems


def _check_template(
    templates: TemplateSet, name: str, lead: LeadView, sequence: Sequence | None, config: Config
) -> list[Problem]:
    from nurture.mail.compose import render_step_email

    path = templates.directory / f"{name}{HTML_SUFFIX}"
    try:
        unknown = templates.unknown_variables(name)
        if unknown:
            names = ("lead", "sender", "sequence", "step", "unsubscribe_url")
            known = ", ".join(names)
            return [
                Problem(str(path), line,
                        f"unknown variable {var!r}{did_you_mean(var, VARIABLES)} "
                        f"(templates know: {known})")
                for line, var in unknown
            ]  # fmt: skip
        shown: Any = sequence or View({"name": "preview", "description": ""})
        render_step_email(
            templates, name, lead, sender_for(sequence, config), shown, "preview",
            f"{config.settings.tracking.base_url}/u/preview",
        )  # fmt: skip
    except NurtureError as exc:
        return [problem_from_error(exc, path_in(exc, path))]
    return []


def path_in(error: Exception, default: Path) -> str:
    """The file an error message starts with (a layout or partial), else *default*."""
    text = str(error)
    head = text.split(":", 1)[0]
    return head if head.endswith((".j2", ".yaml", ".yml")) else str(default)


def _check_sequence_texts(
    templates: TemplateSet, sequence: Sequence, lead: LeadView, config: Config, scores: Scores
) -> list[Problem]:
    """Task notes and notifications render against the sample lead."""
    problems = []
    names = {"lead": lead, "sender": sender_for(sequence, config).view()}
    for step in sequence.steps:
        source, line = "", step.line
        if isinstance(step.action, TaskAction):
            source, line = step.action.note, step.action.note_line or step.line
        elif isinstance(step.action, NotifyAction):
            source, line = step.action.message, step.action.message_line or step.line
        if not source:
            continue
        try:
            templates.render_text(source, names, str(sequence.path), line)
        except NurtureError as exc:
            found = problem_from_error(exc, str(sequence.path))
            message = f"step {step.id!r}: {found.message}"
            problems.append(Problem(found.path, found.line or line, message))
    context_names = context(lead, EventSet(), now=clock.now(), scores=scores)
    if sequence.audience is not None:
        try:
            truth(sequence.audience, context_names)
        except InvalidValueError as exc:
            problems.append(
                Problem(str(sequence.path), sequence.audience_line or None,
                        f"audience fails on the sample lead: {exc}")
            )  # fmt: skip
    return problems


def _check_fit_rules(scoring: ScoringRules, lead: LeadView, path: Path) -> list[Problem]:
    names = context(lead, EventSet(), now=clock.now())
    problems = []
    for rule in scoring.fit:
        try:
            truth(rule.condition, names)
        except InvalidValueError as exc:
            problems.append(
                Problem(str(path), rule.line, f"fit rule fails on the sample lead: {exc}")
            )
    return problems
