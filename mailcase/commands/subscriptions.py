"""`mailcase subscriptions add|list|remove`: who follows which master case or platform, as an agent sees it.

The same functions as the email commands (`mailcase.desk.subscriptions`), so a contact added here gets
the same confirmation as one who wrote `subscribe …`.
"""

from __future__ import annotations

import argparse
from typing import Any

from sqlmodel import Session

from mailcase.app import App
from mailcase.commands.arguments import case_number as _number
from mailcase.commands.output import emit_json
from mailcase.desk.cases import find_case
from mailcase.desk.subscriptions import master_of, subscribe, unsubscribe
from mailcase.domain import format_case_number
from mailcase.errors import UsageError
from mailcase.store.cases import cases_by_ids
from mailcase.store.engine import transaction
from mailcase.store.models import Case, Subscription
from mailcase.store.subscriptions import (
    OPTOUT_MAINTENANCE,
    case_optout_target,
    case_target,
    list_subscriptions,
    platform_target,
    remove_subscriptions,
)


def _address(text: str) -> str:
    cleaned = text.strip().lower()
    if cleaned.count("@") != 1 or cleaned.startswith("@") or cleaned.endswith("@"):
        raise argparse.ArgumentTypeError(f"not an email address: {text!r}")
    return cleaned


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser("subscriptions", help="subscriptions to master cases and platforms")
    group = parser.add_subparsers(dest="subscriptions_command", metavar="ACTION", required=True)

    for name, text in (("add", "subscribe an address"), ("remove", "unsubscribe an address")):
        p = group.add_parser(name, help=f"{text} to a master case or to every master case of a platform")
        p.add_argument("address", type=_address, help="the subscriber's email address")
        target = p.add_mutually_exclusive_group(required=True)
        target.add_argument("--case", type=_number, help="a master case (or a case linked to one)")
        target.add_argument("--platform", help='a platform, e.g. "Microsoft Teams"')
        if name == "remove":
            target.add_argument(
                "--opt-out", choices=["maintenance"], help="withdraw a one-click opt-out of maintenance notices"
            )
        p.add_argument("--no-notice", action="store_true", help="do not send the confirmation to the address")
        p.set_defaults(handler=run_add if name == "add" else run_remove)

    p = group.add_parser("list", help="list subscriptions (and one-click opt-outs)")
    p.add_argument("--address", type=_address, help="only this subscriber's subscriptions")
    p.add_argument("--case", type=_number, help="only subscriptions to this master case")
    p.add_argument("--platform", help="only subscriptions to this platform")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_list)


def _master(session: Session, number: int) -> Case:
    case = find_case(session, number)
    master = master_of(session, case)
    if master is None:
        raise UsageError(f"case {format_case_number(number)} is neither a master case nor linked to one")
    return master


def _what(master: Case | None, platform: str | None) -> str:
    return f"master case {format_case_number(master.number)}" if master is not None else f"platform {platform}"


def run_add(app: App, args: argparse.Namespace) -> int:
    now = app.clock.now()
    with transaction(app.engine) as session:
        master = _master(session, args.case) if args.case is not None else None
        new = subscribe(
            session, app.desk(), address=args.address, now=now, case=master, platform=args.platform,
            notify=not args.no_notice,
        )
        what = _what(master, args.platform)
    print(f"{args.address} {'subscribed to' if new else 'was already subscribed to'} {what}")
    return 0


def run_remove(app: App, args: argparse.Namespace) -> int:
    now = app.clock.now()
    with transaction(app.engine) as session:
        if getattr(args, "opt_out", None):
            removed = remove_subscriptions(session=session, address=args.address, targets=[OPTOUT_MAINTENANCE]) > 0
            print(f"{args.address}: maintenance opt-out {'withdrawn' if removed else 'was not recorded'}")
            return 0
        master = _master(session, args.case) if args.case is not None else None
        removed = unsubscribe(
            session, app.desk(), address=args.address, now=now, case=master, platform=args.platform,
            notify=not args.no_notice,
        )
        what = _what(master, args.platform)
    print(f"{args.address} {'unsubscribed from' if removed else 'opted out of'} {what}")
    return 0


def run_list(app: App, args: argparse.Namespace) -> int:
    with transaction(app.engine) as session:
        targets: list[str] | None = None
        if args.case is not None:
            master = _master(session, args.case)
            assert master.id is not None  # a stored row
            targets = [case_target(master.id), case_optout_target(master.id)]
            if master.platform:
                targets.append(platform_target(master.platform))
        elif args.platform:
            targets = [platform_target(args.platform)]
        rows: list[Subscription] = list_subscriptions(session=session, address=args.address, targets=targets)
        linked = cases_by_ids(session=session, ids=[r.case_id for r in rows if r.case_id])
        numbers = {i: c.number for i, c in linked.items()}
        data = [
            {
                "id": r.id,
                "address": r.address,
                "kind": "optout" if r.target.startswith("optout:") else r.target.split(":", 1)[0],
                "target": r.target,
                "master": format_case_number(numbers[r.case_id]) if r.case_id in numbers else None,
                "platform": r.platform,
                "created_at": r.created_at.isoformat(),
            }
            for r in rows
        ]
    if args.json:
        emit_json(data)
    else:
        for row in data:
            about = f"master {row['master']}" if row["master"] else (row["platform"] or row["target"])
            label = "opted out of" if row["kind"] == "optout" else "follows"
            print(f"{row['address']:<40} {label} {about}")
        if not data:
            print("no subscriptions")
    return 0
