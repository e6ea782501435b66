"""outbox.worker: which worker claimed (and sent) each message; an index on
leads.updated_at, so that a pass finds the changed leads without reading them all

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("worker", sa.String(64), nullable=True))
    op.create_index("ix_leads_updated_at", "leads", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_leads_updated_at", table_name="leads")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("worker")
