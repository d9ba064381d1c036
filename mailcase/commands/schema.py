"""`mailcase init`: create or upgrade the database schema (idempotent) and report its revision."""

from __future__ import annotations

import argparse
from typing import Any

from mailcase.app import App
from mailcase.errors import TransientError
from mailcase.store.engine import migrate_schema


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser("init", help="create or upgrade the database schema (idempotent)")
    parser.set_defaults(handler=run_init)


def run_init(app: App, args: argparse.Namespace) -> int:
    import sqlalchemy as sa

    try:
        before, revision = migrate_schema(app.engine)
    except sa.exc.OperationalError as exc:
        raise TransientError(f"cannot reach the database: {exc.orig}") from exc
    _ = app.secret  # generate the installation's reply-token secret now, not on the first message
    if before == revision:
        print(f"schema is up to date at revision {revision}")
    else:
        print(f"schema upgraded from {before or 'empty'} to revision {revision}")
    return 0
