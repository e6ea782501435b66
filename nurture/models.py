"""Every table of nurture, imported in one place so the metadata is complete."""

from __future__ import annotations

from nurture.enrollments import DeployedSequence, Enrollment
from nurture.events import Event
from nurture.leads import Lead
from nurture.outbox import OutboxMessage
from nurture.tasks import Task
from nurture.tokens import Meta

__all__ = ["DeployedSequence", "Enrollment", "Event", "Lead", "Meta", "OutboxMessage", "Task"]
