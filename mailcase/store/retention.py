"""The retention purge's SQL: empties raw message bytes and attachment bodies past their window, purges
held messages past theirs, and finds the held messages the digest must warn about; `session=` in,
never commits, and never deletes a case, a message's text or a line of history."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from mailcase.domain import HeldState
from mailcase.store.common import rows_affected
from mailcase.store.models import (
    Attachment,
    HeldMessage,
    Message,
    MessageAttachment,
    RawMessageRecord,
)

WARNING_DAYS = 7
"""The held digest names a held message this many days before its purge, and (with a digest
address) no held message is purged until this long after it was named."""


@dataclass(frozen=True, slots=True)
class PurgeCounts:
    """What one purge did (or, dry, would do): raw messages emptied, attachment bodies deleted
    (their bytes), held messages purged."""

    raw_messages: int = 0
    raw_bytes: int = 0
    attachments: int = 0
    attachment_bytes: int = 0
    held: int = 0

    def __add__(self, other: PurgeCounts) -> PurgeCounts:
        return PurgeCounts(
            self.raw_messages + other.raw_messages, self.raw_bytes + other.raw_bytes,
            self.attachments + other.attachments, self.attachment_bytes + other.attachment_bytes,
            self.held + other.held,
        )

    @property
    def total(self) -> int:
        return self.raw_messages + self.attachments + self.held


def purge_held(
    *, session: Session, now: datetime, received_before: datetime, warned_by: datetime | None, actor: str,
    limit: int | None, dry_run: bool = False,
) -> PurgeCounts:
    """Held messages still held that arrived before `received_before`: discarded by `actor`, their raw
    bytes emptied. With `warned_by` (a digest address is configured), only those the digest warned
    about at or before that instant: a message is never purged without its week's notice.
    `dry_run`: count only."""
    statement = select(HeldMessage).where(
        HeldMessage.state == HeldState.HELD, col(HeldMessage.received_at) < received_before
    )
    if warned_by is not None:
        statement = statement.where(col(HeldMessage.purge_warned_at) <= warned_by)
    held = list(session.exec(statement.order_by(col(HeldMessage.id)).limit(limit).with_for_update(skip_locked=True)))
    raw_ids = [h.raw_id for h in held]
    if dry_run:
        return PurgeCounts(raw_messages=len(raw_ids), raw_bytes=_raw_size(session, raw_ids), held=len(held))
    for row in held:
        row.state = HeldState.DISCARDED
        row.resolved_at = now
        row.resolved_by = actor
        row.reason = f"{row.reason} [purged after the retention window]".strip()
        session.add(row)
    emptied, size = empty_raw(session, raw_ids, now)
    return PurgeCounts(raw_messages=emptied, raw_bytes=size, held=len(held))


def purge_raw(
    *, session: Session, now: datetime, received_before: datetime, limit: int | None, dry_run: bool = False
) -> PurgeCounts:
    """Raw messages that arrived before `received_before`, not yet purged and not still held for review:
    bytes emptied (row, decision, size and digest stay, for `trace`)."""
    still_held = select(HeldMessage.raw_id).where(HeldMessage.state == HeldState.HELD)
    ids = list(
        session.exec(
            select(RawMessageRecord.id)
            .where(
                col(RawMessageRecord.received_at) < received_before,
                col(RawMessageRecord.purged_at).is_(None),
                col(RawMessageRecord.id).not_in(still_held),
            )
            .order_by(col(RawMessageRecord.id))
            .limit(limit)
        )
    )
    raw_ids = [i for i in ids if i is not None]
    if dry_run:
        return PurgeCounts(raw_messages=len(raw_ids), raw_bytes=_raw_size(session, raw_ids))
    emptied, size = empty_raw(session, raw_ids, now)
    return PurgeCounts(raw_messages=emptied, raw_bytes=size)


def purge_attachments(
    *, session: Session, now: datetime, received_before: datetime, limit: int | None, dry_run: bool = False
) -> PurgeCounts:
    """Attachment bodies used only by messages from before `received_before` (bodies are shared by
    digest, so one still used by a newer message stays): emptied; each message keeps its list of
    file names, types and sizes."""
    newer_use = (
        select(MessageAttachment.id)
        .join(Message, col(Message.id) == col(MessageAttachment.message_id))
        .where(MessageAttachment.sha256 == Attachment.sha256, col(Message.received_at) >= received_before)
    )
    any_use = select(MessageAttachment.id).where(MessageAttachment.sha256 == Attachment.sha256)
    candidates = (
        select(Attachment.sha256, Attachment.size)
        .where(col(Attachment.purged_at).is_(None), sa.exists(any_use), ~sa.exists(newer_use))
        .limit(limit)
    )
    if dry_run:
        rows = list(session.exec(candidates))
        return PurgeCounts(attachments=len(rows), attachment_bytes=sum(size for _, size in rows))
    # Lock the rows first, then check again in a new statement (a new snapshot on PostgreSQL): a
    # message committed meanwhile with the same file (it held the row, see `keep_attachment`) is
    # seen, and its file stays.
    locked = [sha for sha, _ in session.exec(candidates.with_for_update(of=Attachment))]
    if not locked:
        return PurgeCounts()
    purged: list[int] = list(
        session.execute(
            sa.update(Attachment)
            .where(col(Attachment.sha256).in_(locked), col(Attachment.purged_at).is_(None), ~sa.exists(newer_use))
            .values(data=b"", purged_at=now)
            .returning(col(Attachment.size))
        ).scalars()
    )
    return PurgeCounts(attachments=len(purged), attachment_bytes=sum(purged))


def keep_attachment(*, session: Session, sha256: str, data: bytes) -> None:
    """A new message carries a file already stored: hold its row until our commit (so a purge
    running now waits and then sees our message), and put the bytes back if a purge took them."""
    purged_at = session.exec(
        select(Attachment.purged_at).where(Attachment.sha256 == sha256).with_for_update(read=True)
    ).first()
    if purged_at is not None:
        session.execute(
            sa.update(Attachment).where(col(Attachment.sha256) == sha256).values(data=data, purged_at=None)
        )


def held_to_warn(*, session: Session, received_before: datetime) -> list[HeldMessage]:
    """Held messages that arrived before `received_before` (a week short of their purge) and that no
    digest has warned about yet, oldest first."""
    return list(
        session.exec(
            select(HeldMessage)
            .where(
                HeldMessage.state == HeldState.HELD,
                col(HeldMessage.received_at) < received_before,
                col(HeldMessage.purge_warned_at).is_(None),
            )
            .order_by(col(HeldMessage.id))
            .limit(200)
        )
    )


def mark_warned(*, session: Session, held_ids: list[int], now: datetime) -> None:
    if held_ids:
        session.execute(
            sa.update(HeldMessage).where(col(HeldMessage.id).in_(held_ids)).values(purge_warned_at=now)
        )


def cutoffs(now: datetime, *, raw_days: int, held_days: int) -> tuple[datetime, datetime]:
    """(raw messages and attachments from before this go, held messages from before this go)."""
    return now - timedelta(days=raw_days), now - timedelta(days=held_days)


def empty_raw(session: Session, raw_ids: list[int], now: datetime) -> tuple[int, int]:
    """Empty these raw messages' bytes (those not yet purged); (how many, their bytes). Also used by erasure."""
    if not raw_ids:
        return 0, 0
    size = _raw_size(session, raw_ids)
    pending = col(RawMessageRecord.id).in_(raw_ids) & col(RawMessageRecord.purged_at).is_(None)
    result = session.execute(sa.update(RawMessageRecord).where(pending).values(data=b"", purged_at=now))
    return rows_affected(result), size


def _raw_size(session: Session, raw_ids: list[int]) -> int:
    """The stored size of these raw messages not yet purged."""
    if not raw_ids:
        return 0
    pending = col(RawMessageRecord.id).in_(raw_ids) & col(RawMessageRecord.purged_at).is_(None)
    return int(session.exec(select(sa.func.coalesce(sa.func.sum(RawMessageRecord.size), 0)).where(pending)).one())
