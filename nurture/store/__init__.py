"""The store: every table, and every transition on a row that must hold under
concurrency (claims, caps, answers), as single statements or one transaction.

Also the database itself (opening it, the Alembic migrations), locks between workers,
workers' registry and heartbeat, and the small shared values (:mod:`~nurture.store.meta`).

May import: the core modules, :mod:`nurture.language`, and the settings
(:mod:`nurture.config`). Nothing above: the engine, mail, sales and intake build on it.
"""
