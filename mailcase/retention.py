"""The retention purge as a unit of work (`mailcase purge` and serve's daily job): batches of one
transaction each, an audit entry, a log line; what is old enough is decided by `[retention]` and
the SQL lives in `store.retention`. It never touches a case, a message's text or its history."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine

from mailcase.config import Settings
from mailcase.store.audit import record_action
from mailcase.store.engine import sqlite_writer_turn, transaction
from mailcase.store.retention import (
    WARNING_DAYS,
    PurgeCounts,
    cutoffs,
    purge_attachments,
    purge_held,
    purge_raw,
)

log = logging.getLogger(__name__)

BATCH = 500
"""Rows per transaction: a year of mail is purged without holding SQLite's write lock for long."""


def purge(engine: Engine, settings: Settings, now: datetime, *, actor: str, dry_run: bool = False) -> PurgeCounts:
    """Purge what `[retention]` says is past its window as of `now`; with `dry_run`, only count.

    Rules, in order: held messages still held past `held_days` (with a digest address, only a week
    or more after the digest named them); raw bytes past `raw_days` (not of messages still held);
    attachment bodies whose every message is past `raw_days`. Records one audit entry by `actor`.
    """
    retention = settings.retention
    raw_before, held_before = cutoffs(now, raw_days=retention.raw_days, held_days=retention.held_days)
    warned_by = now - timedelta(days=WARNING_DAYS) if settings.held.digest_address else None
    if dry_run:
        with transaction(engine) as session:
            return (
                purge_held(session=session, now=now, received_before=held_before, warned_by=warned_by,
                           actor=actor, limit=None, dry_run=True)
                + purge_raw(session=session, now=now, received_before=raw_before, limit=None, dry_run=True)
                + purge_attachments(session=session, now=now, received_before=raw_before, limit=None, dry_run=True)
            )
    total = PurgeCounts()
    for step in ("held", "raw", "attachments"):
        while True:
            with sqlite_writer_turn(engine), transaction(engine) as session:
                if step == "held":
                    done = purge_held(session=session, now=now, received_before=held_before, warned_by=warned_by,
                                      actor=actor, limit=BATCH)
                    rows = done.held
                elif step == "raw":
                    done = purge_raw(session=session, now=now, received_before=raw_before, limit=BATCH)
                    rows = done.raw_messages
                else:
                    done = purge_attachments(session=session, now=now, received_before=raw_before, limit=BATCH)
                    rows = done.attachments
            total += done
            if rows < BATCH:
                break
    with transaction(engine) as session:
        record_action(session=session, at=now, actor=actor, action="purge", summary=describe(total))
    if total.total:
        # Never silent: what went, in the log as in the audit ledger.
        log.warning("retention purge by %s: %s", actor, describe(total))
    return total


def describe(counts: PurgeCounts) -> str:
    return (
        f"{counts.held} held message(s) purged, raw bytes of {counts.raw_messages} message(s) deleted "
        f"({counts.raw_bytes} bytes), {counts.attachments} attachment(s) deleted ({counts.attachment_bytes} bytes)"
    )
