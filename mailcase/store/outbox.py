"""Outbox persistence: queue a notice once, list the queue, record bounces; `session=` in, never commits, never sends.

Idempotency is the database's job: the outbox's unique `idempotency_key` and INSERT … ON CONFLICT
DO NOTHING (never check-then-insert), so two daemons, or one message ingested twice, queue one
notice.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from mailcase.domain import NotificationIntent, OutboxState
from mailcase.store.models import Installation, Outbox, RecipientHealth

REPLY_TOKEN_CASE_KEY = "_reply_token_case"
REPLY_TOKEN_STAFF_KEY = "_reply_token_staff"  # the one staff recipient a per-technician token is bound to
"""Context key carrying the intent's reply-token case number to delivery; templates never see it."""


def new_message_id(hostname: str) -> str:
    """`<mc.<uuid4 hex>@hostname>`: unique, and recognisably ours when a reply quotes it."""
    return f"<mc.{uuid.uuid4().hex}@{hostname}>"


def enqueue(
    intent: NotificationIntent, *, session: Session, now: datetime, hostname: str
) -> int | None:
    """Queue `intent`; returns the new outbox id, or None when its idempotency key is already queued.

    The Message-ID is generated here and stored, so a reply can thread to this notice even before
    it is sent. The row is due at `intent.due_at` (delivery waits until then).
    """
    statement = _insert_notice(session.get_bind().dialect.name)
    new_id = session.execute(statement, _row(intent, now, hostname)).scalar_one_or_none()
    return int(new_id) if new_id is not None else None


@functools.cache
def _insert_notice(dialect: str) -> Any:
    """INSERT … ON CONFLICT (idempotency_key) DO NOTHING RETURNING id, built once per dialect: a
    sweep queues thousands of rows, and rebuilding the statement for each cost more than running it
    (values go in as parameters, so its compiled form is reused from SQLAlchemy's cache too)."""
    table: sa.Table = Outbox.__table__  # type: ignore[assignment]
    insert: Any = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
    return insert.on_conflict_do_nothing(index_elements=["idempotency_key"]).returning(table.c.id)


def enqueue_many(
    intents: Sequence[NotificationIntent], *, session: Session, now: datetime, hostname: str
) -> set[str]:
    """Queue many intents in one statement (a sweep's batch); returns the idempotency keys that were new.

    The same insert-or-ignore as `enqueue`, sent as multi-row INSERT … ON CONFLICT DO NOTHING
    RETURNING (SQLAlchemy's insertmanyvalues) instead of one round trip per notice.
    """
    if not intents:
        return set()
    table: sa.Table = Outbox.__table__  # type: ignore[assignment]
    dialect = session.get_bind().dialect.name
    insert: Any = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
    statement = insert.on_conflict_do_nothing(index_elements=["idempotency_key"]).returning(table.c.idempotency_key)
    rows = [_row(intent, now, hostname) for intent in intents]
    return set(session.execute(statement, rows).scalars())


def _row(intent: NotificationIntent, now: datetime, hostname: str) -> dict[str, Any]:
    context = dict(intent.context)
    if intent.reply_token_case is not None:
        context[REPLY_TOKEN_CASE_KEY] = intent.reply_token_case
        if intent.reply_token_staff:
            context[REPLY_TOKEN_STAFF_KEY] = intent.reply_token_staff
    values = {
        "idempotency_key": intent.idempotency_key,
        "kind": intent.kind,
        "case_id": intent.case_id,
        "maintenance_id": intent.maintenance_id,
        "recipients": list(intent.recipients),
        "cc": list(intent.cc),
        "template": intent.template,
        "locale": intent.locale,
        "context": context,
        "message_id": new_message_id(hostname),
        "in_reply_to": intent.in_reply_to,
        "references": list(intent.references),
        "reply_to": "",
        "auto_submitted": intent.auto_submitted,
        "state": OutboxState.QUEUED.value,
        "attempts": 0,
        "next_attempt_at": intent.due_at,
        "created_at": now,
        "due_at": intent.due_at,
        "last_error": "",
        "bounce_reason": "",
    }
    return values


def outbox_rows(
    *, session: Session, state: OutboxState | str | None = None, limit: int | None = 100
) -> Sequence[Outbox]:
    """The newest outbox rows first, optionally only one state (for `mailcase outbox list`)."""
    query = select(Outbox)
    if state is not None:
        query = query.where(Outbox.state == OutboxState(state).value)
    query = query.order_by(col(Outbox.id).desc())
    if limit is not None:
        query = query.limit(limit)
    return session.exec(query).all()


def requeue_failed(
    *, session: Session, now: datetime, ids: Sequence[int] | None = None
) -> list[int]:
    """Queue failed notices again, due at `now` with a fresh attempt count (`mailcase outbox
    retry`, after the cause is fixed); `ids=None` means every failed one. Returns the ids
    requeued; rows in another state are left alone."""
    table: sa.Table = Outbox.__table__  # type: ignore[assignment]
    condition = table.c.state == OutboxState.FAILED.value
    if ids is not None:
        condition = sa.and_(condition, table.c.id.in_(list(ids)))
    statement = (
        sa.update(table)
        .where(condition)
        .values(state=OutboxState.QUEUED.value, attempts=0, next_attempt_at=now)
        .returning(table.c.id)
    )
    return sorted(int(row_id) for row_id in session.execute(statement).scalars())


def record_bounce(
    *,
    session: Session,
    message_id: str,
    recipients: Sequence[str],
    reason: str,
    now: datetime,
) -> bool:
    """Mark the notice whose Message-ID a bounce (RFC 3464) names; True when it was one of ours.

    Each failed recipient's RecipientHealth is upserted (bounce counted, marked failing). Nothing
    is recorded for a Message-ID we never sent: a forged bounce must not flag addresses.
    When the bounce lists no recipients, a single-recipient notice's recipient is taken as failed.
    """
    bracketed = message_id.strip()
    if not bracketed:
        return False
    if not bracketed.startswith("<"):
        bracketed = f"<{bracketed}>"
    row = session.exec(select(Outbox).where(Outbox.message_id == bracketed)).first()
    if row is None:
        return False
    row.bounced_at = now
    row.bounce_reason = reason
    session.add(row)
    failed = [address.strip().lower() for address in recipients if address.strip()]
    if not failed:
        everyone = [*row.recipients, *row.cc]
        failed = [everyone[0].lower()] if len(everyone) == 1 else []
    for address in dict.fromkeys(failed):
        _upsert_health(session, address, reason, now)
    session.flush()
    return True


def _upsert_health(session: Session, address: str, reason: str, now: datetime) -> None:
    table: sa.Table = RecipientHealth.__table__  # type: ignore[assignment]
    postgres = session.get_bind().dialect.name == "postgresql"
    insert = postgresql.insert(table) if postgres else sqlite.insert(table)
    statement = insert.values(
        address=address, failing=True, last_bounce_at=now, reason=reason, bounces=1
    ).on_conflict_do_update(
        index_elements=["address"],
        set_={
            "failing": True,
            "last_bounce_at": now,
            "reason": reason,
            "bounces": table.c.bounces + 1,
        },
    )
    session.execute(statement)


def failing_recipients(*, session: Session, addresses: Sequence[str]) -> set[str]:
    """Which of `addresses` are known to bounce (for operators and for delivery decisions)."""
    if not addresses:
        return set()
    lowered = [address.lower() for address in addresses]
    rows = session.exec(
        select(RecipientHealth.address).where(
            sa.and_(col(RecipientHealth.address).in_(lowered), RecipientHealth.failing == sa.true())
        )
    ).all()
    return set(rows)


def installation_values(connection: sa.Connection, keys: Sequence[str]) -> dict[str, str]:
    """Values of the `installation` table (delivery's shared state: the relay pause, the pace)."""
    table: sa.Table = Installation.__table__  # type: ignore[assignment]
    rows = connection.execute(sa.select(table.c.key, table.c.value).where(table.c.key.in_(list(keys))))
    return {str(key): str(value) for key, value in rows}


def set_installation_values(connection: sa.Connection, values: dict[str, str]) -> None:
    """Upsert `installation` rows (INSERT … ON CONFLICT DO UPDATE on both databases); never commits."""
    if not values:
        return
    table: sa.Table = Installation.__table__  # type: ignore[assignment]
    postgres = connection.dialect.name == "postgresql"
    insert: Any = postgresql.insert(table) if postgres else sqlite.insert(table)
    statement = insert.on_conflict_do_update(index_elements=["key"], set_={"value": insert.excluded.value})
    connection.execute(statement, [{"key": key, "value": value} for key, value in values.items()])


def attachment_blobs(connection: sa.Connection, sha256s: Sequence[str]) -> dict[str, bytes]:
    """The stored bytes of attachments by SHA-256 (content-addressed); missing ones are absent."""
    if not sha256s:
        return {}
    from mailcase.store.models import Attachment

    table: sa.Table = Attachment.__table__  # type: ignore[assignment]
    rows = connection.execute(sa.select(table.c.sha256, table.c.data).where(table.c.sha256.in_(list(sha256s))))
    return {sha: bytes(data) for sha, data in rows}


def notice_case_id(*, session: Session, message_id: str) -> int | None:
    """The case of the notice we sent as `message_id` (a bounce names it), if it had one."""
    return session.exec(select(Outbox.case_id).where(Outbox.message_id == message_id)).first()
