"""The schema: `mailcase init` is idempotent on SQLite and PostgreSQL, and the migrations match the models."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

import mailcase.store.models  # noqa: F401  (registers every table on SQLModel.metadata)
from mailcase.store.engine import current_revision, head_revision, make_engine, upgrade_schema
from support.cli import run_mailcase, run_mailcase_process

REVISION = re.compile(r"revision (\S+)$")

# Tables the data model must have, so later work adds behaviour rather than tables (issue #2).
REQUIRED_TABLES = {
    "organisation",
    "contact",
    "contact_role",
    "technician",
    "product",
    "organisation_product",
    "support_case",
    "case_participant",
    "case_event",
    "message",
    "attachment",
    "raw_message",
    "held_message",
    "outbox",
    "maintenance_window",
    "subscription",
    "mailbox_cursor",
    "counter",
}


def printed_revision(stdout: str) -> str:
    lines = stdout.strip().splitlines()
    assert len(lines) == 1, stdout
    found = REVISION.search(lines[0])
    assert found, stdout
    return found.group(1)


def init_twice(database_url: str) -> tuple[str, str]:
    first = run_mailcase(["init"], database_url=database_url)
    assert first.status == 0, first.stderr
    second = run_mailcase(["init"], database_url=database_url)
    assert second.status == 0, second.stderr
    assert "up to date" in second.stdout
    return printed_revision(first.stdout), printed_revision(second.stdout)


def test_init_twice_on_sqlite_reports_the_same_revision(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mailcase.db'}"

    first, second = init_twice(url)

    assert first == second
    engine = make_engine(url)
    try:
        assert first == head_revision(engine) == current_revision(engine)
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_init_twice_on_a_fresh_postgresql_database_reports_the_same_revision(fresh_pg_url: str) -> None:
    first, second = init_twice(fresh_pg_url)

    assert first == second
    engine = make_engine(fresh_pg_url)
    try:
        assert first == head_revision(engine) == current_revision(engine)
    finally:
        engine.dispose()


def test_init_on_an_empty_database_says_it_created_the_schema(tmp_path: Path) -> None:
    result = run_mailcase(["init"], database_url=f"sqlite:///{tmp_path / 'new.db'}")

    assert result.status == 0, result.stderr
    assert result.stdout.startswith("schema upgraded from empty to revision ")


def test_init_as_a_real_command_creates_the_default_sqlite_file_next_to_the_config(tmp_path: Path) -> None:
    """The README's first steps: with the sample as ./config.toml, the SQLite file lands beside it
    (a relative SQLite path is relative to the config file's directory, issue 17)."""
    import shutil

    from support.cli import SAMPLE_CONFIG

    shutil.copy(SAMPLE_CONFIG, tmp_path / "config.toml")
    result = run_mailcase_process(["init"], cwd=tmp_path, config=None)

    assert result.status == 0, result.stderr
    assert (tmp_path / "mailcase.db").exists()
    assert printed_revision(result.stdout)


def test_init_against_an_unreachable_postgresql_is_a_temporary_failure() -> None:
    result = run_mailcase(["init"], database_url="postgresql+psycopg://postgres@127.0.0.1:1/nowhere")

    assert result.status == 75
    assert result.stdout == ""
    assert "temporary failure" in result.stderr


def test_an_empty_database_has_no_revision(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        assert current_revision(engine) is None
    finally:
        engine.dispose()


def test_the_migrations_create_every_table_of_the_model(engine: Engine) -> None:
    tables = set(sa.inspect(engine).get_table_names())

    assert tables >= REQUIRED_TABLES
    assert set(SQLModel.metadata.tables) <= tables


def test_the_migrations_and_the_models_agree(engine: Engine) -> None:
    """Autogenerate finds nothing to do after upgrading: no table, column, type, index or key differs."""
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, SQLModel.metadata)

    assert differences == []


def test_upgrading_an_up_to_date_schema_changes_nothing(engine: Engine) -> None:
    before = sorted(sa.inspect(engine).get_table_names())

    assert upgrade_schema(engine) == head_revision(engine)
    assert sorted(sa.inspect(engine).get_table_names()) == before
    assert current_revision(engine) == head_revision(engine)


def test_sqlite_runs_with_wal_foreign_keys_and_a_busy_timeout(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'pragmas.db'}")
    try:
        with engine.connect() as connection:
            pragma = lambda name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()  # noqa: E731
            assert str(pragma("journal_mode")).lower() == "wal"
            assert pragma("foreign_keys") == 1
            assert int(pragma("busy_timeout")) > 0
    finally:
        engine.dispose()


def test_sqlite_refuses_a_row_pointing_at_a_missing_row(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'fk.db'}")
    upgrade_schema(engine)
    try:
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as connection:
            connection.exec_driver_sql(
                "INSERT INTO case_event (case_id, kind, at, author, summary, data) "
                "VALUES (4242, 'note', '2026-01-01 00:00:00', '', '', '{}')"
            )
    finally:
        engine.dispose()
