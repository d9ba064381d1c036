"""`mailcase cases …`: list, show and change cases as an agent."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from mailcase.app import App
from mailcase.commands.acting import acting, add_by, audit
from mailcase.commands.arguments import case_number as _number
from mailcase.commands.arguments import instant as _instant
from mailcase.commands.masters import add_close_linked, after_update
from mailcase.commands.masters import register_cases as register_master_cases
from mailcase.commands.output import emit, emit_json, emit_rows
from mailcase.desk import cases as casework
from mailcase.desk import masters
from mailcase.desk.cases import find_case
from mailcase.domain import CaseKind, CaseStatus, Priority
from mailcase.errors import UsageError
from mailcase.present import case_detail_json, case_line, case_text, cases_json, iso, local
from mailcase.store.cases import list_cases, store_attachment
from mailcase.store.directory import technician_by_email
from mailcase.store.engine import transaction
from mailcase.store.models import Case

NUMBER_HELP = "the case number (00001042 or 1042)"


def _names(enum: type[StrEnum]) -> str:
    """The machine names an option accepts, for its help text."""
    return ", ".join(m.value for m in enum)


def _choice(enum: type[StrEnum]) -> Callable[[str], StrEnum]:
    def convert(text: str) -> StrEnum:
        try:
            return enum(text if enum is not Priority else text.upper())
        except ValueError:
            allowed = ", ".join(m.value for m in enum)
            raise argparse.ArgumentTypeError(f"{text!r} is not one of: {allowed}") from None

    return convert


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser("cases", help="list, show and change cases")
    group = parser.add_subparsers(dest="cases_command", metavar="ACTION", required=True)

    p = group.add_parser("list", help="list cases, newest first (the agent's worklist)")
    p.add_argument("--status", type=_choice(CaseStatus), action="append", default=[],
                   help=f"only this status, repeatable: any of them ({_names(CaseStatus)})")
    p.add_argument("--open", action="store_true", help="every status that is not closed (closed, closed_no_response, duplicate)")
    p.add_argument("--org", help="organisation id from the directory")
    p.add_argument("--assignee", metavar="EMAIL|none", help="only cases assigned to this technician ('none': unassigned)")
    p.add_argument("--needs-attention", action="store_true", help="only cases a customer wrote on since our last answer")
    p.add_argument("--due-before", type=_instant, metavar="ISO", help="only cases with a deadline at or before this instant")
    p.add_argument("--limit", type=int, default=1000, help="at most this many, newest first (default 1000; 0: all)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_list)

    p = group.add_parser("show", help="one case with its messages and history")
    p.add_argument("number", type=_number, help=NUMBER_HELP)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_show)

    p = group.add_parser("update", help="change status, priority, assignee, ETR, hold, duplicate or master link")
    p.add_argument("number", type=_number, help=NUMBER_HELP)
    p.add_argument("--status", type=_choice(CaseStatus), help=f"the new status ({_names(CaseStatus)})")
    p.add_argument("--priority", type=_choice(Priority), help=f"the real priority after review ({_names(Priority)})")
    p.add_argument("--assignee", help="technician email, or 'none' to unassign")
    p.add_argument("--etr", type=_instant, help="estimated time to resolution, ISO 8601 with offset")
    p.add_argument("--hold-until", type=_instant, help="with --status on_hold: until when")
    p.add_argument("--duplicate-of", type=_number, help="with --status duplicate: the primary case")
    p.add_argument("--master", type=_number, help="link to this master (P1G) case")
    add_by(p)
    p.add_argument("--json", action="store_true")
    add_close_linked(p)
    p.set_defaults(handler=run_update)

    p = group.add_parser("reply", help="a technician's public reply, emailed to the customer")
    p.add_argument("number", type=_number, help=NUMBER_HELP)
    p.add_argument("--body", required=True, help="the reply's text, as the customer will read it")
    # `--from` is the old name of `--by` here (deprecated, kept working for existing scripts).
    add_by(p, "--from")
    p.add_argument("--awaiting-customer", action="store_true", help="wait for the customer: nudge and close without response")
    p.add_argument("--attach", action="append", default=[], metavar="FILE",
                   help="attach a file (repeatable; at most [attachments] reply_max_bytes in total)")
    p.set_defaults(handler=run_reply)

    p = group.add_parser("sla", help="every deadline of a case and how it was derived")
    p.add_argument("number", type=_number, help=NUMBER_HELP)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_sla)

    p = group.add_parser("note", help="add an internal note (never emailed to the customer)")
    p.add_argument("number", type=_number, help=NUMBER_HELP)
    p.add_argument("--body", required=True, help="the note's text (staff only)")
    add_by(p)
    p.set_defaults(handler=run_note)

    register_master_cases(group)


def run_list(app: App, args: argparse.Namespace) -> int:
    with transaction(app.engine) as session:
        rows = cases_json(
            session,
            list_cases(
                session=session, statuses=args.status, open_only=args.open, organisation_key=args.org,
                assignee=args.assignee, needs_attention=args.needs_attention, due_before=args.due_before,
                limit=max(args.limit, 0),
            ),
        )
    zone = app.settings.business.timezone
    return emit_rows(rows, as_json=args.json, line=lambda row: case_line(row, zone), empty="no cases")


def run_show(app: App, args: argparse.Namespace) -> int:
    with transaction(app.engine) as session:
        data = case_detail_json(session, find_case(session, args.number))
    if args.json:
        emit_json(data)
    else:
        print(case_text(data, app.settings.business.timezone))
    return 0


def run_update(app: App, args: argparse.Namespace) -> int:
    if not any(
        v is not None
        for v in (args.status, args.priority, args.assignee, args.etr, args.hold_until, args.duplicate_of, args.master)
    ):
        raise UsageError("nothing to change: give --status, --priority, --assignee, --etr, --hold-until, --duplicate-of or --master")
    if args.hold_until is not None and args.status is None:
        args.status = CaseStatus.ON_HOLD
    if args.duplicate_of is not None and args.status is None:
        args.status = CaseStatus.DUPLICATE
    now = app.clock.now()
    author = acting(args)
    desk = app.desk()
    with transaction(app.engine) as session:
        case = casework.find_case(session, args.number, lock=True)
        unchanged = _drop_unchanged(args, case)
        if unchanged and not any(
            v is not None
            for v in (args.status, args.priority, args.assignee, args.etr, args.hold_until, args.duplicate_of, args.master)
        ):
            print(f"case {args.number:08d}: nothing changed ({'; '.join(unchanged)})")
            return 0
        # Several changes in one command: the customer gets one mail stating them all.
        with casework.one_customer_notice(session, desk, now=now):
            if args.priority is not None:
                casework.set_priority(session, desk, case, args.priority, now=now, author=author)
            if args.assignee is not None:
                casework.set_assignee(session, desk, case, args.assignee, now=now, author=author)
            if args.master is not None:
                master = casework.find_case(session, args.master, lock=True)
                casework.link_master(session, desk, case, master, now=now, author=author)
            if args.etr is not None:
                casework.set_etr(session, desk, case, args.etr, now=now, author=author)
            if args.status is not None:
                primary = casework.find_case(session, args.duplicate_of) if args.duplicate_of is not None else None
                casework.set_status(
                    session, desk, case, args.status, now=now, author=author, hold_until=args.hold_until,
                    duplicate_of=primary,
                )

        master_lines = after_update(app, session, case, args, now=now, author=author)
        audit(app, session, args, "cases update", case_id=case.id, target=f"case {args.number:08d}",
              summary=_changes(args))
        session.flush()
        data = case_detail_json(session, case)
    emit(data, as_json=args.json,
         text=f"case {data['number']}: {data['status']} {data['priority']} assignee {data['assignee'] or '-'}")
    for line in master_lines:
        print(line, file=sys.stderr if args.json else sys.stdout)
    return 0


def _changes(args: argparse.Namespace) -> str:
    """What `cases update` was asked to change, for the audit ledger ("status=resolved priority=P2")."""
    asked = (
        ("status", args.status), ("priority", args.priority), ("assignee", args.assignee), ("etr", args.etr),
        ("hold_until", args.hold_until), ("duplicate_of", args.duplicate_of), ("master", args.master),
    )
    return " ".join(f"{name}={value.isoformat() if hasattr(value, 'isoformat') else value}"
                    for name, value in asked if value is not None)


def _drop_unchanged(args: argparse.Namespace, case: Case) -> list[str]:
    """Clear the requested values that the case already has; what each was, for the message."""
    unchanged = []
    if args.priority is not None and str(args.priority) == str(case.priority):
        unchanged.append(f"priority is already {args.priority}")
        args.priority = None
    if args.assignee is not None:
        wanted = args.assignee.strip().lower()
        wanted = None if wanted in ("", "none", "-") else wanted
        if wanted == case.assignee:
            unchanged.append(f"already assigned to {wanted or 'nobody'}")
            args.assignee = None
    if args.status is not None and str(args.status) == str(case.status) and args.hold_until is None and args.duplicate_of is None:
        unchanged.append(f"status is already {args.status}")
        args.status = None
    if args.etr is not None and case.etr is not None and args.etr == case.etr:
        unchanged.append("the ETR is already that")
        args.etr = None
    return unchanged


def run_note(app: App, args: argparse.Namespace) -> int:
    now = app.clock.now()
    with transaction(app.engine) as session:
        case = casework.find_case(session, args.number, lock=True)
        casework.add_note(session, case, args.body, now=now, author=acting(args))
        audit(app, session, args, "cases note", case_id=case.id, target=f"case {args.number:08d}")
    print(f"note added to case {args.number:08d}")
    return 0


def run_reply(app: App, args: argparse.Namespace) -> int:

    now = app.clock.now()
    desk = app.desk()
    author = acting(args)
    files = _attachments(args.attach, app.settings.attachments.reply_max_bytes)
    with transaction(app.engine) as session:
        case = casework.find_case(session, args.number, lock=True)
        name = ""
        if args.by:  # a named technician must be one (their name signs the reply)
            technician = technician_by_email(author, session=session)
            if technician is None:
                raise UsageError(f"{author} is not a technician in the directory")
            name = technician.name
        if case.kind == CaseKind.MASTER:  # a loaded row holds the plain string, so compare by value

            if files:
                raise UsageError("a master update is sent to many organisations: attach nothing, link to the file instead")

            count = masters.master_update(session, desk, case, args.body, now=now, author=author)
            audit(app, session, args, "cases reply", case_id=case.id, target=f"case {args.number:08d}",
                  summary=f"master update to {count} recipients")
            print(f"master update for case {args.number:08d} queued to {count} recipients")
            return 0

        stored = [
            {"filename": name_, "content_type": type_, "sha256": store_attachment(session=session, data=data)}
            for name_, type_, data in files
        ]
        casework.public_reply(
            session, desk, case, args.body, now=now, author=author, author_name=name,
            awaiting_customer=args.awaiting_customer, attachments=stored,
        )
        audit(app, session, args, "cases reply", case_id=case.id, target=f"case {args.number:08d}",
              summary=f"public reply{f' with {len(files)} attachment(s)' if files else ''}")
    attached = f" with {len(files)} attachment(s)" if files else ""
    print(f"reply queued for case {args.number:08d}{attached}")
    return 0


def _attachments(paths: list[str], limit: int) -> list[tuple[str, str, bytes]]:
    """(name, content type, bytes) of each file to attach; refused, with the reason, when one
    cannot be read or all together exceed `limit` ([attachments] reply_max_bytes)."""
    import mimetypes
    from pathlib import Path

    files = []
    for raw in paths:
        path = Path(raw)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot attach {raw}: {exc.strerror}") from None
        files.append((path.name, mimetypes.guess_type(path.name)[0] or "application/octet-stream", data))
    total = sum(len(data) for _, _, data in files)
    if total > limit:
        raise UsageError(
            f"the attachments total {total} bytes, over the {limit} allowed (attachments.reply_max_bytes); "
            "nothing was sent: attach smaller files or send a link"
        )
    return files


def run_sla(app: App, args: argparse.Namespace) -> int:
    now = app.clock.now()
    with transaction(app.engine) as session:
        case = find_case(session, args.number)
        deadlines = app.planner.deadlines(session, case, now)
    rows: list[dict[str, Any]] = [  # the JSON document's rows
        {
            "name": d.name.value,
            "display": d.name.display,
            "due_at": iso(d.due_at),
            "started_at": iso(d.started_at),
            "target": d.target,
            "calendar": d.calendar,
            "pauses": list(d.pauses),
            "holidays_skipped": [{"date": s.day.isoformat(), "name": s.name} for s in d.holidays_skipped],
            "met": d.met,
            "met_at": iso(d.met_at),
            "paused": d.paused,
            "overdue": d.overdue(now),
            "reminder_at": iso(d.reminder_at),
            "escalation_l3_at": iso(d.escalation_l3_at),
            "explanation": d.explanation,
        }
        for d in deadlines
    ]
    if args.json:
        emit_json({"number": f"{args.number:08d}", "now": now.isoformat(), "deadlines": rows})
        return 0
    tz = app.settings.business.timezone
    print(f"Case #{args.number:08d} deadlines as of {local(now.isoformat(), tz)}:")
    if not rows:
        print("  none (the case is closed)")
    for row in rows:
        state = "met" if row["met"] else "paused" if row["paused"] else "OVERDUE" if row["overdue"] else "pending"
        print(f"  {row['display']:<24} {local(row['due_at'], tz):<22} [{state}]")
        print(f"      {row['explanation']}")
    return 0
