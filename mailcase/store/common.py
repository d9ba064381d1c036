"""Small persistence primitives shared by the store modules: a model's table, dialect-aware insert-or-ignore, statements run on the driver's cursor."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

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
    judges it the same. Every parameter the statement binds must be in `values` or be a literal.
    """
    compiled = _driver_statement(statement, connection.dialect, tuple(values))
    return _run_on_driver(connection, compiled.sql, compiled.parameters(values), _rows_changed)


def first_row_on_driver(connection: sa.Connection, statement: sa.Select[Any], values: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """The first row of a Core SELECT run as `execute_on_driver` runs its statements, as the driver
    returns it (no result processing: for columns that need none). Unlike `connection.execute` it
    begins no transaction of SQLAlchemy's, so on SQLite a read takes no BEGIN IMMEDIATE (the
    writer's lock) and outside a transaction runs on its own, in SQLite's autocommit mode."""
    compiled = _driver_statement(statement, connection.dialect, tuple(values))
    return _run_on_driver(connection, compiled.sql, compiled.parameters(values), _first_row)


def rows_on_driver(connection: sa.Connection, statement: sa.Select[Any], values: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """Every row of a Core SELECT, as `first_row_on_driver` reads its first."""
    compiled = _driver_statement(statement, connection.dialect, tuple(values))
    return _run_on_driver(connection, compiled.sql, compiled.parameters(values), _all_rows)


def execute_sql_on_driver(connection: sa.Connection, sql: str) -> None:
    """Run a statement without parameters (SAVEPOINT, RELEASE) as `execute_on_driver` does."""
    _run_on_driver(connection, sql, (), _rows_changed)


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


_FROM_VALUES: Any = object()


@dataclass(frozen=True, slots=True)
class _DriverStatement:
    sql: str
    names: tuple[str, ...]
    """Bound names in the order a positional paramstyle takes them (`?`), else the dict's keys."""
    keys: tuple[str, ...]
    """The name each bound parameter has in the SQL (SQLAlchemy escapes some)."""
    literals: tuple[Any, ...]
    """Each bound parameter's value when the statement carries it (a literal, a LIMIT), else
    _FROM_VALUES."""
    processors: tuple[Callable[[Any], Any] | None, ...]
    positional: bool

    def parameters(self, values: Mapping[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        processed = []
        for name, literal, processor in zip(self.names, self.literals, self.processors, strict=True):
            value = values[name] if literal is _FROM_VALUES else literal
            processed.append(value if processor is None else processor(value))
        return tuple(processed) if self.positional else dict(zip(self.keys, processed, strict=True))


@functools.lru_cache(maxsize=64)
def _driver_statement(
    statement: sa.Insert | sa.Update | sa.Delete | sa.Select[Any], dialect: sa.Dialect, names: tuple[str, ...]
) -> _DriverStatement:
    compiled = statement.compile(dialect=dialect, column_keys=list(names))
    assert isinstance(compiled, SQLCompiler)
    positional = bool(dialect.positional)
    bound = list(compiled.positiontup or ()) if positional else list(compiled.binds)
    literals = []
    for name in bound:
        bind = compiled.binds[name]
        if name in names:
            literals.append(_FROM_VALUES)
        elif bind.required or bind.callable is not None or bind.expanding:
            raise ValueError(f"no value for {name}: the driver's statements fill in no defaults")
        else:
            literals.append(bind.value)
    escaped: Mapping[str, str] = compiled.escaped_bind_names or {}
    return _DriverStatement(
        sql=compiled.string,
        names=tuple(bound),
        keys=tuple(escaped.get(name, name) for name in bound),
        literals=tuple(literals),
        processors=tuple(compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in bound),
        positional=positional,
    )


def _rows_changed(cursor: Any) -> int:
    return max(int(cursor.rowcount or 0), 0)


def _first_row(cursor: Any) -> tuple[Any, ...] | None:
    row = cursor.fetchone()
    return None if row is None else tuple(row)


def _all_rows(cursor: Any) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in cursor.fetchall()]


T = TypeVar("T")


def _run_on_driver(connection: sa.Connection, sql: str, parameters: Any, read: Callable[[Any], T]) -> T:
    dialect = connection.dialect
    proxied = connection.connection
    cursor = proxied.cursor()
    try:
        cursor.execute(sql, parameters)
        return read(cursor)
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
