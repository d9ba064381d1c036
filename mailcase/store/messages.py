"""What ingest writes of an inbound message: the raw bytes once (insert-or-ignore on the dedupe
key), the decision written back to that row, the parsed message and its attachments on a case,
and the log of automatic replies; `session=` in, never commits, decides nothing.

This is the ingest hot path: its statements are `Prepared` (built and compiled once, run through
the driver's cursor), because SQLAlchemy's per-execution work cost more than running them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from mailcase.domain import Direction, InboundMessage
from mailcase.store.common import insert_ignoring, insert_or_ignore, prepared, table_of
from mailcase.store.models import (
    Attachment,
    AutoReplyLog,
    Case,
    Message,
    MessageAttachment,
    RawMessageRecord,
)
from mailcase.store.retention import keep_attachment


@dataclass(slots=True)
class NewRawRecord:
    """The raw row this transaction just inserted: what deciding and applying read of it, and the
    outcome written back with one UPDATE (`save_decision`)."""

    id: int
    envelope_to: list[str]
    decision: str = ""
    reason: str = ""
    case_id: int | None = None


def insert_raw(*, session: Session, values: Mapping[str, Any]) -> int | None:
    """Keep the raw message (`RawMessageRecord` columns); its id, or None when a message with the
    same `dedupe_key` is already stored (INSERT … ON CONFLICT (dedupe_key) DO NOTHING RETURNING id)."""
    raw_id = _insert_raw.run(session, values).scalar_one_or_none()
    return int(raw_id) if raw_id is not None else None


def first_received(*, session: Session, dedupe_key: str) -> tuple[RawMessageRecord, int | None]:
    """The stored raw message with `dedupe_key` (a duplicate's first copy) and the number of the
    case it went to, if any."""
    first = session.exec(select(RawMessageRecord).where(RawMessageRecord.dedupe_key == dedupe_key)).one()
    number = None
    if first.case_id:
        row = session.get(Case, first.case_id)
        number = row.number if row else None
    return first, number


def save_decision(*, session: Session, record: RawMessageRecord | NewRawRecord) -> None:
    """Write the decision back: through the ORM for a loaded row (a released held message), else one Core UPDATE."""
    if isinstance(record, RawMessageRecord):
        session.add(record)
        return
    _update_record.run(
        session, {"row_id": record.id, "decision": record.decision, "reason": record.reason, "case_id": record.case_id}
    )


def insert_inbound_message(
    *, session: Session, message: InboundMessage, case_id: int | None, raw_id: int | None, received_at: datetime
) -> int:
    """Store the parsed inbound `message` on a case (or on none) with its attachments (content-addressed,
    once per content); returns the message row's id (one Core INSERT … RETURNING)."""
    m = message
    row_id = int(
        _insert_message.run(
            session,
            {
                "case_id": case_id,
                "direction": Direction.INBOUND,
                "message_id": m.message_id[:998],
                "in_reply_to": m.in_reply_to[:998],
                "references": list(m.references),
                "from_address": m.from_address,
                "from_name": m.from_name[:300],
                "to_addresses": list(m.to),
                "cc_addresses": list(m.cc),
                "subject": m.subject,
                "text": m.text,
                "new_text": m.new_text,
                "auto_kind": m.auto_kind,
                "raw_id": raw_id,
                "outbox_id": None,
                "received_at": received_at,
                "details": {"defects": list(m.defects)} if m.defects else {},
            },
        ).scalar_one()
    )
    for part in m.attachments:
        if insert_or_ignore(
            session,
            table_of(Attachment),
            {"sha256": part.sha256, "size": len(part.data), "data": part.data},
            conflict=["sha256"],
        ) is None:  # stored before: perhaps purged since ([retention] raw_days)
            keep_attachment(session=session, sha256=part.sha256, data=part.data)
        session.add(
            MessageAttachment(
                message_id=row_id,
                sha256=part.sha256,
                filename=part.filename[:500],
                content_type=part.content_type[:200],
                inline=part.inline,
                content_id=part.content_id[:500],
            )
        )
    return row_id


def log_auto_reply(*, session: Session, address: str, kind: str, at: datetime, subject_key: str) -> None:
    """Count one automatic reply to `address` (the loop and flood caps read these rows)."""
    _insert_auto_reply.run(session, {"address": address, "kind": kind, "at": at, "subject_key": subject_key})


@prepared
def _update_record(dialect: str) -> sa.Update:
    table = table_of(RawMessageRecord)
    return (
        sa.update(table)
        .where(table.c.id == sa.bindparam("row_id"))
        .values(decision=sa.bindparam("decision"), reason=sa.bindparam("reason"), case_id=sa.bindparam("case_id"))
    )


@prepared
def _insert_raw(dialect: str) -> sa.Executable:
    """`insert_or_ignore`'s INSERT … ON CONFLICT (dedupe_key) DO NOTHING RETURNING id, built once per dialect."""
    table = table_of(RawMessageRecord)
    return insert_ignoring(dialect, table, ["dedupe_key"]).returning(table.c.id)


@prepared
def _insert_message(dialect: str) -> sa.Executable:
    table = table_of(Message)
    return sa.insert(table).returning(table.c.id)


@prepared
def _insert_auto_reply(dialect: str) -> sa.Insert:
    return sa.insert(table_of(AutoReplyLog))


def decisions_of(*, session: Session, raw_ids: Collection[int]) -> dict[int, tuple[str, str, Mapping[str, Any]]]:
    """The decision, its reason and the sender verdict ingest recorded for each raw message (one query)."""
    if not raw_ids:
        return {}
    rows = session.exec(
        select(
            RawMessageRecord.id, RawMessageRecord.decision, RawMessageRecord.reason, RawMessageRecord.sender_verdict
        ).where(col(RawMessageRecord.id).in_(raw_ids))
    )
    return {raw_id: (decision, reason, verdict) for raw_id, decision, reason, verdict in rows if raw_id is not None}


def attachments_of_messages(*, session: Session, message_ids: Collection[int]) -> list[tuple[MessageAttachment, int]]:
    """Each attachment of these messages with its size, in the order the messages carried them (one query)."""
    if not message_ids:
        return []
    rows = session.exec(
        select(MessageAttachment, Attachment.size)
        .join(Attachment, col(Attachment.sha256) == col(MessageAttachment.sha256))
        .where(col(MessageAttachment.message_id).in_(message_ids))
        .order_by(col(MessageAttachment.id))
    )
    return [(part, int(size)) for part, size in rows]


def attachment_size(*, session: Session, sha256: str) -> int | None:
    """The stored size of one attachment (content-addressed), or None when it is not stored."""
    stored = session.get(Attachment, sha256)
    return stored.size if stored is not None else None
