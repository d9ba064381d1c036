"""Maintenance windows in the database: create, plan, list, cancel, reschedule, and who was already told;
functions take `session=` and never commit, never decide which notices are due (that is `rules.maintenance`).

A window's iCalendar UID (`mw-<id or plan key>@<hostname>`) is fixed at creation and never changes,
so every notice about one window updates the same calendar entry (RFC 5546 §2.1.4); `sequence`
only goes up.
"""

from __future__ import annotations

import re
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from mailcase.domain import MaintenanceKind, MaintenanceStatus, OutboxState, PlannedWindow
from mailcase.errors import UsageError
from mailcase.store.common import insert_or_ignore, table_of
from mailcase.store.models import (
    Contact,
    MaintenanceProduct,
    MaintenanceWindow,
    Organisation,
    Outbox,
    Product,
)

__all__ = [
    "ToldRecipient",
    "already_told",
    "cancel_window",
    "create_window",
    "due_windows",
    "get_window",
    "list_windows",
    "plan_window",
    "product_ids",
    "reschedule_window",
    "window_products",
    "window_uid",
]

_UID_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True, slots=True)
class ToldRecipient:
    """Someone who already received a notice about a window, with how to write to them again."""

    address: str
    locale: str
    timezone: str


def window_uid(key: str | int, hostname: str) -> str:
    """`mw-<key>@<hostname>`: the window's iCalendar UID (RFC 5545 §3.8.4.7: globally unique,
    hence our hostname on the right-hand side)."""
    cleaned = _UID_UNSAFE.sub("-", str(key)).strip("-") or "window"
    return f"mw-{cleaned}@{hostname}"


def product_ids(names: Iterable[str], *, session: Session) -> dict[str, int]:
    """Directory product ids by the names given; an unknown name is a UsageError naming it.

    Names match exactly, else case-insensitively, so `microsoft teams` finds "Microsoft Teams".
    """
    wanted = [n.strip() for n in names if n.strip()]
    if not wanted:
        raise UsageError("a maintenance window needs at least one affected product")
    # A stored row always has its id (the model's `int | None` is for objects not yet inserted).
    rows = [(pid, name) for pid, name in session.exec(select(Product.id, Product.name)) if pid is not None]
    exact = {name: pid for pid, name in rows}
    folded = {name.casefold(): (pid, name) for pid, name in rows}
    found: dict[str, int] = {}
    for name in wanted:
        if name in exact:
            found[name] = exact[name]
        elif name.casefold() in folded:
            pid, canonical = folded[name.casefold()]
            found[canonical] = pid
        else:
            known = ", ".join(sorted(exact)) or "none"
            raise UsageError(f"unknown product {name!r} (products in the directory: {known})")
    return found


def _check_times(start: datetime, end: datetime) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise UsageError("window start and end need a UTC offset")
    if end <= start:
        raise UsageError(f"the window ends ({end.isoformat()}) before it starts ({start.isoformat()})")


def _add_products(window_id: int, ids: Iterable[int], *, session: Session) -> None:
    for product_id in sorted(set(ids)):
        insert_or_ignore(
            session,
            table_of(MaintenanceProduct),
            {"window_id": window_id, "product_id": product_id},
            conflict=["window_id", "product_id"],
        )


def create_window(
    *,
    session: Session,
    now: datetime,
    kind: MaintenanceKind,
    start: datetime,
    end: datetime,
    products: Sequence[str],
    description: str,
    justification: str,
    hostname: str,
    next_due_at: datetime | None,
) -> MaintenanceWindow:
    """A new window (status planned, sequence 0) affecting `products`; its UID is `mw-<id>@<hostname>`."""
    _check_times(start, end)
    ids = product_ids(products, session=session)
    window = MaintenanceWindow(
        # A placeholder unique until the id is known (the UID is derived from it just below).
        uid=f"pending-{uuid.uuid4().hex}@{hostname}",
        kind=MaintenanceKind(kind),
        start=start,
        end=end,
        description=description.strip(),
        justification=justification.strip(),
        status=MaintenanceStatus.PLANNED,
        sequence=0,
        created_at=now,
        updated_at=now,
        next_due_at=next_due_at,
    )
    session.add(window)
    session.flush()
    assert window.id is not None
    window.uid = window_uid(window.id, hostname)
    session.add(window)
    _add_products(window.id, ids.values(), session=session)
    session.flush()
    return window


def plan_window(
    *,
    session: Session,
    now: datetime,
    planned: PlannedWindow,
    products: Sequence[str],
    description: str,
    justification: str,
    hostname: str,
    next_due_at: datetime | None,
) -> int | None:
    """Insert a planned window unless its `plan_key` exists (insert-or-ignore, never check-then-insert).

    Returns the new window's id, or None when the plan already had it (even if it was cancelled
    since: planning again never brings a cancelled window back).
    """
    _check_times(planned.start, planned.end)
    ids = product_ids(products, session=session)
    window_id = insert_or_ignore(
        session,
        table_of(MaintenanceWindow),
        {
            "uid": window_uid(planned.plan_key, hostname),
            "kind": MaintenanceKind(planned.kind).value,
            "start": planned.start,
            "end": planned.end,
            "description": description.strip(),
            "justification": justification.strip(),
            "status": MaintenanceStatus.PLANNED.value,
            "sequence": 0,
            "plan_key": planned.plan_key,
            "created_at": now,
            "updated_at": now,
            "next_due_at": next_due_at,
        },
        conflict=["plan_key"],
    )
    if window_id is None:
        return None
    _add_products(int(window_id), ids.values(), session=session)
    return int(window_id)


def get_window(*, session: Session, window_id: int, lock: bool = False) -> MaintenanceWindow:
    statement = select(MaintenanceWindow).where(MaintenanceWindow.id == window_id)
    if lock:
        statement = statement.with_for_update()
    window = session.exec(statement).first()
    if window is None:
        raise UsageError(f"no maintenance window {window_id}")
    return window


def list_windows(
    *,
    session: Session,
    ending_after: datetime | None = None,
    include_cancelled: bool = True,
) -> list[MaintenanceWindow]:
    """Windows by start time; `ending_after` keeps only those not over by then."""
    statement = select(MaintenanceWindow)
    if ending_after is not None:
        statement = statement.where(col(MaintenanceWindow.end) > ending_after)
    if not include_cancelled:
        statement = statement.where(MaintenanceWindow.status != MaintenanceStatus.CANCELLED)
    statement = statement.order_by(col(MaintenanceWindow.start), col(MaintenanceWindow.id))
    return list(session.exec(statement))


def window_products(*, session: Session, window_ids: Iterable[int]) -> dict[int, list[str]]:
    """Product names of each window, sorted by name."""
    ids = list(set(window_ids))
    found: dict[int, list[str]] = defaultdict(list)
    if not ids:
        return found
    rows = session.exec(
        select(MaintenanceProduct.window_id, Product.name)
        .join(Product, col(Product.id) == col(MaintenanceProduct.product_id))
        .where(col(MaintenanceProduct.window_id).in_(ids))
        .order_by(col(Product.name))
    )
    for window_id, name in rows:
        found[window_id].append(name)
    return found


def due_windows(*, session: Session, now: datetime, limit: int, skip_locked: bool) -> list[MaintenanceWindow]:
    """Windows whose next notice is due, by the indexed `next_due_at` (cost: what is due, not what exists).

    With `skip_locked` (PostgreSQL) rows another daemon is working on are skipped (FOR UPDATE
    SKIP LOCKED), so several daemons share the sweep without sending anything twice.
    """
    statement = (
        select(MaintenanceWindow)
        .where(col(MaintenanceWindow.next_due_at) <= now)
        .order_by(col(MaintenanceWindow.next_due_at), col(MaintenanceWindow.id))
        .limit(limit)
    )
    if skip_locked:
        statement = statement.with_for_update(skip_locked=True)
    return list(session.exec(statement))


def cancel_window(*, session: Session, window: MaintenanceWindow, now: datetime) -> None:
    """Mark cancelled, SEQUENCE + 1 (RFC 5545 §3.8.7.4), and stop its scheduled notices."""
    if window.status == MaintenanceStatus.CANCELLED:
        raise UsageError(f"maintenance window {window.id} is already cancelled")
    window.status = MaintenanceStatus.CANCELLED
    window.sequence += 1
    window.next_due_at = None
    window.updated_at = now
    session.add(window)


def reschedule_window(
    *, session: Session, window: MaintenanceWindow, start: datetime, end: datetime, now: datetime
) -> None:
    """Move a window, SEQUENCE + 1; the caller recomputes `next_due_at` from the new times."""
    if window.status == MaintenanceStatus.CANCELLED:
        raise UsageError(f"maintenance window {window.id} is cancelled; add a new one instead")
    _check_times(start, end)
    if start == window.start and end == window.end:
        raise UsageError(f"maintenance window {window.id} already runs at these times")
    window.start = start
    window.end = end
    window.sequence += 1
    window.updated_at = now
    session.add(window)


def already_told(*, session: Session, window_id: int, default_timezone: str) -> list[ToldRecipient]:
    """Everyone an outbox row (not cancelled) addressed about this window, each address once.

    The language is the one they were written in; the time zone is their organisation's now
    (or `default_timezone` for an address no longer in the directory).
    """
    rows = session.exec(
        select(Outbox.recipients, Outbox.locale)
        .where(Outbox.maintenance_id == window_id, Outbox.state != OutboxState.CANCELLED)
        .order_by(col(Outbox.id))
    )
    locales: dict[str, str] = {}
    for recipients, locale in rows:
        for address in recipients:
            locales.setdefault(address.lower(), locale)
    zones = _timezones_of(list(locales), session=session)
    return [
        ToldRecipient(address=a, locale=loc, timezone=zones.get(a, default_timezone))
        for a, loc in locales.items()
    ]


def _timezones_of(addresses: Sequence[str], *, session: Session, chunk: int = 500) -> dict[str, str]:
    zones: dict[str, str] = {}
    for i in range(0, len(addresses), chunk):
        part = addresses[i : i + chunk]
        rows = session.exec(
            select(Contact.email, Organisation.timezone)
            .join(Organisation, col(Organisation.id) == col(Contact.organisation_id))
            .where(sa.func.lower(Contact.email).in_(part))
        )
        zones.update({email.lower(): zone for email, zone in rows})
    return zones
