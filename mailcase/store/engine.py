"""Database engines, sessions, schema migrations and cross-process locks; built only when asked, never at import."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import Engine
from sqlmodel import Session

from mailcase.errors import TransientError
from mailcase.store.common import execute_sql_on_driver

MIGRATIONS_DIR = Path(__file__).parent.parent / "migrations"


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """SQLite with WAL, a busy timeout and foreign keys on; PostgreSQL through psycopg 3.

    `hide_parameters`: an error's text never carries the statement's bound values (message text,
    addresses, the reply-token secret), whether it reaches a log or an MTA's bounce.
    """
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    if url.startswith("sqlite"):
        engine = sa.create_engine(
            url,
            echo=echo,
            hide_parameters=True,
            connect_args={"timeout": 5.0, "check_same_thread": False},
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling defers BEGIN; take it over so every transaction
        # starts with BEGIN IMMEDIATE and a writer never fails half-way on a lock upgrade.
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return sa.create_engine(
        url, echo=echo, hide_parameters=True, pool_pre_ping=True, pool_size=5, max_overflow=5
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _sqlite_begin(conn: sa.Connection) -> None:
    # On the driver's cursor: every transaction begins here, and SQLAlchemy's execution machinery
    # cost several times SQLite's own work for this statement (`execute_on_driver`).
    execute_sql_on_driver(conn, "BEGIN IMMEDIATE")


def is_postgres(session_or_engine: Session | Engine | sa.Connection) -> bool:
    bind = session_or_engine.get_bind() if isinstance(session_or_engine, Session) else session_or_engine
    return bind.dialect.name == "postgresql"


def is_transient(error: BaseException) -> bool:
    """A database error that a retry can fix: locked, busy, unreachable, serialization failure."""
    if isinstance(error, TransientError):
        return True
    if isinstance(error, exc.OperationalError | exc.InterfaceError):
        return True
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return True
    return False


def database_problem(error: BaseException) -> str:
    """The driver's first line ("database is locked", "connection refused"), never the SQL or its values."""
    orig = getattr(error, "orig", None) or error
    lines = str(orig).strip().splitlines()
    return (lines[0] if lines else type(orig).__name__)[:200]


@contextlib.contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error; transient errors become TransientError."""
    session = Session(engine, expire_on_commit=False)
    try:
        yield session
        session.commit()
    except BaseException as error:
        session.rollback()
        if is_transient(error) and not isinstance(error, TransientError):
            raise TransientError(f"database unavailable: {database_problem(error)}") from error
        raise
    finally:
        session.close()


@contextlib.contextmanager
def committed(connection: sa.Connection) -> Iterator[None]:
    """One short transaction on a Core connection that outlives it (BEGIN IMMEDIATE on SQLite);
    like `transaction`, a database error a retry can fix becomes TransientError. On SQLite it takes
    the writer turn first (`sqlite_writer_turn`): delivery, in its own process, commits each outcome
    this way between the ingest processes' transactions, as a patient waiter (a notice can wait a
    few milliseconds more; the CPU its polling burns is taken from ingest)."""
    try:
        with sqlite_writer_turn(connection.engine, patient=True), connection.begin():
            yield
    except Exception as error:
        if is_transient(error) and not isinstance(error, TransientError):
            raise TransientError(f"database unavailable: {type(error).__name__}") from error
        raise


WRITER_TURN_WAIT_SECONDS = 5.0
"""How long `sqlite_writer_turn` waits for its turn before going on to SQLite's own busy timeout (as long)."""
_WRITER_TURN_POLL_SECONDS = 0.0005
_PATIENT_POLL_MAX_SECONDS = 0.004
"""The longest a patient waiter sleeps between two looks (`sqlite_writer_turn(patient=True)`)."""


@contextlib.contextmanager
def sqlite_writer_turn(engine: Engine, *, patient: bool = False) -> Iterator[None]:
    """Take turns with other processes before a write transaction on a SQLite file (nothing on PostgreSQL).

    SQLite has one writer at a time, and a writer that finds the database locked sleeps in the busy
    handler for 1, 2, 5, 10 … 100 ms between retries: with two processes ingesting, p99 of a
    transaction was ~145 ms against 10 ms in one (bench/ingest). Waiting here instead, on an
    advisory `flock` of `<database>-writer` polled every 0.5 ms, hands the database over within a
    fraction of a millisecond. The kernel drops the lock when its holder dies, and after
    WRITER_TURN_WAIT_SECONDS the caller goes on regardless, so the wait stays bounded (SQLite's busy
    timeout then decides, as without this turn).

    Each look costs CPU (a failed flock, a wake-up): ~55 µs per millisecond waited at 0.5 ms. A
    `patient` waiter (the delivery process, whose notices answer no client waiting on the line)
    looks half as often after each miss, down to every _PATIENT_POLL_MAX_SECONDS: a fifth of the CPU
    per millisecond waited. Under ingest at line rate delivery waited ~1.5 ms a commit on average
    and ~30 ms at p99, and that polling was a tenth of its CPU (bench/ingest/sidebyside.py, issue 16).
    """
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:" or database.startswith("file:"):
        yield
        return
    import fcntl
    import os
    import time

    descriptor = _open_writer_file(f"{database}-writer", database)
    try:
        deadline = time.monotonic() + WRITER_TURN_WAIT_SECONDS
        pause = _WRITER_TURN_POLL_SECONDS
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    break
                time.sleep(pause)
                if patient:
                    pause = min(pause * 2, _PATIENT_POLL_MAX_SECONDS)
        yield
    finally:
        os.close(descriptor)  # closing the descriptor releases the lock


def _open_writer_file(path: str, database: str) -> int:
    """Open the turn-taking lock file, creating it as SQLite creates its -wal and -shm files: with the
    database file's mode and, when we are root, its owner (so `mailcase ingest` run by root once does
    not lock the MTA's pipe user out). flock needs no write permission, so a file we may only read
    will do. A file we cannot open at all is a TransientError naming it: an MTA's pipe defers the
    message and the admin reads which file to fix."""
    import os
    import stat

    info: os.stat_result | None
    try:
        info = os.stat(database)
        mode = stat.S_IMODE(info.st_mode) & 0o666
    except OSError:
        info, mode = None, 0o644  # SQLite's default for a new database file
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        for flags in (os.O_RDWR, os.O_RDONLY):
            try:
                return os.open(path, flags)
            except PermissionError as exc:
                error = exc
            except OSError as exc:
                raise TransientError(f"cannot open {path}: {exc.strerror}") from exc
        raise TransientError(f"cannot open {path}: {error.strerror}") from error
    except OSError as exc:
        raise TransientError(f"cannot create {path}: {exc.strerror}") from exc
    try:
        os.fchmod(descriptor, mode)  # the umask must not make it narrower than the database
        if info is not None and os.geteuid() == 0:
            os.fchown(descriptor, info.st_uid, info.st_gid)
    except OSError:
        pass
    return descriptor


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for pg_advisory locks, derived from a name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def try_advisory_lock(connection: sa.Connection, name: str) -> bool:
    """Hold a session-level PostgreSQL advisory lock on `name`; SQLite has one process, so always True."""
    if connection.dialect.name != "postgresql":
        return True
    return bool(
        connection.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": advisory_key(name)}).scalar()
    )


def release_advisory_lock(connection: sa.Connection, name: str) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": advisory_key(name)})


# ---------------------------------------------------------------------------------------------
# Schema


def _alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


MIGRATION_LOCK = "mailcase.schema-migration"


def upgrade_schema(engine: Engine) -> str:
    """Create or upgrade the schema to the newest revision; idempotent. Returns the revision."""
    return migrate_schema(engine)[1]


def migrate_schema(engine: Engine) -> tuple[str | None, str]:
    """Create or upgrade the schema; returns the revisions before and after, read under the lock.

    On PostgreSQL the migrations run under a session advisory lock: two `mailcase init` at once on
    a fresh database would otherwise both create the tables and one fail half-way. The second waits,
    then finds the schema at head and does nothing. (SQLite's BEGIN IMMEDIATE serialises them.)
    """
    if engine.dialect.name != "postgresql":
        return _migrate(engine)
    with engine.connect() as lock:
        lock.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": advisory_key(MIGRATION_LOCK)})
        lock.commit()
        try:
            return _migrate(engine)
        finally:
            release_advisory_lock(lock, MIGRATION_LOCK)
            lock.commit()


def _migrate(engine: Engine) -> tuple[str | None, str]:
    from alembic import command

    before = current_revision(engine)
    command.upgrade(_alembic_config(engine), "head")
    revision = current_revision(engine)
    assert revision is not None
    return before, revision


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision(engine: Engine) -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config(engine)).get_current_head()
    assert head is not None
    return head
