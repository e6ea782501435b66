"""A sender's health counts from the moment it was last resumed (``health_since``), not
from an outbox id: the held emails a resume releases are older than any id then, and
their bounces must count.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from nurture.store.sqltypes import UTCDateTime

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_STATE = sa.table(
    "sender_state",
    sa.column("name", sa.String()),
    sa.column("health_from", sa.Integer()),
    sa.column("health_since", UTCDateTime()),
)


def upgrade() -> None:
    with op.batch_alter_table("sender_state") as batch:
        batch.add_column(sa.Column("health_since", UTCDateTime(), nullable=True))
    # A sender resumed before: its health counts from now (the old bounces stay behind).
    op.get_bind().execute(
        _STATE.update().where(_STATE.c.health_from > 0).values(health_since=datetime.now(UTC))
    )
    with op.batch_alter_table("sender_state") as batch:
        batch.drop_column("health_from")


def downgrade() -> None:
    with op.batch_alter_table("sender_state") as batch:
        batch.add_column(
            sa.Column("health_from", sa.Integer(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("sender_state") as batch:
        batch.alter_column("health_from", server_default=None)
        batch.drop_column("health_since")
