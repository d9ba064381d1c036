"""The database side of health and metrics: a round trip that also proves the write lock can be had, and
the few counts /metrics shows (held messages, the queue, open cases), each read through an index; it
never writes, never commits and never holds a lock past the probe.

On SQLite every transaction of the main engine begins with BEGIN IMMEDIATE (store/engine.py), so a
read there would queue for the write lock behind ingest and wait out a locked database. These reads go
through `reader()`: an engine on the same file whose connections read in autocommit, as WAL readers
that never wait for a writer. On PostgreSQL reads take no conflicting lock and the main engine serves.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from mailcase.domain import CLOSED_STATUSES, CaseStatus, HeldState, OutboxState
from mailcase.store.models import Case, HeldMessage, Outbox

_OUTBOX = SQLModel.metadata.tables[Outbox.__tablename__]
_CASE = SQLModel.metadata.tables[Case.__tablename__]
_HELD = SQLModel.metadata.tables[HeldMessage.__tablename__]
_OPEN = sorted(status.value for status in CaseStatus if status not in CLOSED_STATUSES)
_UNSENT = (OutboxState.QUEUED.value, OutboxState.SENDING.value)
_WRITE_PROBE_TABLE = "raw_message"
"""Where every inbound message is written first: the table whose write lock ingest needs."""


@dataclass(frozen=True, slots=True)
class DeskGauges:
    """What /metrics shows of the database at one instant."""

    held: int = 0
    notices: dict[tuple[str, str], int] = field(default_factory=dict)
    """(state, kind) → count, for the states that do not only grow (queued, sending, failed)."""
    oldest_due_at: datetime | None = None
    """The due instant of the longest-waiting unsent notice that is due (None: nothing due waits)."""
    open_cases: dict[tuple[str, str], int] = field(default_factory=dict)
    """(status, priority) → count of cases not closed."""


def reader(engine: Engine, *, timeout: float) -> Engine:
    """The engine health reads go through (see the module docstring); `timeout` bounds a lock wait, in seconds."""
    if engine.dialect.name != "sqlite":
        return engine
    readonly = sa.create_engine(
        engine.url,
        hide_parameters=True,
        pool_size=2,
        max_overflow=2,
        connect_args={"timeout": timeout, "check_same_thread": False},
    )

    def autocommit(dbapi_connection: object, _record: object) -> None:
        # pysqlite then issues no BEGIN of its own: each SELECT is a WAL read of its own.
        dbapi_connection.isolation_level = None  # type: ignore[attr-defined]
        cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
        cursor.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        cursor.close()

    event.listen(readonly, "connect", autocommit)
    return readonly


def probe_database(engine: Engine, *, timeout: float) -> float:
    """A round trip that takes, and gives back at once, the lock ingest needs to write; its seconds.

    Raises the driver's error when the database is down or the lock cannot be had within `timeout`
    seconds (a locked SQLite file, a table locked on PostgreSQL). Use the `reader()` engine.
    """
    started = time.monotonic()
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            connection.exec_driver_sql("ROLLBACK")
        else:
            milliseconds = int(timeout * 1000)
            connection.exec_driver_sql(f"SET LOCAL lock_timeout = {milliseconds}")
            connection.exec_driver_sql(f"SET LOCAL statement_timeout = {milliseconds}")
            connection.exec_driver_sql(f"LOCK TABLE {_WRITE_PROBE_TABLE} IN ROW EXCLUSIVE MODE")
            connection.rollback()
    return time.monotonic() - started


def desk_gauges(engine: Engine, *, now: datetime, timeout: float) -> DeskGauges:
    """Held messages, unsent and failed notices by kind, the oldest due notice, open cases by status
    and priority: each counted over an index range (held_message.state, outbox (state, next_attempt_at),
    support_case (status, organisation_id)), never over the whole of a table that only grows."""
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SET LOCAL statement_timeout = {int(timeout * 1000)}")
        held = connection.execute(
            sa.select(sa.func.count()).select_from(_HELD).where(_HELD.c.state == HeldState.HELD.value)
        ).scalar_one()
        notices = {
            (str(state), str(kind)): _count(count)
            for state, kind, count in connection.execute(
                sa.select(_OUTBOX.c.state, _OUTBOX.c.kind, sa.func.count())
                .where(_OUTBOX.c.state.in_([*_UNSENT, OutboxState.FAILED.value]))
                .group_by(_OUTBOX.c.state, _OUTBOX.c.kind)
            )
        }
        oldest = _oldest_due(connection, now)
        open_cases = {
            (str(status), str(priority)): _count(count)
            for status, priority, count in connection.execute(
                sa.select(_CASE.c.status, _CASE.c.priority, sa.func.count())
                .where(_CASE.c.status.in_(_OPEN))
                .group_by(_CASE.c.status, _CASE.c.priority)
            )
        }
        connection.rollback()
    return DeskGauges(
        held=int(held), notices=notices, oldest_due_at=_aware(oldest), open_cases=open_cases
    )


def oldest_due_notice(engine: Engine, *, now: datetime, timeout: float) -> datetime | None:
    """The due instant of the longest-waiting unsent notice that is due now; None when none waits."""
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SET LOCAL statement_timeout = {int(timeout * 1000)}")
        oldest = _oldest_due(connection, now)
        connection.rollback()
    return _aware(oldest)


def _count(value: object) -> int:
    assert isinstance(value, int)
    return value


def _oldest_due(connection: sa.Connection, now: datetime) -> object:
    return connection.execute(
        sa.select(sa.func.min(_OUTBOX.c.due_at)).where(_OUTBOX.c.state.in_(_UNSENT), _OUTBOX.c.due_at <= now)
    ).scalar_one()


def _aware(value: object) -> datetime | None:
    """min() over a UtcDateTime column comes back raw on SQLite (text); as aware UTC either way."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
