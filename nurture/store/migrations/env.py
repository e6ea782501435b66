"""Alembic environment: runs nurture's migrations on the engine the caller passes in."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import nurture.store.models  # noqa: F401 - registers every table on the metadata

engine = context.config.attributes["engine"]

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
