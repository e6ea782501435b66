"""Alembic environment: runs nurture's migrations on the engine the caller passes in.

On SQLite, foreign keys are off while the migrations run: a migration that rebuilds a
table (SQLite's way to change one) drops the old copy, and with the keys on, dropping a
parent table would delete its children. The keys are checked once the migrations are
done, and turned on again."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text
from sqlmodel import SQLModel

import nurture.store.models  # noqa: F401 - registers every table on the metadata

engine = context.config.attributes["engine"]

with engine.connect() as connection:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:  # outside any transaction: SQLite ignores this pragma inside one
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.commit()
    try:
        with connection.begin():
            context.configure(
                connection=connection,
                target_metadata=SQLModel.metadata,
                render_as_batch=sqlite,
                compare_type=True,
            )
            with context.begin_transaction():
                context.run_migrations()
            if sqlite:
                broken = connection.execute(text("PRAGMA foreign_key_check")).fetchall()
                if broken:
                    raise RuntimeError(f"the migration left rows without their parent: {broken}")
    finally:
        if sqlite:
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            connection.commit()
