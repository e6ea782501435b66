"""Every table of nurture, imported in one place so the metadata is complete."""

from __future__ import annotations

from nurture.access import AccessLink, AppSession
from nurture.arrivals import Arrival
from nurture.enrollments import DeployedSequence, Enrollment
from nurture.events import Event
from nurture.handoff import Handoff, Webhook
from nurture.leads import Lead
from nurture.meta import Meta
from nurture.outbound import WebhookEvent
from nurture.outbox import OutboxMessage
from nurture.suppression import Suppression
from nurture.tasks import Task
from nurture.workers import Worker

__all__ = [
    "AccessLink",
    "AppSession",
    "Arrival",
    "DeployedSequence",
    "Enrollment",
    "Event",
    "Handoff",
    "Lead",
    "Meta",
    "OutboxMessage",
    "Suppression",
    "Task",
    "Webhook",
    "WebhookEvent",
    "Worker",
]
