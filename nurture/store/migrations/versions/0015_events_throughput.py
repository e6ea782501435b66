"""Events at speed: the events not scored yet are found by a partial index of their
ids (``ix_events_unscored``), not by an index of ``scored`` over every event; and a
deployed sequence keeps the event types that wake its enrollments (``wakes_on``).

The old index held every event, and a scored event left an entry behind that only a
vacuum removed; with statistics a burst of events had made stale, the planner walked
every scored event by id instead (80 ms a scoring batch at 200k events, growing with the
table). The partial index holds only the unscored, is read in id order, and a scored
event is not written into it.

An event woke every active enrollment of its lead, and the next pass advanced each one
again, though most sequences cannot be moved by most events (``exit_when: [replied]``
by a page visit). ``wakes_on`` is ``NULL`` until the sequence is next loaded (any type
wakes it until then).

The advance claims its batches oldest due first, then by id: ``ix_enrollments_due``
now holds the id too, so that PostgreSQL reads a batch in order from the index instead
of sorting every due enrollment for each batch (13 ms a batch of 200 with 10,000 due,
growing with them).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from nurture.store.sqltypes import JSONType

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

# As nurture.store.events states them (a migration keeps its own copy: the model may move).
_SQLITE, _POSTGRESQL = "scored IS 0", "scored IS false"


def upgrade() -> None:
    with op.batch_alter_table("deployed_sequences") as batch:
        batch.add_column(sa.Column("wakes_on", JSONType, nullable=True))
    op.drop_index("ix_enrollments_due", table_name="enrollments")
    op.create_index("ix_enrollments_due", "enrollments", ["status", "due_at", "id"])
    op.drop_index("ix_events_scored", table_name="events")
    op.create_index(
        "ix_events_unscored", "events", ["id"],
        sqlite_where=sa.text(_SQLITE), postgresql_where=sa.text(_POSTGRESQL),
    )  # fmt: skip


def downgrade() -> None:
    op.drop_index("ix_events_unscored", table_name="events")
    op.create_index("ix_events_scored", "events", ["scored"])
    op.drop_index("ix_enrollments_due", table_name="enrollments")
    op.create_index("ix_enrollments_due", "enrollments", ["status", "due_at"])
    with op.batch_alter_table("deployed_sequences") as batch:
        batch.drop_column("wakes_on")
