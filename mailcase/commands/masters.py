"""`mailcase cases master create` and closing a master case (`cases update M --status closed [--close-linked]`):
the master-case parts of the `cases` group, registered by `commands.cases`."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from sqlmodel import Session

from mailcase.app import App
from mailcase.commands.acting import acting, add_by, audit
from mailcase.commands.arguments import case_number as _number
from mailcase.commands.output import emit
from mailcase.desk import masters
from mailcase.desk.cases import find_case
from mailcase.domain import CaseKind, CaseStatus, format_case_number
from mailcase.errors import UsageError
from mailcase.present import case_detail_json
from mailcase.store.engine import transaction
from mailcase.store.models import Case


def register_cases(group: argparse._SubParsersAction[Any]) -> None:
    """Add `master create` to the `cases` sub-commands."""
    master = group.add_parser("master", help="P1G master cases: one problem affecting many organisations")
    actions = master.add_subparsers(dest="master_command", metavar="ACTION", required=True)
    p = actions.add_parser("create", help="open a master case (P1G) for a platform")
    p.add_argument("--platform", required=True, help='the affected platform, e.g. "Microsoft Teams"')
    p.add_argument("--subject", required=True, help="the master case's subject, as subscribers will read it")
    p.add_argument("--assignee", help="technician email")
    add_by(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_create)

    p = actions.add_parser("close-linked", help="close the open linked cases of a closed master case, with a notice")
    p.add_argument("number", type=_number, help="the master case's number")
    add_by(p)
    p.set_defaults(handler=run_close_linked)


def add_close_linked(parser: argparse.ArgumentParser) -> None:
    """`--close-linked` on `cases update`."""
    parser.add_argument(
        "--close-linked",
        action="store_true",
        help="with --status closed on a master case: close its open linked cases too, with a notice",
    )


def run_create(app: App, args: argparse.Namespace) -> int:
    now = app.clock.now()
    with transaction(app.engine) as session:
        case = masters.create_master(
            session, app.desk(), platform=args.platform, subject=args.subject, now=now,
            author=acting(args), assignee=args.assignee,
        )
        session.flush()
        audit(app, session, args, "cases master create", case_id=case.id, target=f"case {case.number:08d}",
              summary=f"master case for {args.platform}")
        data = case_detail_json(session, case)
    emit(data, as_json=args.json, text=f"master case {data['number']} (P1G) opened for {data['platform']}: {data['subject']}")
    return 0


def after_update(
    app: App, session: Session, case: Case, args: argparse.Namespace, *, now: datetime, author: str
) -> list[str]:
    """Called by `cases update` after its changes: a master case just closed tells its followers and
    closes (with --close-linked) or lists (offers) its open linked cases. Returns lines to print."""

    close_linked = bool(getattr(args, "close_linked", False))
    closing_master = case.kind == CaseKind.MASTER and args.status is CaseStatus.CLOSED
    if close_linked and not closing_master:
        raise UsageError("--close-linked goes with --status closed on a master case")
    if not closing_master:
        return []
    result = masters.master_closed(session, app.desk(), case, now=now, author=author, close_linked=close_linked)
    lines = [f"master case {format_case_number(case.number)} closed: {result.notified} follower notices queued"]
    if result.closed:
        lines.append("closed linked cases: " + ", ".join(format_case_number(n) for n in result.closed))
    lines.extend(f"not closed: {reason}" for reason in result.refused)
    if result.still_open and not close_linked:
        numbers = ", ".join(format_case_number(n) for n in result.still_open)
        lines.append(f"linked cases still open: {numbers}")
        lines.append(f"close them too with: mailcase cases master close-linked {format_case_number(case.number)}")
    return lines


def run_close_linked(app: App, args: argparse.Namespace) -> int:
    now = app.clock.now()
    with transaction(app.engine) as session:
        master = find_case(session, args.number, lock=True)
        result = masters.close_linked_cases(session, app.desk(), master, now=now, author=acting(args))
        audit(app, session, args, "cases master close-linked", case_id=master.id, target=f"case {args.number:08d}",
              summary=f"{len(result.closed)} linked case(s) closed")
    closed = ", ".join(format_case_number(n) for n in result.closed) or "none"
    print(f"linked cases closed: {closed} ({result.notified} notices queued)")
    for reason in result.refused:
        print(f"not closed: {reason}")
    return 0
