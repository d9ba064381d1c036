"""`mailcase directory import FILE`: load organisations, contacts, technicians and products (idempotent upsert)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mailcase.app import App
from mailcase.db import transaction
from mailcase.errors import UsageError
from mailcase.resources import example_directory


def register(sub: "argparse._SubParsersAction[Any]") -> None:
    parser = sub.add_parser("directory", help="the customer directory")
    group = parser.add_subparsers(dest="directory_command", metavar="ACTION", required=True)
    imp = group.add_parser("import", help="load a directory TOML file (idempotent upsert)")
    imp.add_argument("file", type=Path, help="the directory file (docs/directory.md); '-' reads stdin")
    imp.add_argument("--json", action="store_true", help="print the import report as JSON")
    imp.set_defaults(handler=run_import)
    example = group.add_parser(
        "example", help="print the example directory that ships with mailcase (two organisations)"
    )
    example.set_defaults(handler=run_example, standalone=run_example)


def run_example(args: argparse.Namespace) -> int:
    sys.stdout.write(example_directory())
    return 0


def run_import(app: App, args: argparse.Namespace) -> int:
    from mailcase.cli import emit_json
    from mailcase.store.directory import import_directory, load_directory

    try:
        text = sys.stdin.read() if str(args.file) == "-" else args.file.read_text(encoding="utf-8")
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
