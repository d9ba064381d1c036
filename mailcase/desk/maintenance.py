"""Maintenance windows: adding, planning, rescheduling and cancelling them, and the sweep that fans their notices
out, as one outbox row per recipient in the caller's (or the sweep's) transaction.

Which notice is due when comes from `rules.maintenance`; who hears it from the directory and the
subscriptions. Nothing here sends mail or renders templates: outbox rows carry plain context, the
values of the window's calendar invitation (`_calendar`, written as `.ics` at delivery) and the
one-click unsubscribe address (`_list_unsubscribe`), and `notify` delivers them. Every row's idempotency key names the notice and the recipient, so a
sweep run twice, or on two daemons at once, queues each message once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from mailcase.desk.context import Desk
from mailcase.desk.notices import recipient_key as _key
from mailcase.domain import MaintenanceKind, MaintenanceStatus, NotificationIntent
from mailcase.errors import UsageError
from mailcase.rules.maintenance import (
    DESK_TIMEZONE,
    NoticeStage,
    NoticeStageName,
    WindowChange,
    change_notice,
    connect_windows,
    due_stages,
    monthly_windows,
    next_stage_at,
    notice_schedule,
    stage_key,
    window_display,
)
from mailcase.rules.tokens import MAINTENANCE_SCOPE, list_unsubscribe
from mailcase.store import maintenance as windows_store
from mailcase.store.directory import (
    Recipient,
    maintenance_contacts_for_products,
    products_of_organisations,
)
from mailcase.store.engine import is_postgres, transaction
from mailcase.store.models import MaintenanceWindow, Product
from mailcase.store.outbox import enqueue
from mailcase.store.subscriptions import OPTOUT_MAINTENANCE, addresses_for

log = logging.getLogger(__name__)

MAINTENANCE_TEMPLATE = "customer.maintenance"
FANOUT_CHUNK = 500  # outbox rows per transaction when a notice goes to many recipients
FANOUT_LEASE = timedelta(minutes=10)  # how long a daemon keeps a window it is fanning out

# What the monthly plan writes when the operator gives no text (SPEC.md §1: every notice states a
# short description of the work and a short justification).
PLAN_TEXT = {
    MaintenanceKind.SCHEDULED: (
        "Monthly scheduled maintenance: software updates and patching of the platform.",
        "Keeps the platform secure, stable and on supported software.",
    ),
    MaintenanceKind.CONNECT: (
        "Connect platform update.",
        "Regular three-weekly release of fixes and improvements.",
    ),
}

# The template names the first notice of every kind "ahead" (its text says "unscheduled" for an
# unscheduled window); the rules call an unscheduled window's first notice "announce".
TEMPLATE_STAGE = {
    NoticeStageName.AHEAD: "ahead",
    NoticeStageName.ANNOUNCE: "ahead",
    NoticeStageName.START: "start",
    NoticeStageName.END: "end",
}


# =============================================================================================
# Maintenance windows


@dataclass(frozen=True, slots=True)
class _Audience:
    """One maintenance recipient: where to write, in which language, in which zone."""

    address: str
    locale: str
    timezone: str
    # The affected products this recipient's organisation uses (empty: name every affected one).
    products: tuple[str, ...] = ()


def schedule_of(window: MaintenanceWindow, desk: Desk) -> tuple[NoticeStage, ...]:
    settings = desk.maintenance
    return notice_schedule(
        MaintenanceKind(window.kind),
        window.start,
        window.end,
        window.created_at,
        scheduled_notice_days=settings.scheduled_notice_days,
        connect_notice_hours=settings.connect_notice_hours,
    )


def _first_due(window: MaintenanceWindow, desk: Desk) -> datetime | None:
    schedule = schedule_of(window, desk)
    return min((s.at for s in schedule), default=None)


def add_window(
    session: Session,
    desk: Desk,
    *,
    kind: MaintenanceKind,
    start: datetime,
    end: datetime,
    products: Sequence[str],
    description: str,
    justification: str,
    now: datetime,
) -> MaintenanceWindow:
    """A new window, due for its first notice when the rules say (an unscheduled one: right now).

    Call `sweep_window` after committing to queue an unscheduled window's announcement at once.
    """
    if not description.strip():
        raise UsageError("a maintenance window needs a description of the work")
    if not justification.strip():
        raise UsageError("a maintenance window needs a justification")
    if end <= now:
        raise UsageError("the window is already over")
    window = windows_store.create_window(
        session=session,
        now=now,
        kind=kind,
        start=start,
        end=end,
        products=products,
        description=description,
        justification=justification,
        hostname=desk.hostname,
        next_due_at=None,
    )
    window.next_due_at = _first_due(window, desk)
    session.add(window)
    return window


@dataclass
class PlanReport:
    created: list[int] = field(default_factory=list)
    existing: int = 0
    from_date: date | None = None
    until_date: date | None = None


def plan_windows(
    session: Session,
    desk: Desk,
    *,
    months: int,
    now: datetime,
    products: Sequence[str] | None = None,
    connect_products: Sequence[str] | None = None,
) -> PlanReport:
    """The monthly scheduled windows of `months` months from today (desk time zone) and the Connect
    updates of the same horizon, each created once (insert-or-ignore by plan key).

    Windows already over are not created. Products default to every product in the directory.
    """
    if months < 1:
        raise UsageError("--months must be 1 or more")
    tz = desk.timezone
    today = now.astimezone(ZoneInfo(tz)).date()
    year, month = today.year, today.month + months - 1
    year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
    next_month = date(year + (month == 12), month % 12 + 1, 1)
    until = next_month - timedelta(days=1)
    every = list(session.exec(select(Product.name).order_by(col(Product.name))))
    chosen = list(products) if products else every
    connect_chosen = list(connect_products) if connect_products else chosen
    if not chosen:
        raise UsageError("the directory lists no products; import it first (mailcase directory import)")
    anchor = date.fromisoformat(desk.maintenance.connect_anchor)
    planned = [
        *((w, chosen) for w in monthly_windows(today, months, tz)),
        *((w, connect_chosen) for w in connect_windows(anchor, today, until, tz)),
    ]
    report = PlanReport(from_date=today, until_date=until)
    for window, names in sorted(planned, key=lambda item: item[0].start):
        if window.end <= now:
            continue
        description, justification = PLAN_TEXT[window.kind]
        schedule = notice_schedule(
            window.kind,
            window.start,
            window.end,
            now,
            scheduled_notice_days=desk.maintenance.scheduled_notice_days,
            connect_notice_hours=desk.maintenance.connect_notice_hours,
        )
        new_id = windows_store.plan_window(
            session=session,
            now=now,
            planned=window,
            products=names,
            description=description,
            justification=justification,
            hostname=desk.hostname,
            next_due_at=min((s.at for s in schedule), default=None),
        )
        if new_id is None:
            report.existing += 1
        else:
            report.created.append(new_id)
    return report


def sweep_maintenance(engine: Engine, desk: Desk, now: datetime, *, batch: int = 100) -> int:
    """Every window whose indexed `next_due_at` has come: queue its due notice to every recipient, then
    move `next_due_at` to its next stage (see `_sweep_one`: claimed with FOR UPDATE SKIP LOCKED on
    PostgreSQL, queued in short chunked transactions). Returns the outbox rows queued."""
    queued = 0
    seen: set[int] = set()
    while True:
        with transaction(engine) as session:
            statement = (
                select(MaintenanceWindow.id)
                .where(col(MaintenanceWindow.next_due_at) <= now)
                .order_by(col(MaintenanceWindow.next_due_at), col(MaintenanceWindow.id))
                .limit(batch)
            )
            if seen:
                statement = statement.where(col(MaintenanceWindow.id).not_in(seen))
            ids = [i for i in session.exec(statement) if i is not None]
        for window_id in ids:
            seen.add(window_id)
            queued += _sweep_one(engine, desk, window_id, now)
        if len(ids) < batch:
            return queued


def sweep_window(engine: Engine, desk: Desk, window_id: int, now: datetime) -> int:
    """Sweep one window now (e.g. right after `maintenance add` of an unscheduled window)."""
    return _sweep_one(engine, desk, window_id, now)


def _sweep_one(engine: Engine, desk: Desk, window_id: int, now: datetime) -> int:
    """One due window: claim it, queue its due notice in chunks, then move `next_due_at` on.

    1. Claim (short transaction; FOR UPDATE SKIP LOCKED on PostgreSQL): a cancelled window stops
       being swept; otherwise `next_due_at` becomes a lease (`now + FANOUT_LEASE`), so other
       daemons leave the window alone while this one works, and pick it up again if it dies.
    2. Queue in chunks of FANOUT_CHUNK recipients, one transaction each, so a 20,000-recipient
       notice never holds SQLite's single write lock for long (ingest keeps committing in
       between). Each chunk first takes a share lock on the window and stops if the window was
       cancelled or changed meanwhile (that change notifies whoever was told so far).
    3. Set `next_due_at` to the window's next stage. A resumed or repeated run queues nothing
       twice: every row's idempotency key names the stage and the recipient.
    """
    with transaction(engine) as session:
        statement = select(MaintenanceWindow).where(
            MaintenanceWindow.id == window_id, col(MaintenanceWindow.next_due_at) <= now
        )
        if is_postgres(session):
            statement = statement.with_for_update(skip_locked=True)
        window = session.exec(statement).first()
        if window is None:  # another daemon has it, or it is no longer due
            return 0
        if window.status == MaintenanceStatus.CANCELLED:
            window.next_due_at = None
            session.add(window)
            return 0
        schedule = schedule_of(window, desk)
        stages = due_stages(schedule, now)
        if not stages:
            window.next_due_at = next_stage_at(schedule, now)
            session.add(window)
            return 0
        (stage,) = stages
        products = windows_store.window_products(session=session, window_ids=[window_id]).get(window_id, [])
        audience = _stage_audience(session, desk, window, stage, products)
        notices = _WindowNotices(desk, window, products, now, secret=desk.secret.get(session))
        version = (window.sequence, window.start, window.end)
        window.next_due_at = now + FANOUT_LEASE
        session.add(window)

    prefix = stage_key(notices.window.uid, stage)
    queued = 0
    for first in range(0, len(audience), FANOUT_CHUNK):
        with transaction(engine) as session:
            statement = select(MaintenanceWindow).where(MaintenanceWindow.id == window_id)
            if is_postgres(session):
                statement = statement.with_for_update(read=True)  # waits for a cancel/reschedule
            current = session.exec(statement).first()
            if current is None or current.status == MaintenanceStatus.CANCELLED:
                return queued
            if (current.sequence, current.start, current.end) != version:
                return queued  # rescheduled meanwhile: the reschedule set next_due_at itself
            for person in audience[first : first + FANOUT_CHUNK]:
                intent = notices.intent(
                    person, stage=TEMPLATE_STAGE[stage.name], key=_key(prefix, person.address),
                    method="REQUEST", sequence=current.sequence, extra={"notice": stage.name.value},
                )
                queued += enqueue(intent, session=session, now=now, hostname=desk.hostname) is not None

    with transaction(engine) as session:
        current = session.get(MaintenanceWindow, window_id)
        if current is not None and (current.sequence, current.start, current.end) == version:
            current.next_due_at = None if current.status == MaintenanceStatus.CANCELLED else next_stage_at(schedule, now)
            session.add(current)
            log.info(
                "maintenance window %s (%s): %s notice to %d recipients; next due %s",
                window_id, current.uid, stage.name.value, queued,
                current.next_due_at.isoformat() if current.next_due_at else "never",
            )
    return queued


def _audience(session: Session, products: Sequence[str]) -> list[_Audience]:
    """Maintenance contacts of every organisation using an affected product, each address once,
    minus those who unsubscribed from maintenance notices."""
    opted_out = set(addresses_for(session=session, targets=[OPTOUT_MAINTENANCE]))
    seen: dict[str, _Audience] = {}
    contact: Recipient
    contacts = maintenance_contacts_for_products(products, session=session)
    used = products_of_organisations({c.organisation_id for c in contacts}, session=session)
    affected = set(products)
    for contact in contacts:
        address = contact.email.lower()
        if address in opted_out or address in seen:
            continue
        theirs = tuple(p for p in products if p in affected and p in used.get(contact.organisation_id, ()))
        seen[address] = _Audience(address, contact.locale, contact.timezone, theirs)
    return list(seen.values())


def _stage_audience(
    session: Session, desk: Desk, window: MaintenanceWindow, stage: NoticeStage, products: Sequence[str]
) -> list[_Audience]:
    assert window.id is not None
    audience = _audience(session, products)
    if stage.name in (NoticeStageName.AHEAD, NoticeStageName.ANNOUNCE):
        # The first notice announces the window: whoever already heard of it (this very notice, or
        # the update notice of a reschedule, which carries the new times and calendar entry) must
        # not hear the same news twice. Newcomers to the directory still get it.
        told = {
            t.address
            for t in windows_store.already_told(
                session=session, window_id=window.id, default_timezone=desk.timezone
            )
        }
        audience = [a for a in audience if a.address not in told]
    return audience


class _WindowNotices:
    """Builds the per-recipient outbox rows of one window, computing zone strings once per zone."""

    def __init__(
        self, desk: Desk, window: MaintenanceWindow, products: Sequence[str], now: datetime, *, secret: bytes
    ) -> None:
        self.window = window
        self.products = list(products)
        self.now = now
        self.desk_tz = desk.timezone or DESK_TIMEZONE
        self.support = desk.support_address
        self._secret = secret
        self._zones: dict[str, dict[str, str]] = {}

    def _display(self, tz: str) -> dict[str, str]:
        if tz not in self._zones:
            try:
                self._zones[tz] = window_display(self.window.start, self.window.end, tz, self.desk_tz)
            except (KeyError, ValueError):  # an unknown zone in the directory: show Mountain Time
                self._zones[tz] = window_display(self.window.start, self.window.end, self.desk_tz, self.desk_tz)
        return self._zones[tz]

    def intent(
        self,
        person: _Audience,
        *,
        stage: str,
        key: str,
        method: str,
        sequence: int,
        extra: dict[str, Any] | None = None,
    ) -> NotificationIntent:
        window = self.window
        display = self._display(person.timezone)
        # A notice names only the affected products the recipient's organisation uses (issue 12).
        products = list(person.products) or self.products
        context: dict[str, Any] = {
            **display,
            "stage": stage,
            "kind": str(window.kind),
            "start": window.start.isoformat(),
            "end": window.end.isoformat(),
            "tz": display["org_timezone"],
            "desk_tz": self.desk_tz,
            "products": products,
            "description": window.description,
            "justification": window.justification,
            "window_ref": f"MW-{window.id}",
            "window_id": window.id,
            "sequence": sequence,
            # The invitation itself is written at delivery (notify builds the .ics from this).
            "_calendar": {
                "uid": window.uid,
                "sequence": sequence,
                "start": window.start.isoformat(),
                "end": window.end.isoformat(),
                "kind": str(window.kind),
                "products": products,
                "description": window.description,
                "justification": window.justification,
                "method": "CANCEL" if method == "CANCEL" else "REQUEST",
                "organizer": self.support,
                "attendee": person.address,
                "dtstamp": self.now.isoformat(),
            },
            "_list_unsubscribe": list_unsubscribe(self.support, MAINTENANCE_SCOPE, person.address, self._secret),
        }
        context |= extra or {}
        return NotificationIntent(
            kind=MAINTENANCE_TEMPLATE,
            template=MAINTENANCE_TEMPLATE,
            recipients=(person.address,),
            idempotency_key=key,
            due_at=self.now,
            context=context,
            locale=person.locale,
            maintenance_id=window.id,
            auto_submitted="auto-generated",
        )


def reschedule_window(
    session: Session, desk: Desk, window_id: int, *, start: datetime, end: datetime, now: datetime
) -> int:
    """Move a window: SEQUENCE + 1, an update notice (METHOD:REQUEST) to whoever was already told and
    to nobody else; its remaining notices follow the new times. Returns update notices queued."""
    window = windows_store.get_window(session=session, window_id=window_id, lock=True)
    if end <= now:
        raise UsageError("the new window is already over")
    old_start, old_end, old_sequence = window.start, window.end, window.sequence
    windows_store.reschedule_window(session=session, window=window, start=start, end=end, now=now)
    queued = _notify_change(
        session, desk, window, WindowChange.RESCHEDULED, now=now, old_sequence=old_sequence, old_end=old_end,
        extra={"previous_start": old_start.isoformat(), "previous_end": old_end.isoformat()},
    )
    # Whatever the new times make due (a start already passed, a first notice now inside its lead
    # time) is the sweep's job; look at the window on the next sweep.
    window.next_due_at = now
    session.add(window)
    return queued


def cancel_window(session: Session, desk: Desk, window_id: int, *, now: datetime) -> int:
    """Cancel a window: SEQUENCE + 1 and a cancellation (METHOD:CANCEL) to whoever was already told,
    nobody else. Returns cancellation notices queued."""
    window = windows_store.get_window(session=session, window_id=window_id, lock=True)
    old_sequence = window.sequence
    windows_store.cancel_window(session=session, window=window, now=now)
    return _notify_change(
        session, desk, window, WindowChange.CANCELLED, now=now, old_sequence=old_sequence, old_end=window.end
    )


def _notify_change(
    session: Session,
    desk: Desk,
    window: MaintenanceWindow,
    change: WindowChange,
    *,
    now: datetime,
    old_sequence: int,
    old_end: datetime,
    extra: dict[str, Any] | None = None,
) -> int:
    assert window.id is not None
    notice = change_notice(True, change, sequence=old_sequence, now=now, end=old_end)
    if notice is None:  # the window was over: nothing left to change in anyone's calendar
        return 0
    told = windows_store.already_told(
        session=session, window_id=window.id, default_timezone=desk.timezone
    )
    opted_out = set(addresses_for(session=session, targets=[OPTOUT_MAINTENANCE]))
    products = windows_store.window_products(session=session, window_ids=[window.id]).get(window.id, [])
    notices = _WindowNotices(desk, window, products, now, secret=desk.secret.get(session))
    stage = "cancelled" if change is WindowChange.CANCELLED else "update"
    prefix = f"maintenance:{window.uid}:{change.value}:{notice.sequence}"
    queued = 0
    for person in told:
        if person.address in opted_out:
            continue
        intent = notices.intent(
            _Audience(person.address, person.locale, person.timezone),
            stage=stage,
            key=_key(prefix, person.address),
            method=notice.method,
            sequence=notice.sequence,
            extra={"notice": change.value, **(extra or {})},
        )
        queued += enqueue(intent, session=session, now=now, hostname=desk.hostname) is not None
    return queued
