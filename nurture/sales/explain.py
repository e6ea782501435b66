"""What happened to a lead and why it is hot, in sales' words: pure functions from the
facts (events, the score breakdown, enrollments, tasks, answers) to short sentences.

``Replied to "Your pricing guide" on Tue 10:32``, ``Booked a meeting``, ``VP title:
+20 fit``. Times are written in the reader's timezone; the caller says which.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from nurture.language.accounts import account_reply_words
from nurture.language.fields import SETTABLE_FIELDS
from nurture.mail.absence import away_words

#: ``(sequence, step)`` → the subject of the email sent there.
Subjects = Mapping[tuple[str | None, str | None], str]


@dataclass(frozen=True)
class Happening:
    """One line of a lead's timeline."""

    at: datetime
    #: What it is, for the page's styling: ``email``, ``open``, ``click``, ``reply``,
    #: ``visit``, ``form``, ``meeting``, ``task``, ``stage``, ``answer``, ``stop``, ``other``.
    kind: str
    text: str
    #: More of it: a reply's first lines, a link, a reason.
    detail: str = ""


@dataclass(frozen=True)
class Reason:
    """One reason a lead is hot, with the points it weighs now."""

    text: str
    points: float
    #: ``engagement`` or ``fit``.
    score: str


def when(moment: datetime, tz: ZoneInfo, now: datetime | None = None) -> str:
    """``Tue 10:32`` within the last six days, else ``Tue 3 Nov 10:32`` (``2025`` added
    for another year), in *tz*."""
    local = moment.astimezone(tz)
    if now is not None:
        today = now.astimezone(tz)
        if timedelta(0) <= today - local < timedelta(days=6):
            return f"{local:%a} {local:%H:%M}"
        if local.year != today.year:
            return f"{local:%a} {local.day} {local:%b %Y %H:%M}"
    return f"{local:%a} {local.day} {local:%b %H:%M}"


def points(value: float) -> str:
    """``+20``, ``-4``: whole points, as sales reads them."""
    return f"{round(value):+d}"


def humanize(name: str) -> str:
    """``webinar_attended`` → ``Webinar attended``."""
    words = name.replace("_", " ").replace("-", " ").strip()
    return words[:1].upper() + words[1:] if words else name


def _subject(subjects: Subjects, sequence: str | None, step: str | None) -> str:
    found = subjects.get((sequence, step))
    if found:
        return f'"{found}"'
    if step:
        return f"the {humanize(step).lower()} email"
    return "an email"


#: The keys of an event's ``data`` that nurture reads, by event type, and what sales is
#: shown from them (the app, notices, digests). Other keys are kept and shown nowhere.
EVENT_DATA_KEYS: tuple[tuple[str, str, str], ...] = (
    ("email_replied", "first_lines",
     "the first lines of the reply: quoted to sales as what the lead wrote"),
    ("meeting_booked", "title", "what the meeting is about (else `when`)"),
    ("meeting_booked", "when", "when it is, as text"),
    ("form_submitted", "form", "the form's name (or `name`): \"Filled in the pricing form\""),
    ("page_visited", "url", "the page visited (or `page`, or `path`)"),
    ("email_bounced", "reply", "the mail server's answer"),
    ("call_completed", "outcome", "what the task came to (also linkedin_completed, "
                                  "task_completed)"),
    ("call_completed", "by", "who did it"),
)  # fmt: skip


def event_data_keys_text() -> str:
    """The keys of :data:`EVENT_DATA_KEYS` as Markdown lines (for the OpenAPI text)."""
    return "\n".join(f"- `{type_}`: `data.{key}`: {meaning}"
                     for type_, key, meaning in EVENT_DATA_KEYS)  # fmt: skip


def describe(
    type_: str,
    data: Mapping[str, Any],
    sequence: str | None,
    step: str | None,
    subjects: Subjects,
) -> tuple[str, str, str]:
    """``(kind, text, detail)`` of one event."""
    subject = _subject(subjects, sequence, step)
    data = data or {}
    if type_ == "email_sent":
        return "email", f"Sent {subject}", ""
    if type_ == "email_opened":
        return "open", f"Opened {subject}", ""
    if type_ == "email_clicked":
        return "click", f"Clicked a link in {subject}", str(data.get("url") or "")
    if type_ == "email_replied":
        return "reply", f"Replied to {subject}", str(data.get("first_lines") or "")
    if type_ == "auto_reply":
        return "other", f"Automatic answer to {subject}", str(data.get("subject") or "")
    if type_ == "out_of_office":
        until = str(data.get("until") or "")
        try:
            text = "Out of office " + away_words(date.fromisoformat(until)).removeprefix(
                "out of office ")
        except ValueError:
            text = "Out of office"
        return "other", f"{text} (automatic answer to {subject})", str(data.get("subject") or "")
    if type_ == "account_replied":
        return "stop", account_reply_words(data), ""
    if type_ == "email_bounced":
        return "stop", f"{subject[:1].upper()}{subject[1:]} bounced", str(data.get("reply") or "")
    if type_ == "unsubscribed":
        return "stop", "Unsubscribed", ""
    if type_ == "complained":
        return "stop", "Marked an email as spam", ""
    if type_ == "meeting_booked":
        return "meeting", "Booked a meeting", str(data.get("title") or data.get("when") or "")
    if type_ == "form_submitted":
        form = data.get("form") or data.get("name") or ""
        text = f"Filled in the {form} form" if form else "Filled in a form"
        return "form", text, form_says(data.get("kept"))
    if type_ == "page_visited":
        page = data.get("url") or data.get("page") or data.get("path") or ""
        return "visit", "Visited a page" if not page else "Visited " + str(page), ""
    if type_ in ("call_completed", "linkedin_completed", "task_completed"):
        what = {"call_completed": "Call", "linkedin_completed": "LinkedIn touch"}.get(type_, "Task")
        outcome = str(data.get("outcome") or "")
        by = str(data.get("by") or "")
        text = f"{what} done" + (f": {humanize(outcome).lower()}" if outcome else "")
        return "task", text + (f" (by {by})" if by else ""), ""
    if type_ == "task_snoozed":
        return "task", f"Task snoozed until {data.get('until', '?')}", str(data.get("by") or "")
    if type_ == "stage_changed":
        to, was = str(data.get("to") or "?"), str(data.get("from") or "?")
        scores = ""
        if "engagement" in data:
            scores = f"engagement {round(data['engagement']):g}, fit {round(data.get('fit', 0)):g}"
        return "stage", f"Became {to} (was {was})", scores
    if type_.startswith("handoff_"):
        answer = type_.removeprefix("handoff_")
        by = str(data.get("by") or "")
        via = {"cli": "the command line", "api": "the API", "app": "the app",
               "link": "the notice's link"}.get(str(data.get("via") or ""), "")  # fmt: skip
        who = f" by {by}" if by else ""
        how = f" from {via}" if via else ""
        return "answer", f"{humanize(answer)}{who}{how}", str(data.get("reason") or "")
    return "other", humanize(type_), ""


def form_says(kept: Any) -> str:
    """``form says phone +1 900 555 0100, company Acme``: what a form post sent that
    differs from the lead's values (a form never replaces them); ``""`` for nothing."""
    if not isinstance(kept, Mapping) or not kept:
        return ""

    def order(name: str) -> tuple[int, str]:  # the lead's fields first, as in the app
        return (SETTABLE_FIELDS.index(name) if name in SETTABLE_FIELDS else 99, name)

    said = ", ".join(f"{humanize(str(name)).lower()} {kept[name]}"
                     for name in sorted(map(str, kept), key=order))  # fmt: skip
    return f"form says {said}"


def happening(event: Any, subjects: Subjects) -> Happening:
    """The timeline line of *event* (an :class:`~nurture.store.events.Event`)."""
    kind, text, detail = describe(event.type, event.data, event.sequence, event.step, subjects)
    return Happening(event.occurred_at, kind, text, detail)


def reasons(
    breakdown: Mapping[str, Any],
    events_by_id: Mapping[int, Any],
    subjects: Subjects,
    tz: ZoneInfo,
    now: datetime,
    top: int = 5,
) -> list[Reason]:
    """Why the lead scores what it does: the events that weigh most now, then the fit
    rules that matched."""
    grouped: dict[str, list[Any]] = {}  # text -> [points, count, latest moment]
    for item in breakdown.get("events", []):
        if item["now"] <= 0:
            continue
        event = events_by_id.get(item.get("id") or -1)
        data = event.data if event is not None else {}
        _, text, _ = describe(item["type"], data, item["sequence"], item["step"], subjects)
        moment = datetime.fromisoformat(item["at"])
        entry = grouped.setdefault(text, [0.0, 0, moment])
        entry[0] += item["now"]
        entry[1] += 1
        entry[2] = max(entry[2], moment)
    found: list[Reason] = []
    for text, (weight, count, latest) in sorted(grouped.items(), key=lambda kv: -kv[1][0]):
        at = when(latest, tz, now)
        said = f"{text} on {at}" if count == 1 else f"{text} {count} times, last on {at}"
        found.append(Reason(said, weight, "engagement"))
    found = found[:top]
    for rule in breakdown.get("fit_rules", []):
        label = rule.get("label") or "Fits: a fit rule"  # never the expression
        found.append(Reason(label, rule["points"], "fit"))
    return found


def score_line(engagement: float, fit: float, thresholds: Mapping[str, Any]) -> str:
    """``Engagement 35 (hot from 30), fit 30 (hot from 20)``."""
    hot = thresholds.get("hot") or {}
    line = f"Engagement {round(engagement):d}"
    if hot.get("engagement"):
        line += f" (hot from {round(hot['engagement']):d})"
    line += f", fit {round(fit):d}"
    if hot.get("fit"):
        line += f" (hot from {round(hot['fit']):d})"
    return line


def one_line(found: list[Reason]) -> str:
    """The home page's line of why: the strongest reason, and how many more."""
    if not found:
        return "Handed to sales by hand"
    first = found[0]
    text = first.text if first.score == "engagement" else f"{first.text}: {points(first.points)}"
    more = len(found) - 1
    return text + (f" (+{more} more)" if more else "")


def sequence_state(enrollment: Any, tz: ZoneInfo, now: datetime) -> str:
    """``pricing-guide-welcome: stopped: lead is hot``, ``...: paused (out of office until
    12 March)``, ``...: next step call on Tue 10:00``."""
    name = enrollment.sequence
    status = enrollment.status
    if status == "active":
        if enrollment.waiting_task_id is not None:
            return f"{name}: waiting for the task at step {enrollment.next_step}"
        due = f" on {when(enrollment.due_at, tz)}" if enrollment.due_at else ""
        return f"{name}: next step {enrollment.next_step}{due}"
    if status == "exited" and enrollment.reason:
        return f"{name}: stopped: {enrollment.reason}"
    words = {"exited": "stopped", "completed": "finished", "paused": "paused",
             "failed": "failed"}.get(status, status)  # fmt: skip
    return f"{name}: {words}" + (f" ({enrollment.reason})" if enrollment.reason else "")
