"""`mailcase ingest`, `held …`, `trace`, `outbox list`: inbound mail from a pipe, held messages, and what happened to mail."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mailcase.app import App
from mailcase.db import transaction
from mailcase.domain import Channel, HeldState, RawMessage
from mailcase.errors import TransientError, UsageError

EX_TEMPFAIL = 75


def register(sub: "argparse._SubParsersAction[Any]") -> None:
    p = sub.add_parser("ingest", help="ingest raw RFC 5322 messages (files, or stdin), as an MTA pipe transport would")
    p.add_argument("files", nargs="*", help="message files; '-' or none reads one message from stdin")
    p.add_argument("--sender", default="", help="the envelope sender (Postfix: ${sender})")
    p.add_argument("--recipient", action="append", default=[], help="an envelope recipient (Postfix: ${recipient})")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_ingest)

    held = sub.add_parser("held", help="messages held for review")
    group = held.add_subparsers(dest="held_command", metavar="ACTION", required=True)
    p = group.add_parser("list", help="list held messages")
    p.add_argument("--all", action="store_true", help="include released and discarded ones")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_held_list)
    p = group.add_parser("release", help="release a held message: decide again as if its sender were allowed")
    p.add_argument("id", type=int)
    p.add_argument("--by", default="agent")
    p.set_defaults(handler=run_held_release)
    p = group.add_parser("discard", help="discard a held message (kept in the database, marked discarded)")
    p.add_argument("id", type=int)
    p.add_argument("--by", default="agent")
    p.set_defaults(handler=run_held_discard)

    p = sub.add_parser("trace", help="what happened to one inbound message")
    p.add_argument("message_id", help="the Message-ID, with or without angle brackets")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_trace)

    outbox = sub.add_parser("outbox", help="queued, sent and failed notifications")
    group = outbox.add_subparsers(dest="outbox_command", metavar="ACTION", required=True)
    p = group.add_parser("list", help="list outgoing messages, newest first")
    p.add_argument("--state", choices=["queued", "sending", "sent", "failed", "cancelled"])
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_outbox_list)


def run_ingest(app: App, args: argparse.Namespace) -> int:
    """Exit 0 when every message was stored; 75 (EX_TEMPFAIL) on a transient failure so the MTA retries."""
    from mailcase.cli import emit_json

    pipeline = app.pipeline()
    sources = args.files or ["-"]
    results = []
    for source in sources:
        try:
            data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read {source}: {exc.strerror}") from None
        raw = RawMessage(
            data=data,
            channel=Channel.PIPE,
            received_at=app.clock.now(),
            envelope_from=args.sender,
            envelope_to=tuple(args.recipient),
            source="stdin" if source == "-" else str(source),
        )
        try:
            outcome = pipeline.ingest_one(raw)
        except TransientError as exc:
            print(f"mailcase: {source}: temporary failure, try again: {exc}", file=sys.stderr)
            return EX_TEMPFAIL
        row = {
            "source": raw.source,
            "message_id": outcome.message_id,
            "decision": outcome.decision,
            "reason": outcome.reason,
            "case": outcome.case_number,
            "held_id": outcome.held_id,
        }
        results.append(row)
        if not args.json:
            case = f" case {outcome.case_number}" if outcome.case_number else ""
            held = f" held #{outcome.held_id}" if outcome.held_id else ""
            print(f"{raw.source}: {outcome.decision}{case}{held}: {outcome.reason}")
    if args.json:
        emit_json(results)
    return 0


def held_json(held: Any) -> dict[str, Any]:
    return {
        "id": held.id,
        "from": held.from_address,
        "subject": held.subject,
        "reason": held.reason,
        "received_at": held.received_at.isoformat(),
        "state": str(held.state),
    }


def run_held_list(app: App, args: argparse.Namespace) -> int:
    from mailcase.cli import emit_json
    from mailcase.store.held import held_messages

    with transaction(app.engine) as session:
        rows = [held_json(h) for h in held_messages(session=session, state=None if args.all else HeldState.HELD)]
    if args.json:
        emit_json(rows)
    else:
        for row in rows:
            print(f"#{row['id']:<5} {row['received_at'][:16]}  {row['from'] or '-':<32} {row['subject'][:50]!r}  {row['reason']}")
        if not rows:
            print("no held messages")
    return 0


def _held(session: Any, held_id: int) -> Any:
    from mailcase.store.held import held_for_review

    held = held_for_review(session=session, held_id=held_id)
    if held is None:
        raise UsageError(f"no held message #{held_id}")
    if held.state != HeldState.HELD:
        raise UsageError(f"held message #{held_id} is already {held.state}")
    return held


def run_held_release(app: App, args: argparse.Namespace) -> int:
    pipeline = app.pipeline()
    now = app.clock.now()
    with transaction(app.engine) as session:
        outcome = pipeline.release_held(session, _held(session, args.id), now=now, by=args.by)
    case = f" case {outcome.case_number}" if outcome.case_number else ""
    print(f"released #{args.id}: {outcome.decision}{case}: {outcome.reason}")
    return 0


def run_held_discard(app: App, args: argparse.Namespace) -> int:
    now = app.clock.now()
    with transaction(app.engine) as session:
        held = _held(session, args.id)
        held.state = HeldState.DISCARDED
        held.resolved_at = now
        held.resolved_by = args.by
        session.add(held)
    print(f"discarded #{args.id}")
    return 0


def run_trace(app: App, args: argparse.Namespace) -> int:
    from mailcase.cli import emit_json
    from mailcase.trace import trace_message

    with transaction(app.engine) as session:
        records = trace_message(session, args.message_id)
    if not records:
        raise UsageError(f"no inbound message with Message-ID {args.message_id}")
    if args.json:
        emit_json(records)
        return 0
    for record in records:
        print(f"Message-ID {record['message_id']} (raw #{record['raw_id']})")
        print(f"  received: {record['received_at']} via {record['channel']} {record['source']}".rstrip())
        print(f"  from:     {record['from'] or '-'}   envelope: {record['envelope_from'] or ('<>' if record['channel'] == 'smtp' else '-')} -> {', '.join(record['envelope_to']) or '-'}")
        print(f"  decision: {record['decision']}")
        print(f"  reason:   {record['reason']}")
        print(f"  case:     {record['case'] or '-'}")
        if record["held"]:
            held = record["held"]
            print(f"  held:     #{held['id']} ({held['state']}): {held['reason']}")
        for notice in record["notices"]:
            print(f"  notice:   {notice['kind']} to {', '.join(notice['recipients'])} [{notice['state']}] {notice['message_id']}")
        for withheld in record.get("withheld", ()):
            print(f"  withheld: {withheld['notice']} to {withheld['recipient']}: {withheld['reason']}")
    return 0


def run_outbox_list(app: App, args: argparse.Namespace) -> int:
    from mailcase.cli import emit_json
    from mailcase.store.outbox import outbox_rows

    with transaction(app.engine) as session:
        rows = [outbox_json(r) for r in outbox_rows(session=session, state=args.state, limit=args.limit)]
    if args.json:
        emit_json(rows)
    else:
        for row in rows:
            print(f"#{row['id']:<6} {row['state']:<9} {row['kind']:<28} {', '.join(row['recipients'])[:40]:<40} {row['subject_hint']}")
        if not rows:
            print("outbox is empty")
    return 0


def outbox_json(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": row.kind,
        "state": str(row.state),
        "recipients": list(row.recipients),
        "cc": list(row.cc),
        "template": row.template,
        "locale": row.locale,
        # A case number is the zero-padded string everywhere in JSON (README "JSON output").
        "case": _padded_case(row.context.get("case_number") if row.context else None),
        "subject_hint": (row.context.get("case_subject") or row.context.get("subject") or "") if row.context else "",
        "message_id": row.message_id,
        "attempts": row.attempts,
        "created_at": row.created_at.isoformat(),
        "due_at": row.due_at.isoformat(),
        "next_attempt_at": row.next_attempt_at.isoformat() if row.next_attempt_at else None,
        "sent_at": row.sent_at.isoformat() if row.sent_at else None,
        "last_error": row.last_error,
        "bounced_at": row.bounced_at.isoformat() if row.bounced_at else None,
        "bounce_reason": row.bounce_reason,
    }


def _padded_case(number: Any) -> str | None:
    from mailcase.domain import format_case_number

    return format_case_number(int(number)) if isinstance(number, int) else number
