"""Companies and out of office: the leads of one recipient domain emailed on one day
are counted once each (send_count_members, beside send_counts; outbox.counted may now
name a counter per lead and domain, so it holds any length), and an enrollment paused
because its lead is out of office resumes by itself (enrollments.resume_at).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from nurture.store.sqltypes import UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "send_count_members",
        sa.Column("key", sa.String(length=400), primary_key=True),
        sa.Column("member", sa.String(length=64), primary_key=True),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
    )
    op.create_index("ix_send_count_members_day", "send_count_members", ["day"])
    with op.batch_alter_table("enrollments") as batch:
        batch.add_column(sa.Column("resume_at", UTCDateTime(), nullable=True))
    with op.batch_alter_table("outbox") as batch:
        batch.alter_column("counted", type_=sa.Text(), existing_nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.alter_column("counted", type_=sa.String(length=400), existing_nullable=True)
    with op.batch_alter_table("enrollments") as batch:
        batch.drop_column("resume_at")
    op.drop_index("ix_send_count_members_day", table_name="send_count_members")
    op.drop_table("send_count_members")
