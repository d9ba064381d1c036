"""Deliver due outbox rows: claim, render, compose, send over one connection, record each outcome; it never decides what to notify.

Delivery guarantees, and the one window we accept:
* A row is claimed in a short transaction that marks it `sending` (`FOR UPDATE SKIP LOCKED` on
  PostgreSQL, so several daemons sharing one database never claim the same row; on SQLite the
  transaction is `BEGIN IMMEDIATE` and writers are serialised).
* Each message's outcome is committed in its own transaction as soon as the relay answers, before
  the next message is sent. So a crash between the relay's 250 and our commit re-sends **at most
  that one message**: its row is still `sending`, and rows left in `sending` longer than
  `stale_after` (a crashed daemon) go back to `queued`. That re-send keeps the stored Message-ID,
  so the recipient's client shows it as the same message. The commit is kept cheap rather than
  deferred: one database connection is held for the batch, and an outcome is one Core UPDATE of
  its row (plus, for case mail, the INSERT of its outbound message row) in one short transaction.
* A dropped connection makes the transport reconnect and try the message once more; if the drop
  came after the relay had accepted the data, that is the same one-message window.
* 4xx replies and connection errors are retried with capped exponential backoff and jitter; a
  5xx reply, or running out of attempts, marks the row `failed` with the server's reply.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import col

from mailcase.config import Settings
from mailcase.db import is_transient, transaction
from mailcase.domain import AutoKind, Direction, OutboxState
from mailcase.errors import TransientError
from mailcase.models import Message, Outbox
from mailcase.notify.ics import invitation
from mailcase.notify.compose import (
    AUTO_GENERATED,
    AUTO_REPLIED,
    MailAttachment,
    OutgoingMail,
    compose,
)
from mailcase.notify.render import Rendered, Renderer
from mailcase.notify.transport import Envelope, SendOutcome, SendResult, Transport
from mailcase.rules.tokens import reply_address
from mailcase.store.outbox import REPLY_TOKEN_CASE_KEY, attachment_blobs

log = logging.getLogger(__name__)

STALE_SENDING = timedelta(minutes=10)
"""A row `sending` for longer than this was claimed by a daemon that died; it is queued again."""

_OUTBOX: sa.Table = Outbox.__table__  # type: ignore[assignment]
_MESSAGE: sa.Table = Message.__table__  # type: ignore[assignment]
_SET_OUTCOME = sa.update(_OUTBOX).where(_OUTBOX.c.id == sa.bindparam("outbox_id"))
"""One row's outcome; the SET clause comes from the parameters' column names, so each outcome's
shape compiles once and is reused from SQLAlchemy's statement cache."""
_INSERT_MESSAGE = sa.insert(_MESSAGE)


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    requeued: int = 0


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
    template_context: Mapping[str, Any] = field(default_factory=dict)


AttachmentSource = Callable[[ClaimedNotice], Sequence[MailAttachment]]
"""Builds a notice's attachments at delivery time (e.g. the .ics of its maintenance window)."""


def retry_delay(attempts: int, *, base_seconds: int, max_seconds: int, jitter: float) -> timedelta:
    """Wait before the next try after `attempts` failed ones: base x 2^(attempts-1), capped, with
    "equal jitter" (half fixed, half random; `jitter` in [0, 1)) so daemons do not retry in step."""
    ceiling = min(float(max_seconds), float(base_seconds) * 2.0 ** max(attempts - 1, 0))
    return timedelta(seconds=ceiling / 2 + jitter * ceiling / 2)


def deliver_due(
    engine: Engine,
    *,
    now: datetime,
    transport: Transport,
    renderer: Renderer,
    settings: Settings,
    secret: bytes,
    limit: int | None = None,
    attachments: AttachmentSource | None = None,
    rng: random.Random | None = None,
    stale_after: timedelta = STALE_SENDING,
) -> DeliveryReport:
    """Deliver up to `limit` (default `outbound.batch_size`) rows due at `now`.

    See the module docstring for the guarantees. `attachments` adds files at delivery time (the
    .ics of a maintenance notice); `rng` drives the retry jitter (tests pin it).
    """
    rng = rng or random.Random()
    requeued = requeue_stale(engine, now=now, stale_after=stale_after)
    claimed = claim_due(engine, now=now, limit=limit or settings.outbound.batch_size)
    counts = {SendOutcome.SENT: 0, SendOutcome.TEMPORARY: 0, SendOutcome.PERMANENT: 0}
    if not claimed:
        return DeliveryReport(requeued=requeued)
    with engine.connect() as connection:
        _deliver_claimed(
            connection, claimed, counts, now=now, transport=transport, renderer=renderer,
            settings=settings, secret=secret, attachments=attachments or context_attachments,
            rng=rng,
        )  # fmt: skip
    return DeliveryReport(
        sent=counts[SendOutcome.SENT],
        retried=counts[SendOutcome.TEMPORARY],
        failed=counts[SendOutcome.PERMANENT],
        requeued=requeued,
    )


def _deliver_claimed(
    connection: sa.Connection,
    claimed: Sequence[ClaimedNotice],
    counts: dict[SendOutcome, int],
    *,
    now: datetime,
    transport: Transport,
    renderer: Renderer,
    settings: Settings,
    secret: bytes,
    attachments: AttachmentSource,
    rng: random.Random,
) -> None:
    """Render and compose every claimed notice, send them over one transport batch, and commit
    each outcome on `connection` as soon as it is known; adds the outcomes to `counts`."""
    outbound = settings.outbound
    prepared: list[tuple[ClaimedNotice, Rendered, str]] = []
    envelopes: list[Envelope] = []
    for notice in claimed:
        try:
            rendered = renderer.render(notice.template, notice.locale, notice.template_context)
            reply_to = (
                reply_address(settings.smtp.support_address, notice.reply_token_case, secret)
                if notice.reply_token_case is not None
                else ""
            )
            message = compose(
                _outgoing(notice, now),
                rendered,
                from_address=outbound.from_address,
                from_name=outbound.from_name,
                support_address=settings.smtp.support_address,
                secret=secret,
                attachments=[*attachments(notice), *_stored_files(connection, notice)],
            )
        except TransientError as error:
            log.warning("outbox %s: cannot prepare now, will retry: %s", notice.id, error)
            counts[_record(connection, notice, _temporary(str(error)), now, settings, rng)] += 1
            continue
        except Exception as error:  # our bug (template, context): retrying cannot help
            log.error(
                "outbox %s: cannot render %s: %s", notice.id, notice.template, error, exc_info=True
            )
            failure = SendResult(
                SendOutcome.PERMANENT, None, f"render failed: {type(error).__name__}: {error}"
            )
            counts[_record(connection, notice, failure, now, settings, rng)] += 1
            continue
        prepared.append((notice, rendered, reply_to))
        envelopes.append((message, outbound.from_address, _envelope_recipients(notice)))

    recorded: set[int] = set()

    def on_result(index: int, result: SendResult) -> None:
        notice, rendered, reply_to = prepared[index]
        outcome = _record(
            connection, notice, result, now, settings, rng, rendered=rendered, reply_to=reply_to
        )
        counts[outcome] += 1
        recorded.add(index)

    try:
        if envelopes:
            results = transport.send(envelopes, on_result=on_result)
            # A transport that only returns its results (no callback) is recorded here.
            for index, result in enumerate(results[: len(prepared)]):
                if index not in recorded:
                    on_result(index, result)
    finally:
        # The transport raised part-way: whatever it did not report goes back to the queue.
        for index, (notice, _rendered, _reply_to) in enumerate(prepared):
            if index not in recorded:
                interrupted = _temporary("delivery interrupted")
                counts[_record(connection, notice, interrupted, now, settings, rng)] += 1


def requeue_stale(engine: Engine, *, now: datetime, stale_after: timedelta = STALE_SENDING) -> int:
    """Give rows stuck in `sending` (their daemon died after claiming them) back to the queue."""
    with transaction(engine) as session:
        result = session.execute(
            sa.update(Outbox)
            .where(
                col(Outbox.state) == OutboxState.SENDING.value,
                col(Outbox.next_attempt_at) < now - stale_after,
            )
            .values(state=OutboxState.QUEUED.value, next_attempt_at=now)
        )
        count = int(getattr(result, "rowcount", 0) or 0)
    if count:
        log.warning("outbox: %d rows left in sending by a stopped daemon are queued again", count)
    return count


def claim_due(engine: Engine, *, now: datetime, limit: int) -> list[ClaimedNotice]:
    """Mark up to `limit` due queued rows `sending` (claimed at `now`) and return them.

    PostgreSQL: `FOR UPDATE SKIP LOCKED`, so concurrent claimers take disjoint rows without
    waiting for each other. SQLite ignores the clause; its BEGIN IMMEDIATE serialises claimers.
    """
    table = _OUTBOX
    query = (
        sa.select(*(table.c[name] for name in _CLAIMED_COLUMNS))
        .where(
            table.c.state == OutboxState.QUEUED.value,
            sa.or_(table.c.next_attempt_at.is_(None), table.c.next_attempt_at <= now),
        )
        .order_by(table.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    with engine.connect() as connection, _committed(connection):
        claimed = [_snapshot(row) for row in connection.execute(query)]
        if claimed:
            connection.execute(
                sa.update(table)
                .where(table.c.id.in_([notice.id for notice in claimed]))
                .values(state=OutboxState.SENDING.value, next_attempt_at=now)
            )
    return claimed


_CLAIMED_COLUMNS = (
    "id", "kind", "template", "locale", "context", "recipients", "cc", "message_id",
    "in_reply_to", "references", "auto_submitted", "attempts", "case_id", "maintenance_id",
)  # fmt: skip
"""What delivery reads of a row (plain columns through Core: no ORM objects for a batch)."""


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
        # Keys starting with "_" carry delivery instructions (token case, attachments,
        # List-Unsubscribe), not template values.
        template_context={k: v for k, v in context.items() if not k.startswith("_")},
    )


def context_attachments(notice: ClaimedNotice) -> list[MailAttachment]:
    """The files a notice asks for in its context: `_calendar` (a maintenance window's invitation,
    written here from the values queued with it) and `_attachments` (ready-made text files:
    filename, content_type, content)."""
    files = []
    calendar = notice.context.get("_calendar")
    if calendar:
        content_type, data = invitation(calendar)
        files.append(_attachment("maintenance.ics", content_type, data))
    for item in notice.context.get("_attachments", ()):
        files.append(_attachment(str(item["filename"]), str(item["content_type"]), str(item["content"]).encode()))
    return files


def _stored_files(connection: sa.Connection, notice: ClaimedNotice) -> list[MailAttachment]:
    """The files a notice carries from the attachment table (`_stored_attachments`: filename,
    content_type, sha256): a customer's files in a staff notice, a technician's in a reply."""
    wanted = [item for item in notice.context.get("_stored_attachments", ()) if item.get("sha256")]
    if not wanted:
        return []
    with _committed(connection):  # a short read transaction: outcomes commit on this connection later
        blobs = attachment_blobs(connection, [str(item["sha256"]) for item in wanted])
    return [
        _attachment(str(item["filename"]) or "attachment", str(item["content_type"]), blobs[str(item["sha256"])])
        for item in wanted
        if str(item["sha256"]) in blobs
    ]


def _attachment(filename: str, content_type: str, data: bytes) -> MailAttachment:
    main, *params = [p.strip() for p in content_type.split(";")]
    pairs = tuple((k.strip(), v.strip()) for k, v in (p.split("=", 1) for p in params if "=" in p))
    return MailAttachment(filename=filename, content_type=main, data=data, params=pairs)


def _outgoing(notice: ClaimedNotice, now: datetime) -> OutgoingMail:
    return OutgoingMail(
        message_id=notice.message_id,
        recipients=notice.recipients,
        date=now,
        cc=notice.cc,
        in_reply_to=notice.in_reply_to,
        references=notice.references,
        auto_submitted=notice.auto_submitted,
        reply_token_case=notice.reply_token_case,
        locale=notice.locale,
        list_unsubscribe=_list_unsubscribe(notice.context.get("_list_unsubscribe")),
    )


def _list_unsubscribe(value: Any) -> str:
    """RFC 2369 List-Unsubscribe from the notice's `_list_unsubscribe` {mailto, url}."""
    if not isinstance(value, dict):
        return ""
    targets = []
    if value.get("url"):
        targets.append(f"<{value['url']}>")
    if value.get("mailto"):
        targets.append(f"<mailto:{value['mailto']}?subject=unsubscribe>")
    return ", ".join(targets)


def _envelope_recipients(notice: ClaimedNotice) -> list[str]:
    return list(dict.fromkeys(address.lower() for address in (*notice.recipients, *notice.cc)))


def _temporary(reason: str) -> SendResult:
    return SendResult(SendOutcome.TEMPORARY, None, reason)


def _record(
    connection: sa.Connection,
    notice: ClaimedNotice,
    result: SendResult,
    now: datetime,
    settings: Settings,
    rng: random.Random,
    *,
    rendered: Rendered | None = None,
    reply_to: str = "",
) -> SendOutcome:
    """Commit one message's outcome on `connection`; returns the outcome as counted (a temporary
    failure on the last allowed attempt counts as permanent)."""
    attempts = notice.attempts + 1
    outcome = result.outcome
    values: dict[str, Any] = {"attempts": attempts, "last_error": result.describe()}
    if outcome is SendOutcome.TEMPORARY and attempts >= settings.outbound.max_attempts:
        outcome = SendOutcome.PERMANENT
        values["last_error"] = f"gave up after {attempts} attempts: {result.describe()}"
    if outcome is SendOutcome.SENT:
        values.update(
            state=OutboxState.SENT.value, sent_at=now, next_attempt_at=None, reply_to=reply_to
        )
    elif outcome is SendOutcome.TEMPORARY:
        delay = retry_delay(
            attempts,
            base_seconds=settings.outbound.retry_base_seconds,
            max_seconds=settings.outbound.retry_max_seconds,
            jitter=rng.random(),
        )
        values.update(state=OutboxState.QUEUED.value, next_attempt_at=now + delay)
    else:
        values.update(state=OutboxState.FAILED.value, next_attempt_at=None)
    with _committed(connection):
        connection.execute(_SET_OUTCOME, {"outbox_id": notice.id, **values})
        if outcome is SendOutcome.SENT and notice.case_id is not None and rendered is not None:
            message = _case_message(notice, rendered, settings, now)
            connection.execute(_INSERT_MESSAGE, _row_values(_MESSAGE, message))
    if outcome is SendOutcome.SENT:
        log.info("outbox %s sent: kind=%s message-id=%s", notice.id, notice.kind, notice.message_id)
    elif outcome is SendOutcome.TEMPORARY:
        log.warning(
            "outbox %s deferred (attempt %d): %s", notice.id, attempts, values["last_error"]
        )
    else:
        log.error("outbox %s failed: %s", notice.id, values["last_error"])
    return outcome


@contextlib.contextmanager
def _committed(connection: sa.Connection) -> Iterator[None]:
    """One short transaction on the batch's connection (BEGIN IMMEDIATE on SQLite, see db.py);
    like `db.transaction`, a database error a retry can fix becomes TransientError."""
    try:
        with connection.begin():
            yield
    except Exception as error:
        if is_transient(error) and not isinstance(error, TransientError):
            raise TransientError(f"database unavailable: {type(error).__name__}") from error
        raise


def _row_values(table: sa.Table, row: Any) -> dict[str, Any]:
    """A model instance as INSERT parameters: every column but a generated primary key."""
    return {
        column.key: getattr(row, column.key)
        for column in table.columns
        if not (column.primary_key and getattr(row, column.key) is None)
    }


def _case_message(
    notice: ClaimedNotice, rendered: Rendered, settings: Settings, now: datetime
) -> Message:
    """The sent message as a row of its case: `cases show` lists it, replies can thread to it."""
    references = list(notice.references)
    if notice.in_reply_to and notice.in_reply_to not in references:
        references.append(notice.in_reply_to)
    return Message(
        case_id=notice.case_id,
        direction=Direction.OUTBOUND,
        message_id=notice.message_id,
        in_reply_to=notice.in_reply_to,
        references=references,
        from_address=settings.outbound.from_address,
        from_name=settings.outbound.from_name,
        to_addresses=list(notice.recipients),
        cc_addresses=list(notice.cc),
        subject=rendered.subject,
        text=rendered.text,
        new_text=rendered.text,
        auto_kind=_AUTO_KIND.get(notice.auto_submitted, AutoKind.HUMAN),
        outbox_id=notice.id,
        received_at=now,
        details={"kind": notice.kind, "template": notice.template},
    )


_AUTO_KIND = {AUTO_REPLIED: AutoKind.AUTO_REPLY, AUTO_GENERATED: AutoKind.AUTO_GENERATED}
