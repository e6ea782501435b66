"""The send pipeline keeps its promises by the schema: a message's claim token and the
daily cap counters it took (outbox.claim_token, outbox.counted, send_counts); every
row about a person goes with them (outbox and tasks follow their enrollment, webhook
calls their lead, mail that mentions a lead is linked to it: outbox_mentions); ids are
never reused on SQLite (AUTOINCREMENT), so an old link or a Maildir file name can never
name someone else; enrollments carry a version (a pass never overwrites a wake-up
written beside it); links name the person they were made for, from this moment on
(meta links_bound_since).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

#: SQLite names no constraint: name the foreign keys to change them in batch mode.
NAMING = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}
#: Tables whose ids reach the outside (links, file names, URLs): never reused.
NO_REUSE = ("leads", "enrollments", "outbox", "events", "tasks", "handoffs", "webhooks",
            "access_links")  # fmt: skip


def _fk_name(table: str, column: str, target: str, sqlite: bool) -> str:
    return f"fk_{table}_{column}_{target}" if sqlite else f"{table}_{column}_fkey"


def _cascade(table: str, column: str, target: str, sqlite: bool) -> None:
    """Make the foreign key *table*.*column* → *target*.id delete with its target."""
    with op.batch_alter_table(table, naming_convention=NAMING) as batch:
        batch.drop_constraint(_fk_name(table, column, target, sqlite), type_="foreignkey")
        batch.create_foreign_key(_fk_name(table, column, target, sqlite), target, [column],
                                 ["id"], ondelete="CASCADE")  # fmt: skip


def upgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("claim_token", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("counted", sa.String(length=400), nullable=True))
    with op.batch_alter_table("enrollments") as batch:
        batch.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="0"))
    _cascade("outbox", "enrollment_id", "enrollments", sqlite)
    _cascade("tasks", "enrollment_id", "enrollments", sqlite)
    # Webhook calls about a lead that is gone (none should be) go before the key holds.
    op.execute("DELETE FROM webhooks WHERE lead_id IS NOT NULL "
               "AND lead_id NOT IN (SELECT id FROM leads)")  # fmt: skip
    with op.batch_alter_table("webhooks", naming_convention=NAMING) as batch:
        batch.create_foreign_key(_fk_name("webhooks", "lead_id", "leads", sqlite), "leads",
                                 ["lead_id"], ["id"], ondelete="CASCADE")  # fmt: skip
    op.create_table(
        "send_counts",
        sa.Column("key", sa.String(length=400), primary_key=True),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
    )
    op.create_index("ix_send_counts_day", "send_counts", ["day"])
    op.create_table(
        "outbox_mentions",
        sa.Column("outbox_id", sa.Integer(),
                  sa.ForeignKey("outbox.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("lead_id", sa.Integer(),
                  sa.ForeignKey("leads.id", ondelete="CASCADE"), primary_key=True),
    )  # fmt: skip
    op.create_index("ix_outbox_mentions_lead", "outbox_mentions", ["lead_id"])
    # A deployment that renames a step renames the events, messages and tasks naming it.
    for table in ("events", "outbox", "tasks"):
        op.create_index(f"ix_{table}_sequence_step", table, ["sequence", "step"])
    if sqlite:
        for table in NO_REUSE:
            with op.batch_alter_table(
                table, recreate="always", table_kwargs={"sqlite_autoincrement": True}
            ) as batch:
                pass  # fmt: skip
    moment = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
    op.execute(sa.text("INSERT INTO meta (key, value) VALUES ('links_bound_since', :at)")
               .bindparams(at=moment))  # fmt: skip


def downgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    op.execute("DELETE FROM meta WHERE key = 'links_bound_since'")
    for table in ("events", "outbox", "tasks"):
        op.drop_index(f"ix_{table}_sequence_step", table_name=table)
    op.drop_index("ix_outbox_mentions_lead", table_name="outbox_mentions")
    op.drop_table("outbox_mentions")
    op.drop_index("ix_send_counts_day", table_name="send_counts")
    op.drop_table("send_counts")
    with op.batch_alter_table("webhooks", naming_convention=NAMING) as batch:
        batch.drop_constraint(_fk_name("webhooks", "lead_id", "leads", sqlite),
                              type_="foreignkey")  # fmt: skip
    with op.batch_alter_table("enrollments") as batch:
        batch.drop_column("version")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("counted")
        batch.drop_column("claim_token")
