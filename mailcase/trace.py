"""What happened to one inbound message: channel, decision, reason, case, notices caused (for `mailcase trace`)."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from mailcase.domain import format_case_number
from mailcase.store.reports import stored_copies


def trace_message(session: Session, message_id: str) -> list[dict[str, Any]]:
    """Every stored copy with this Message-ID (several when a client reused one for different mail)."""
    wanted = message_id.strip()
    if not wanted.startswith("<"):
        wanted = f"<{wanted}>"
    result = []
    for copy in stored_copies(session=session, message_id=wanted):
        record, message, held = copy.record, copy.message, copy.held
        result.append(
            {
                "raw_id": record.id,
                "message_id": record.message_id_header,
                "channel": str(record.channel),
                "source": record.source,
                "received_at": record.received_at.isoformat(),
                "envelope_from": record.envelope_from,
                "envelope_to": list(record.envelope_to),
                "from": message.from_address if message else (held.from_address if held else ""),
                "subject": message.subject if message else "",
                "decision": record.decision,
                "reason": record.reason,
                # Who vouched for the From domain (README "Sender authentication"); None before issue 10.
                "sender_verdict": dict(record.sender_verdict or {}) or None,
                "case": format_case_number(copy.case_number) if copy.case_number is not None else None,
                "held": {"id": held.id, "state": str(held.state), "reason": held.reason} if held else None,
                "notices": [
                    {"kind": n.kind, "recipients": list(n.recipients), "state": str(n.state), "message_id": n.message_id}
                    for n in copy.notices
                ],
                # Notices this message would have caused but that were not sent, and why (issue 12).
                "withheld": [
                    {
                        "notice": event.data.get("notice", ""),
                        "recipient": event.data.get("recipient", ""),
                        "reason": event.data.get("reason", event.summary),
                    }
                    for event in copy.withheld
                ],
            }
        )
    return result
