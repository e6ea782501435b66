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
from nurture.language.scoring import ScoringRules, fit_of, load_scoring
from nurture.language.sequence_files import load_sequences
from nurture.language.sequences import NotifyAction, Sequence, TaskAction
from nurture.language.templates import HTML_SUFFIX, TemplateSet, inside_folder
from nurture.mail.compose import Sender
from nurture.problems import Problem, problem_from_error
from nurture.store.events import ENGINE_TYPES, KNOWN_TYPES, likely_typo

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

    def summary(self) -> str:
        what = (
            f"{len(self.sequences)} sequences, {len(self.templates)} templates"
            f"{f', {len(self.forms)} forms' if self.forms else ''}"
            f"{', scoring.yaml' if self.scoring else ''}"
        )
        warned = f", {len(self.warnings)} warnings" if self.warnings else ""
        if self.problems:
            return f"{len(self.problems)} problems{warned} in {what} checked"
        return f"ok: {what} checked, no problems{warned}"


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
    sequences, problems = load_sequences(config.sequences_dir, templates.exists)
    result.sequences = sequences
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
    _check_event_names(result, sequences, scoring, config.scoring_file)
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


def _check_event_names(
    result: CheckResult,
    sequences: list[Sequence],
    scoring: ScoringRules | None,
    scoring_file: Path,
) -> None:
    """Event names in ``exit_when`` and ``scoring.yaml`` that look like typos of known
    ones are warnings with a did-you-mean; the other custom names are collected."""
    used: list[tuple[str, Path]] = [
        (rule.event, sequence.path)
        for sequence in sequences
        for rule in sequence.exit_when
        if rule.event
    ]
    if scoring is not None:
        used += [(name, scoring_file) for name in (*scoring.engagement, *scoring.hot_on)]
    for name, path in used:
        if name in KNOWN_TYPES or name in ENGINE_TYPES:
            continue
        where = Problem(str(path), _line_of(path, name), "")
        guess = likely_typo(name)
        if guess:
            result.warnings.append(
                Problem(where.path, where.line,
                        f"event {name!r} is not one nurture knows (did you mean {guess!r}?)")
            )  # fmt: skip
        else:
            result.custom_events.setdefault(name, where)


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


def _sender_for(sequence: Sequence | None, config: Config) -> Sender:
    text = sequence.sender if sequence else "Sender <sender@example.com>"
    sender = config.settings.sender
    return Sender.parse(text, sender.postal_address, sender.title)


def _check_template(
    templates: TemplateSet, name: str, lead: LeadView, sequence: Sequence | None, config: Config
) -> list[Problem]:
    from nurture.mail.compose import render_step_email

    path = templates.directory / f"{name}{HTML_SUFFIX}"
    try:
        unknown = templates.unknown_variables(name)
        if unknown:
            known = ", ".join(("lead", "sender", "sequence", "step", "unsubscribe_url"))
            return [
                Problem(str(path), line, f"unknown variable {var!r} (templates know: {known})")
                for line, var in unknown
            ]
        shown: Any = sequence or View({"name": "preview", "description": ""})
        render_step_email(
            templates, name, lead, _sender_for(sequence, config), shown, "preview",
            f"{config.settings.tracking.base_url}/u/preview",
        )  # fmt: skip
    except NurtureError as exc:
        return [problem_from_error(exc, _path_in(exc, path))]
    return []


def _path_in(error: Exception, default: Path) -> str:
    """The file an error message starts with (a layout or partial), else *default*."""
    text = str(error)
    head = text.split(":", 1)[0]
    return head if head.endswith((".j2", ".yaml", ".yml")) else str(default)


def _check_sequence_texts(
    templates: TemplateSet, sequence: Sequence, lead: LeadView, config: Config, scores: Scores
) -> list[Problem]:
    """Task notes and notifications render against the sample lead."""
    problems = []
    names = {"lead": lead, "sender": _sender_for(sequence, config).view()}
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
                Problem(str(sequence.path), None, f"audience fails on the sample lead: {exc}")
            )
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


@dataclass
class _Group:
    """Leads of one audience with the same filled fields: they render alike."""

    count: int
    example: str
    view: LeadView


def check_against_leads(
    config: Config,
    engine: Any,
    sequences: list[Sequence],
    scoring: ScoringRules | None,
    now: Any,
    chunk: int = 2000,
) -> list[Problem]:
    """Render each sequence's emails, notes and notifications against the leads of its
    audience, as ``run`` will: one representative per distinct set of filled fields, so
    100k leads cost a handful of renderings. A failure names how many leads it hits and
    one of them (``welcome.html.j2:5: 37 leads in the audience of X have no company``)."""
    from sqlmodel import Session, col, select

    from nurture.language.scoring import scores_now
    from nurture.store.leads import Lead

    templates = TemplateSet(config.templates_dir)
    groups: dict[str, dict[tuple[str, ...], _Group]] = {s.name: {} for s in sequences}
    last_id = 0
    with Session(engine) as session:
        while True:
            leads = list(
                session.exec(
                    select(Lead).where(col(Lead.id) > last_id).order_by(col(Lead.id)).limit(chunk)
                )
            )
            if not leads:
                break
            last_id = leads[-1].id or last_id
            for lead in leads:
                if lead.status != "subscribed":
                    continue
                view = LeadView.of(lead)
                names = context(view, EventSet(), now=now, scores=scores_now(scoring, lead, now))
                filled = tuple(sorted(view.as_dict()))
                for sequence in sequences:
                    try:
                        if sequence.audience is None or not truth(sequence.audience, names):
                            continue
                    except InvalidValueError:
                        continue  # the audience's own failure is reported by check_project
                    found = groups[sequence.name].get(filled)
                    if found is None:
                        groups[sequence.name][filled] = _Group(1, lead.email, view)
                    else:
                        found.count += 1
    problems: dict[tuple[str, int | None, str], list[Any]] = {}
    for sequence in sequences:
        for group in groups[sequence.name].values():
            for where, message in _render_for(templates, sequence, group.view, config):
                key = (where.path, where.line, message)
                seen = problems.setdefault(key, [0, group.example, sequence.name])
                seen[0] += group.count
    found_problems = []
    for (path, line, message), (count, example, name) in sorted(
        problems.items(), key=lambda item: (item[0][0], item[0][1] or 0)
    ):
        who = f"{count} lead{'s' if count != 1 else ''} in the audience of {name}"
        missing = re.search(r"has no attribute '(\w+)'|'(\w+)' is undefined", message)
        if missing:
            field_name = missing.group(1) or missing.group(2)
            text = (f"{who} {'have' if count != 1 else 'has'} no {field_name} "
                    f"(e.g. {example}); use | default(...)")  # fmt: skip
        else:
            text = f"{who} fail here (e.g. {example}): {message}"
        found_problems.append(Problem(path, line, text))
    return found_problems


def _render_for(
    templates: TemplateSet, sequence: Sequence, lead: LeadView, config: Config
) -> list[tuple[Problem, str]]:
    """What fails when this sequence's touches render for *lead*: (where, message)."""
    from nurture.mail.compose import render_step_email

    failures: list[tuple[Problem, str]] = []
    sender = _sender_for(sequence, config)
    for step in sequence.steps:
        names: list[str] = [name for name, _ in getattr(step.action, "variants", ())]
        for name in names:
            try:
                render_step_email(templates, name, lead, sender, sequence, step.id,
                                  f"{config.settings.tracking.base_url}/u/check")  # fmt: skip
            except NurtureError as exc:
                default = templates.directory / f"{name}{HTML_SUFFIX}"
                found = problem_from_error(exc, _path_in(exc, default))
                failures.append((found, found.message))
        source, line = "", step.line
        if isinstance(step.action, TaskAction):
            source, line = step.action.note, step.action.note_line or step.line
        elif isinstance(step.action, NotifyAction):
            source, line = step.action.message, step.action.message_line or step.line
        if source:
            try:
                templates.render_text(source, {"lead": lead, "sender": sender.view()},
                                      str(sequence.path), line)  # fmt: skip
            except NurtureError as exc:
                found = problem_from_error(exc, str(sequence.path))
                failures.append((found, f"step {step.id!r}: {found.message}"))
    return failures
