"""Senders: each ``[[senders]]`` entry's state (its pause, its first send for the
warm-up, where its health counts from) and the sends it started (its rolling windows
and the gap the next one waits).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from nurture.store.sqltypes import UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sender_state",
        sa.Column("name", sa.String(length=64), primary_key=True),
        sa.Column("first_sent_at", UTCDateTime(), nullable=True),
        sa.Column("paused_at", UTCDateTime(), nullable=True),
        sa.Column("pause_reason", sa.Text(), nullable=True),
        sa.Column("told_at", UTCDateTime(), nullable=True),
        sa.Column("health_from", sa.Integer(), nullable=False),
    )
    op.create_table(
        "sender_sends",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("sender", sa.String(length=64), nullable=False),
        sa.Column("outbox_id", sa.Integer(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("not_before", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_sender_sends_sender_at", "sender_sends", ["sender", "at"])
    op.create_index("ix_sender_sends_outbox", "sender_sends", ["outbox_id"])


def downgrade() -> None:
    op.drop_index("ix_sender_sends_outbox", table_name="sender_sends")
    op.drop_index("ix_sender_sends_sender_at", table_name="sender_sends")
    op.drop_table("sender_sends")
    op.drop_table("sender_state")
