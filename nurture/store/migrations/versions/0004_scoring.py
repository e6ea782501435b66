"""scoring and hand-off: lead scores, event points, hand-offs, webhooks

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from nurture.store.sqltypes import JSONType, UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("leads") as batch:
        batch.add_column(sa.Column("engagement", sa.Float(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("fit", sa.Float(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("scored_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("score_reset_at", UTCDateTime(), nullable=True))
        batch.add_column(
            sa.Column("score_stage", sa.String(16), nullable=False, server_default="cold")
        )
        batch.add_column(sa.Column("stage_review_at", UTCDateTime(), nullable=True))
        batch.create_index("ix_leads_stage_review_at", ["stage_review_at"])
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("points", sa.Float(), nullable=True))
        batch.add_column(
            sa.Column("scored", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.create_index("ix_events_scored", ["scored"])

    op.create_table(
        "handoffs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "lead_id", sa.Integer(), sa.ForeignKey("leads.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("became_hot_at", UTCDateTime(), nullable=False),
        sa.Column("owner", sa.String(320), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("engagement", sa.Float(), nullable=False),
        sa.Column("fit", sa.Float(), nullable=False),
        sa.Column("why", JSONType, nullable=False),
        sa.Column("remind_at", UTCDateTime(), nullable=True),
        sa.Column("reminded_at", UTCDateTime(), nullable=True),
        sa.Column("answered_at", UTCDateTime(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("answered_via", sa.String(32), nullable=True),
    )
    op.create_index("ix_handoffs_lead", "handoffs", ["lead_id"])
    op.create_index("ix_handoffs_status_remind", "handoffs", ["status", "remind_at"])

    op.create_table(
        "webhooks",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("idempotency_key", sa.String(300), nullable=False, unique=True),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column("body", JSONType, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("sent_at", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_webhooks_due", "webhooks", ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_table("webhooks")
    op.drop_table("handoffs")
    with op.batch_alter_table("events") as batch:
        batch.drop_index("ix_events_scored")
        batch.drop_column("scored")
        batch.drop_column("points")
    with op.batch_alter_table("leads") as batch:
        batch.drop_index("ix_leads_stage_review_at")
        for column in (
            "stage_review_at",
            "score_stage",
            "score_reset_at",
            "scored_at",
            "fit",
            "engagement",
        ):
            batch.drop_column(column)
