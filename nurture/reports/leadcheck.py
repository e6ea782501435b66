"""``nurture check`` against the leads in the database: each sequence's audience, emails,
notes and notifications, evaluated and rendered for the leads they will meet.

One representative per distinct set of filled fields, so 100k leads cost a handful of
renderings."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from nurture.config import Config
from nurture.errors import InvalidValueError, NurtureError
from nurture.language.expressions import EventSet, LeadView, context, truth
from nurture.language.scoring import ScoringRules
from nurture.language.sequences import NotifyAction, Sequence, TaskAction
from nurture.language.templates import HTML_SUFFIX, TemplateSet
from nurture.language.wording import lead_field_hint
from nurture.problems import Problem, problem_from_error
from nurture.reports.check import path_in, sender_for


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
    #: Per sequence: how many leads its audience fails for, one of them, the error.
    failing: dict[str, list[Any]] = {}
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
                    except InvalidValueError as exc:
                        seen = failing.setdefault(sequence.name, [0, lead.email, str(exc)])
                        seen[0] += 1
                        continue
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
    found_problems = [
        audience_problem(sequence, *failing[sequence.name])
        for sequence in sequences
        if sequence.name in failing
    ]
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
    sender = sender_for(sequence, config)
    for step in sequence.steps:
        names: list[str] = [name for name, _ in getattr(step.action, "variants", ())]
        for name in names:
            try:
                render_step_email(templates, name, lead, sender, sequence, step.id,
                                  f"{config.settings.tracking.base_url}/u/check")  # fmt: skip
            except NurtureError as exc:
                default = templates.directory / f"{name}{HTML_SUFFIX}"
                found = problem_from_error(exc, path_in(exc, default))
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


def audience_problem(sequence: Sequence, count: int, example: str, error: str) -> Problem:
    """The audience of *sequence* fails for *count* leads: they are never enrolled."""
    message = error.split(": ", 1)[-1] if error.startswith(("'", '"')) else error
    hint = lead_field_hint(message)
    who = f"{count} lead{'s' if count != 1 else ''}"
    return Problem(
        str(sequence.path), sequence.audience_line or None,
        f"the audience fails for {who} (e.g. {example}): {message}; "
        f"{hint or 'they are never enrolled'}",
    )  # fmt: skip
