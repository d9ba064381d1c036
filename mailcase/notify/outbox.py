"""Deliver due outbox rows: claim, render, compose, send over one connection, record each outcome; it never decides what to notify.

This module owns delivery's transactions and its leasing policy (when to claim, renew, requeue,
give up); the statements themselves are in `store/outbox.py`.

Delivery guarantees, and the one window we accept (docs/reliability.md has the figures):
* A row is claimed in a short transaction that marks it `sending`, records its holder
  (`claimant()`: host, process id and process start time) and a lease (`outbound.lease_seconds`)
  (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so several daemons sharing one database never claim the
  same row; on SQLite the transaction is `BEGIN IMMEDIATE` and writers are serialised).
* The holder renews the lease on the rows it still has to send as results come in, so a live
  daemon's rows are never taken over however slow the relay; a row is queued again only when its
  lease ran out (its holder died or was cut off) or, at once, when its holder ran on this host and
  that process is gone (a restarted daemon recovers its crashed predecessor's claims). A pass
  claims no more than it can send in half a lease at the pace measured so far (the stored pace
  follows the measured one to within a quarter, `PACE_TOLERANCE`).
* Each message's outcome is committed as soon as the relay answers, before the next message is
  sent. A 250 is committed first and alone, and retried over a new connection if the database
  dropped ours, so a crash between the relay's 250 and that commit is the only way a message is
  sent twice: **at most that one message**, re-sent with its stored Message-ID, so the recipient's
  client shows it as the same message.
* A dropped relay connection makes the transport reconnect and try the message once more; if the
  drop came after the relay had accepted the data, that is the same one-message window.
* Attempts count against a notice only when the relay answered about that message (a 4xx to it);
  they are retried with capped exponential backoff and jitter, and a 5xx, or `max_attempts` such
  answers, marks the row `failed` with the server's reply. When the relay cannot be reached at all
  (connect, greeting, TLS, AUTH), delivery pauses as a whole: the rows go back to the queue
  uncharged, and the next pass after the backoff sends one probe message before the rest.
* A notice still queued `outbound.max_age_hours` after it fell due (default 5 days) expires:
  `failed`, with a `notice_failed` line on its case, as does any other failed case notice.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mailcase import telemetry
from mailcase.config import Settings
from mailcase.domain import AutoKind, OutboxState
from mailcase.errors import TransientError
from mailcase.notify.compose import (
    AUTO_GENERATED,
    AUTO_REPLIED,
    MailAttachment,
    OutgoingMail,
    compose,
    reply_to_address,
)
from mailcase.notify.ics import invitation
from mailcase.notify.render import Rendered, Renderer
from mailcase.notify.transport import Envelope, SendOutcome, SendResult, Transport
from mailcase.store import outbox as store
from mailcase.store.engine import committed, is_transient, sqlite_writer_turn, transaction
from mailcase.store.outbox import ClaimedNotice, RelayPause, SentCopy

log = logging.getLogger(__name__)

T = TypeVar("T")
PACE_TOLERANCE = 0.25
"""A pass between two full ones keeps its measured pace only when it moved by more than this
fraction of the stored one: a batch may then be up to a quarter larger than half a lease allows,
well within the lease, which the holder renews anyway."""
SENT_RECORD_TRIES = 6
"""Tries to commit a relay's 250 (reconnecting between them, ~6 s in all) before giving up; what
is still unrecorded then is the crash window of the module docstring."""


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    requeued: int = 0
    expired: int = 0
    paused: bool = False
    """True when the relay was unreachable: delivery waits for the next probe, no row charged."""


AttachmentSource = Callable[[ClaimedNotice], Sequence[MailAttachment]]
"""Builds a notice's attachments at delivery time (e.g. the .ics of its maintenance window)."""


def retry_delay(attempts: int, *, base_seconds: int, max_seconds: int, jitter: float) -> timedelta:
    """Wait before the next try after `attempts` failed ones: base x 2^(attempts-1), capped, with
    "equal jitter" (half fixed, half random; `jitter` in [0, 1)) so daemons do not retry in step."""
    ceiling = min(float(max_seconds), float(base_seconds) * 2.0 ** max(attempts - 1, 0))
    return timedelta(seconds=ceiling / 2 + jitter * ceiling / 2)


# -- who holds a claim ----------------------------------------------------------------------


def claimant() -> str:
    """This process as its claims record it: `host:pid:start`, the start time (clock ticks since
    boot, /proc/<pid>/stat field 22) telling this process from a later one that reuses its pid."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_process_start(pid)}"


def _process_start(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "?"
    return stat.rsplit(")", 1)[1].split()[19]


def holder_is_dead(holder: str, *, host: str) -> bool:
    """True when `holder` ran on `host` (this machine) and that process is gone. A holder on
    another host cannot be checked from here: its rows wait for their lease to run out."""
    holder_host, _, rest = holder.partition(":")
    pid_text, _, start = rest.partition(":")
    if holder_host != host or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if start == "?":
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    return _process_start(pid) != start


# -- one delivery pass ----------------------------------------------------------------------


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
    clock: Callable[[], datetime] | None = None,
    holder: str | None = None,
    housekeeping: bool = True,
) -> DeliveryReport:
    """Deliver up to `limit` (default `outbound.batch_size`) rows due at `now`.

    See the module docstring for the guarantees. `attachments` adds files at delivery time (the
    .ics of a maintenance notice); `rng` drives the retry jitter (tests pin it); `clock` is read
    to renew the lease while the batch is sent (default: `now` throughout); `holder` names this
    process in its claims (default `claimant()`). Without `housekeeping` the pass skips taking
    back abandoned claims and expiring old notices: the delivery process's passes between two full
    ones, back to back during a burst, where those two write transactions found nothing each time;
    such a pass also writes the measured pace only when it moved (`PACE_TOLERANCE`).
    """
    rng = rng or random.Random()
    holder = holder or claimant()
    outbound = settings.outbound
    lease = timedelta(seconds=outbound.lease_seconds)
    requeued = requeue_abandoned(engine, now=now, holder=holder) if housekeeping else 0
    expired = expire_old(engine, now=now, max_age=timedelta(hours=outbound.max_age_hours)) if housekeeping else 0
    # One connection for the whole pass (the pause, the claim, every outcome, the pace): a pass
    # runs for every few notices during a burst, and each checkout from the pool cost a
    # round trip of its own on PostgreSQL (pool_pre_ping) besides the pool's bookkeeping.
    connection = engine.connect()
    try:
        with committed(connection):
            pause = store.read_relay_pause(connection)
            paused = pause.until is not None and now < pause.until
            probing = pause.until is not None
            size = 1 if probing else min(limit or outbound.batch_size, batch_capacity(pause.seconds_per_message, lease))
            claimed = [] if paused else store.claim_due(
                connection, now=now, limit=size, holder=holder, lease_until=now + lease
            )  # fmt: skip
    except BaseException:
        connection.close()
        raise
    if paused or not claimed:
        connection.close()
        return DeliveryReport(requeued=requeued, expired=expired, paused=paused)
    counts = {SendOutcome.SENT: 0, SendOutcome.TEMPORARY: 0, SendOutcome.PERMANENT: 0}
    batch = _Batch(
        engine, connection, claimed, counts, now=now, clock=clock or (lambda: now), holder=holder,
        lease=lease, settings=settings, rng=rng,
    )  # fmt: skip
    started = time.monotonic()
    try:
        batch.deliver(
            transport=transport, renderer=renderer, secret=secret,
            attachments=attachments or context_attachments,
        )  # fmt: skip
        if batch.unreachable is None:
            if probing:
                log.warning("outbound relay reachable again: delivery resumes")
            sent_over_wire = batch.sent_over_wire
            seconds = (time.monotonic() - started) / sent_over_wire if sent_over_wire else None
            _after_batch(batch, probing=probing, seconds_per_message=seconds, previous=pause.seconds_per_message,
                         always=housekeeping)  # fmt: skip
    finally:
        batch.close()
    if batch.unreachable is not None:
        _pause_delivery(engine, now=now, settings=settings, rng=rng, passes=pause.passes + 1,
                        reason=batch.unreachable)  # fmt: skip
    return DeliveryReport(
        sent=counts[SendOutcome.SENT],
        retried=counts[SendOutcome.TEMPORARY],
        failed=counts[SendOutcome.PERMANENT],
        requeued=requeued,
        expired=expired,
        paused=batch.unreachable is not None,
    )


def batch_capacity(seconds_per_message: float | None, lease: timedelta) -> int:
    """How many notices one pass may claim: what it can send in half a lease at the pace measured
    so far, so that a crash strands no more than that (and at least one)."""
    if not seconds_per_message or seconds_per_message <= 0:
        return 2**31
    return max(1, int(lease.total_seconds() / 2 / seconds_per_message))


class _LeaseLost(Exception):
    """Another daemon took over rows of this batch (our lease ran out): stop sending them."""


class _CopyRefused(Exception):
    """The database refused the case's copy of a sent notice (not a transient error)."""


class _Batch:
    """One claimed batch being sent: its database connection (replaced if it drops), the rows it
    still holds, and the lease it renews as results come in."""

    def __init__(
        self,
        engine: Engine,
        connection: sa.Connection,
        claimed: Sequence[ClaimedNotice],
        counts: dict[SendOutcome, int],
        *,
        now: datetime,
        clock: Callable[[], datetime],
        holder: str,
        lease: timedelta,
        settings: Settings,
        rng: random.Random,
    ) -> None:
        self.engine = engine
        self.claimed = claimed
        self.counts = counts
        self.now = now
        self.clock = clock
        self.holder = holder
        self.lease = lease
        self.settings = settings
        self.rng = rng
        self.connection = connection
        self.renewed_at = now
        self.unreachable: str | None = None
        self.sent_over_wire = 0

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.connection.close()

    def deliver(
        self,
        *,
        transport: Transport,
        renderer: Renderer,
        secret: bytes,
        attachments: AttachmentSource,
    ) -> None:
        """Render and compose every claimed notice, send them over one transport batch, and commit
        each outcome as soon as it is known; adds the outcomes to `counts`."""
        settings, now = self.settings, self.now
        outbound = settings.outbound
        prepared: list[tuple[ClaimedNotice, Rendered, str]] = []
        envelopes: list[Envelope] = []
        # A case's notice to each technician of a team is the same template with the same values
        # (only the recipient and the reply token differ): rendered once per pass, not per person.
        renders: dict[tuple[str, str, int | None], tuple[Mapping[str, Any], Rendered]] = {}
        for notice in self.claimed:
            try:
                key = (notice.template, notice.locale, notice.case_id)
                earlier = renders.get(key)
                if earlier is not None and earlier[0] == notice.template_context:
                    rendered = earlier[1]
                else:
                    rendered = renderer.render(notice.template, notice.locale, notice.template_context)
                    renders[key] = (notice.template_context, rendered)
                reply_to = reply_to_address(
                    settings.smtp.support_address, notice.reply_token_case, notice.reply_token_staff, secret
                )
                message = compose(
                    _outgoing(notice, now, reply_to),
                    rendered,
                    from_address=outbound.from_address,
                    from_name=outbound.from_name,
                    support_address=settings.smtp.support_address,
                    secret=secret,
                    attachments=[*attachments(notice), *_stored_files(self.connection, notice)],
                )
            except TransientError as error:
                log.warning("outbox %s: cannot prepare now, will retry: %s", notice.id, error)
                self.record(notice, _temporary(str(error)))
                continue
            except Exception as error:  # our bug (template, context): retrying cannot help
                log.error(
                    "outbox %s: cannot render %s: %s", notice.id, notice.template, error, exc_info=True
                )
                failure = SendResult(
                    SendOutcome.PERMANENT, None, f"render failed: {type(error).__name__}: {error}"
                )
                self.record(notice, failure)
                continue
            prepared.append((notice, rendered, reply_to))
            envelopes.append((message, outbound.from_address, _envelope_recipients(notice)))

        recorded: set[int] = set()

        def on_result(index: int, result: SendResult) -> None:
            notice, rendered, reply_to = prepared[index]
            if not result.unreachable:
                self.sent_over_wire += 1
            self.record(notice, result, rendered=rendered, reply_to=reply_to)
            recorded.add(index)
            if self.clock() - self.renewed_at >= self.lease / 8:  # else renew() would do nothing
                self.renew([n.id for i, (n, _r, _t) in enumerate(prepared) if i not in recorded])

        try:
            if envelopes:
                results = transport.send(envelopes, on_result=on_result)
                # A transport that only returns its results (no callback) is recorded here.
                for index, result in enumerate(results[: len(prepared)]):
                    if index not in recorded:
                        on_result(index, result)
        except _LeaseLost:
            log.warning("outbox: lease lost mid-batch; the daemon that took the rows over sends them")
        finally:
            # The transport raised part-way: whatever it did not report goes back to the queue
            # (only the rows we still hold: a lost lease leaves them to their new holder).
            for index, (notice, _rendered, _reply_to) in enumerate(prepared):
                if index not in recorded:
                    with contextlib.suppress(TransientError):
                        self.record(notice, _temporary("delivery interrupted"))

    def renew(self, ids: Sequence[int]) -> None:
        """Extend the lease on the rows still to be sent, at most every eighth of a lease; raises
        `_LeaseLost` when some of them are no longer ours."""
        current = self.clock()
        if not ids or current - self.renewed_at < self.lease / 8:
            return
        until = current + self.lease
        renewed = self.commit(lambda c: store.renew_lease(c, ids=ids, holder=self.holder, until=until), tries=2)
        self.renewed_at = current
        if renewed < len(ids):
            raise _LeaseLost()

    def commit(self, work: Callable[[sa.Connection], T], *, tries: int = 1) -> T:
        """Run `work` in one short transaction; a dropped connection is replaced and the work
        tried again, up to `tries` times in all (with a short pause between)."""
        for attempt in range(1, tries + 1):
            try:
                with committed(self.connection):
                    return work(self.connection)
            except TransientError:
                if attempt >= tries:
                    raise
                self._reconnect()
                time.sleep(min(0.1 * 2**attempt, 2.0))
        raise AssertionError("unreachable")  # pragma: no cover

    def _reconnect(self) -> None:
        with contextlib.suppress(Exception):
            self.connection.invalidate()
        with contextlib.suppress(Exception):
            self.connection.close()
        try:
            self.connection = self.engine.connect()
        except Exception as error:
            if is_transient(error):
                return  # the next try fails fast and tries again
            raise

    def record(
        self,
        notice: ClaimedNotice,
        result: SendResult,
        *,
        rendered: Rendered | None = None,
        reply_to: str = "",
    ) -> None:
        """Commit one message's outcome and count it (a temporary failure on the last allowed
        attempt counts as permanent).

        A 250 is committed with the case's copy of the message (alone when the database refuses
        the copy), retried over a fresh connection if the database dropped ours, so nothing after
        it (a refused copy, a lease renewal) can make it be sent again. Attempts are charged only
        when the relay answered about this message; an unreachable relay pauses the whole of
        delivery instead (`unreachable`).
        """
        settings, now = self.settings, self.now
        outcome = result.outcome
        charged = result.about_message or outcome is SendOutcome.PERMANENT
        attempts = notice.attempts + 1 if charged else notice.attempts
        values: dict[str, Any] = {"attempts": attempts, "last_error": result.describe()}
        if outcome is SendOutcome.TEMPORARY and charged and attempts >= settings.outbound.max_attempts:
            outcome = SendOutcome.PERMANENT
            values["last_error"] = f"gave up after {attempts} attempts: {result.describe()}"
        if result.unreachable and self.unreachable is None:
            self.unreachable = result.describe()
        telemetry.count_delivery(notice.kind, "unreachable" if result.unreachable else result.outcome.value,
                                 result.code, outcome.value)  # fmt: skip
        if outcome is SendOutcome.SENT:
            values.update(
                state=OutboxState.SENT.value, sent_at=now, next_attempt_at=None, reply_to=reply_to,
                lease_until=None,
            )  # fmt: skip
            copy = _sent_copy(notice, rendered, settings) if notice.case_id is not None and rendered is not None else None

            def sent_alone(connection: sa.Connection) -> None:
                store.record_sent(connection, notice_id=notice.id, values=values)

            def sent(connection: sa.Connection) -> None:
                sent_alone(connection)
                if copy is None:
                    return
                # The case's copy in the same commit (one commit per notice, not two: on
                # PostgreSQL each waits for a WAL flush). A lost connection fails both and the
                # whole is tried again, like the 250 alone.
                try:
                    store.record_sent_copy(connection, notice=notice, copy=copy, now=now)
                except Exception as error:
                    if is_transient(error):
                        raise
                    raise _CopyRefused(str(error)) from error

            try:
                self.commit(sent, tries=SENT_RECORD_TRIES)
            except _CopyRefused as refused:
                # A copy the database refuses never undoes the 250's record: that is committed
                # alone instead. No savepoint around every copy for this rare case: on PostgreSQL
                # its SAVEPOINT and RELEASE were two of the six round trips of every sent notice.
                log.error("outbox %s sent, but its copy on the case was not stored: %s", notice.id, refused)
                self.commit(sent_alone, tries=SENT_RECORD_TRIES)
            log.info("outbox %s sent: kind=%s message-id=%s", notice.id, notice.kind, notice.message_id)
            self.counts[outcome] += 1
            return
        if outcome is SendOutcome.TEMPORARY:
            delay = retry_delay(
                max(attempts, 1),
                base_seconds=settings.outbound.retry_base_seconds,
                max_seconds=settings.outbound.retry_max_seconds,
                jitter=self.rng.random(),
            )
            # Unreachable: due again at once; the pause, not the row, decides when it goes.
            due = now if result.unreachable else now + delay
            values.update(state=OutboxState.QUEUED.value, next_attempt_at=due, claimed_by="", lease_until=None)
        else:
            values.update(state=OutboxState.FAILED.value, next_attempt_at=None, lease_until=None)

        def write(connection: sa.Connection) -> None:
            changed = store.record_if_held(connection, notice_id=notice.id, holder=self.holder, values=values)
            if changed and outcome is SendOutcome.PERMANENT:
                store.note_failed_notice(connection, notice=notice, reason=str(values["last_error"]), now=now)

        self.commit(write, tries=2)
        if outcome is SendOutcome.TEMPORARY:
            if result.unreachable:
                log.debug("outbox %s waits for the relay: %s", notice.id, values["last_error"])
            else:
                log.warning("outbox %s deferred (attempt %d): %s", notice.id, attempts, values["last_error"])
        else:
            log.error("outbox %s failed: %s", notice.id, values["last_error"])
        self.counts[outcome] += 1


def requeue_abandoned(engine: Engine, *, now: datetime, holder: str) -> int:
    """Give rows back to the queue whose holder is gone: a lease that ran out (its holder stopped
    renewing it: dead, or cut off), or a holder on this host whose process no longer exists (a
    restarted daemon recovers its crashed predecessor's claims at once, not a lease later)."""
    host = holder.partition(":")[0]
    with sqlite_writer_turn(engine), transaction(engine) as session:
        holders = store.sending_holders(session=session, other_than=holder)
        dead = [h for h in holders if h and holder_is_dead(h, host=host)]
        count = store.requeue_abandoned(session=session, now=now, dead_holders=dead)
    if count:
        log.warning(
            "outbox: %d rows held by a stopped daemon are queued again (%s)",
            count, ", ".join(dead) if dead else "lease ran out",
        )  # fmt: skip
    return count


def expire_old(engine: Engine, *, now: datetime, max_age: timedelta) -> int:
    """Fail queued notices due longer than `max_age` ago (`outbound.max_age_hours`), each with a
    line on its case, like an MTA giving up at its queue lifetime."""
    cutoff = now - max_age
    with sqlite_writer_turn(engine), transaction(engine) as session:
        rows = store.queued_before(session=session, cutoff=cutoff, limit=500)
        hours = int(max_age.total_seconds() // 3600)
        connection = session.connection()
        for row in rows:
            reason = f"expired: undelivered {hours} h after it was due" + (
                f"; last error: {row.last_error}" if row.last_error else ""
            )
            store.fail_notice(session=session, notice_id=row.notice.id, reason=reason)
            store.note_failed_notice(connection, notice=row.notice, reason=reason, now=now)
            log.error("outbox %s failed: %s", row.notice.id, reason)
    return len(rows)


# -- the relay pause ------------------------------------------------------------------------


def relay_pause(engine: Engine) -> RelayPause:
    with engine.connect() as connection:
        return store.read_relay_pause(connection)


def _pause_delivery(
    engine: Engine, *, now: datetime, settings: Settings, rng: random.Random, passes: int, reason: str
) -> None:
    """The relay is unreachable: no notice is tried until one probe, backing off as an attempt
    would (`retry_base_seconds` doubling up to `retry_max_seconds`)."""
    delay = retry_delay(
        passes,
        base_seconds=settings.outbound.retry_base_seconds,
        max_seconds=settings.outbound.retry_max_seconds,
        jitter=rng.random(),
    )
    until = now + delay
    with sqlite_writer_turn(engine), transaction(engine) as session:
        store.pause_relay(session.connection(), until=until, passes=passes, reason=reason)
    log.warning(
        "outbound relay unreachable (%s): delivery paused, next probe at %s (pass %d); no notice charged",
        reason, until.isoformat(timespec="seconds"), passes,
    )  # fmt: skip


def _after_batch(
    batch: _Batch, *, probing: bool, seconds_per_message: float | None, previous: float | None, always: bool
) -> None:
    """Lift the pause after a probe the relay answered, and keep the pace measured (a running
    average). Between two full passes (`always` false) the pace is written only when it moved by
    more than PACE_TOLERANCE: on SQLite every write takes the one writer's turn from ingest."""
    pace = None
    if seconds_per_message is not None:
        pace = seconds_per_message if previous is None else (previous + seconds_per_message) / 2
        if previous is not None and not always and abs(pace - previous) <= previous * PACE_TOLERANCE:
            pace = None
    if probing or pace is not None:
        batch.commit(lambda c: store.record_batch(c, resume=probing, seconds_per_message=pace))


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
    with committed(connection):  # a short read transaction: outcomes commit on this connection later
        blobs = store.attachment_blobs(connection, [str(item["sha256"]) for item in wanted])
    return [
        _attachment(str(item["filename"]) or "attachment", str(item["content_type"]), blobs[str(item["sha256"])])
        for item in wanted
        if str(item["sha256"]) in blobs
    ]


def _attachment(filename: str, content_type: str, data: bytes) -> MailAttachment:
    main, *params = [p.strip() for p in content_type.split(";")]
    pairs = tuple((k.strip(), v.strip()) for k, v in (p.split("=", 1) for p in params if "=" in p))
    return MailAttachment(filename=filename, content_type=main, data=data, params=pairs)


def _outgoing(notice: ClaimedNotice, now: datetime, reply_to: str) -> OutgoingMail:
    return OutgoingMail(
        message_id=notice.message_id,
        recipients=notice.recipients,
        date=now,
        cc=notice.cc,
        in_reply_to=notice.in_reply_to,
        references=notice.references,
        auto_submitted=notice.auto_submitted,
        reply_token_case=notice.reply_token_case,
        reply_token_staff=notice.reply_token_staff,
        locale=notice.locale,
        list_unsubscribe=_list_unsubscribe(notice.context.get("_list_unsubscribe")),
        reply_to=reply_to,
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


def _sent_copy(notice: ClaimedNotice, rendered: Rendered, settings: Settings) -> SentCopy:
    """What the case's copy of a sent notice shows: its rendered text, from our outbound address."""
    return SentCopy(
        subject=rendered.subject,
        text=rendered.text,
        from_address=settings.outbound.from_address,
        from_name=settings.outbound.from_name,
        auto_kind=_AUTO_KIND.get(notice.auto_submitted, AutoKind.HUMAN),
    )


_AUTO_KIND = {AUTO_REPLIED: AutoKind.AUTO_REPLY, AUTO_GENERATED: AutoKind.AUTO_GENERATED}
