"""Held messages: listing and looking them up for review; `session=` in, never commits."""

from __future__ import annotations

from sqlmodel import Session, col, select

from mailcase.domain import HeldState
from mailcase.models import HeldMessage


def held_messages(*, session: Session, state: HeldState | None = HeldState.HELD) -> list[HeldMessage]:
    statement = select(HeldMessage).order_by(col(HeldMessage.id))
    if state is not None:
        statement = statement.where(HeldMessage.state == state)
    return list(session.exec(statement))


def held_for_review(*, session: Session, held_id: int) -> HeldMessage | None:
    """A held message, locked for the rest of the transaction (an agent releases or discards it)."""
    return session.get(HeldMessage, held_id, with_for_update=True)
