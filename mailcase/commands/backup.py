"""`mailcase backup PATH` and `mailcase restore PATH`: a consistent copy of the whole database and back;
handlers parse and print, `store.backup` copies."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mailcase.app import App
from mailcase.commands.acting import add_by, audit
from mailcase.store.engine import transaction


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "backup",
        help="write a consistent copy of the database to a new file, also while serve runs "
        "(SQLite: VACUUM INTO; PostgreSQL: pg_dump --format=custom)",
    )
    p.add_argument("path", type=Path, metavar="PATH", help="the backup file to create (never overwritten)")
    add_by(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_backup)

    p = sub.add_parser(
        "restore",
        help="replace the database's content with a backup, then bring its schema up to date "
        "(stop serve first; SQLite: the backup API; PostgreSQL: pg_restore --clean)",
    )
    p.add_argument("path", type=Path, metavar="PATH", help="a file written by `mailcase backup`")
    p.add_argument("--force", action="store_true", help="replace a database that already has cases or messages")
    add_by(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_restore)


def run_backup(app: App, args: argparse.Namespace) -> int:
    from mailcase.commands.output import emit_json
    from mailcase.store.backup import backup

    result = backup(app.engine, args.path)
    with transaction(app.engine) as session:
        audit(app, session, args, "backup", target=str(result.path), summary=f"{result.size} bytes ({result.method})")
    if args.json:
        emit_json({"path": str(result.path), "bytes": result.size, "method": result.method})
    else:
        print(f"backup written to {result.path}: {result.size} bytes ({result.method})")
    return 0


def run_restore(app: App, args: argparse.Namespace) -> int:
    from mailcase.commands.output import emit_json
    from mailcase.errors import UsageError
    from mailcase.store.backup import has_data, restore
    from mailcase.store.engine import upgrade_schema

    if not args.path.is_file():
        raise UsageError(f"{args.path}: no such backup file")
    if has_data(app.engine) and not args.force:
        raise UsageError("the database already has cases or messages: restoring replaces them all; add --force")
    method = restore(app.engine, args.path)
    revision = upgrade_schema(app.engine)  # a backup from an older release gets the newer schema
    with transaction(app.engine) as session:
        audit(app, session, args, "restore", target=str(args.path), summary=f"{method}; schema revision {revision}")
    if args.json:
        emit_json({"path": str(args.path), "method": method, "revision": revision})
    else:
        print(f"restored from {args.path} ({method}); schema at revision {revision}")
    return 0
