"""IMAP mailbox cursors: where each poller left off (UIDVALIDITY, last UID); it never commits and never talks IMAP.

The cursor is an optimisation, not a guarantee: messages leave the polled folder only after they
are stored, so a lost or stale cursor costs a re-fetch that the pipeline's dedupe turns into a no-op.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col

from mailcase.store.common import table_of
from mailcase.store.models import MailboxCursor

NO_CURSOR: tuple[int, int] = (0, 0)
"""What `load_cursor` returns for a mailbox never polled: RFC 3501 §2.3.1.1 makes 0 an impossible UIDVALIDITY."""


def load_cursor(*, session: Session, mailbox: str) -> tuple[int, int]:
    """The stored `(uidvalidity, last_uid)` of `mailbox`, or `(0, 0)` when there is none."""
    row = session.execute(
        sa.select(col(MailboxCursor.uidvalidity), col(MailboxCursor.last_uid)).where(
            col(MailboxCursor.mailbox) == mailbox
        )
    ).one_or_none()
    if row is None:
        return NO_CURSOR
    return int(row.uidvalidity), int(row.last_uid)


def save_cursor(
    *, session: Session, mailbox: str, uidvalidity: int, last_uid: int, now: datetime
) -> None:
    """Record that every UID up to `last_uid` of `mailbox` under `uidvalidity` has been dealt with.

    One upsert (`INSERT … ON CONFLICT DO UPDATE`), so two writers never race on a
    check-then-insert. Within one UIDVALIDITY the cursor only moves forward: a late write from a
    poller that lost its lock cannot rewind it. A new UIDVALIDITY replaces it whatever the UID,
    because the old UIDs mean nothing any more (RFC 3501 §2.3.1.1).
    """
    table = table_of(MailboxCursor)
    dialect = session.get_bind().dialect.name
    insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(table).values(
        mailbox=mailbox, uidvalidity=uidvalidity, last_uid=last_uid, updated_at=now
    )
    excluded = statement.excluded
    greatest = sa.func.greatest if dialect == "postgresql" else sa.func.max
    statement = statement.on_conflict_do_update(
        index_elements=[table.c.mailbox],
        set_={
            "uidvalidity": excluded.uidvalidity,
            "last_uid": sa.case(
                (table.c.uidvalidity == excluded.uidvalidity, greatest(table.c.last_uid, excluded.last_uid)),
                else_=excluded.last_uid,
            ),
            "updated_at": excluded.updated_at,
        },
    )
    session.execute(statement)
