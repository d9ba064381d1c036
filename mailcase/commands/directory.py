"""`mailcase directory import FILE`: load organisations, contacts, technicians and products (idempotent upsert)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mailcase.app import App
from mailcase.commands.output import emit_json
from mailcase.errors import UsageError
from mailcase.resources import example_directory
from mailcase.rules.directory_format import load_directory
from mailcase.store.directory import directory_listing, import_directory
from mailcase.store.engine import transaction


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser("directory", help="the customer directory")
    group = parser.add_subparsers(dest="directory_command", metavar="ACTION", required=True)
    imp = group.add_parser("import", help="load a directory TOML file (idempotent upsert)")
    imp.add_argument("file", type=Path, help="the directory file (docs/directory.md); '-' reads stdin")
    imp.add_argument("--json", action="store_true", help="print the import report as JSON")
    imp.set_defaults(handler=run_import)
    p = group.add_parser("list", help="organisations and who their MPOCs are, with every contact's roles")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_list)
    p = group.add_parser("show", help="one organisation (by id) or the organisation of one contact (by email)")
    p.add_argument("key", metavar="ORG|EMAIL", help="an organisation id from the directory, or a contact's email")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_show)
    example = group.add_parser(
        "example", help="print the example directory that ships with mailcase (two organisations)"
    )
    example.set_defaults(handler=run_example, standalone=run_example)
    from mailcase.commands.retention import register_directory

    register_directory(group)


def run_example(args: argparse.Namespace) -> int:
    sys.stdout.write(example_directory())
    return 0


def run_import(app: App, args: argparse.Namespace) -> int:
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


def _print_organisation(entry: dict[str, Any], *, only: str | None = None) -> None:
    print(f"{entry['id']}: {entry['name']} ({entry['locale']}, {entry['timezone']})")
    print(f"  domains:  {', '.join(entry['domains']) or '-'}")
    print(f"  products: {', '.join(entry['products']) or '-'}")
    for contact in entry["contacts"]:
        if only is not None and contact["email"] != only:
            continue
        who = "MPOC" if contact["mpoc"] else "not an MPOC (may not open cases)"
        roles = ", ".join(contact["roles"]) or "no role"
        inactive = "" if contact["active"] else " [inactive]"
        print(f"  {contact['email']:<34} {contact['name'] or '-':<22} {who}: {roles}{inactive}")


def run_list(app: App, args: argparse.Namespace) -> int:
    with transaction(app.engine) as session:
        rows = directory_listing(session=session)
    if args.json:
        emit_json(rows)
        return 0
    for entry in rows:
        _print_organisation(entry)
    if not rows:
        print("the directory is empty: load it with `mailcase directory import FILE`")
    return 0


def run_show(app: App, args: argparse.Namespace) -> int:
    key = args.key.strip().lower()
    with transaction(app.engine) as session:
        if "@" in key:
            rows = [e for e in directory_listing(session=session) if any(c["email"] == key for c in e["contacts"])]
        else:
            rows = directory_listing(session=session, organisation_key=args.key.strip())
    if not rows:
        raise UsageError(f"no organisation or contact {args.key!r} in the directory")
    if args.json:
        emit_json(rows[0])
        return 0
    _print_organisation(rows[0], only=key if "@" in key else None)
    return 0
