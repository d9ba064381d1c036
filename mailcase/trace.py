"""What happened to one inbound message: channel, decision, reason, case, notices caused (for `mailcase trace`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, or_
from sqlmodel import Session, col, select

from mailcase.domain import EventKind, format_case_number
from mailcase.store.models import Case, CaseEvent, HeldMessage, Message, Outbox, RawMessageRecord


def trace_message(session: Session, message_id: str) -> list[dict[str, Any]]:
    """Every stored copy with this Message-ID (several when a client reused one for different mail)."""
    wanted = message_id.strip()
    if not wanted.startswith("<"):
        wanted = f"<{wanted}>"
    records = session.exec(
        select(RawMessageRecord).where(RawMessageRecord.message_id_header == wanted).order_by(col(RawMessageRecord.id))
    ).all()
    result = []
    for record in records:
        message = session.exec(select(Message).where(Message.raw_id == record.id)).first()
        case = session.get(Case, record.case_id) if record.case_id else None
        held = session.exec(select(HeldMessage).where(HeldMessage.raw_id == record.id)).first()
        # The pipeline queues a message's notices in its own transaction, stamped with the
        # message's receipt instant: those, plus anything answering it by In-Reply-To.
        caused = Outbox.in_reply_to == wanted
        if record.case_id is not None:
            caused = or_(caused, and_(Outbox.case_id == record.case_id, Outbox.created_at == record.received_at))
        notices = session.exec(select(Outbox).where(caused).order_by(col(Outbox.id))).all()
        withheld = (
            session.exec(
                select(CaseEvent).where(
                    CaseEvent.case_id == record.case_id,
                    CaseEvent.kind == EventKind.NOTICE_WITHHELD,
                    CaseEvent.at == record.received_at,
                ).order_by(col(CaseEvent.id))
            ).all()
            if record.case_id is not None
            else []
        )
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
                "case": format_case_number(case.number) if case else None,
                "held": {"id": held.id, "state": str(held.state), "reason": held.reason} if held else None,
                "notices": [
                    {"kind": n.kind, "recipients": list(n.recipients), "state": str(n.state), "message_id": n.message_id}
                    for n in notices
                ],
                # Notices this message would have caused but that were not sent, and why (issue 12).
                "withheld": [
                    {
                        "notice": event.data.get("notice", ""),
                        "recipient": event.data.get("recipient", ""),
                        "reason": event.data.get("reason", event.summary),
                    }
                    for event in withheld
                ],
            }
        )
    return result
