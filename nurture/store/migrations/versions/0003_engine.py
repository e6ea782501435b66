"""engine: enrollments, deployed sequences, events, outbox, tasks

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from nurture.store.sqltypes import JSONType, UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _lead() -> sa.Column:
    return sa.Column(
        "lead_id", sa.Integer(), sa.ForeignKey("leads.id", ondelete="CASCADE"), nullable=False
    )


def upgrade() -> None:
    op.create_table(
        "enrollments",
        sa.Column("id", sa.Integer(), primary_key=True),
        _lead(),
        sa.Column("sequence", sa.String(200), nullable=False),
        sa.Column("cycle", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("next_step", sa.String(200), nullable=True),
        sa.Column("base_at", UTCDateTime(), nullable=False),
        sa.Column("due_at", UTCDateTime(), nullable=True),
        sa.Column("waiting_task_id", sa.Integer(), nullable=True),
        sa.Column("done_steps", JSONType, nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("enrolled_by", sa.String(320), nullable=False),
        sa.Column("enrolled_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.UniqueConstraint("lead_id", "sequence", "cycle", name="uq_enrollments_lead_sequence"),
    )
    op.create_index("ix_enrollments_due", "enrollments", ["status", "due_at"])
    op.create_index("ix_enrollments_sequence_status", "enrollments", ["sequence", "status"])
    op.create_index("ix_enrollments_lead", "enrollments", ["lead_id"])

    op.create_table(
        "deployed_sequences",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("path", sa.String(1000), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("steps", JSONType, nullable=False),
        sa.Column("audience_checked_at", UTCDateTime(), nullable=True),
        sa.Column("deployed_at", UTCDateTime(), nullable=False),
    )

    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), primary_key=True),
        _lead(),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("sequence", sa.String(200), nullable=True),
        sa.Column("step", sa.String(200), nullable=True),
        sa.Column("data", JSONType, nullable=False),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("source_id", sa.String(300), nullable=True),
        sa.Column("machine", sa.Boolean(), nullable=False),
        sa.UniqueConstraint("source", "source_id", name="uq_events_source_id"),
    )
    op.create_index("ix_events_lead", "events", ["lead_id", "occurred_at"])
    op.create_index("ix_events_type", "events", ["type"])
    op.create_index("ix_events_occurred", "events", ["occurred_at"])

    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("idempotency_key", sa.String(300), nullable=False, unique=True),
        sa.Column("message_id", sa.String(300), nullable=False),
        _lead(),
        sa.Column("enrollment_id", sa.Integer(), sa.ForeignKey("enrollments.id"), nullable=True),
        sa.Column("sequence", sa.String(200), nullable=False),
        sa.Column("step", sa.String(200), nullable=False),
        sa.Column("template", sa.String(200), nullable=True),
        sa.Column("sender", sa.String(320), nullable=False),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("tracking_id", sa.String(32), nullable=True, unique=True),
        sa.Column("links", JSONType, nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("lease_until", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("first_failure_at", UTCDateTime(), nullable=True),
        sa.Column("sent_at", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_outbox_due", "outbox", ["status", "next_attempt_at"])
    op.create_index("ix_outbox_sender_sent", "outbox", ["sender", "sent_at"])
    op.create_index("ix_outbox_lead_sent", "outbox", ["lead_id", "sent_at"])

    op.create_table(
        "tasks",
        sa.Column("id", sa.Integer(), primary_key=True),
        _lead(),
        sa.Column("enrollment_id", sa.Integer(), sa.ForeignKey("enrollments.id"), nullable=True),
        sa.Column("sequence", sa.String(200), nullable=False),
        sa.Column("step", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("assignee", sa.String(320), nullable=True),
        sa.Column("due_at", UTCDateTime(), nullable=False),
        sa.Column("timeout_at", UTCDateTime(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("done_at", UTCDateTime(), nullable=True),
        sa.UniqueConstraint("enrollment_id", "step", name="uq_tasks_enrollment_step"),
    )
    op.create_index("ix_tasks_open", "tasks", ["status", "assignee", "due_at"])


def downgrade() -> None:
    for table in ("tasks", "outbox", "events", "deployed_sequences", "enrollments"):
        op.drop_table(table)
