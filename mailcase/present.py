"""The stable JSON shapes and text lines the CLI prints; documented in README.md, changed only with care."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlmodel import Session

from mailcase.domain import format_case_number
from mailcase.store.cases import cases_by_ids, events_of, links_to, messages_of, participants_of
from mailcase.store.directory import organisation_keys
from mailcase.store.messages import attachments_of_messages, decisions_of
from mailcase.store.models import Case, CaseEvent, Message


def iso(instant: datetime | None) -> str | None:
    return instant.isoformat() if instant else None


def case_json(case: Case, *, organisations: dict[int, str], numbers: dict[int, int]) -> dict[str, Any]:
    def number_of(case_id: int | None) -> str | None:
        return format_case_number(numbers[case_id]) if case_id and case_id in numbers else None

    deadlines = [
        (name, at)
        for name, at in (
            ("response", case.response_due_at), ("update", case.update_due_at),
            ("resolution", case.resolution_due_at), ("customer", case.customer_due_at),
        )
        if at is not None
    ]
    next_due = min(deadlines, key=lambda item: item[1]) if deadlines else None
    return {
        "number": format_case_number(case.number),
        "subject": case.subject,
        "status": str(case.status),
        "status_display": case.status.display,
        "priority": str(case.priority),
        "kind": str(case.kind),
        "organisation": organisations.get(case.organisation_id) if case.organisation_id else None,
        "requester": case.requester,
        "assignee": case.assignee,
        "team": case.team,
        "platform": case.platform,
        "related_to": number_of(case.related_to_id),
        "duplicate_of": number_of(case.duplicate_of_id),
        "master": number_of(case.master_id),
        "needs_attention": case.needs_attention,
        "escalation_level": case.escalation_level,
        "etr": iso(case.etr),
        "hold_until": iso(case.hold_until),
        "created_at": iso(case.created_at),
        "updated_at": iso(case.updated_at),
        "first_response_at": iso(case.first_response_at),
        "last_customer_activity_at": iso(case.last_customer_activity_at),
        "last_agent_update_at": iso(case.last_agent_update_at),
        "awaiting_customer_since": iso(case.awaiting_customer_since),
        "resolved_at": iso(case.resolved_at),
        "closed_at": iso(case.closed_at),
        "response_due_at": iso(case.response_due_at),
        "update_due_at": iso(case.update_due_at),
        "resolution_due_at": iso(case.resolution_due_at),
        "customer_due_at": iso(case.customer_due_at),
        "next_due_at": iso(next_due[1]) if next_due else None,
        "next_deadline": next_due[0] if next_due else None,
    }


def cases_json(session: Session, cases: Sequence[Case]) -> list[dict[str, Any]]:
    """Many cases, resolving organisation keys and linked case numbers in two queries."""
    organisations = organisation_keys((c.organisation_id for c in cases if c.organisation_id), session=session)
    linked = {i for c in cases for i in (c.related_to_id, c.duplicate_of_id, c.master_id) if i}
    numbers = {i: c.number for i, c in cases_by_ids(session=session, ids=linked).items()}
    return [case_json(c, organisations=organisations, numbers=numbers) for c in cases]


def message_json(message: Message) -> dict[str, Any]:
    return {
        "message_id": message.message_id,
        "direction": str(message.direction),
        "from": message.from_address,
        "to": list(message.to_addresses),
        "cc": list(message.cc_addresses),
        "subject": message.subject,
        "text": message.text,
        "new_text": message.new_text,
        "auto_kind": str(message.auto_kind),
        "received_at": iso(message.received_at),
    }


def event_json(event: CaseEvent) -> dict[str, Any]:
    return {
        "kind": str(event.kind),
        "at": iso(event.at),
        "author": event.author,
        "summary": event.summary,
        "data": event.data,
    }


def case_detail_json(session: Session, case: Case) -> dict[str, Any]:
    assert case.id is not None
    (data,) = cases_json(session, [case])
    messages = messages_of(session=session, case_id=case.id)
    links = links_to(session=session, case_id=case.id)
    data["participants"] = participants_of(session=session, case_id=case.id)
    data["related_cases"] = [format_case_number(n) for n in links.related]
    data["duplicates"] = [format_case_number(n) for n in links.duplicates]
    data["linked_cases"] = [format_case_number(n) for n in links.linked]
    data["messages"] = _with_decisions(session, messages)
    data["events"] = [event_json(e) for e in events_of(session=session, case_id=case.id)]
    return data


def _with_decisions(session: Session, messages: list[Message]) -> list[dict[str, Any]]:
    """Each message with the decision its ingest took and why (which matching rule, SPEC.md §3)."""
    decisions = decisions_of(session=session, raw_ids={m.raw_id for m in messages if m.raw_id})
    attachments = attachments_of(session, [m.id for m in messages if m.id is not None])
    result = []
    for message in messages:
        decision, reason, verdict = decisions.get(message.raw_id or 0, ("", "", {}))
        result.append(
            message_json(message)
            | {
                "decision": decision or "",
                "reason": reason or "",
                "sender_verdict": dict(verdict or {}) or None,
                "attachments": attachments.get(message.id or 0, []),
            }
        )
    return result


def attachments_of(session: Session, message_ids: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
    """Each message's attachments as `cases show --json` prints them (filename, content_type,
    size, sha256, inline, content_id), in the order the message carried them; one query."""
    result: dict[int, list[dict[str, Any]]] = {}
    for part, size in attachments_of_messages(session=session, message_ids=message_ids):
        result.setdefault(part.message_id, []).append(
            {
                "filename": part.filename,
                "content_type": part.content_type,
                "size": size,
                "sha256": part.sha256,
                "inline": part.inline,
                "content_id": part.content_id,
            }
        )
    return result


def size_text(size: int) -> str:
    """A size as people read it: 512 B, 14.2 KB, 3.1 MB."""
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / (1024 * 1024):.1f} MB"


def local(instant: str | None, timezone: str) -> str:
    if not instant:
        return "-"
    return datetime.fromisoformat(instant).astimezone(ZoneInfo(timezone)).strftime("%Y-%m-%d %H:%M %Z")


def case_line(data: dict[str, Any], timezone: str) -> str:
    """One worklist line: `!` when the case needs attention, then the next deadline."""
    attention = "!" if data.get("needs_attention") else " "
    due = (
        f"{data['next_deadline']} due {local(data['next_due_at'], timezone)}" if data.get("next_due_at") else "no deadline"
    )
    return (
        f"{data['number']} {attention} {data['priority']:<4} {data['status']:<19} "
        f"{(data['organisation'] or '-'):<10} {(data['assignee'] or '-'):<28} "
        f"{local(data['created_at'], timezone)}  {due:<34} {data['subject']}"
    )


def case_text(data: dict[str, Any], timezone: str) -> str:
    lines = [
        f"Case #{data['number']}: {data['subject']}",
        f"  status:      {data['status_display']} ({data['status']})",
        f"  priority:    {data['priority']}   kind: {data['kind']}   escalation level: {data['escalation_level']}",
        f"  organisation: {data['organisation'] or '-'}   requester: {data['requester'] or '-'}",
        f"  assignee:    {data['assignee'] or '-'}   team: {data['team'] or '-'}",
        f"  participants: {', '.join(data['participants']) or '-'}",
    ]
    for key in ("related_to", "duplicate_of", "master"):
        if data[key]:
            lines.append(f"  {key.replace('_', ' ')}: {data[key]}")
    for key in ("related_cases", "duplicates", "linked_cases"):
        if data[key]:
            lines.append(f"  {key.replace('_', ' ')}: {', '.join(data[key])}")
    for key in ("created_at", "first_response_at", "etr", "hold_until", "closed_at"):
        if data[key]:
            lines.append(f"  {key.replace('_at', '').replace('_', ' ')}: {local(data[key], timezone)}")
    lines.append("")
    lines.append("History:")
    for event in data["events"]:
        lines.append(f"  {local(event['at'], timezone)}  {event['kind']:<17} {event['author'] or '-'}: {event['summary']}")
    lines.append("")
    lines.append("Messages:")
    for message in data["messages"]:
        # Who it came from, or whom we sent it to (our own address on every notice says nothing).
        if message["direction"] == "inbound":
            arrow, who = "<-", message["from"]
        else:
            arrow, who = "->", ", ".join([*message["to"], *message["cc"]]) or message["from"]
        lines.append(f"  {local(message['received_at'], timezone)} {arrow} {who}: {message['subject']}")
        if message.get("reason"):
            lines.append(f"      [{message['decision']}: {message['reason']}]")
        if message.get("sender_verdict"):
            lines.append(f"      [sender: {message['sender_verdict'].get('summary', '')}]")
        # The whole new text: a forwarded carrier rejection at the bottom is what the agent needs.
        body = (message["new_text"] or message["text"]).strip()
        for text_line in body.splitlines():
            lines.append(f"      {text_line}")
        for attachment in message.get("attachments", ()):
            inline = ", inline" if attachment["inline"] else ""
            lines.append(
                f"      [attachment: {attachment['filename']} ({attachment['content_type']}, "
                f"{size_text(attachment['size'])}{inline}) sha256 {attachment['sha256'][:12]}]"
            )
    return "\n".join(lines)
