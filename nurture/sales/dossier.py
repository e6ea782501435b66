"""Everything sales is shown about one lead, read in a few queries: its events, the
subjects of the emails it got, its scores, sequences, tasks and hand-offs. The notice,
the reminder and the app's lead page are all written from a :class:`Dossier`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from email.header import decode_header, make_header
from email.parser import HeaderParser
from typing import Any
from zoneinfo import ZoneInfo

from sqlmodel import Session, col, select

from nurture.language.scoring import ScoringRules
from nurture.mail.absence import still_away
from nurture.sales import explain
from nurture.sales.scorer import breakdown
from nurture.store.enrollments import Enrollment
from nurture.store.events import Event
from nurture.store.handoffs import Handoff
from nurture.store.leads import Lead
from nurture.store.outbox import MessageKind, OutboxMessage
from nurture.store.tasks import Task

#: Events shown on a timeline, newest first.
TIMELINE = 200


@dataclass
class Dossier:
    lead: Lead
    now: datetime
    #: The lead's events (no machine ones), oldest first.
    events: list[Event]
    subjects: dict[tuple[str | None, str | None], str]
    enrollments: list[Enrollment]
    tasks: list[Task]
    handoffs: list[Handoff]
    #: :func:`nurture.sales.scorer.breakdown`, when scoring.yaml is readable.
    score: dict[str, Any] = field(default_factory=dict)

    @property
    def pending(self) -> Handoff | None:
        """The hand-off waiting for an answer, if any."""
        return next((h for h in reversed(self.handoffs) if h.status == "pending"), None)

    def reasons(self, tz: ZoneInfo) -> list[explain.Reason]:
        by_id = {e.id: e for e in self.events if e.id is not None}
        return explain.reasons(self.score, by_id, self.subjects, tz, self.now)

    def score_line(self) -> str:
        if not self.score:
            return ""
        return explain.score_line(
            self.score["engagement"], self.score["fit"], self.score["thresholds"]
        )

    def timeline(self, limit: int = TIMELINE) -> list[explain.Happening]:
        """Newest first: events, then the tasks' creation (their completion is an event)."""
        items = [explain.happening(e, self.subjects) for e in self.events]
        for task in self.tasks:
            what = {"call": "Call", "linkedin": "LinkedIn touch"}.get(task.kind, "To-do")
            who = task.assignee or "nobody yet"
            items.append(explain.Happening(task.created_at, "task", f"{what} task for {who}",
                                           task.note))  # fmt: skip
        items.sort(key=lambda h: h.at, reverse=True)
        return items[:limit]

    def sequences(self, tz: ZoneInfo) -> list[str]:
        return [explain.sequence_state(e, tz, self.now) for e in self.enrollments]

    def away(self, tz: ZoneInfo) -> str:
        """``out of office until 12 March`` while the lead is away; ``""`` otherwise."""
        return still_away(self.events, self.now.astimezone(tz).date())

    def last_reply(self) -> str:
        """The first lines of the lead's latest reply, if any."""
        for event in reversed(self.events):
            if event.type == "email_replied" and event.data.get("first_lines"):
                return str(event.data["first_lines"])
        return ""


def _subjects(session: Session, lead_id: int) -> dict[tuple[str | None, str | None], str]:
    parser = HeaderParser()
    found: dict[tuple[str | None, str | None], str] = {}
    rows = session.exec(
        select(OutboxMessage.sequence, OutboxMessage.step, OutboxMessage.raw)
        .where(OutboxMessage.lead_id == lead_id)
        .where(OutboxMessage.kind == MessageKind.email.value)
    )
    for sequence, step, raw in rows:
        head = raw.split("\n\n", 1)[0].replace("\r\n", "\n")
        raw_subject = str(parser.parsestr(head + "\n\n").get("Subject", "") or "")
        try:
            subject = str(make_header(decode_header(raw_subject)))
        except (ValueError, LookupError, UnicodeDecodeError):
            subject = raw_subject
        found[(sequence, step)] = " ".join(subject.split())
    return found


def gather(session: Session, lead: Lead, rules: ScoringRules | None, now: datetime) -> Dossier:
    """The dossier of *lead* at *now*."""
    assert lead.id is not None
    events = list(
        session.exec(
            select(Event)
            .where(Event.lead_id == lead.id)
            .where(col(Event.machine).is_(False))
            .where(col(Event.occurred_at) <= now)
            .order_by(col(Event.occurred_at), col(Event.id))
        )
    )
    return Dossier(
        lead=lead,
        now=now,
        events=events,
        subjects=_subjects(session, lead.id),
        enrollments=list(
            session.exec(
                select(Enrollment)
                .where(Enrollment.lead_id == lead.id)
                .order_by(col(Enrollment.enrolled_at))
            )
        ),
        tasks=list(
            session.exec(select(Task).where(Task.lead_id == lead.id).order_by(col(Task.id)))
        ),
        handoffs=list(
            session.exec(
                select(Handoff).where(Handoff.lead_id == lead.id).order_by(col(Handoff.id))
            )
        ),
        score=breakdown(session, rules, lead, now) if rules is not None else {},
    )
