"""leads

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import nurture.store.sqltypes

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leads",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("first_name", sa.String(length=200), nullable=True),
        sa.Column("last_name", sa.String(length=200), nullable=True),
        sa.Column("company", sa.String(length=300), nullable=True),
        sa.Column("title", sa.String(length=300), nullable=True),
        sa.Column("phone", sa.String(length=64), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=True),
        sa.Column("owner", sa.String(length=320), nullable=True),
        sa.Column("source", sa.String(length=200), nullable=True),
        sa.Column("stage", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attributes", nurture.store.sqltypes.JSONType, nullable=False),
        sa.Column("created_at", nurture.store.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("updated_at", nurture.store.sqltypes.UTCDateTime(), nullable=False),
    )
    op.create_index("ix_leads_email", "leads", ["email"], unique=True)
    op.create_index("ix_leads_owner", "leads", ["owner"])
    op.create_index("ix_leads_source", "leads", ["source"])
    op.create_index("ix_leads_stage", "leads", ["stage"])


def downgrade() -> None:
    op.drop_table("leads")
