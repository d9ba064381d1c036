"""Read-only gatherings for reports that span several tables (`mailcase trace`); never writes, never commits."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, or_
from sqlmodel import Session, col, select

from mailcase.domain import EventKind
from mailcase.store.models import Case, CaseEvent, HeldMessage, Message, Outbox, RawMessageRecord


@dataclass(frozen=True, slots=True)
class StoredCopy:
    """One stored copy of an inbound message and what came of it."""

    record: RawMessageRecord
    message: Message | None
    case_number: int | None
    held: HeldMessage | None
    notices: list[Outbox]
    withheld: list[CaseEvent]
    """NOTICE_WITHHELD events: notices it would have caused that were not sent, and why."""


def stored_copies(*, session: Session, message_id: str) -> list[StoredCopy]:
    """Every stored copy with this Message-ID header (several when a client reused one for
    different mail), oldest first, with its parsed message, case, held entry and notices."""
    records = session.exec(
        select(RawMessageRecord).where(RawMessageRecord.message_id_header == message_id).order_by(col(RawMessageRecord.id))
    ).all()
    result = []
    for record in records:
        message = session.exec(select(Message).where(Message.raw_id == record.id)).first()
        case = session.get(Case, record.case_id) if record.case_id else None
        held = session.exec(select(HeldMessage).where(HeldMessage.raw_id == record.id)).first()
        # The pipeline queues a message's notices in its own transaction, stamped with the
        # message's receipt instant: those, plus anything answering it by In-Reply-To.
        caused = col(Outbox.in_reply_to) == message_id
        if record.case_id is not None:
            caused = or_(caused, and_(col(Outbox.case_id) == record.case_id, col(Outbox.created_at) == record.received_at))
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
            StoredCopy(
                record=record, message=message, case_number=case.number if case else None, held=held,
                notices=list(notices), withheld=list(withheld),
            )
        )
    return result
