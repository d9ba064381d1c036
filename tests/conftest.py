"""Shared fixtures: one parametrized database fixture (SQLite and PostgreSQL), a fixed clock, settings."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mailcase.clock import FixedClock
from mailcase.config import Settings, load_config
from mailcase.store.engine import make_engine, upgrade_schema

REPO = Path(__file__).resolve().parent.parent
PG_ADMIN_URLS = (
    "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
    "postgresql+psycopg://root@127.0.0.1:5432/postgres",
)
IN_CI = os.environ.get("CI", "").lower() == "true"


def _pg_admin_url() -> str | None:
    override = os.environ.get("MAILCASE_TEST_PG_ADMIN_URL")
    candidates = (override,) if override else PG_ADMIN_URLS
    for url in candidates:
        engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        try:
            with engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
            return url
        except sa.exc.OperationalError:
            continue
        finally:
            engine.dispose()
    return None


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    url = _pg_admin_url()
    if url is None:
        if IN_CI:
            pytest.fail("PostgreSQL on 127.0.0.1:5432 is required in CI (CI=true) but is not reachable")
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432 (start it to run these tests)")
    return url


@pytest.fixture
def fresh_pg_url(pg_admin_url: str) -> Iterator[str]:
    """A throwaway PostgreSQL database, dropped afterwards."""
    name = f"mailcase_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = pg_admin_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def pg_template(pg_admin_url: str) -> Iterator[str]:
    """A PostgreSQL database migrated once per session; test databases are cloned from it
    (CREATE DATABASE … TEMPLATE copies files, far cheaper than running the migrations again)."""
    name = f"mailcase_template_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine = make_engine(pg_admin_url.rsplit("/", 1)[0] + f"/{name}")
    upgrade_schema(engine)
    engine.dispose()
    try:
        yield name
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def migrated_pg_url(pg_admin_url: str, pg_template: str) -> Iterator[str]:
    """A throwaway PostgreSQL database already at the newest schema revision, dropped afterwards."""
    name = f"mailcase_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"'))
    try:
        yield pg_admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a database at the newest schema, once on SQLite and once on PostgreSQL
    (for an empty PostgreSQL database use `fresh_pg_url`)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'mailcase.db'}"
    return str(request.getfixturevalue("migrated_pg_url"))


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """A migrated database on each engine."""
    engine = make_engine(database_url)
    upgrade_schema(engine)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def clock() -> FixedClock:
    """Wednesday 2026-11-25 16:00 America/Denver."""
    return FixedClock(datetime(2026, 11, 25, 23, 0, tzinfo=UTC))


@pytest.fixture
def settings() -> Settings:
    return load_config(REPO / "config.toml", {})
