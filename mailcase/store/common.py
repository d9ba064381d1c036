"""Small persistence primitives shared by the store modules: a model's table, dialect-aware insert-or-ignore."""

from __future__ import annotations

import functools
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, SQLModel


def insert_or_ignore(
    session: Session, table: sa.Table, values: dict[str, Any], *, conflict: list[str]
) -> Any:
    """INSERT … ON CONFLICT DO NOTHING on SQLite and PostgreSQL; returns the new primary key or None.

    Idempotency by unique keys, never check-then-insert (two daemons may race).
    """
    dialect = session.get_bind().dialect.name
    insert: Any = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
    pk = list(table.primary_key.columns)
    # Values go in as parameters, not `.values(**values)`: the statement then compiles once per shape
    # and is reused from SQLAlchemy's cache (a sweep queues thousands of rows).
    statement = insert.on_conflict_do_nothing(index_elements=conflict)
    if len(pk) == 1:
        statement = statement.returning(pk[0])
        return session.execute(statement, values).scalar_one_or_none()
    return True if rows_affected(session.execute(statement, values)) else None


def rows_affected(result: sa.Result[Any]) -> int:
    """How many rows an UPDATE or DELETE matched (0 for a result that is not a cursor's).

    `Session.execute` is typed to return `Result`; DML runs give a `CursorResult`, which has `rowcount`.
    """
    return int(result.rowcount or 0) if isinstance(result, sa.CursorResult) else 0


@functools.cache
def table_of(model: type[SQLModel]) -> sa.Table:
    """The Core table of a table model (statements built from it skip the ORM's per-object work)."""
    table = sa.inspect(model).local_table
    assert isinstance(table, sa.Table)
    return table
