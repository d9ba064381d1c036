"""`mailcase audit`: who did what, across cases (the audit ledger), oldest first; it only reads."""

from __future__ import annotations

import argparse
from typing import Any

from mailcase.app import App
from mailcase.commands.arguments import instant as _instant
from mailcase.store.engine import transaction


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("audit", help="who did what: every agent and operator action across cases, oldest first")
    p.add_argument("--since", type=_instant, metavar="ISO", help="only actions from this instant on")
    p.add_argument("--by", metavar="WHO", help="only actions by this identity (an email, or an OS user name)")
    p.add_argument("--limit", type=int, default=0, help="only the newest N actions (default 0: all)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_audit)


def run_audit(app: App, args: argparse.Namespace) -> int:
    from mailcase.commands.output import emit_json
    from mailcase.present import local
    from mailcase.store.audit import audit_lines

    with transaction(app.engine) as session:
        lines = audit_lines(session=session, since=args.since, actor=args.by, limit=max(args.limit, 0))
    rows = [
        {"at": line.at.isoformat(), "by": line.actor, "action": line.action, "case": line.case,
         "target": line.target, "summary": line.summary}
        for line in lines
    ]
    if args.json:
        emit_json(rows)
        return 0
    for row in rows:
        summary = f": {row['summary']}" if row["summary"] else ""
        print(f"{local(row['at'], app.settings.business.timezone)}  {row['by']}  {row['action']}  {row['target'] or '-'}{summary}")
    if not rows:
        print("no recorded actions")
    return 0
