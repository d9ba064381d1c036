"""Broadcast notices: maintenance windows (scheduled notices, reschedules, cancellations) and P1G master cases
(fan-out of updates, closing), queued as one outbox row per recipient in the caller's (or the sweep's) transaction.

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
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlmodel import Session, col, select

from mailcase import casework
from mailcase.casework import Desk
from mailcase.store.engine import is_postgres, transaction
from mailcase.domain import (
    CaseKind,
    CaseStatus,
    EventKind,
    MaintenanceKind,
    MaintenanceStatus,
    NotificationIntent,
    Priority,
    format_case_number,
)
from mailcase.errors import UsageError
from mailcase.store.models import Case, MaintenanceWindow, Organisation, Product
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
from mailcase.store import maintenance as windows_store
from mailcase.store.cases import add_event, create_case
from mailcase.store.directory import (
    Recipient, maintenance_contacts_for_products, organisation_for_address, products_of_organisations,
)
from mailcase.store.outbox import enqueue
from mailcase.store.subscriptions import (
    OPTOUT_MAINTENANCE,
    addresses_for,
    case_optout_target,
    case_target,
    platform_target,
)
from mailcase.subscriptions import (
    MAINTENANCE_SCOPE,
    canonical_platform,
    list_unsubscribe,
    master_scope,
)
from mailcase.subscriptions import recipient_key as _key

if TYPE_CHECKING:
    from mailcase.app import App

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


def secret_in(session: Session, app: App) -> bytes:
    """The installation secret (`App.secret`), read in the caller's transaction: `App.secret` opens a
    transaction of its own, which SQLite's single writer would make wait for ours."""
    if app.settings.security.secret:
        return app.settings.security.secret.encode()
    from mailcase.store.installation import installation_secret

    return installation_secret(session=session).encode()


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


def schedule_of(window: MaintenanceWindow, app: App) -> tuple[NoticeStage, ...]:
    settings = app.settings.maintenance
    return notice_schedule(
        MaintenanceKind(window.kind),
        window.start,
        window.end,
        window.created_at,
        scheduled_notice_days=settings.scheduled_notice_days,
        connect_notice_hours=settings.connect_notice_hours,
    )


def _first_due(window: MaintenanceWindow, app: App) -> datetime | None:
    schedule = schedule_of(window, app)
    return min((s.at for s in schedule), default=None)


def add_window(
    session: Session,
    app: App,
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
        hostname=app.settings.smtp.hostname,
        next_due_at=None,
    )
    window.next_due_at = _first_due(window, app)
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
    app: App,
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
    tz = app.settings.business.timezone
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
    anchor = date.fromisoformat(app.settings.maintenance.connect_anchor)
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
            scheduled_notice_days=app.settings.maintenance.scheduled_notice_days,
            connect_notice_hours=app.settings.maintenance.connect_notice_hours,
        )
        new_id = windows_store.plan_window(
            session=session,
            now=now,
            planned=window,
            products=names,
            description=description,
            justification=justification,
            hostname=app.settings.smtp.hostname,
            next_due_at=min((s.at for s in schedule), default=None),
        )
        if new_id is None:
            report.existing += 1
        else:
            report.created.append(new_id)
    return report


def sweep_maintenance(app: App, now: datetime, *, batch: int = 100) -> int:
    """Every window whose indexed `next_due_at` has come: queue its due notice to every recipient, then
    move `next_due_at` to its next stage (see `_sweep_one`: claimed with FOR UPDATE SKIP LOCKED on
    PostgreSQL, queued in short chunked transactions). Returns the outbox rows queued."""
    queued = 0
    seen: set[int] = set()
    while True:
        with transaction(app.engine) as session:
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
            queued += _sweep_one(app, window_id, now)
        if len(ids) < batch:
            return queued


def sweep_window(app: App, window_id: int, now: datetime) -> int:
    """Sweep one window now (e.g. right after `maintenance add` of an unscheduled window)."""
    return _sweep_one(app, window_id, now)


def _sweep_one(app: App, window_id: int, now: datetime) -> int:
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
    with transaction(app.engine) as session:
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
        schedule = schedule_of(window, app)
        stages = due_stages(schedule, now)
        if not stages:
            window.next_due_at = next_stage_at(schedule, now)
            session.add(window)
            return 0
        (stage,) = stages
        products = windows_store.window_products(session=session, window_ids=[window_id]).get(window_id, [])
        audience = _stage_audience(session, app, window, stage, products)
        notices = _WindowNotices(app, window, products, now, secret=secret_in(session, app))
        version = (window.sequence, window.start, window.end)
        window.next_due_at = now + FANOUT_LEASE
        session.add(window)

    prefix = stage_key(notices.window.uid, stage)
    queued = 0
    for first in range(0, len(audience), FANOUT_CHUNK):
        with transaction(app.engine) as session:
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
                queued += enqueue(intent, session=session, now=now, hostname=app.settings.smtp.hostname) is not None

    with transaction(app.engine) as session:
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
    session: Session, app: App, window: MaintenanceWindow, stage: NoticeStage, products: Sequence[str]
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
                session=session, window_id=window.id, default_timezone=app.settings.business.timezone
            )
        }
        audience = [a for a in audience if a.address not in told]
    return audience


class _WindowNotices:
    """Builds the per-recipient outbox rows of one window, computing zone strings once per zone."""

    def __init__(
        self, app: App, window: MaintenanceWindow, products: Sequence[str], now: datetime, *, secret: bytes
    ) -> None:
        self.app = app
        self.window = window
        self.products = list(products)
        self.now = now
        self.desk_tz = app.settings.business.timezone or DESK_TIMEZONE
        self.support = app.settings.smtp.support_address
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
    session: Session, app: App, window_id: int, *, start: datetime, end: datetime, now: datetime
) -> int:
    """Move a window: SEQUENCE + 1, an update notice (METHOD:REQUEST) to whoever was already told and
    to nobody else; its remaining notices follow the new times. Returns update notices queued."""
    window = windows_store.get_window(session=session, window_id=window_id, lock=True)
    if end <= now:
        raise UsageError("the new window is already over")
    old_start, old_end, old_sequence = window.start, window.end, window.sequence
    windows_store.reschedule_window(session=session, window=window, start=start, end=end, now=now)
    queued = _notify_change(
        session, app, window, WindowChange.RESCHEDULED, now=now, old_sequence=old_sequence, old_end=old_end,
        extra={"previous_start": old_start.isoformat(), "previous_end": old_end.isoformat()},
    )
    # Whatever the new times make due (a start already passed, a first notice now inside its lead
    # time) is the sweep's job; look at the window on the next sweep.
    window.next_due_at = now
    session.add(window)
    return queued


def cancel_window(session: Session, app: App, window_id: int, *, now: datetime) -> int:
    """Cancel a window: SEQUENCE + 1 and a cancellation (METHOD:CANCEL) to whoever was already told,
    nobody else. Returns cancellation notices queued."""
    window = windows_store.get_window(session=session, window_id=window_id, lock=True)
    old_sequence = window.sequence
    windows_store.cancel_window(session=session, window=window, now=now)
    return _notify_change(
        session, app, window, WindowChange.CANCELLED, now=now, old_sequence=old_sequence, old_end=window.end
    )


def _notify_change(
    session: Session,
    app: App,
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
        session=session, window_id=window.id, default_timezone=app.settings.business.timezone
    )
    opted_out = set(addresses_for(session=session, targets=[OPTOUT_MAINTENANCE]))
    products = windows_store.window_products(session=session, window_ids=[window.id]).get(window.id, [])
    notices = _WindowNotices(app, window, products, now, secret=secret_in(session, app))
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
        queued += enqueue(intent, session=session, now=now, hostname=app.settings.smtp.hostname) is not None
    return queued


# =============================================================================================
# Master cases (P1G)


def _desk_and_secret(session: Session, source: App | Desk, secret: bytes | None) -> tuple[Desk, bytes, str]:
    if isinstance(source, Desk):
        if secret is None:
            raise ValueError("pass secret= with a Desk (the List-Unsubscribe address is signed with it)")
        return source, secret, DESK_TIMEZONE
    return source.desk(), secret or secret_in(session, source), source.settings.business.timezone


def create_master(
    session: Session,
    desk: Desk,
    *,
    platform: str,
    subject: str,
    now: datetime,
    author: str,
    assignee: str | None = None,
) -> Case:
    """A P1G master case for a problem on `platform` (only agents create them, SPEC.md §1)."""
    if not platform.strip():
        raise UsageError("a master case needs a platform (--platform)")
    if not subject.strip():
        raise UsageError("a master case needs a subject (--subject)")
    case = create_case(
        session=session,
        now=now,
        subject=subject.strip(),
        organisation_id=None,
        requester=None,
        kind=CaseKind.MASTER,
        priority=Priority.P1G,
        platform=canonical_platform(session, platform),
        author=author,
    )
    if assignee:
        casework.set_assignee(session, desk, case, assignee, now=now, author=author)
    casework.replan(desk, session, case, now)
    return case


@dataclass(frozen=True, slots=True)
class Follower:
    """Someone a master case's broadcasts reach, and why."""

    address: str
    locale: str
    timezone: str
    linked_case_number: int | None = None  # their own case linked to the master, when they have one
    linked_case_id: int | None = None


def linked_cases(session: Session, master: Case) -> list[Case]:
    return list(session.exec(select(Case).where(Case.master_id == master.id).order_by(col(Case.number))))


def followers(
    session: Session, master: Case, *, desk_tz: str = DESK_TIMEZONE, honour_optouts: bool = True
) -> list[Follower]:
    """Requesters of every linked case and every subscriber of the master or of its platform, each
    address once (a requester keeps their lowest-numbered linked case), minus one-click opt-outs."""
    assert master.id is not None
    found: dict[str, Follower] = {}
    linked = linked_cases(session, master)
    org_ids = {c.organisation_id for c in linked if c.organisation_id}
    rows = session.exec(select(Organisation).where(col(Organisation.id).in_(org_ids))) if org_ids else []
    organisations = {o.id: o for o in rows}
    for case in linked:
        if not case.requester:
            continue
        address = case.requester.lower()
        if address in found:
            continue
        organisation = organisations.get(case.organisation_id) if case.organisation_id else None
        found[address] = Follower(
            address,
            organisation.locale if organisation else "en",
            organisation.timezone if organisation else desk_tz,
            linked_case_number=case.number,
            linked_case_id=case.id,
        )
    targets = [case_target(master.id)]
    if master.platform:
        targets.append(platform_target(master.platform))
    for address in addresses_for(session=session, targets=targets):
        if address in found:
            continue
        organisation = organisation_for_address(address, session=session)
        found[address] = Follower(
            address,
            organisation.locale if organisation else "en",
            organisation.timezone if organisation else desk_tz,
        )
    if honour_optouts:
        opted_out = set(addresses_for(session=session, targets=[case_optout_target(master.id)]))
        return [f for f in found.values() if f.address not in opted_out]
    return list(found.values())


def _require_master(master: Case) -> None:
    if master.kind != CaseKind.MASTER:
        raise UsageError(f"case {format_case_number(master.number)} is not a master case")


def master_update(
    session: Session,
    source: App | Desk,
    master: Case,
    body: str,
    *,
    now: datetime,
    author: str,
    secret: bytes | None = None,
) -> int:
    """An agent's update on a master case, sent to every follower (one message each, with a one-click
    List-Unsubscribe); records the response/update on the master and on its open linked cases (their
    customers got the update too). Returns the number of messages queued.

    `source` is the App (CLI) or the Desk (pipeline), then with `secret=` (the installation secret).
    """
    desk, secret, desk_tz = _desk_and_secret(session, source, secret)
    _require_master(master)
    text = body.strip()
    if not text:
        raise UsageError("a master update needs a body")
    if master.status.is_closed:
        raise UsageError(f"master case {format_case_number(master.number)} is {master.status}; reopen it first")
    assert master.id is not None
    if master.first_response_at is None:
        master.first_response_at = now
    master.last_agent_update_at = now
    master.needs_attention = False
    master.updated_at = now
    if master.status in (CaseStatus.NEW, CaseStatus.CUSTOMER_REOPENED):
        casework.set_status(
            session, desk, master, CaseStatus.IN_PROGRESS, now=now, author=author, notify_customer=False
        )
    casework.replan(desk, session, master, now)

    people = followers(session, master, desk_tz=desk_tz)
    base = {
        "master_number": master.number,
        "master_subject": master.subject,
        "platform": master.platform or "",
        "status": str(master.status),
        "body": text,
        "next_update_at": master.update_due_at.isoformat() if master.update_due_at else "",
        "support_address": desk.support_address,
    }
    prefix = f"customer.master_update:{master.id}:{now.isoformat()}"
    queued = 0
    for person in people:
        context = base | {
            "case_number": person.linked_case_number or "",
            "tz": person.timezone,
            "_list_unsubscribe": _master_unsubscribe(desk, master, person, secret),
        }
        key = _key(prefix, person.address)
        queued += _queue_master_notice(session, desk, master, person, "customer.master_update", key, context, now)
    add_event(
        session=session, case=master, kind=EventKind.OUTBOUND_MESSAGE, at=now, author=author,
        summary=f"master update sent to {queued} recipient{'s' if queued != 1 else ''}: {text[:300]}",
        data={"master_update": True, "body": text, "recipients": queued},
    )
    session.add(master)
    for case in linked_cases(session, master):
        if case.status.is_closed:
            continue
        case.last_agent_update_at = now
        case.updated_at = now
        add_event(
            session=session, case=case, kind=EventKind.OUTBOUND_MESSAGE, at=now, author=author,
            summary=f"update from master case {format_case_number(master.number)}: {text[:300]}",
            data={"master": format_case_number(master.number)},
        )
        session.add(case)
        casework.replan(desk, session, case, now)
    return queued


def _master_unsubscribe(desk: Desk, master: Case, person: Follower, secret: bytes) -> dict[str, str]:
    return list_unsubscribe(desk.support_address, master_scope(master.number), person.address, secret)


def _queue_master_notice(
    session: Session, desk: Desk, master: Case, person: Follower, template: str, key: str,
    context: dict[str, Any], now: datetime,
) -> int:
    intent = NotificationIntent(
        kind=template,
        template=template,
        recipients=(person.address,),
        idempotency_key=key,
        due_at=now,
        context=context,
        locale=person.locale,
        case_id=master.id,
        # Replies thread to the master; the pipeline routes a linked requester's reply to their own case.
        reply_token_case=master.number,
        auto_submitted="auto-generated",
    )
    return int(enqueue(intent, session=session, now=now, hostname=desk.hostname) is not None)


@dataclass(frozen=True, slots=True)
class MasterClosing:
    """What closing a master case did: linked cases still open (offered) or closed, notices queued."""

    still_open: tuple[int, ...]
    closed: tuple[int, ...]
    notified: int
    refused: tuple[str, ...] = ()


def master_closed(
    session: Session,
    source: App | Desk,
    master: Case,
    *,
    now: datetime,
    author: str,
    close_linked: bool,
    body: str = "",
    secret: bytes | None = None,
) -> MasterClosing:
    """After a master case was closed: tell every follower (`customer.master_closed`, the last
    message about it) and, with `close_linked`, close the open linked cases too, their requesters
    told in that same notice. Without it the open linked cases are returned, to offer closing them
    (`close_linked_cases` later)."""
    desk, secret, desk_tz = _desk_and_secret(session, source, secret)
    _require_master(master)
    open_cases = [c for c in linked_cases(session, master) if not CaseStatus(c.status).is_closed]
    closed: list[int] = []
    closed_ids: set[int] = set()
    refused: list[str] = []
    if close_linked:
        closed, closed_ids, refused = _close_cases(session, desk, open_cases, now=now, author=author)
    people = followers(session, master, desk_tz=desk_tz)
    # A requester whose own case is closed with the master hears so, even after opting out of updates.
    present = {p.address for p in people}
    people += [
        p for p in followers(session, master, desk_tz=desk_tz, honour_optouts=False)
        if p.linked_case_id in closed_ids and p.address not in present
    ]
    notified = _tell_closed(session, desk, secret, master, people, closed_ids, body=body, now=now)
    add_event(
        session=session, case=master, kind=EventKind.OUTBOUND_MESSAGE, at=now, author=author,
        summary=f"master case closed; {notified} follower{'s' if notified != 1 else ''} told"
        + (f", {len(closed)} linked case{'s' if len(closed) != 1 else ''} closed" if closed else ""),
        data={
            "master_closed": True,
            "closed_linked": [format_case_number(n) for n in closed],
            "recipients": notified,
        },
    )
    still_open = tuple(c.number for c in open_cases if c.number not in closed)
    return MasterClosing(still_open=still_open, closed=tuple(closed), notified=notified, refused=tuple(refused))


def close_linked_cases(
    session: Session,
    source: App | Desk,
    master: Case,
    *,
    now: datetime,
    author: str,
    secret: bytes | None = None,
) -> MasterClosing:
    """Close the open linked cases of an already closed master case (the offer `master_closed` made),
    each requester told with `customer.master_closed` naming their case."""
    desk, secret, desk_tz = _desk_and_secret(session, source, secret)
    _require_master(master)
    if not master.status.is_closed:
        raise UsageError(
            f"master case {format_case_number(master.number)} is still open;"
            " close it with --status closed --close-linked"
        )
    open_cases = [c for c in linked_cases(session, master) if not CaseStatus(c.status).is_closed]
    closed, closed_ids, refused = _close_cases(session, desk, open_cases, now=now, author=author)
    everyone = followers(session, master, desk_tz=desk_tz, honour_optouts=False)
    people = [p for p in everyone if p.linked_case_id in closed_ids]
    notified = _tell_closed(session, desk, secret, master, people, closed_ids, body="", now=now)
    if closed:
        add_event(
            session=session, case=master, kind=EventKind.OUTBOUND_MESSAGE, at=now, author=author,
            summary=f"{len(closed)} linked case{'s' if len(closed) != 1 else ''} closed with the master case",
            data={"closed_linked": [format_case_number(n) for n in closed], "recipients": notified},
        )
    still_open = tuple(c.number for c in open_cases if c.number not in closed)
    return MasterClosing(still_open=still_open, closed=tuple(closed), notified=notified, refused=tuple(refused))


def _close_cases(
    session: Session, desk: Desk, cases: Sequence[Case], *, now: datetime, author: str
) -> tuple[list[int], set[int], list[str]]:
    closed: list[int] = []
    closed_ids: set[int] = set()
    refused: list[str] = []
    for case in cases:
        try:
            # The master_closed notice is the customer's notice; no separate status mail.
            casework.set_status(session, desk, case, CaseStatus.CLOSED, now=now, author=author, notify_customer=False)
        except UsageError as exc:
            refused.append(str(exc))
            continue
        assert case.id is not None
        closed.append(case.number)
        closed_ids.add(case.id)
    return closed, closed_ids, refused


def _tell_closed(
    session: Session, desk: Desk, secret: bytes, master: Case, people: Sequence[Follower], closed_ids: set[int],
    *, body: str, now: datetime,
) -> int:
    base = {
        "master_number": master.number,
        "master_subject": master.subject,
        "platform": master.platform or "",
        "body": body.strip(),
        "support_address": desk.support_address,
    }
    prefix = f"customer.master_closed:{master.id}:{now.isoformat()}"
    notified = 0
    for person in people:
        mine = person.linked_case_number if person.linked_case_id in closed_ids else None
        context = base | {
            "case_number": mine or "",
            "tz": person.timezone,
            "_list_unsubscribe": _master_unsubscribe(desk, master, person, secret),
        }
        key = _key(f"{prefix}:{mine or 0}", person.address)
        notified += _queue_master_notice(session, desk, master, person, "customer.master_closed", key, context, now)
    return notified


def sweep_master_updates(app: App, now: datetime) -> int:
    """Master cases need no sweep of their own: the hourly update reminder to the master's assignee is
    the SLA sweep's `master_update_reminder` (rules.sla, P1G update target), and updates go out when an
    agent writes one (`master_update`). Kept so the scheduler's list of sweeps names every broadcast."""
    return 0
