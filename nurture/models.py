"""Every table of nurture, imported in one place so the metadata is complete."""

from __future__ import annotations

from nurture.enrollments import DeployedSequence, Enrollment
from nurture.events import Event
from nurture.handoff import Handoff, Webhook
from nurture.leads import Lead
from nurture.meta import Meta
from nurture.outbox import OutboxMessage
from nurture.tasks import Task
from nurture.workers import Worker

__all__ = [
    "DeployedSequence",
    "Enrollment",
    "Event",
    "Handoff",
    "Lead",
    "Meta",
    "OutboxMessage",
    "Task",
    "Webhook",
    "Worker",
]
