"""Many rows of one table written by one statement.

On PostgreSQL an ``executemany`` costs the server an execution per row (56 ms for the
1,000 events of one ``POST /api/events``), and arrays of parameters cost the driver a
loop in Python per element. :func:`insert_rows` and :func:`update_rows` send the rows as
one JSON document instead, written by ``INSERT … SELECT … FROM json_to_recordset(…)`` or
``UPDATE … FROM json_to_recordset(…)``: one parameter, one statement, whose text does not
depend on the number of rows (so the driver prepares it once). SQLite keeps the
``executemany``, which costs it little (no round trip, no planning per row).

:func:`one_of` matches a column against a list, and :class:`unindexed` keeps SQLite
from walking an index of a status where a statement names its rows by id or by lead.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import date, datetime
from functools import cache
from typing import Any

from sqlalchemy import (
    ARRAY,
    Connection,
    String,
    Table,
    TypeDecorator,
    any_,
    bindparam,
    text,
    update,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement, TextClause
from sqlalchemy.sql.functions import FunctionElement


def insert_rows(connection: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert *rows* into *table*. Each row has the same keys, the columns written; a
    column left out gets its server default on PostgreSQL (not a Python-side default),
    and ``None`` is SQL ``NULL``, in a JSON column too."""
    if not rows:
        return
    _same_keys(rows)
    if connection.dialect.name != "postgresql":
        connection.execute(table.insert(), list(rows))
        return
    names = tuple(rows[0])
    statement, converters = _insert(table, names, connection.dialect)
    connection.execute(statement, {"rows": _document(rows, names, converters)})


def update_rows(
    connection: Connection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    key: str = "id",
    *,
    version: str | None = None,
    **fixed: Any,
) -> int:
    """Set, in each row of *table* whose *key* is a row's, that row's other values
    and the *fixed* ones; return how many rows of the table matched. Each row of *rows*
    has the same keys, and a *key* of its own (no two rows name the same one).

    *version*: a column each row gives the value it was read at; a row of the table
    matches only while it still holds that value, which each match then moves on by
    one (optimistic locking: the caller compares the count with the rows)."""
    if not rows:
        return 0
    _same_keys(rows)
    keys = (key,) if version is None else (key, version)
    names = tuple(name for name in rows[0] if name not in keys)
    bumped = {} if version is None else {version: table.c[version] + 1}
    if connection.dialect.name != "postgresql":
        statement = update(table).where(table.c[key] == bindparam("k_"))
        if version is not None:
            statement = statement.where(table.c[version] == bindparam("k_version"))
        result = connection.execute(
            statement.values(
                {**{name: bindparam(f"v_{name}") for name in names}, **fixed, **bumped}
            ),
            [
                {"k_": row[key], **({} if version is None else {"k_version": row[version]}),
                 **{f"v_{name}": row[name] for name in names}}
                for row in rows
            ],
        )  # fmt: skip
        return int(result.rowcount)
    matching, converters = _update(
        table, keys, names, tuple(sorted(fixed)), version, connection.dialect
    )
    document = _document(rows, (*keys, *names), converters)
    values = {f"f_{name}": value for name, value in fixed.items()}
    return int(connection.execute(matching, {"rows": document, **values}).rowcount)


Converter = Callable[[Any], Any]


def _same_keys(rows: Sequence[dict[str, Any]]) -> None:
    keys = rows[0].keys()
    if any(row.keys() != keys for row in rows):
        raise ValueError("every row must give the same columns")


def _document(rows: Sequence[dict[str, Any]], names: tuple[str, ...],
              converters: tuple[Converter | None, ...]) -> str:  # fmt: skip
    """*rows* as one JSON array of objects, each value as its column binds it."""
    converting = [(name, convert) for name, convert in zip(names, converters, strict=True)
                  if convert is not None]  # fmt: skip
    if converting:
        rows = [dict(row) for row in rows]
        for row in rows:
            for name, convert in converting:
                row[name] = convert(row[name])
    return json.dumps(rows, default=_moment, separators=(",", ":"), allow_nan=False)


def _moment(value: Any) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not a column value")


def _columns(table: Table, names: tuple[str, ...], dialect: Dialect
             ) -> tuple[str, tuple[Converter | None, ...]]:  # fmt: skip
    """The column definitions of ``json_to_recordset`` for *names* (each with the type
    of its column), and how each value is bound (``None``: as it is)."""
    quote = dialect.identifier_preparer.quote
    definitions = []
    converters: list[Converter | None] = []
    for name in names:
        kind = table.c[name].type
        definitions.append(f"{quote(name)} {kind.compile(dialect=dialect)}")
        # A type of nurture's own (an aware UTC moment) binds its values itself; the
        # driver's own binding (JSON, strings) is what json.dumps does already.
        converters.append(kind.bind_processor(dialect) if isinstance(kind, TypeDecorator) else None)
    return ", ".join(definitions), tuple(converters)


@cache
def _insert(table: Table, names: tuple[str, ...], dialect: Dialect
            ) -> tuple[TextClause, tuple[Converter | None, ...]]:  # fmt: skip
    """The ``INSERT … SELECT … FROM json_to_recordset(…)`` of *names* into *table*."""
    definitions, converters = _columns(table, names, dialect)
    columns = ", ".join(dialect.identifier_preparer.quote(name) for name in names)
    statement = text(
        f"INSERT INTO {dialect.identifier_preparer.format_table(table)} ({columns}) "
        f"SELECT {columns} FROM json_to_recordset(CAST(:rows AS JSON)) AS r({definitions})"
    )
    return statement, converters


@cache
def _update(table: Table, keys: tuple[str, ...], names: tuple[str, ...],
            fixed: tuple[str, ...], version: str | None, dialect: Dialect
            ) -> tuple[TextClause, tuple[Converter | None, ...]]:  # fmt: skip
    """The ``UPDATE … FROM json_to_recordset(…)`` of :func:`update_rows`, matching the
    rows by *keys* (the key, and the *version* if any)."""
    definitions, converters = _columns(table, (*keys, *names), dialect)
    quote = dialect.identifier_preparer.quote
    target = dialect.identifier_preparer.format_table(table)
    sets = [f"{quote(name)} = r.{quote(name)}" for name in names]
    sets += [f"{quote(name)} = :f_{name}" for name in fixed]
    if version is not None:
        sets.append(f"{quote(version)} = {target}.{quote(version)} + 1")
    matches = " AND ".join(f"{target}.{quote(name)} = r.{quote(name)}" for name in keys)
    statement = text(
        f"UPDATE {target} SET {', '.join(sets)} "
        f"FROM json_to_recordset(CAST(:rows AS JSON)) AS r({definitions}) "
        f"WHERE {matches}"
    ).bindparams(*(bindparam(f"f_{name}", type_=table.c[name].type) for name in fixed))
    return statement, converters


def one_of(dialect: Dialect, column: Any, values: Sequence[Any]) -> ColumnElement[bool]:
    """``column IN (values)``; on PostgreSQL ``column = ANY(array)``: one parameter, where
    a list of hundreds costs SQLAlchemy and the driver a rewrite of the statement each
    time, and the server a longer plan."""
    if dialect.name != "postgresql":
        return column.in_(list(values))
    # Cast to the column's kind without its length: VARCHAR(300)[] would cut a longer
    # value, which would then match a stored one it only begins with.
    kind = column.type
    kind = getattr(kind, "impl_instance", kind)
    array = bindparam(
        None, list(values), type_=ARRAY(String() if isinstance(kind, String) else kind)
    )
    return column == any_(array)


class unindexed(FunctionElement[Any]):
    """*column* in a condition that must not choose its index: on SQLite ``+column``
    (its planner, without statistics, prefers an equality on an indexed column such as
    ``status`` to a list of primary keys, and walks every row of that status: 0.9 ms a
    statement with 5,000 enrollments running, growing with the table); elsewhere the
    column as it is (PostgreSQL plans by its statistics)."""

    inherit_cache = True
    name = "unindexed"

    def __init__(self, column: Any) -> None:
        super().__init__(column)
        self.type = column.type


@compiles(unindexed)
def _unindexed(element: unindexed, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.clauses, **kw))


@compiles(unindexed, "sqlite")
def _unindexed_sqlite(element: unindexed, compiler: Any, **kw: Any) -> str:
    return "+" + str(compiler.process(element.clauses, **kw))
