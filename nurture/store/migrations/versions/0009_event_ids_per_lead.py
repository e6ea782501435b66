"""events: a sender's event id is unique per lead (it was global, so the same id for
another lead answered "duplicate" with that other lead's event)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_constraint("uq_events_source_id", type_="unique")
        # source and source_id first: the index also serves lookups by id.
        batch.create_unique_constraint(
            "uq_events_lead_source_id", ["source", "source_id", "lead_id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_constraint("uq_events_lead_source_id", type_="unique")
        batch.create_unique_constraint("uq_events_source_id", ["source", "source_id"])
