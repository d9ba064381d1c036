"""`mailcase ingest`, `held …`, `trace`, `outbox list`: inbound mail from a pipe, held messages, and what happened to mail."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sqlmodel import Session

from mailcase.app import App
from mailcase.commands.acting import acting, add_by, audit
from mailcase.commands.arguments import case_number as _case_number
from mailcase.commands.arguments import instant as _instant
from mailcase.commands.output import emit_json, emit_rows
from mailcase.desk.cases import find_case
from mailcase.domain import (
    Channel,
    HeldState,
    OutboxState,
    RawMessage,
    format_case_number,
    format_size,
)
from mailcase.errors import UsageError
from mailcase.present import local
from mailcase.store.cases import cases_by_ids
from mailcase.store.engine import transaction
from mailcase.store.held import (
    held_by_id,
    held_for_review,
    held_messages,
    inbound_records,
    raw_of,
    resolve_held,
)
from mailcase.store.models import HeldMessage, Outbox, RawMessageRecord
from mailcase.store.outbox import outbox_rows, requeue_failed
from mailcase.trace import trace_message


def register(sub: argparse._SubParsersAction[Any]) -> None:
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
    p = group.add_parser("show", help="one held message: why it was held, its headers, text and attachments")
    p.add_argument("id", type=int, help="the held message's id (from `held list`)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_held_show)
    p = group.add_parser(
        "release",
        help="release a held message: thread it again as if its sender were allowed, or onto a case, or as a new case",
    )
    p.add_argument("id", type=int, help="the held message's id (from `held list`)")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--to-case", type=_case_number, metavar="N", help="add it to case N (reopening it per the rules)")
    target.add_argument("--new-case", action="store_true", help="open a new case with it")
    add_by(p)
    p.set_defaults(handler=run_held_release)
    p = group.add_parser("discard", help="discard a held message (kept in the database, marked discarded)")
    p.add_argument("id", type=int, help="the held message's id (from `held list`)")
    add_by(p)
    p.set_defaults(handler=run_held_discard)

    inbound = sub.add_parser("inbound", help="every stored inbound message and what was decided, ignored ones included")
    group = inbound.add_subparsers(dest="inbound_command", metavar="ACTION", required=True)
    p = group.add_parser("list", help="stored inbound messages, newest first")
    p.add_argument("--decision", help="only this decision (open_case, append_update, hold_message, ignore_message, record_bounce, …)")
    p.add_argument("--since", type=_instant, metavar="ISO", help="only messages received from this instant on")
    p.add_argument("--limit", type=int, default=200, help="at most this many (default 200; 0: all)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_inbound_list)

    p = sub.add_parser("trace", help="what happened to one inbound message")
    p.add_argument("message_id", help="the Message-ID, with or without angle brackets")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_trace)

    outbox = sub.add_parser("outbox", help="queued, sent and failed notifications")
    group = outbox.add_subparsers(dest="outbox_command", metavar="ACTION", required=True)
    p = group.add_parser("list", help="list outgoing messages, newest first")
    p.add_argument(
        "--state",
        choices=[s.value for s in OutboxState],
        help="only notices in this state (choices: %(choices)s)",
    )
    p.add_argument("--limit", type=int, default=200, help="at most this many rows, newest first (default %(default)s; 0: all)")
    p.add_argument("--json", action="store_true", help="print a JSON array (README, \"JSON output\")")
    p.set_defaults(handler=run_outbox_list)
    p = group.add_parser(
        "retry", help="queue failed notices again (after the cause is fixed), due now, attempts reset"
    )
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("ids", nargs="*", type=int, default=[], metavar="ID", help="outbox row ids (from `outbox list`)")
    target.add_argument("--failed", action="store_true", help="every failed notice")
    p.add_argument("--json", action="store_true", help="print the requeued ids as a JSON array")
    p.set_defaults(handler=run_outbox_retry)


def run_ingest(app: App, args: argparse.Namespace) -> int:
    """Exit 0 when every message was taken (a case, an update, held or ignored: all are stored).

    Anything else is not the message's fault and exits 75 (EX_TEMPFAIL) from `cli.main`, so that the
    MTA keeps the message and retries; so does a configuration error (not 78, EX_CONFIG, on which
    Postfix bounces). A file named on the command line that cannot be read is the caller's mistake:
    for an MTA that is its configuration (a `${recipient}` that expanded into several words), so 75.
    """

    sources = args.files or ["-"]
    # Every input is read before the database is touched: a wrong command line is reported as such.
    inputs = []
    for source in sources:
        try:
            inputs.append((source, sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()))
        except OSError as exc:
            raise UsageError(f"cannot read {source}: {exc.strerror}") from None
    pipeline = app.pipeline()
    results = []
    for source, data in inputs:
        raw = RawMessage(
            data=data,
            channel=Channel.PIPE,
            received_at=app.clock.now(),
            envelope_from=args.sender,
            envelope_to=tuple(args.recipient),
            source="stdin" if source == "-" else str(source),
        )
        # A TransientError (exit 75) or any other failure is reported by `cli.main`: one stderr line.
        outcome = pipeline.ingest_one(raw)
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


def held_json(held: HeldMessage) -> dict[str, Any]:
    return {
        "id": held.id,
        "from": held.from_address,
        "subject": held.subject,
        "reason": held.reason,
        "received_at": held.received_at.isoformat(),
        "state": str(held.state),
    }


def run_held_list(app: App, args: argparse.Namespace) -> int:
    with transaction(app.engine) as session:
        rows = [held_json(h) for h in held_messages(session=session, state=None if args.all else HeldState.HELD)]
    return emit_rows(
        rows,
        as_json=args.json,
        line=lambda row: f"#{row['id']:<5} {row['received_at'][:16]}  {row['from'] or '-':<32} {row['subject'][:50]!r}  {row['reason']}",
        empty="no held messages",
    )


def _held(session: Session, held_id: int) -> HeldMessage:
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
        held = _held(session, args.id)
        to_case = find_case(session, args.to_case).id if args.to_case is not None else None
        outcome = pipeline.release_held(session, held, now=now, by=acting(args), to_case=to_case, new_case=args.new_case)
        audit(app, session, args, "held release", case_id=held.case_id, target=f"held {args.id}",
              summary=f"{outcome.decision}: {outcome.reason}")
    case = f" case {outcome.case_number}" if outcome.case_number else ""
    print(f"released #{args.id}: {outcome.decision}{case}: {outcome.reason}")
    return 0


def run_held_discard(app: App, args: argparse.Namespace) -> int:
    now = app.clock.now()
    with transaction(app.engine) as session:
        held = _held(session, args.id)
        resolve_held(session=session, held=held, state=HeldState.DISCARDED, now=now, by=acting(args))
        audit(app, session, args, "held discard", target=f"held {args.id}")
    print(f"discarded #{args.id}")
    return 0


def run_trace(app: App, args: argparse.Namespace) -> int:
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
        if record.get("sender_verdict"):
            print(f"  sender:   {record['sender_verdict'].get('summary', '')}")
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
    with transaction(app.engine) as session:
        limit = args.limit if args.limit > 0 else None
        rows = [outbox_json(r) for r in outbox_rows(session=session, state=args.state, limit=limit)]
    return emit_rows(
        rows,
        as_json=args.json,
        line=lambda row: f"#{row['id']:<6} {row['state']:<9} {row['kind']:<28} {', '.join(row['recipients'])[:40]:<40} {row['case_subject']}",
        empty="outbox is empty",
    )


def run_outbox_retry(app: App, args: argparse.Namespace) -> int:
    wanted = None if args.failed else sorted(set(args.ids))
    with transaction(app.engine) as session:
        requeued = requeue_failed(session=session, now=app.clock.now(), ids=wanted)
    if args.json:
        emit_json(requeued)
    elif requeued:
        print(f"requeued {len(requeued)} notice(s): {', '.join(f'#{i}' for i in requeued)}")
    else:
        print("no failed notices to requeue")
    if wanted is not None and set(wanted) - set(requeued):
        missing = ", ".join(f"#{i}" for i in sorted(set(wanted) - set(requeued)))
        raise UsageError(f"not failed (or no such notice), left alone: {missing}")
    return 0


def outbox_json(row: Outbox) -> dict[str, Any]:
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
        # What the notice is about, for a person scanning the list: the case's (or broadcast's) subject.
        "case_subject": (row.context.get("case_subject") or row.context.get("subject") or "") if row.context else "",
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


def _padded_case(number: object) -> str | None:
    return format_case_number(number) if isinstance(number, int) else (number if isinstance(number, str) else None)


def held_detail_json(held: HeldMessage, raw: RawMessageRecord | None) -> dict[str, Any]:
    """`held show --json`: the held row, the envelope, the parsed headers, text and attachments."""

    data = held_json(held) | {
        "channel": str(raw.channel) if raw is not None else "",
        "envelope_from": raw.envelope_from if raw is not None else "",
        "envelope_to": list(raw.envelope_to) if raw is not None else [],
        "size": raw.size if raw is not None else 0,
        "message_id": raw.message_id_header if raw is not None else "",
    }
    # Not at the top: mail-parser loads only for the commands that read a message.
    from mailcase.ingest.parse import UnparseableMessage, parse_message

    if raw is None:
        return data | {"headers": {}, "text": "", "attachments": [], "defects": []}
    try:
        message = parse_message(bytes(raw.data))
    except UnparseableMessage as exc:
        head = bytes(raw.data[:2000]).decode("utf-8", "replace")
        return data | {"headers": {}, "text": head, "attachments": [], "defects": [f"unparseable: {exc.reason}"]}
    if message is None:
        return data | {"headers": {}, "text": "", "attachments": [], "defects": []}
    headers = {
        "from": f"{message.from_name} <{message.from_address}>" if message.from_name else message.from_address,
        "to": list(message.to),
        "cc": list(message.cc),
        "subject": message.subject,
        "date": message.date.isoformat() if message.date else None,
        "message_id": message.message_id,
        "in_reply_to": message.in_reply_to,
        "references": list(message.references),
        "auto_kind": str(message.auto_kind),
    }
    attachments = [
        {"filename": a.filename, "content_type": a.content_type, "size": len(a.data), "sha256": a.sha256, "inline": a.inline}
        for a in message.attachments
    ]
    return data | {"headers": headers, "text": message.text, "attachments": attachments, "defects": list(message.defects)}


def run_held_show(app: App, args: argparse.Namespace) -> int:
    with transaction(app.engine) as session:
        held = held_by_id(session=session, held_id=args.id)
        if held is None:
            raise UsageError(f"no held message #{args.id}")
        data = held_detail_json(held, raw_of(session=session, raw_id=held.raw_id))
    if args.json:
        emit_json(data)
        return 0
    zone = app.settings.business.timezone
    headers = data["headers"]
    print(f"Held message #{data['id']} ({data['state']}), received {local(data['received_at'], zone)} via {data['channel'] or '-'}")
    print(f"  why held:   {data['reason']}")
    print(f"  envelope:   {data['envelope_from'] or '-'} -> {', '.join(data['envelope_to']) or '-'}")
    for key in ("from", "to", "cc", "subject", "date", "message_id", "in_reply_to"):
        value = headers.get(key)
        if isinstance(value, list):
            value = ", ".join(value)
        if value:
            print(f"  {key.replace('_', '-') + ':':<12}{value}")
    for attachment in data["attachments"]:
        print(f"  attachment: {attachment['filename']} ({attachment['content_type']}, {format_size(attachment['size'])})")
    print("")
    for line in (data["text"] or "").strip().splitlines():
        print(f"  {line}")
    print("")
    if data["state"] == "held":
        print(
            f"Release it with `mailcase held release {data['id']}` (threads it as if the sender were allowed), "
            f"`--to-case N` or `--new-case`; or `mailcase held discard {data['id']}`."
        )
    return 0


def _header_summary(data: bytes) -> tuple[str, str]:
    """(From, Subject) of raw bytes, decoded, from the header block alone (cheap for a listing)."""
    import email.header
    import email.parser
    import email.utils

    try:
        headers = email.parser.BytesHeaderParser().parsebytes(bytes(data[:65536]))
        subject = str(email.header.make_header(email.header.decode_header(str(headers.get("Subject", "") or ""))))
        sender = email.utils.parseaddr(str(headers.get("From", "") or ""))[1]
    except Exception:
        return "", ""
    return sender.lower(), " ".join(subject.split())


def run_inbound_list(app: App, args: argparse.Namespace) -> int:
    with transaction(app.engine) as session:
        records = inbound_records(session=session, decision=args.decision, since=args.since, limit=max(args.limit, 0))
        case_numbers = _case_numbers(session, {r.case_id for r in records if r.case_id})
        rows: list[dict[str, Any]] = []
        for record in records:
            sender, subject = _header_summary(record.data)
            rows.append(
                {
                    "raw_id": record.id,
                    "message_id": record.message_id_header,
                    "channel": str(record.channel),
                    "received_at": record.received_at.isoformat(),
                    "envelope_from": record.envelope_from,
                    "from": sender,
                    "subject": subject,
                    "decision": record.decision,
                    "reason": record.reason,
                    "case": case_numbers.get(record.case_id) if record.case_id else None,
                }
            )
    zone = app.settings.business.timezone
    return emit_rows(
        rows,
        as_json=args.json,
        line=lambda row: (
            f"#{row['raw_id']:<6} {local(row['received_at'], zone)}  {row['decision'] or '-':<20} "
            f"{row['case'] or '-':<9} {row['from'] or '-':<30} {row['subject'][:50]!r}  {row['reason']}"
        ),
        empty="no inbound messages",
    )


def _case_numbers(session: Session, ids: set[int]) -> dict[int, str]:
    return {case_id: format_case_number(case.number) for case_id, case in cases_by_ids(session=session, ids=ids).items()}
