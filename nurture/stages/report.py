"""What one pass did: the report every stage adds to."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass
class PassReport:
    """What one pass did."""

    enrolled: int = 0
    emails_queued: int = 0
    tasks_created: int = 0
    notifications: int = 0
    updates: int = 0
    skipped: int = 0
    exited: int = 0
    completed: int = 0
    failed: int = 0
    #: Enrollments kept waiting at a step whose template is missing.
    held: int = 0
    stage_changes: int = 0
    hot: int = 0
    reminders: int = 0
    #: Leads whose sequences resumed when they came back from out of office.
    resumed: int = 0

    def add(self, other: PassReport) -> None:
        for item in fields(self):
            setattr(self, item.name, getattr(self, item.name) + getattr(other, item.name))
