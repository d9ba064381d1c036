"""Small persistence primitives shared by the store modules: a model's table, dialect-aware
insert-or-ignore, and statements run on the driver's cursor (`Prepared`, `execute_on_driver`): the
ingest and delivery hot paths' way to the database."""

from __future__ import annotations

import contextlib
import functools
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, SQLModel


def insert_or_ignore(
    session: Session, table: sa.Table, values: dict[str, Any], *, conflict: list[str]
) -> Any:
    """INSERT … ON CONFLICT DO NOTHING on SQLite and PostgreSQL; returns the new primary key or None.

    Idempotency by unique keys, never check-then-insert (two daemons may race).
    """
    pk = list(table.primary_key.columns)
    # Values go in as parameters, not `.values(**values)`: the statement then compiles once per shape
    # and is reused from SQLAlchemy's cache (a sweep queues thousands of rows).
    statement = insert_ignoring(session.get_bind().dialect.name, table, conflict)
    if len(pk) == 1:
        return session.execute(statement.returning(pk[0]), values).scalar_one_or_none()
    return True if rows_affected(session.execute(statement, values)) else None


def conflict_insert(dialect: str, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
    """The dialect's own INSERT of `table`, the one with ON CONFLICT (SQLite and PostgreSQL)."""
    return postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)


def insert_ignoring(dialect: str, table: sa.Table, conflict: list[str]) -> postgresql.Insert | sqlite.Insert:
    """INSERT … ON CONFLICT (`conflict`) DO NOTHING, for a statement built once per dialect."""
    return conflict_insert(dialect, table).on_conflict_do_nothing(index_elements=conflict)


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


class Rows:
    """What a `Prepared` statement gave back: its rows (already converted by the column types) and,
    for an UPDATE or DELETE, how many rows it matched."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[tuple[Any, ...]], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self._rows)

    def all(self) -> list[tuple[Any, ...]]:
        return self._rows

    def first(self) -> tuple[Any, ...] | None:
        return self._rows[0] if self._rows else None

    def one(self) -> tuple[Any, ...]:
        if len(self._rows) != 1:
            raise sa.exc.NoResultFound("no row") if not self._rows else sa.exc.MultipleResultsFound("several rows")
        return self._rows[0]

    def scalar_one(self) -> Any:
        return self.one()[0]

    def scalar_one_or_none(self) -> Any:
        if len(self._rows) > 1:
            raise sa.exc.MultipleResultsFound("several rows")
        return self._rows[0][0] if self._rows else None


_Value = Callable[[Any], Any]
"""How one bound parameter's value is taken from the caller's values (a mapping; for `run_many` the list of rows)."""


@dataclass(frozen=True, slots=True)
class _Form:
    """One statement compiled for one dialect and one set of parameter names: the SQL text, how to
    build the driver's parameters from ours, and how to convert each result column."""

    sql: str
    positional: bool
    binds: tuple[tuple[str, _Value, Callable[[Any], Any] | None], ...]
    results: tuple[Callable[[Any], Any] | None, ...]

    def parameters(self, params: Any) -> tuple[Any, ...] | dict[str, Any]:
        values = [
            (name, process(value(params)) if process is not None else value(params)) for name, value, process in self.binds
        ]
        return tuple(v for _, v in values) if self.positional else dict(values)

    def convert(self, rows: Sequence[Any]) -> list[tuple[Any, ...]]:
        if not any(self.results):
            return [tuple(row) for row in rows]
        return [
            tuple(process(v) if process is not None else v for v, process in zip(row, self.results, strict=False))
            for row in rows
        ]


class Prepared:
    """A Core statement run straight through the driver's cursor: compiled once per dialect and
    parameter names, its parameters and results converted by the column types' own processors.

    This is the ingest hot path's way to the database. `Session.execute` costs ~20–60 µs of
    SQLAlchemy's own work per statement (cache key, parameter processing, execution context,
    result set-up) and ~100 µs more on PostgreSQL; an ingested message runs ~17 statements, so that
    overhead was more than the database's work. What stays the same as `Session.execute`: the
    session's transaction and savepoints (the same connection), autoflush of pending ORM changes
    first, SQLAlchemy's exception classes (a locked SQLite is still `OperationalError`, so the
    sender gets 451) and a connection the driver lost is invalidated, not returned to the pool.
    What is not supported, and refused when the statement is first compiled: IN lists expanded at
    execution and server-side defaults that need a fetch; columns with Python-side defaults get them
    (scalars and callables), as an ORM insert would.
    """

    def __init__(self, build: Callable[[str], sa.Executable]) -> None:
        self._build = build
        self._forms: dict[tuple[str, tuple[str, ...], int], _Form] = {}
        self._lock = threading.Lock()
        self.__doc__ = build.__doc__
        self.__name__ = build.__name__

    def run(self, session: Session, params: Mapping[str, Any] | None = None) -> Rows:
        """Execute once with `params` in the session's transaction; the rows it returned (RETURNING
        or SELECT) and its row count."""
        return self._execute(_flushed_connection(session), params or {})

    def run_alone(self, session: Session, params: Mapping[str, Any] | None = None) -> Rows:
        """Execute once in a transaction of its own that ends with the statement, where the database
        lets several writers work at once (PostgreSQL): for a counter row every new case moves (the
        case number, the team's round-robin turn). Its row lock is then held for the statement alone,
        not until the message's commit; in the session's transaction every concurrent case-opening
        transaction queued behind it (issue 16: two SMTP processes' ingest threads spent most of their
        time waiting on the turn's row lock). The statement commits asynchronously: the caller's own
        commit, later in the write-ahead log, makes it durable too. A caller that rolls back leaves
        the counter moved (a case number skipped, a technician's turn passed), never a number reused.

        On SQLite it runs in the session's transaction: the write lock admits one writer anyway, and
        a second connection would wait for the lock this one holds."""
        bind = session.get_bind()
        if bind.dialect.name == "sqlite":
            return self.run(session, params)
        side = _autonomous(bind.engine)
        for attempt in (1, 2):
            try:
                with side.connect() as connection:
                    return self._execute(connection, params or {})
            except sa.exc.DBAPIError as error:
                # The server dropped a pooled connection (a restart dropped them all): the pool's
                # connections are closed and the statement tried once more on a new one, instead of
                # a ping before every use. A counter that did move before its answer was lost
                # leaves a gap.
                if attempt == 2 or not error.connection_invalidated:
                    raise
                side.dispose()
        raise AssertionError("unreachable")  # pragma: no cover

    def run_many(self, session: Session, rows: Sequence[Mapping[str, Any]]) -> Rows:
        """Insert `rows` (all with the same keys, every column that has a default among them) with
        one multi-row INSERT … VALUES (…), (…) per ROWS_PER_STATEMENT rows, in list order; the rows
        its RETURNING gave back, if it has one.

        One statement, not the driver's executemany: psycopg runs an executemany in pipeline mode,
        which for the one to three rows of a new case (its participants, its first events) cost
        ~90 µs more CPU and a third more wall clock than one statement (four threads, as the SMTP
        workers run them; issue 16). SQLite takes the same statement."""
        returned: list[tuple[Any, ...]] = []
        if not rows:
            return Rows(returned, 0)
        connection = _flushed_connection(session)
        keys, count = tuple(rows[0]), 0
        for start in range(0, len(rows), ROWS_PER_STATEMENT):
            chunk = rows[start : start + ROWS_PER_STATEMENT]
            form = self._form(connection.dialect, keys, len(chunk))
            found, rowcount = on_driver(connection, form.sql, form.parameters(chunk))
            returned.extend(form.convert(found) if found else [])
            count += rowcount
        return Rows(returned, count)

    def _execute(self, connection: sa.Connection, params: Mapping[str, Any]) -> Rows:
        form = self._form(connection.dialect, tuple(params))
        rows, rowcount = on_driver(connection, form.sql, form.parameters(params))
        return Rows(form.convert(rows) if rows else [], rowcount)

    def _form(self, dialect: sa.Dialect, keys: tuple[str, ...], rows: int = 0) -> _Form:
        """The statement compiled for `dialect` and `keys`; with `rows`, as an INSERT of that many rows."""
        form = self._forms.get((dialect.name, keys, rows))
        if form is None:
            with self._lock:
                statement = self._build(dialect.name)
                compiled = _compile_rows(statement, dialect, keys, rows) if rows else _compile(statement, dialect, keys)
                form = self._forms.setdefault((dialect.name, keys, rows), compiled)
        return form


def on_driver(connection: sa.Connection, sql: str, values: Any) -> tuple[Sequence[Any], int]:
    """Run `sql` with the driver's own parameters on `connection`'s cursor, in its transaction: the
    rows it returned and its row count. A driver error is raised as SQLAlchemy's wrapper of it,
    without the values (they are customers' mail: never in a log), and a connection the driver lost
    is invalidated, as `Connection.execute` does, so `is_transient` judges it the same."""
    dialect = connection.dialect
    pooled = connection.connection
    cursor = None
    try:
        cursor = pooled.cursor()
        cursor.execute(sql, values)
        rows = cursor.fetchall() if cursor.description else []
        rowcount = cursor.rowcount
    except dialect.loaded_dbapi.Error as error:
        lost = dialect.is_disconnect(error, pooled.dbapi_connection, cursor)
        wrapped = sa.exc.DBAPIError.instance(
            sql, None, error, dialect.loaded_dbapi.Error, hide_parameters=True, connection_invalidated=lost,
            dialect=dialect,
        )
        if lost:
            connection.invalidate(error)
        raise wrapped from error
    finally:
        if cursor is not None:
            with contextlib.suppress(Exception):  # a lost connection: the caller sees the first error
                cursor.close()
    return rows, rowcount if rowcount is not None and rowcount >= 0 else 0


def _flushed_connection(session: Session) -> sa.Connection:
    """The session's connection after its pending ORM changes are flushed (autoflush, as `Session.execute`)."""
    if session.autoflush:
        session.flush()
    return _connection(session)


_CONNECTION = "mailcase.prepared.connection"


def _connection(session: Session) -> sa.Connection:
    """The session's connection, asked of the session once per transaction or savepoint (asking
    costs more than most of the hot path's statements): remembered with the innermost transaction it
    was asked in. A savepoint is begun only when its session is first asked for the connection, so a
    new savepoint is always asked."""
    transaction = session.get_nested_transaction() or session.get_transaction()
    known = session.info.get(_CONNECTION)
    if transaction is not None and known is not None and known[0] is transaction and not known[1].invalidated:
        connection: sa.Connection = known[1]
        return connection
    connection = session.connection()
    session.info[_CONNECTION] = (session.get_nested_transaction() or session.get_transaction(), connection)
    return connection


_AUTONOMOUS: weakref.WeakKeyDictionary[sa.Engine, sa.Engine] = weakref.WeakKeyDictionary()
_AUTONOMOUS_LOCK = threading.Lock()


def _autonomous(engine: sa.Engine) -> sa.Engine:
    """`engine`'s database through a small pool of its own whose statements each commit at once
    (autocommit) and asynchronously (`synchronous_commit = off`), for `Prepared.run_alone`; disposed
    with `engine`."""
    side = _AUTONOMOUS.get(engine)
    if side is not None:  # every case but the first: no lock taken
        return side
    with _AUTONOMOUS_LOCK:
        side = _AUTONOMOUS.get(engine)
        if side is None:
            # The same URL (and so the same libpq options: search_path, timeouts); the setting is
            # made once per connection, not through `options`, which would replace the URL's.
            side = sa.create_engine(
                engine.url, echo=engine.echo, hide_parameters=True, pool_size=2, max_overflow=8,
                isolation_level="AUTOCOMMIT",
            )
            event.listen(side, "connect", _commit_asynchronously)
            event.listen(engine, "engine_disposed", lambda _engine, side=side: side.dispose())
            _AUTONOMOUS[engine] = side
        return side


def _commit_asynchronously(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("SET synchronous_commit TO off")
    cursor.close()
    dbapi_connection.commit()  # the SET stays for the session; no transaction is left open


def prepared(build: Callable[[str], sa.Executable]) -> Prepared:
    """Decorator: a builder of a Core statement for a dialect name becomes a `Prepared` statement."""
    return Prepared(build)


def _compile(statement: sa.Executable, dialect: sa.Dialect, keys: tuple[str, ...]) -> _Form:
    assert isinstance(statement, sa.ClauseElement)
    compiled: Any = statement.compile(dialect=dialect, column_keys=list(keys))
    defaults = {column.key: column.default for column in compiled.insert_prefetch} | {
        column.key: column.onupdate for column in compiled.update_prefetch
    }
    escaped = getattr(compiled, "escaped_bind_names", None) or {}
    order = compiled.positiontup if compiled.positional else list(compiled.binds)
    binds = []
    for name in order:
        bind = compiled.binds[name]
        if bind.expanding:
            raise ValueError(f"{name}: an IN list expanded at execution cannot be prepared")
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        binds.append((escaped.get(name, name), _value_of(bind, defaults), process))
    return _Form(
        sql=compiled.string, positional=bool(compiled.positional), binds=tuple(binds),
        results=_result_processors(statement, dialect),
    )


ROWS_PER_STATEMENT = 50
"""The most rows `Prepared.run_many` puts in one INSERT (a statement's parameters stay far below
SQLite's limit of 32,766 and PostgreSQL's of 65,535 for any of our tables)."""


def _compile_rows(statement: sa.Executable, dialect: sa.Dialect, keys: tuple[str, ...], rows: int) -> _Form:
    """An INSERT of `rows` rows of `keys`: each row's values are bound by their position in the
    list `_Form.parameters` is given. A column default left to the statement would need a value
    per row that is not in the list: refused, as `_compile` refuses what it cannot prepare."""
    assert isinstance(statement, sa.Insert)
    slots: dict[str, tuple[int, str]] = {}
    values = []
    for row in range(rows):
        bound = {}
        for key in keys:
            name = f"{key}_row{row}"
            slots[name] = (row, key)
            bound[key] = sa.bindparam(name, type_=statement.table.c[key].type)
        values.append(bound)
    compiled: Any = statement.values(values).compile(dialect=dialect)
    escaped = getattr(compiled, "escaped_bind_names", None) or {}
    order = compiled.positiontup if compiled.positional else list(compiled.binds)
    binds = []
    for name in order:
        if name not in slots:
            raise ValueError(f"{name}: every row must give each column that has a default")
        row, key = slots[name]
        process = compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
        binds.append((escaped.get(name, name), _row_value(row, key), process))
    return _Form(
        sql=compiled.string, positional=bool(compiled.positional), binds=tuple(binds),
        results=_result_processors(statement, dialect),
    )


def _result_processors(statement: sa.Executable, dialect: sa.Dialect) -> tuple[Callable[[Any], Any] | None, ...]:
    """How each column the statement gives back (SELECT, RETURNING) is converted from the driver's value."""
    columns = list(getattr(statement, "exported_columns", None) or [])
    return tuple(column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns)


def _row_value(row: int, key: str) -> _Value:
    return lambda rows: rows[row][key]


def _value_of(bind: Any, defaults: Mapping[str, Any]) -> _Value:
    key = bind.key
    default = defaults.get(key)
    if default is not None:
        if default.is_scalar:
            fixed = default.arg
            return lambda params: params.get(key, fixed)
        if default.is_callable:
            make = default.arg
            return lambda params: params[key] if key in params else make(None)
        raise ValueError(f"{key}: a server-side default cannot be prepared")
    if bind.callable is not None:
        produce = bind.callable
        return lambda params: params[key] if key in params else produce()
    if bind.value is not None or not bind.required:
        fixed = bind.value
        return lambda params: params.get(key, fixed)
    return lambda params: params[key]


# ---------------------------------------------------------------------------------------------
# Statements run on the driver's cursor, for a Core statement the caller holds (delivery's)


def execute_on_driver(connection: sa.Connection, statement: sa.Insert | sa.Update | sa.Delete, values: Mapping[str, Any]) -> int:
    """Run a Core INSERT, UPDATE or DELETE with `values` on the driver's own cursor, in
    `connection`'s transaction (as `Prepared.run` does in a session's); returns the rows it changed.

    For the statements delivery runs for every notice: SQLAlchemy's execution machinery (events,
    an execution context, a result) cost ~50 µs a statement, several times the driver's own work
    (bench/deliver, issue 16). The statement is compiled once per dialect and set of value names.
    """
    form = _form_of(statement, connection.dialect, tuple(values))
    return on_driver(connection, form.sql, form.parameters(values))[1]


def first_row_on_driver(connection: sa.Connection, statement: sa.Select[Any], values: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """The first row of a Core SELECT run as `execute_on_driver` runs its statements. Unlike
    `connection.execute` it begins no transaction of SQLAlchemy's, so on SQLite a read takes no
    BEGIN IMMEDIATE (the writer's lock) and outside a transaction runs on its own, in SQLite's
    autocommit mode. On PostgreSQL psycopg opens a transaction for it that lasts until the
    connection is returned to the pool (a rollback): callers return it at once."""
    rows = rows_on_driver(connection, statement, values)
    return rows[0] if rows else None


def rows_on_driver(connection: sa.Connection, statement: sa.Select[Any], values: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """Every row of a Core SELECT, as `first_row_on_driver` reads its first."""
    form = _form_of(statement, connection.dialect, tuple(values))
    return form.convert(on_driver(connection, form.sql, form.parameters(values))[0])


def execute_sql_on_driver(connection: sa.Connection, sql: str) -> None:
    """Run a statement without parameters (SQLite's BEGIN IMMEDIATE) on the driver's cursor."""
    on_driver(connection, sql, ())


@functools.lru_cache(maxsize=64)
def _form_of(statement: sa.Executable, dialect: sa.Dialect, keys: tuple[str, ...]) -> _Form:
    """`_compile`, remembered for the statements delivery builds once and runs for every notice."""
    return _compile(statement, dialect, keys)
