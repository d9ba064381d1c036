"""Small persistence primitives shared by the store modules: a model's table, dialect-aware insert-or-ignore, statements run on the driver's cursor."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.compiler import SQLCompiler
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


# ---------------------------------------------------------------------------------------------
# Statements run on the driver's cursor


def execute_on_driver(connection: sa.Connection, statement: sa.Insert | sa.Update | sa.Delete, values: Mapping[str, Any]) -> int:
    """Run a Core INSERT, UPDATE or DELETE with `values` on the driver's own cursor, in
    `connection`'s transaction; returns the rows it changed.

    For the statements delivery runs for every notice: SQLAlchemy's execution machinery (events,
    an execution context, a result) cost ~50 µs a statement, several times the driver's own work
    (bench/deliver, issue 16). The row written is still the one `connection.execute` would write:
    the statement is compiled by SQLAlchemy (once per dialect and set of value names) and each value
    passes through its column type's bind processing (JSON, UtcDateTime, EnumString). A driver
    error is raised as SQLAlchemy's wrapper of it (OperationalError for a locked database or a
    dropped connection, which is invalidated, as `connection.execute` does), so `is_transient`
    judges it the same. Every parameter the statement binds must be in `values` (no defaults).
    """
    compiled = _driver_statement(statement, connection.dialect, tuple(values))
    return _run_on_driver(connection, compiled.sql, compiled.parameters(values))


def execute_sql_on_driver(connection: sa.Connection, sql: str) -> None:
    """Run a statement without parameters (SAVEPOINT, RELEASE) as `execute_on_driver` does."""
    _run_on_driver(connection, sql, ())


@contextlib.contextmanager
def savepoint(connection: sa.Connection, name: str) -> Iterator[None]:
    """SAVEPOINT … RELEASE around the block, on the driver's cursor; an error inside rolls back to
    the savepoint (the transaction's earlier work stays) and is raised."""
    execute_sql_on_driver(connection, f"SAVEPOINT {name}")
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):  # a dropped connection: the caller sees the first error
            execute_sql_on_driver(connection, f"ROLLBACK TO SAVEPOINT {name}")
        raise
    execute_sql_on_driver(connection, f"RELEASE SAVEPOINT {name}")


@dataclass(frozen=True, slots=True)
class _DriverStatement:
    sql: str
    names: tuple[str, ...]
    """Bound names in the order a positional paramstyle takes them (`?`), else the dict's keys."""
    keys: tuple[str, ...]
    """The name each bound parameter has in the SQL (SQLAlchemy escapes some)."""
    processors: tuple[Callable[[Any], Any] | None, ...]
    positional: bool

    def parameters(self, values: Mapping[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        processed = [
            values[name] if processor is None else processor(values[name])
            for name, processor in zip(self.names, self.processors, strict=True)
        ]
        return tuple(processed) if self.positional else dict(zip(self.keys, processed, strict=True))


@functools.lru_cache(maxsize=64)
def _driver_statement(
    statement: sa.Insert | sa.Update | sa.Delete, dialect: sa.Dialect, names: tuple[str, ...]
) -> _DriverStatement:
    compiled = statement.compile(dialect=dialect, column_keys=list(names))
    assert isinstance(compiled, SQLCompiler)
    positional = bool(dialect.positional)
    bound = list(compiled.positiontup or ()) if positional else list(compiled.binds)
    missing = [name for name in bound if name not in names]
    if missing:
        raise ValueError(f"no value for {', '.join(missing)}: execute_on_driver fills no defaults")
    escaped: Mapping[str, str] = compiled.escaped_bind_names or {}
    return _DriverStatement(
        sql=compiled.string,
        names=tuple(bound),
        keys=tuple(escaped.get(name, name) for name in bound),
        processors=tuple(compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in bound),
        positional=positional,
    )


def _run_on_driver(connection: sa.Connection, sql: str, parameters: Any) -> int:
    dialect = connection.dialect
    proxied = connection.connection
    cursor = proxied.cursor()
    try:
        cursor.execute(sql, parameters)
        return max(int(cursor.rowcount or 0), 0)
    except dialect.loaded_dbapi.Error as error:
        disconnected = dialect.is_disconnect(error, proxied, cursor)
        wrapped = sa.exc.DBAPIError.instance(
            sql, None, error, dialect.loaded_dbapi.Error,
            hide_parameters=True, connection_invalidated=disconnected, dialect=dialect, ismulti=False,
        )  # fmt: skip
        if disconnected:
            connection.invalidate(error)
        raise wrapped from error
    finally:
        with contextlib.suppress(Exception):
            cursor.close()
