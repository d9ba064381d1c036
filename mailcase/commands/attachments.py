"""`mailcase attachments …`: list a case's attachments and write one out; it changes nothing."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mailcase.app import App
from mailcase.commands.arguments import case_number as _number
from mailcase.commands.output import emit_rows
from mailcase.desk.cases import find_case
from mailcase.domain import format_size
from mailcase.errors import UsageError
from mailcase.present import iso, local
from mailcase.store.cases import attachment_data, attachments_of_case
from mailcase.store.engine import transaction
from mailcase.store.messages import attachment_size


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser("attachments", help="read the files customers and technicians attached to a case")
    group = parser.add_subparsers(dest="attachments_command", metavar="ACTION", required=True)

    p = group.add_parser("list", help="every attachment of a case's messages")
    p.add_argument("case", type=_number, help="the case number (00001042 or 1042)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_list)

    p = group.add_parser("get", help="write one attachment out (by file name, or by SHA-256 or a prefix of it)")
    p.add_argument("case", type=_number, help="the case number (00001042 or 1042)")
    p.add_argument("name", metavar="NAME|SHA256", help="the file name, or its SHA-256 (a unique prefix is enough)")
    p.add_argument("-o", "--output", metavar="PATH", help="file to write (default: the attachment's name; '-' for stdout)")
    p.set_defaults(handler=run_get)


def _rows(app: App, number: int) -> list[dict[str, Any]]:
    with transaction(app.engine) as session:
        case = find_case(session, number)
        assert case.id is not None
        rows = []
        for part, message in attachments_of_case(session=session, case_id=case.id):
            size = attachment_size(session=session, sha256=part.sha256)
            rows.append(
                {
                    "filename": part.filename,
                    "content_type": part.content_type,
                    "size": size or 0,
                    "sha256": part.sha256,
                    "inline": part.inline,
                    "content_id": part.content_id,
                    "message_id": message.message_id,
                    "direction": str(message.direction),
                    "from": message.from_address,
                    "received_at": iso(message.received_at),
                }
            )
        return rows


def run_list(app: App, args: argparse.Namespace) -> int:
    zone = app.settings.business.timezone
    return emit_rows(
        _rows(app, args.case),
        as_json=args.json,
        line=lambda row: (
            f"{row['sha256'][:12]}  {format_size(row['size']):>9}  {row['content_type']:<28} "
            f"{local(row['received_at'], zone)}  {row['from']}  {row['filename']}"
        ),
        empty="no attachments",
    )


def run_get(app: App, args: argparse.Namespace) -> int:
    rows = _rows(app, args.case)
    wanted = args.name.strip()
    chosen = [r for r in rows if r["filename"] == wanted]
    if not chosen and len(wanted) >= 6 and all(c in "0123456789abcdef" for c in wanted.lower()):
        chosen = [r for r in rows if r["sha256"].startswith(wanted.lower())]
    distinct = {r["sha256"]: r for r in chosen}
    if not distinct:
        names = ", ".join(dict.fromkeys(r["filename"] for r in rows)) or "none"
        raise UsageError(f"case {args.case:08d} has no attachment {wanted!r} (attachments: {names})")
    if len(distinct) > 1:
        options = ", ".join(f"{r['filename']} {sha[:12]}" for sha, r in distinct.items())
        raise UsageError(f"{wanted!r} names several different files; give the SHA-256 instead: {options}")
    (row,) = distinct.values()
    with transaction(app.engine) as session:
        data = attachment_data(session=session, sha256=row["sha256"])
    if data is None:
        raise UsageError(
            f"attachment {row['sha256']} is not stored: its bytes were purged ([retention] raw_days) or never kept"
        )
    if args.output == "-":
        binary = getattr(sys.stdout, "buffer", None)
        if binary is None:  # a text-only stdout (an embedding caller): the bytes as UTF-8 text
            sys.stdout.write(data.decode("utf-8", "replace"))
        else:
            sys.stdout.flush()
            binary.write(data)
            binary.flush()
        return 0
    target = Path(args.output) if args.output else Path(row["filename"] or row["sha256"])
    target.write_bytes(data)
    print(f"wrote {target} ({len(data)} bytes, sha256 {row['sha256']})", file=sys.stderr)
    return 0
