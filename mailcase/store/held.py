"""Held messages: keeping one, listing and looking them up for review; `session=` in, never commits."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, col, select

from mailcase.domain import HeldState
from mailcase.store.models import HeldMessage, RawMessageRecord


def hold_message(
    *, session: Session, raw_id: int, from_address: str, subject: str, reason: str, received_at: datetime
) -> int:
    """Keep a message for an agent's review (`held list`); returns the held message's id."""
    held = HeldMessage(raw_id=raw_id, from_address=from_address, subject=subject, reason=reason, received_at=received_at)
    session.add(held)
    session.flush()
    assert held.id is not None
    return held.id


def held_messages(*, session: Session, state: HeldState | None = HeldState.HELD) -> list[HeldMessage]:
    statement = select(HeldMessage).order_by(col(HeldMessage.id))
    if state is not None:
        statement = statement.where(HeldMessage.state == state)
    return list(session.exec(statement))


def held_for_review(*, session: Session, held_id: int) -> HeldMessage | None:
    """A held message, locked for the rest of the transaction (an agent releases or discards it)."""
    return session.get(HeldMessage, held_id, with_for_update=True)


def held_by_id(*, session: Session, held_id: int) -> HeldMessage | None:
    """A held message in any state, for reading (`held show`)."""
    return session.get(HeldMessage, held_id)


def raw_of(*, session: Session, raw_id: int) -> RawMessageRecord | None:
    """The stored raw message row (bytes, envelope, decision) of a held or ignored message."""
    return session.get(RawMessageRecord, raw_id)


def inbound_records(
    *, session: Session, decision: str | None = None, since: datetime | None = None, limit: int = 200
) -> list[RawMessageRecord]:
    """Stored inbound messages, newest first, optionally of one decision and from an instant on."""
    statement = select(RawMessageRecord).order_by(col(RawMessageRecord.received_at).desc(), col(RawMessageRecord.id).desc())
    if decision:
        statement = statement.where(RawMessageRecord.decision == decision)
    if since is not None:
        statement = statement.where(col(RawMessageRecord.received_at) >= since)
    if limit:
        statement = statement.limit(limit)
    return list(session.exec(statement))


def held_since(*, session: Session, since: datetime | None, until: datetime) -> list[HeldMessage]:
    """Messages held (and still held) after `since` and up to `until`, oldest first (the digest)."""
    statement = select(HeldMessage).where(
        HeldMessage.state == HeldState.HELD, col(HeldMessage.received_at) <= until
    )
    if since is not None:
        statement = statement.where(col(HeldMessage.received_at) > since)
    return list(session.exec(statement.order_by(col(HeldMessage.id)).limit(200)))


def resolve_held(
    *, session: Session, held: HeldMessage, state: HeldState, now: datetime, by: str, case_id: int | None = None
) -> None:
    """An agent released or discarded a held message: record the outcome, when and by whom
    (and the case a release went to)."""
    held.state = state
    held.resolved_at = now
    held.resolved_by = by
    if case_id is not None:
        held.case_id = case_id
    session.add(held)
