"""The sales app: sign-in and notice links, sessions; who answered a hand-off and did a
task; a task's declared outcomes; mail to sales that names no lead; the stage change a
hand-off answers

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from nurture.store.sqltypes import JSONType, UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "access_links",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("digest", sa.String(64), nullable=False, unique=True),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column(
            "lead_id", sa.Integer(), sa.ForeignKey("leads.id", ondelete="CASCADE"), nullable=True
        ),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_access_links_email", "access_links", ["email", "created_at"])
    op.create_table(
        "app_sessions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("digest", sa.String(64), nullable=False, unique=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
    )
    with op.batch_alter_table("handoffs") as batch:
        batch.add_column(sa.Column("answered_by", sa.String(320), nullable=True))
        batch.add_column(sa.Column("stage_event_id", sa.Integer(), nullable=True))
        batch.create_index("ux_handoffs_stage_event", ["stage_event_id"], unique=True)
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(
            sa.Column("outcomes", JSONType, nullable=False, server_default=sa.text("'[]'"))
        )
        batch.add_column(sa.Column("done_by", sa.String(320), nullable=True))
        batch.add_column(sa.Column("done_via", sa.String(32), nullable=True))
    with op.batch_alter_table("tasks") as batch:
        batch.alter_column("outcomes", server_default=None)
    with op.batch_alter_table("outbox") as batch:
        batch.alter_column("lead_id", existing_type=sa.Integer(), nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM outbox WHERE lead_id IS NULL")
    with op.batch_alter_table("outbox") as batch:
        batch.alter_column("lead_id", existing_type=sa.Integer(), nullable=False)
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("done_via")
        batch.drop_column("done_by")
        batch.drop_column("outcomes")
    with op.batch_alter_table("handoffs") as batch:
        batch.drop_index("ux_handoffs_stage_event")
        batch.drop_column("stage_event_id")
        batch.drop_column("answered_by")
    op.drop_table("app_sessions")
    op.drop_index("ix_access_links_email", table_name="access_links")
    op.drop_table("access_links")
