"""deployed_sequences: the modification time of the file each version was deployed
from, so that a worker whose copy is older runs the deployed version instead of
deploying its own (workers whose copies differ no longer take turns); outbox: an index on
message_id (each reply and report is matched by the Message-ID it cites)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deployed_sequences") as batch:
        batch.add_column(sa.Column("file_mtime", sa.Float(), nullable=True))
    op.create_index("ix_outbox_message_id", "outbox", ["message_id"])


def downgrade() -> None:
    op.drop_index("ix_outbox_message_id", table_name="outbox")
    with op.batch_alter_table("deployed_sequences") as batch:
        batch.drop_column("file_mtime")
