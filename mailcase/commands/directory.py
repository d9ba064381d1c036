"""`mailcase directory import FILE`: load organisations, contacts, technicians and products (idempotent upsert)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mailcase.app import App
from mailcase.db import transaction
from mailcase.errors import UsageError


def register(sub: "argparse._SubParsersAction[Any]") -> None:
    parser = sub.add_parser("directory", help="the customer directory")
    group = parser.add_subparsers(dest="directory_command", metavar="ACTION", required=True)
    imp = group.add_parser("import", help="load a directory TOML file (idempotent upsert)")
    imp.add_argument("file", type=Path)
    imp.add_argument("--json", action="store_true", help="print the import report as JSON")
    imp.set_defaults(handler=run_import)


def run_import(app: App, args: argparse.Namespace) -> int:
    from mailcase.cli import emit_json
    from mailcase.store.directory import import_directory, load_directory

    try:
        text = args.file.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {args.file}: {exc.strerror}") from None
    directory = load_directory(text)
    with transaction(app.engine) as session:
        report = import_directory(directory, session=session)
    if args.json:
        emit_json(report.as_dict() if hasattr(report, "as_dict") else report.__dict__)
    else:
        print(f"imported {args.file}:")
        for line in report.lines():
            print(f"  {line}")
    return 0
