"""The scheduler's sweeps, shared by `serve` (APScheduler) and `mailcase tick`: each finds due work by an indexed
`*_due_at` column, decides with `rules`, and queues outbox rows by idempotency key.

A sweep claims a batch of due rows (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so several daemons
share the work without a coordinator) and commits per batch. Running a sweep twice, or on two
daemons at once, sends nothing twice: every notice's idempotency key is unique in the outbox.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from sqlmodel import Session, col, select

from mailcase import casework
from mailcase.db import is_postgres, transaction
from mailcase.domain import CaseStatus
from mailcase.models import Case, Technician
from mailcase.rules.lifecycle import Actor
from mailcase.rules.sla import DeadlineName, NoticeKind, SlaNotice, notices_due
from mailcase.store.cases import case_view

if TYPE_CHECKING:
    from mailcase.app import App

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


def sweep_case_deadlines(app: App, now: datetime, *, batch: int = BATCH) -> SweepReport:
    """Every case whose `next_due_at` has come: queue its due notices, apply their effects, replan it."""
    report = SweepReport()
    seen: set[int] = set()
    while True:
        with transaction(app.engine) as session:
            statement = (
                select(Case)
                .where(col(Case.next_due_at) <= now)
                .order_by(col(Case.next_due_at))
                .limit(batch)
            )
            if is_postgres(session):
                statement = statement.with_for_update(skip_locked=True)
            cases = [c for c in session.exec(statement) if c.id not in seen]
            for case in cases:
                assert case.id is not None
                seen.add(case.id)
                _sweep_case(app, session, case, now, report)
            report.examined += len(cases)
        if len(cases) < batch:
            return report


def _sweep_case(app: App, session: Session, case: Case, now: datetime, report: SweepReport) -> None:
    planner = app.planner
    deadlines = planner.deadlines(session, case, now)
    due = _current(notices_due(case_view(case), deadlines, planner.policy, now))
    for notice in due:
        queued = _carry_out(app, session, case, notice, now)
        report.count(notice.kind.value, queued)
    planner.replan(session, case, now)
    if case.next_due_at is not None and case.next_due_at <= now:
        # Everything due now has been queued (or was already): look again at the next new instant.
        from mailcase.rules.sla import next_check_at

        case.next_due_at = next_check_at(case_view(case), planner.deadlines(session, case, now), planner.policy, now)
        session.add(case)


def _current(notices: tuple[SlaNotice, ...]) -> list[SlaNotice]:
    """A reminder whose deadline has already passed (a daemon that was down) is not worth sending:
    the escalation that is due says more."""
    passed = {(n.deadline, n.deadline_at) for n in notices if n.kind is NoticeKind.SLA_ESCALATION_L2}
    return [n for n in notices if not (n.kind is NoticeKind.SLA_REMINDER and (n.deadline, n.deadline_at) in passed)]


def _carry_out(app: App, session: Session, case: Case, notice: SlaNotice, now: datetime) -> bool:
    desk = app.desk()
    settings = app.settings
    key = notice.idempotency_key(case.number)
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
            return _staff(session, desk, case, template, _owners(session, app, case), now, key, extra)
        case NoticeKind.SLA_ESCALATION_L2:
            manager = casework.escalation_contact(settings, case, 2)
            escalation = extra | {"level": 2, "summary": _summary(session, case)}
            return _staff(session, desk, case, "staff.sla_escalation", [manager], now, key, escalation)
        case NoticeKind.SLA_ESCALATION_L3:
            escalation = extra | {"level": 3, "summary": _summary(session, case)}
            return _staff(session, desk, case, "staff.sla_escalation", [settings.escalation.vp], now, key, escalation)
        case NoticeKind.UNASSIGNED_ALERT:
            alert = extra | {"created_at": case.created_at.isoformat()}
            return _staff(session, desk, case, "staff.unassigned_alert", [settings.escalation.on_call], now, key, alert)
        case NoticeKind.HOLD_EXPIRED:
            if case.status is CaseStatus.ON_HOLD:
                casework.set_status(
                    session, desk, case, CaseStatus.IN_PROGRESS, now=now, author="scheduler", actor=Actor.SYSTEM,
                    notify_customer=False,
                )
            held = extra | {"hold_until": notice.deadline_at.isoformat()}
            return _staff(session, desk, case, "staff.hold_expired", _owners(session, app, case), now, key, held)
        case NoticeKind.CUSTOMER_NUDGE:
            nudge = {"close_at": case.customer_due_at.isoformat()} if case.customer_due_at else {}
            return casework.queue_customer_notice(
                session, desk, case, template="customer.nudge", event="nudge", now=now, extra=nudge, key=key
            ) is not None
        case NoticeKind.CLOSE_NO_RESPONSE:
            queued = casework.queue_customer_notice(
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


def _staff(session: Session, desk: casework.Desk, case: Case, template: str, recipients: list[str],
           now: datetime, key: str, extra: dict[str, object]) -> bool:
    return casework.queue_staff_notice(
        session, desk, case, template=template, recipients=recipients, now=now, key=key, extra=extra
    ) is not None


def _owners(session: Session, app: App, case: Case) -> list[str]:
    """The assignee; with nobody assigned, the team's active technicians; failing that, on-call."""
    if case.assignee:
        return [case.assignee]
    team = list(
        session.exec(select(Technician.email).where(Technician.team == (case.team or ""), col(Technician.active).is_(True)))
    )
    return team or [app.settings.escalation.on_call]


@dataclass
class TickReport:
    sla: SweepReport
    maintenance: int
    delivery: object | None

    def lines(self) -> list[str]:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.sla.by_kind.items())) or "none"
        lines = [f"deadlines: {self.sla.examined} cases due, {self.sla.queued} notices queued ({kinds})"]
        lines.append(f"maintenance: {self.maintenance} notices queued")
        if self.delivery is not None:
            lines.append(f"outbox: {self.delivery}")
        return lines


def run_due_sweeps(app: App, now: datetime) -> tuple[SweepReport, int]:
    """Every scheduler sweep once, as of `now`."""
    from mailcase import broadcasts

    sla = sweep_case_deadlines(app, now)
    maintenance = broadcasts.sweep_maintenance(app, now) + broadcasts.sweep_master_updates(app, now)
    return sla, maintenance


def deliver_outbox(app: App, now: datetime) -> object:
    from mailcase.notify.outbox import deliver_due

    return deliver_due(
        app.engine,
        now=now,
        transport=app.transport(),
        renderer=app.renderer(),
        settings=app.settings,
        secret=app.secret,
        limit=app.settings.outbound.batch_size,
    )


def tick(app: App, *, deliver: bool = True) -> TickReport:
    """`mailcase tick`: every due sweep once (as of the app's clock, so `--now` works), then the outbox."""
    now = app.clock.now()
    sla, maintenance = run_due_sweeps(app, now)
    delivery = deliver_outbox(app, now) if deliver and app.settings.outbound.enabled else None
    return TickReport(sla=sla, maintenance=maintenance, delivery=delivery)


__all__ = ["DeadlineName", "SweepReport", "TickReport", "deliver_outbox", "run_due_sweeps", "sweep_case_deadlines", "tick"]
