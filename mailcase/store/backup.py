"""Backup and restore of the whole database: SQLite through `VACUUM INTO` and the online backup API,
consistent while `serve` writes; PostgreSQL through `pg_dump`/`pg_restore` in custom format. It copies
databases and never interprets or changes a row."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from mailcase.errors import MailcaseError, UsageError


class BackupError(MailcaseError):
    """A backup or restore that could not be done (the tool is missing, it failed); the message says why."""


@dataclass(frozen=True, slots=True)
class BackupResult:
    path: Path
    size: int
    method: str  # "sqlite VACUUM INTO" or "pg_dump --format=custom"


def backup(engine: Engine, path: Path) -> BackupResult:
    """Write a consistent copy of the database to `path`, which must not exist yet."""
    if path.exists():
        raise UsageError(f"{path} exists: a backup never overwrites a file, name a new one")
    if engine.dialect.name == "sqlite":
        # VACUUM INTO reads one snapshot (a read transaction: WAL writers go on meanwhile) and writes
        # a compact database file; outside any transaction, hence the raw connection.
        connection = engine.raw_connection()
        try:
            cursor = connection.cursor()
            cursor.execute("VACUUM INTO ?", (str(path),))
            cursor.close()
        finally:
            connection.close()
        return BackupResult(path, path.stat().st_size, "sqlite VACUUM INTO")
    command = ["pg_dump", "--format=custom", "--no-owner", "--no-privileges", f"--file={path}"]
    _run_pg(command, engine, "pg_dump")
    return BackupResult(path, path.stat().st_size, "pg_dump --format=custom")


def restore(engine: Engine, path: Path) -> str:
    """Replace the database's whole content with the backup at `path`; returns the method used."""
    if not path.is_file():
        raise UsageError(f"{path}: no such backup file")
    if engine.dialect.name == "sqlite":
        source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            _check_sqlite_backup(source, path)
            target = engine.raw_connection()
            try:
                # The online backup API copies page by page under the target's write lock: other
                # connections see the old database or the restored one, never a mixture.
                source.backup(target.driver_connection)  # type: ignore[arg-type]
            finally:
                target.close()
        finally:
            source.close()
        return "sqlite backup API"
    # --clean --if-exists: drop what exists first, so a restore over a used database leaves no extra rows.
    command = ["pg_restore", "--clean", "--if-exists", "--no-owner", "--no-privileges", "--single-transaction", "--exit-on-error"]
    _run_pg([*command, str(path)], engine, "pg_restore", database_flag="--dbname")
    return "pg_restore"


def has_data(engine: Engine) -> bool:
    """Whether the database holds any case or inbound message (a restore over it needs --force)."""
    tables = set(sa.inspect(engine).get_table_names())
    if not {"support_case", "raw_message"} <= tables:
        return False
    with engine.connect() as connection:
        return any(
            connection.execute(sa.text(f"SELECT 1 FROM {table} LIMIT 1")).first() is not None
            for table in ("support_case", "raw_message")
        )


def pg_commands(engine: Engine, path: Path) -> tuple[str, str]:
    """The documented commands (password left out: use ~/.pgpass or PGPASSWORD), for when pg_dump is missing."""
    url = make_url(engine.url.render_as_string(hide_password=False)).set(drivername="postgresql", password=None)
    target = url.render_as_string(hide_password=False)
    return (
        f"pg_dump --format=custom --no-owner --no-privileges --file={path} '{target}'",
        f"pg_restore --clean --if-exists --no-owner --no-privileges --single-transaction --exit-on-error --dbname='{target}' {path}",
    )


def _run_pg(command: Sequence[str], engine: Engine, tool: str, *, database_flag: str = "") -> None:
    if shutil.which(tool) is None:
        raise BackupError(f"{tool} is not installed (Debian: postgresql-client); run it yourself, see README \"Backups\"")
    url = make_url(engine.url.render_as_string(hide_password=False))
    environ = dict(os.environ)
    if url.password:
        environ["PGPASSWORD"] = str(url.password)  # never on the command line, where `ps` shows it
    database = url.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    argv = [*command, f"{database_flag}={database}" if database_flag else database]
    result = subprocess.run(argv, env=environ, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        problem = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise BackupError(f"{tool} failed with status {result.returncode}: {problem}")


def _check_sqlite_backup(source: sqlite3.Connection, path: Path) -> None:
    try:
        ok = source.execute("PRAGMA quick_check").fetchone()
        tables = {row[0] for row in source.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        raise UsageError(f"{path} is not a SQLite database: {exc}") from None
    if ok != ("ok",) or "alembic_version" not in tables:
        raise UsageError(f"{path} is not a mailcase backup (no schema, or damaged)")
