"""Outbox persistence: queue a notice once, list the queue, record bounces, and delivery's claims, leases and outcomes; never commits, never sends.

Idempotency is the database's job: the outbox's unique `idempotency_key` and INSERT … ON CONFLICT
DO NOTHING (never check-then-insert), so two daemons, or one message ingested twice, queue one
notice.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from mailcase.domain import AutoKind, Direction, EventKind, NotificationIntent, OutboxState
from mailcase.store.common import (
    conflict_insert,
    execute_on_driver,
    first_row_on_driver,
    insert_ignoring,
    prepared,
    rows_affected,
    rows_on_driver,
    table_of,
)
from mailcase.store.models import (
    Attachment,
    CaseEvent,
    Installation,
    Message,
    Outbox,
    RecipientHealth,
)

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
    inserted = _insert_notices.run_many(session, [_row(intent, now, hostname)]).first()
    return int(inserted[0]) if inserted is not None else None


def enqueue_many(
    intents: Sequence[NotificationIntent], *, session: Session, now: datetime, hostname: str
) -> set[str]:
    """Queue several intents with one statement per ROWS_PER_STATEMENT (a sweep's batch, a notice to
    each technician); returns the idempotency keys that were new. The same insert-or-ignore as
    `enqueue`, instead of one round trip per notice."""
    rows = [_row(intent, now, hostname) for intent in intents]
    return {key for _id, key in _insert_notices.run_many(session, rows)}


@prepared
def _insert_notices(dialect: str) -> Any:
    """INSERT … ON CONFLICT (idempotency_key) DO NOTHING RETURNING id and key, prepared once per
    dialect and number of rows: every ingested message queues its notices with it."""
    table = table_of(Outbox)
    return insert_ignoring(dialect, table, ["idempotency_key"]).returning(table.c.id, table.c.idempotency_key)


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
        "claimed_by": "",
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
    table = table_of(Outbox)
    condition = table.c.state == OutboxState.FAILED.value
    if ids is not None:
        condition = sa.and_(condition, table.c.id.in_(list(ids)))
    statement = (
        sa.update(table)
        .where(condition)
        .values(state=OutboxState.QUEUED.value, attempts=0, next_attempt_at=now)
        .returning(table.c.id)
    )
    rows: sa.Result[int] = session.execute(statement)
    requeued = [int(row_id) for row_id in rows.scalars()]
    return sorted(requeued)


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
    table = table_of(RecipientHealth)
    statement = conflict_insert(session.get_bind().dialect.name, table).values(
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
            sa.and_(col(RecipientHealth.address).in_(lowered), col(RecipientHealth.failing) == sa.true())
        )
    ).all()
    return set(rows)


def any_due(engine: sa.Engine, now: datetime) -> bool:
    """True when a queued notice is due at `now`: the delivery process's cheap idle look (the
    `(state, next_attempt_at)` index answers it), so it runs a full pass only when there is work.

    On the driver's cursor (`first_row_on_driver`): the look runs before every pass, and through
    `connection.execute` it began a transaction, which on SQLite is BEGIN IMMEDIATE: the writer's
    lock, taken from ingest for a read, besides costing several times the query."""
    with engine.connect() as connection:
        return first_row_on_driver(connection, _ANY_DUE, {"queued": OutboxState.QUEUED.value, "now": now}) is not None


_OUTBOX_TABLE = table_of(Outbox)
_ANY_DUE = (
    sa.select(sa.literal(1))
    .where(
        _OUTBOX_TABLE.c.state == sa.bindparam("queued"),
        sa.or_(_OUTBOX_TABLE.c.next_attempt_at.is_(None), _OUTBOX_TABLE.c.next_attempt_at <= sa.bindparam("now")),
    )
    .limit(1)
)


def installation_values(connection: sa.Connection, keys: Sequence[str]) -> dict[str, str]:
    """Values of the `installation` table (delivery's shared state: the relay pause, the pace).

    On the driver's cursor (`rows_on_driver`, plain strings): delivery reads the relay pause on
    every pass, and /readyz reads it too; outside a transaction this begins none (on SQLite, no
    BEGIN IMMEDIATE for a read)."""
    rows = rows_on_driver(connection, _installation_select(len(keys)), {f"key_{n}": key for n, key in enumerate(keys)})
    return {str(key): str(value) for key, value in rows}


@functools.lru_cache(maxsize=8)
def _installation_select(count: int) -> sa.Select[Any]:
    """Built once per number of keys, each its own parameter (an expanding IN list is rewritten
    into the SQL at every execution)."""
    table = table_of(Installation)
    return sa.select(table.c.key, table.c.value).where(
        table.c.key.in_([sa.bindparam(f"key_{n}") for n in range(count)])
    )


DELIVERY_HEALTH_KEYS = {"relay": "delivery_health_relay", "outbound": "delivery_health_outbound"}
"""The delivery process's health board entries for the relay and the OAuth sign-in, shared through the
database so that /readyz in the main process sees them (`state<TAB>since<TAB>reason`)."""


def publish_delivery_health(connection: sa.Connection, entries: dict[str, tuple[str, datetime, str]]) -> None:
    """Store the delivery process's view of `relay` / `outbound`: {component: (state, since, reason)}."""
    set_installation_values(
        connection,
        {DELIVERY_HEALTH_KEYS[name]: f"{state}\t{since.isoformat()}\t{reason[:500]}"
         for name, (state, since, reason) in entries.items()},
    )


def delivery_health(connection: sa.Connection) -> dict[str, tuple[str, datetime, str]]:
    """What `publish_delivery_health` stored last, by component."""
    values = installation_values(connection, tuple(DELIVERY_HEALTH_KEYS.values()))
    found = {}
    for name, key in DELIVERY_HEALTH_KEYS.items():
        state, _, rest = (values.get(key) or "").partition("\t")
        since, _, reason = rest.partition("\t")
        if state and since:
            found[name] = (state, datetime.fromisoformat(since), reason)
    return found


def set_installation_values(connection: sa.Connection, values: dict[str, str]) -> None:
    """Upsert `installation` rows (INSERT … ON CONFLICT DO UPDATE on both databases); never commits."""
    if not values:
        return
    table = table_of(Installation)
    insert = conflict_insert(connection.dialect.name, table)
    statement = insert.on_conflict_do_update(index_elements=["key"], set_={"value": insert.excluded.value})
    connection.execute(statement, [{"key": key, "value": value} for key, value in values.items()])


def attachment_blobs(connection: sa.Connection, sha256s: Sequence[str]) -> dict[str, bytes]:
    """The stored bytes of attachments by SHA-256 (content-addressed); missing ones are absent."""
    if not sha256s:
        return {}
    table = table_of(Attachment)
    rows: sa.CursorResult[str, bytes] = connection.execute(
        sa.select(table.c.sha256, table.c.data).where(table.c.sha256.in_(list(sha256s)))
    )
    return {sha: bytes(data) for sha, data in rows}


def notice_case_id(*, session: Session, message_id: str) -> int | None:
    """The case of the notice we sent as `message_id` (a bounce names it), if it had one."""
    return session.exec(select(Outbox.case_id).where(Outbox.message_id == message_id)).first()


# -- delivery's side of the outbox: claims, leases, outcomes ---------------------------------
# Core statements on a connection or session the caller holds in its own short transaction
# (notify/outbox.py owns the transactions and the leasing policy; these only read and write).


@dataclass(frozen=True, slots=True)
class ClaimedNotice:
    """An outbox row claimed for delivery, as plain values."""

    id: int
    kind: str
    template: str
    locale: str
    context: Mapping[str, Any]
    recipients: tuple[str, ...]
    cc: tuple[str, ...]
    message_id: str
    in_reply_to: str
    references: tuple[str, ...]
    auto_submitted: str
    attempts: int
    case_id: int | None = None
    maintenance_id: int | None = None
    reply_token_case: int | None = None
    reply_token_staff: str = ""
    template_context: Mapping[str, Any] = field(default_factory=dict)


_CLAIMED_COLUMNS = (
    "id", "kind", "template", "locale", "context", "recipients", "cc", "message_id",
    "in_reply_to", "references", "auto_submitted", "attempts", "case_id", "maintenance_id",
)  # fmt: skip
"""What delivery reads of a row (plain columns through Core: no ORM objects for a batch)."""


def claim_due(
    connection: sa.Connection, *, now: datetime, limit: int, holder: str, lease_until: datetime
) -> list[ClaimedNotice]:
    """Mark up to `limit` due queued rows `sending`, held by `holder` until `lease_until`, and
    return them; in the caller's transaction.

    PostgreSQL: `FOR UPDATE SKIP LOCKED`, so concurrent claimers take disjoint rows without
    waiting for each other. SQLite ignores the clause; its BEGIN IMMEDIATE serialises claimers.
    """
    due, claim = _claim_statements()
    claimed = [_snapshot(row) for row in connection.execute(due, {"due_now": now, "due_limit": limit})]
    if claimed:
        connection.execute(
            claim,
            {"claimed_ids": [notice.id for notice in claimed], "claim_now": now, "claim_holder": holder,
             "claim_until": lease_until},
        )  # fmt: skip
    return claimed


@functools.cache
def _claim_statements() -> tuple[sa.Select[Any], sa.Update]:
    """The claim's SELECT and UPDATE, built once: the delivery process claims once per pass, back
    to back during a burst, and building them each time cost more than running them (issue 16)."""
    table = table_of(Outbox)
    due = (
        sa.select(*(table.c[name] for name in _CLAIMED_COLUMNS))
        .where(
            table.c.state == OutboxState.QUEUED.value,
            sa.or_(table.c.next_attempt_at.is_(None), table.c.next_attempt_at <= sa.bindparam("due_now")),
        )
        .order_by(table.c.id)
        .limit(sa.bindparam("due_limit"))
        .with_for_update(skip_locked=True)
    )
    claim = (
        sa.update(table)
        .where(table.c.id.in_(sa.bindparam("claimed_ids", expanding=True)))
        .values(
            state=OutboxState.SENDING.value,
            next_attempt_at=sa.bindparam("claim_now"),
            claimed_by=sa.bindparam("claim_holder"),
            lease_until=sa.bindparam("claim_until"),
        )
    )
    return due, claim


def _snapshot(row: sa.Row[Any]) -> ClaimedNotice:
    context = dict(row.context or {})
    token_case = context.get(REPLY_TOKEN_CASE_KEY)
    return ClaimedNotice(
        id=row.id,
        kind=row.kind,
        template=row.template,
        locale=row.locale,
        context=context,
        recipients=tuple(row.recipients or ()),
        cc=tuple(row.cc or ()),
        message_id=row.message_id,
        in_reply_to=row.in_reply_to,
        references=tuple(row.references or ()),
        auto_submitted=row.auto_submitted,
        attempts=row.attempts,
        case_id=row.case_id,
        maintenance_id=row.maintenance_id,
        reply_token_case=int(token_case) if token_case is not None else None,
        reply_token_staff=str(context.get(REPLY_TOKEN_STAFF_KEY) or ""),
        # Keys starting with "_" carry delivery instructions (token case, attachments,
        # List-Unsubscribe), not template values.
        template_context={k: v for k, v in context.items() if not k.startswith("_")},
    )


def renew_lease(connection: sa.Connection, *, ids: Sequence[int], holder: str, until: datetime) -> int:
    """Extend `holder`'s lease on the rows `ids` it still holds; how many it still holds."""
    table = table_of(Outbox)
    statement = (
        sa.update(table)
        .where(table.c.id.in_(ids), table.c.claimed_by == holder, table.c.state == OutboxState.SENDING.value)
        .values(lease_until=until)
    )
    return rows_affected(connection.execute(statement))


def record_sent(connection: sa.Connection, *, notice_id: int, values: Mapping[str, Any]) -> None:
    """Write a 250's outcome (`values`: outbox columns) whoever holds the row now: the message was
    accepted, so it must never be sent again. On the driver's cursor (`execute_on_driver`): it
    runs once per notice sent."""
    execute_on_driver(connection, _set_sent(), {"outbox_id": notice_id, **values})


def record_if_held(connection: sa.Connection, *, notice_id: int, holder: str, values: Mapping[str, Any]) -> bool:
    """Write any other outcome (`values`: outbox columns) only while `holder` still holds the row:
    a row whose lease another daemon took over is that daemon's to record. True when written."""
    return bool(rows_affected(connection.execute(_set_if_held(), {"outbox_id": notice_id, "holder": holder, **values})))


@functools.cache
def _set_sent() -> sa.Update:
    """The SET clause comes from the parameters' column names, so each outcome's shape compiles
    once and is reused from SQLAlchemy's statement cache."""
    table = table_of(Outbox)
    return sa.update(table).where(table.c.id == sa.bindparam("outbox_id"))


@functools.cache
def _set_if_held() -> sa.Update:
    table = table_of(Outbox)
    return sa.update(table).where(
        table.c.id == sa.bindparam("outbox_id"),
        table.c.claimed_by == sa.bindparam("holder"),
        table.c.state == OutboxState.SENDING.value,
    )


@dataclass(frozen=True, slots=True)
class SentCopy:
    """What a sent notice looked like, for its copy among the case's messages."""

    subject: str
    text: str
    from_address: str
    from_name: str
    auto_kind: AutoKind


def record_sent_copy(connection: sa.Connection, *, notice: ClaimedNotice, copy: SentCopy, now: datetime) -> None:
    """The sent message as a row of its case: `cases show` lists it, replies can thread to it."""
    references = list(notice.references)
    if notice.in_reply_to and notice.in_reply_to not in references:
        references.append(notice.in_reply_to)
    # The row as INSERT parameters, no `Message` object: building and validating one per sent
    # notice cost more than the insert (issue 16); on the driver's cursor (`execute_on_driver`)
    # for the same reason. Every column but the generated id.
    execute_on_driver(
        connection,
        _insert_message(),
        {
            "case_id": notice.case_id,
            "direction": Direction.OUTBOUND,
            "message_id": notice.message_id,
            "in_reply_to": notice.in_reply_to,
            "references": references,
            "from_address": copy.from_address,
            "from_name": copy.from_name,
            "to_addresses": list(notice.recipients),
            "cc_addresses": list(notice.cc),
            "subject": copy.subject,
            "text": copy.text,
            "new_text": copy.text,
            "auto_kind": copy.auto_kind,
            "raw_id": None,
            "outbox_id": notice.id,
            "received_at": now,
            "details": {"kind": notice.kind, "template": notice.template},
        },
    )


@functools.cache
def _insert_message() -> sa.Insert:
    return sa.insert(table_of(Message))


def note_failed_notice(connection: sa.Connection, *, notice: ClaimedNotice, reason: str, now: datetime) -> None:
    """A line on the notice's case (`cases show`): its assignee sees that the customer was not told."""
    if notice.case_id is None:
        return
    recipients = ", ".join((*notice.recipients, *notice.cc))
    connection.execute(
        sa.insert(table_of(CaseEvent)).values(
            case_id=notice.case_id,
            kind=EventKind.NOTICE_FAILED.value,
            at=now,
            author="mailcase",
            summary=f"{notice.kind} to {recipients} not delivered: {reason}"[:2000],
            data={"outbox_id": notice.id, "kind": notice.kind, "reason": reason},
        )
    )


def sending_holders(*, session: Session, other_than: str) -> list[str]:
    """Who holds rows being sent, other than `other_than` (to find holders that are gone)."""
    table = table_of(Outbox)
    return list(
        session.execute(
            sa.select(table.c.claimed_by)
            .where(table.c.state == OutboxState.SENDING.value, table.c.claimed_by != other_than)
            .distinct()
        ).scalars().all()
    )


def requeue_abandoned(*, session: Session, now: datetime, dead_holders: Sequence[str]) -> int:
    """Give rows back to the queue whose lease ran out or whose holder is in `dead_holders`;
    how many."""
    table = table_of(Outbox)
    result = session.execute(
        sa.update(table)
        .where(
            table.c.state == OutboxState.SENDING.value,
            sa.or_(
                table.c.lease_until.is_(None),
                table.c.lease_until < now,
                table.c.claimed_by.in_(dead_holders) if dead_holders else sa.false(),
            ),
        )
        .values(state=OutboxState.QUEUED.value, next_attempt_at=now, claimed_by="", lease_until=None)
    )
    return rows_affected(result)


@dataclass(frozen=True, slots=True)
class ExpiringNotice:
    notice: ClaimedNotice
    last_error: str


def queued_before(*, session: Session, cutoff: datetime, limit: int = 500) -> list[ExpiringNotice]:
    """Queued notices due before `cutoff`, oldest first, locked (`SKIP LOCKED`) for the caller's transaction."""
    table = table_of(Outbox)
    rows = session.execute(
        sa.select(*(table.c[name] for name in _CLAIMED_COLUMNS), table.c.last_error)
        .where(table.c.state == OutboxState.QUEUED.value, table.c.due_at < cutoff)
        .order_by(table.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    return [ExpiringNotice(_snapshot(row), row.last_error) for row in rows]


def fail_notice(*, session: Session, notice_id: int, reason: str) -> None:
    """Mark a queued notice `failed` for good, with `reason` as its last error."""
    table = table_of(Outbox)
    session.execute(
        sa.update(table)
        .where(table.c.id == notice_id)
        .values(state=OutboxState.FAILED.value, next_attempt_at=None, last_error=reason)
    )


# -- the relay pause: delivery-wide state in the `installation` table ------------------------

PACE_KEY = "outbox_seconds_per_message"
PAUSE_UNTIL_KEY = "relay_paused_until"
PAUSE_COUNT_KEY = "relay_unreachable_passes"
PAUSE_REASON_KEY = "relay_unreachable_reason"


@dataclass(frozen=True, slots=True)
class RelayPause:
    """Delivery-wide state shared by every daemon on the database (the `installation` table)."""

    until: datetime | None = None
    passes: int = 0
    seconds_per_message: float | None = None
    reason: str = ""
    """Why the last pass found the relay unreachable (the transport's words), for /readyz in any
    process: delivery runs in a process of its own."""


def read_relay_pause(connection: sa.Connection) -> RelayPause:
    """The relay pause and the measured pace, as every daemon on the database sees them."""
    values = installation_values(connection, (PAUSE_UNTIL_KEY, PAUSE_COUNT_KEY, PACE_KEY, PAUSE_REASON_KEY))
    until = values.get(PAUSE_UNTIL_KEY) or ""
    pace = values.get(PACE_KEY) or ""
    return RelayPause(
        until=datetime.fromisoformat(until) if until else None,
        passes=int(values.get(PAUSE_COUNT_KEY) or 0),
        seconds_per_message=float(pace) if pace else None,
        reason=values.get(PAUSE_REASON_KEY) or "",
    )


def pause_relay(connection: sa.Connection, *, until: datetime, passes: int, reason: str = "") -> None:
    """No notice is tried before `until` (then one probe); `passes` unreachable passes so far, the
    last one for `reason`."""
    set_installation_values(
        connection,
        {PAUSE_UNTIL_KEY: until.isoformat(), PAUSE_COUNT_KEY: str(passes), PAUSE_REASON_KEY: reason[:500]},
    )


def record_batch(connection: sa.Connection, *, resume: bool, seconds_per_message: float | None) -> None:
    """After a batch the relay answered: lift the pause (`resume`, after a probe) and keep the pace."""
    values: dict[str, str] = {}
    if resume:
        values.update({PAUSE_UNTIL_KEY: "", PAUSE_COUNT_KEY: "0", PAUSE_REASON_KEY: ""})
    if seconds_per_message is not None:
        values[PACE_KEY] = f"{seconds_per_message:.4f}"
    set_installation_values(connection, values)
