"""intake: leads.consent, events.via_key, the suppression list, outbound webhook events
and signed deliveries (webhooks.endpoint, event_type, lead_id), arrivals for the
daemon's fast lane

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from nurture.store.sqltypes import JSONType, UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("leads") as batch:
        batch.add_column(sa.Column("consent", JSONType, nullable=True))
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("via_key", sa.String(64), nullable=True))
    with op.batch_alter_table("webhooks") as batch:
        batch.add_column(sa.Column("endpoint", sa.String(64), nullable=True))
        batch.add_column(sa.Column("event_type", sa.String(40), nullable=True))
        batch.add_column(sa.Column("lead_id", sa.Integer(), nullable=True))
    op.create_index("ix_webhooks_lead_id", "webhooks", ["lead_id"])
    op.create_table(
        "suppressions",
        sa.Column("hash", sa.String(64), primary_key=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "webhook_events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("public_id", sa.String(40), nullable=False, unique=True),
        sa.Column("type", sa.String(40), nullable=False),
        sa.Column(
            "lead_id", sa.Integer(), sa.ForeignKey("leads.id", ondelete="CASCADE"), nullable=True
        ),
        sa.Column("data", JSONType, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "arrivals",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "lead_id", sa.Integer(), sa.ForeignKey("leads.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_arrivals_lead", "arrivals", ["lead_id"])


def downgrade() -> None:
    op.drop_index("ix_arrivals_lead", table_name="arrivals")
    op.drop_table("arrivals")
    op.drop_table("webhook_events")
    op.drop_table("suppressions")
    op.drop_index("ix_webhooks_lead_id", table_name="webhooks")
    with op.batch_alter_table("webhooks") as batch:
        batch.drop_column("lead_id")
        batch.drop_column("event_type")
        batch.drop_column("endpoint")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("via_key")
    with op.batch_alter_table("leads") as batch:
        batch.drop_column("consent")
