"""`mailcase purge` and `mailcase directory erase`: retention and a person's erasure, each recorded in
the audit ledger; handlers parse, open the transaction and print, the SQL is in `store.retention`
and `store.erasure`."""

from __future__ import annotations

import argparse
from typing import Any

from mailcase.app import App
from mailcase.commands.acting import acting, add_by, audit
from mailcase.store.engine import sqlite_writer_turn, transaction


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "purge",
        help="delete raw messages and attachments past [retention] raw_days and held messages past held_days "
        "(cases, message texts and history stay)",
    )
    p.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
    add_by(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_purge)


def register_directory(group: argparse._SubParsersAction[Any]) -> None:
    """`directory erase`, added to the `directory` group by `commands.directory`."""
    p = group.add_parser(
        "erase",
        help="erase a person: their address and name become a pseudonym everywhere, the raw messages they sent "
        "are deleted, their directory entry and subscriptions removed",
    )
    p.add_argument("email", metavar="EMAIL", help="the person's email address")
    p.add_argument("--dry-run", action="store_true", help="only count what would change")
    add_by(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_erase)


def run_purge(app: App, args: argparse.Namespace) -> int:
    from mailcase.commands.output import emit_json
    from mailcase.retention import describe, purge

    counts = purge(app.engine, app.settings, app.clock.now(), actor=acting(args), dry_run=args.dry_run)
    if args.json:
        emit_json({
            "dry_run": args.dry_run, "held": counts.held, "raw_messages": counts.raw_messages,
            "raw_bytes": counts.raw_bytes, "attachments": counts.attachments,
            "attachment_bytes": counts.attachment_bytes,
        })
    else:
        print(("would be: " if args.dry_run else "") + describe(counts))
    return 0


def run_erase(app: App, args: argparse.Namespace) -> int:
    from mailcase.commands.output import emit_json
    from mailcase.errors import UsageError
    from mailcase.store.erasure import erase_person, new_pseudonym

    address = args.email.strip().lower()
    if "@" not in address:
        raise UsageError(f"{args.email!r} is not an email address")
    pseudonym = new_pseudonym()
    now = app.clock.now()
    with sqlite_writer_turn(app.engine), transaction(app.engine) as session:
        counts = erase_person(session=session, address=address, pseudonym=pseudonym, now=now, actor=acting(args))
        summary = ", ".join(f"{value} {key.replace('_', ' ')}" for key, value in counts.as_json().items())
        if args.dry_run:
            session.rollback()
        else:
            # The ledger names the pseudonym, never the address: the entry must not undo the erasure.
            audit(app, session, args, "directory erase", target=pseudonym, summary=summary)
    if args.json:
        emit_json({"dry_run": args.dry_run, "pseudonym": None if args.dry_run else pseudonym} | counts.as_json())
    elif args.dry_run:
        print(f"would erase: {summary}")
    else:
        print(f"erased, now {pseudonym}: {summary}")
    return 0
