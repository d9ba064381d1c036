"""`mailcase serve` (the daemon) and `mailcase tick` (every due sweep once, then the outbox)."""

from __future__ import annotations

import argparse
from typing import Any

from mailcase.app import App
from mailcase.commands.output import emit_json


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("serve", help="run the daemon: SMTP listener, IMAP pollers, scheduler, outbox delivery")
    p.set_defaults(handler=run_serve)
    p = sub.add_parser(
        "tick", help="poll the IMAP mailboxes, run every due scheduler job once and deliver the outbox, then exit"
    )
    p.add_argument("--no-deliver", action="store_true", help="queue notices but do not deliver the outbox")
    p.add_argument("--json", action="store_true", help="print one JSON object (README, \"JSON output\")")
    p.set_defaults(handler=run_tick)


def run_serve(app: App, args: argparse.Namespace) -> int:
    # Imported here, not for a cycle: the daemon loads the SMTP/LMTP listeners, the IMAP client and
    # the delivery path, which the CLI's other commands (`ingest` once per message) never need.
    from mailcase.daemon import serve

    return serve(app)


def run_tick(app: App, args: argparse.Namespace) -> int:
    from mailcase.daemon import tick  # not at the top: see run_serve

    report = tick(app, deliver=not args.no_deliver)
    if args.json:
        emit_json(
            {
                "now": app.clock.now().isoformat(),
                "cases_due": report.sla.examined,
                "notices_queued": report.sla.queued,
                "by_kind": report.sla.by_kind,
                "maintenance_notices_queued": report.maintenance,
                "master_update_notices_queued": report.master_updates,
                "imap": report.imap,
                "delivery": report.delivery,
            }
        )
    else:
        for line in report.lines():
            print(line)
    return 0
