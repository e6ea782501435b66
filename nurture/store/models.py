"""Every table of nurture, imported in one place so the metadata is complete."""

from __future__ import annotations

from nurture.store.access import AccessLink, AppSession
from nurture.store.arrivals import Arrival
from nurture.store.counters import SendCount
from nurture.store.enrollments import DeployedSequence, Enrollment
from nurture.store.events import Event
from nurture.store.handoffs import Handoff, Webhook
from nurture.store.leads import Lead
from nurture.store.meta import Meta
from nurture.store.outbound import WebhookEvent
from nurture.store.outbox import OutboxMention, OutboxMessage
from nurture.store.senders import SenderSend, SenderState
from nurture.store.suppression import Suppression
from nurture.store.tasks import Task
from nurture.store.workers import Worker

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
    "OutboxMention",
    "OutboxMessage",
    "SendCount",
    "SenderSend",
    "SenderState",
    "Suppression",
    "Task",
    "Webhook",
    "WebhookEvent",
    "Worker",
]
