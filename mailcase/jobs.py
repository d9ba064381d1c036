"""The scheduler's sweeps, shared by `serve` (APScheduler) and `mailcase tick`: each finds due work by an indexed
`*_due_at` column, decides with `rules`, and queues outbox rows by idempotency key; it never polls or delivers.

A sweep claims a batch of due rows (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so several daemons
share the work without a coordinator) and commits per batch. Running a sweep twice, or on two
daemons at once, sends nothing twice: every notice's idempotency key is unique in the outbox.

Sweeps take the engine, the `Desk` context and the settings values they need; polling and delivery
loops (and `tick`, which runs everything once) belong to the daemon.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from mailcase import telemetry
from mailcase.config import HeldSettings
from mailcase.desk import cases as casework
from mailcase.desk import maintenance, notices
from mailcase.desk.context import Desk
from mailcase.desk.deadlines import DeadlinePlanner
from mailcase.domain import CaseKind, CaseStatus, NotificationIntent
from mailcase.rules.lifecycle import Actor
from mailcase.rules.sla import DeadlineName, NoticeKind, SlaNotice, next_check_at, notices_due
from mailcase.store.cases import case_view
from mailcase.store.engine import is_postgres, transaction
from mailcase.store.held import held_since
from mailcase.store.models import Case, HeldMessage, Organisation, Outbox
from mailcase.store.outbox import enqueue, enqueue_many
from mailcase.store.retention import WARNING_DAYS, held_to_warn, mark_warned
from mailcase.store.technicians import team_addresses

log = logging.getLogger(__name__)

BATCH = 500

NOTICE_DISPLAY = {
    NoticeKind.SLA_REMINDER: "reminder",
    NoticeKind.SLA_ESCALATION_L2: "escalation to level 2",
    NoticeKind.SLA_ESCALATION_L3: "escalation to level 3",
}


@dataclass
class SweepReport:
    examined: int = 0
    queued: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)

    def count(self, kind: str, queued: bool) -> None:
        if queued:
            self.queued += 1
            self.by_kind[kind] = self.by_kind.get(kind, 0) + 1


def sweep_case_deadlines(engine: Engine, desk: Desk, now: datetime, *, batch: int = BATCH) -> SweepReport:
    """Every case (not a master case) whose `next_due_at` has come: queue its due notices, apply their
    effects, replan it."""
    return _sweep_due_cases(engine, desk, now, masters=False, batch=batch)


def sweep_master_updates(engine: Engine, desk: Desk, now: datetime, *, batch: int = BATCH) -> int:
    """Every master case whose `next_due_at` has come: the hourly reminder to its assignee to send
    followers an update (`master_update_reminder`, rules.sla's P1G update target), and its other
    deadlines. The update itself goes out when an agent writes one (`desk.masters.master_update`).
    Returns the notices queued."""
    return _sweep_due_cases(engine, desk, now, masters=True, batch=batch).queued


def _sweep_due_cases(engine: Engine, desk: Desk, now: datetime, *, masters: bool, batch: int) -> SweepReport:
    planner = desk.planner
    if planner is None:
        raise ValueError("the deadline sweeps need a Desk with its deadline planner")
    which = col(Case.kind) == CaseKind.MASTER if masters else col(Case.kind) != CaseKind.MASTER
    report = SweepReport()
    seen: set[int] = set()
    while True:
        with transaction(engine) as session:
            statement = (
                select(Case)
                .where(col(Case.next_due_at) <= now, which)
                .order_by(col(Case.next_due_at))
                .limit(batch)
            )
            if is_postgres(session):
                statement = statement.with_for_update(skip_locked=True)
            cases = [c for c in session.exec(statement) if c.id not in seen]
            organisations = _load_organisations(session, cases)  # held: the identity map keeps weak references
            pending: Pending = []
            # No autoflush: each case's UPDATE would otherwise be a round trip of its own; they go together
            # with the batch's staff notices (one multi-row INSERT) at its end. Nothing below reads a swept
            # row back from the database.
            with session.no_autoflush:
                for case in cases:
                    assert case.id is not None
                    seen.add(case.id)
                    _sweep_case(desk, planner, session, case, now, report, pending)
            intents = [intent for _, intent in pending]
            inserted = enqueue_many(intents, session=session, now=now, hostname=desk.hostname)
            for kind, intent in pending:
                report.count(kind, intent.idempotency_key in inserted)
            # Once per case and kind: a notice to several technicians is one reminder, one breach.
            priorities = {case.id: str(case.priority) for case in cases}
            queued = {(kind, intent.case_id) for kind, intent in pending if intent.idempotency_key in inserted}
            telemetry.count_sla_notices((kind, priorities.get(case_id, "")) for kind, case_id in queued)
            report.examined += len(cases)
            del organisations
        if len(cases) < batch:
            return report


def _sweep_case(
    desk: Desk, planner: DeadlinePlanner, session: Session, case: Case, now: datetime, report: SweepReport,
    pending: Pending,
) -> None:
    deadlines = planner.deadlines(session, case, now)
    due = _current(notices_due(case_view(case), deadlines, planner.policy, now))
    for notice in due:
        queued = _carry_out(desk, session, case, notice, now, pending)
        if queued is not None:
            report.count(notice.kind.value, queued)
    changed = any(notice.kind in CHANGES_THE_CASE for notice in due)
    replanned = planner.replan(session, case, now, known=None if changed else deadlines, batched=True)
    if case.next_due_at is not None and case.next_due_at <= now:
        # Everything due now has been queued (or was already): look again at the next new instant.
        case.next_due_at = next_check_at(case_view(case), replanned, planner.policy, now)
        session.add(case)


def _load_organisations(session: Session, cases: list[Case]) -> list[Organisation]:
    """One query for the batch's organisations, so the notices' `session.get(Organisation, …)` finds
    them in the session's identity map instead of costing a query per case."""
    ids = {case.organisation_id for case in cases if case.organisation_id is not None}
    return list(session.exec(select(Organisation).where(col(Organisation.id).in_(ids)))) if ids else []


Pending = list[tuple[str, NotificationIntent]]
"""A batch's staff notices (notice kind, intent), queued together at the end of the batch."""

# Notices whose effects change the case (its status), so its deadlines must be computed again.
CHANGES_THE_CASE = frozenset({NoticeKind.HOLD_EXPIRED, NoticeKind.CLOSE_NO_RESPONSE})


def _current(notices: tuple[SlaNotice, ...]) -> list[SlaNotice]:
    """A reminder whose deadline has already passed (a daemon that was down) is not worth sending:
    the escalation that is due says more. A reminder scheduled at the deadline itself (an ETR
    passing, rules.sla rule 3) is the assignee's notice of it and still goes."""
    passed = {(n.deadline, n.deadline_at) for n in notices if n.kind is NoticeKind.SLA_ESCALATION_L2}
    return [
        n
        for n in notices
        if not (n.kind is NoticeKind.SLA_REMINDER and n.due_at < n.deadline_at and (n.deadline, n.deadline_at) in passed)
    ]


def _carry_out(
    desk: Desk, session: Session, case: Case, notice: SlaNotice, now: datetime, pending: Pending
) -> bool | None:
    """Queue the notice and apply its effect: True queued now, False already queued before, None
    added to `pending` (staff notices, queued with the batch)."""
    key = notice.idempotency_key(case.number)

    def staff(template: str, recipients: list[str], values: dict[str, object]) -> None:
        for intent in notices.staff_notice(
            session, desk, case, template=template, recipients=recipients, now=now, key=key, extra=values
        ):
            pending.append((notice.kind.value, intent))

    extra: dict[str, object] = {
        "deadline": DEADLINE_WORDS.get(notice.deadline, notice.deadline.value),
        "due_at": notice.deadline_at.isoformat(),
    }
    match notice.kind:
        case NoticeKind.SLA_REMINDER | NoticeKind.MASTER_UPDATE_REMINDER:
            template = "staff.sla_reminder"
            if notice.kind is NoticeKind.MASTER_UPDATE_REMINDER:
                template = "staff.master_update_reminder"
                extra |= {"master_number": case.number, "master_subject": case.subject, "platform": case.platform or ""}
            staff(template, _owners(session, desk, case), extra)
            return None
        case NoticeKind.SLA_ESCALATION_L2:
            manager = desk.escalation.owner(2, case.team)
            escalation = extra | {"level": 2, "summary": _summary(session, case)}
            staff("staff.sla_escalation", [manager], escalation)
            return None
        case NoticeKind.SLA_ESCALATION_L3:
            escalation = extra | {"level": 3, "summary": _summary(session, case)}
            staff("staff.sla_escalation", [desk.escalation.vp], escalation)
            return None
        case NoticeKind.UNASSIGNED_ALERT:
            alert = extra | {"created_at": case.created_at.isoformat()}
            staff("staff.unassigned_alert", [desk.escalation.on_call], alert)
            return None
        case NoticeKind.HOLD_EXPIRED:
            if case.status is CaseStatus.ON_HOLD:
                casework.set_status(
                    session, desk, case, CaseStatus.IN_PROGRESS, now=now, author="scheduler", actor=Actor.SYSTEM,
                    notify_customer=False,
                )
            held = extra | {"hold_until": notice.deadline_at.isoformat()}
            staff("staff.hold_expired", _owners(session, desk, case), held)
            return None
        case NoticeKind.CUSTOMER_NUDGE:
            nudge = {"close_at": case.customer_due_at.isoformat()} if case.customer_due_at else {}
            return notices.queue_customer_notice(
                session, desk, case, template="customer.nudge", event="nudge", now=now, extra=nudge, key=key
            ) is not None
        case NoticeKind.CLOSE_NO_RESPONSE:
            queued = notices.queue_customer_notice(
                session, desk, case, template="customer.closed_no_response", event="closed_no_response", now=now,
                key=key,
            ) is not None
            if case.status is not CaseStatus.CLOSED_NO_RESPONSE:
                casework.set_status(
                    session, desk, case, CaseStatus.CLOSED_NO_RESPONSE, now=now, author="scheduler",
                    actor=Actor.SYSTEM, notify_customer=False,
                )
            return queued
    raise AssertionError(f"unhandled notice {notice.kind}")


DEADLINE_WORDS = {
    DeadlineName.INITIAL_RESPONSE: "response",
    DeadlineName.NEXT_UPDATE: "update",
    DeadlineName.RESOLUTION: "resolution",
}


def _summary(session: Session, case: Case) -> str:
    """One line a manager can act on: who, what, since when."""
    return (
        f"{case.priority} {case.status} case from {case.requester or 'unknown'} opened "
        f"{case.created_at.isoformat(timespec='minutes')}; assignee {case.assignee or 'nobody'}"
    )


def _owners(session: Session, desk: Desk, case: Case) -> list[str]:
    """The assignee; with nobody assigned, the team's active technicians; failing that, on-call."""
    if case.assignee:
        return [case.assignee]
    return team_addresses(session=session, team=case.team) or [desk.escalation.on_call]


def run_due_sweeps(
    engine: Engine, desk: Desk, now: datetime, *, held: HeldSettings, retention_held_days: int
) -> DueSweeps:
    """Every scheduler sweep once, as of `now`."""
    sla = sweep_case_deadlines(engine, desk, now)
    masters = sweep_master_updates(engine, desk, now)
    windows = maintenance.sweep_maintenance(engine, desk, now)
    if held.digest_address:
        digest = sweep_held_digest(engine, desk, now, held=held, retention_held_days=retention_held_days)
        sla.count("staff.held_digest", digest)
    return DueSweeps(sla=sla, maintenance=windows, master_updates=masters)


@dataclass(frozen=True, slots=True)
class DueSweeps:
    """What one pass of every sweep queued: the case deadlines' notices (with the held digest), the
    maintenance notices, and the master cases' update reminders."""

    sla: SweepReport
    maintenance: int
    master_updates: int


def sweep_held_digest(
    engine: Engine, desk: Desk, now: datetime, *, held: HeldSettings, retention_held_days: int
) -> bool:
    """Tell `[held] digest_address` about messages held since the last digest, and those within a
    week of their purge (`[retention] held_days`), in one notice at most every
    `digest_interval_minutes`; True when a digest was queued. Nothing to say, no mail."""
    with transaction(engine) as session:
        last = session.exec(select(func.max(Outbox.created_at)).where(Outbox.kind == "staff.held_digest")).one()
        if last is not None and now - last < timedelta(minutes=held.digest_interval_minutes):
            return False
        messages = held_since(session=session, since=last, until=now)
        expiring = held_to_purge_soon(session, now, held_days=retention_held_days)  # a week's warning
        if not messages and not expiring:
            return False
        intent = NotificationIntent(
            kind="staff.held_digest",
            template="staff.held_digest",
            recipients=(held.digest_address,),
            idempotency_key=f"staff.held_digest:{now.isoformat()}",
            due_at=now,
            context={
                "tz": desk.timezone,
                "held": [
                    {"id": h.id, "from": h.from_address, "subject": h.subject, "reason": h.reason,
                     "received_at": h.received_at.isoformat()}
                    for h in messages
                ],
                "expiring": [
                    {"id": h.id, "from": h.from_address, "subject": h.subject, "received_at": h.received_at.isoformat()}
                    for h in expiring
                ],
                "purge_after_days": retention_held_days,
            },
            locale="en",
            auto_submitted="auto-generated",
        )
        queued = enqueue(intent, session=session, now=now, hostname=desk.hostname) is not None
        if queued:
            mark_warned(session=session, held_ids=[h.id for h in expiring if h.id is not None], now=now)
        return queued


def held_to_purge_soon(session: Session, now: datetime, *, held_days: int) -> list[HeldMessage]:
    """Held messages within a week of their purge that no digest has named yet."""
    return held_to_warn(session=session, received_before=now - timedelta(days=held_days - WARNING_DAYS))


__all__ = [
    "DeadlineName", "DueSweeps", "SweepReport", "run_due_sweeps", "sweep_case_deadlines", "sweep_held_digest",
    "sweep_master_updates",
]
