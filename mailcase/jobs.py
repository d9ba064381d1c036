"""The scheduler's sweeps, shared by `serve` (APScheduler) and `mailcase tick`: each finds due work by an indexed
`*_due_at` column, decides with `rules`, and queues outbox rows by idempotency key.

A sweep claims a batch of due rows (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so several daemons
share the work without a coordinator) and commits per batch. Running a sweep twice, or on two
daemons at once, sends nothing twice: every notice's idempotency key is unique in the outbox.

`tick` also makes one pass over each `[[imap]]` mailbox (`poll_mailboxes`), for deployments that
run `mailcase tick` from cron instead of `serve`; exactly-once is the poller's and the pipeline's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlmodel import Session, col, select

from mailcase import casework, telemetry
from mailcase.store.engine import is_postgres, transaction
from mailcase.domain import CaseStatus, NotificationIntent
from mailcase.store.models import Case, Organisation, Technician
from mailcase.rules.lifecycle import Actor
from mailcase.rules.sla import DeadlineName, NoticeKind, SlaNotice, notices_due
from mailcase.store.cases import case_view
from mailcase.store.outbox import enqueue_many

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
            organisations = _load_organisations(session, cases)  # held: the identity map keeps weak references
            pending: Pending = []
            # No autoflush: each case's UPDATE would otherwise be a round trip of its own; they go together
            # with the batch's staff notices (one multi-row INSERT) at its end. Nothing below reads a swept
            # row back from the database.
            with session.no_autoflush:
                for case in cases:
                    assert case.id is not None
                    seen.add(case.id)
                    _sweep_case(app, session, case, now, report, pending)
            intents = [intent for _, intent in pending]
            inserted = enqueue_many(intents, session=session, now=now, hostname=app.desk().hostname)
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
    app: App, session: Session, case: Case, now: datetime, report: SweepReport, pending: Pending
) -> None:
    planner = app.planner
    deadlines = planner.deadlines(session, case, now)
    due = _current(notices_due(case_view(case), deadlines, planner.policy, now))
    for notice in due:
        queued = _carry_out(app, session, case, notice, now, pending)
        if queued is not None:
            report.count(notice.kind.value, queued)
    changed = any(notice.kind in CHANGES_THE_CASE for notice in due)
    replanned = planner.replan(session, case, now, known=None if changed else deadlines)
    if case.next_due_at is not None and case.next_due_at <= now:
        # Everything due now has been queued (or was already): look again at the next new instant.
        from mailcase.rules.sla import next_check_at

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
    app: App, session: Session, case: Case, notice: SlaNotice, now: datetime, pending: Pending
) -> bool | None:
    """Queue the notice and apply its effect: True queued now, False already queued before, None
    added to `pending` (staff notices, queued with the batch)."""
    desk = app.desk()
    settings = app.settings
    key = notice.idempotency_key(case.number)

    def staff(template: str, recipients: list[str], values: dict[str, object]) -> None:
        for intent in casework.staff_notice(
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
            return staff(template, _owners(session, app, case), extra)
        case NoticeKind.SLA_ESCALATION_L2:
            manager = casework.escalation_contact(settings, case, 2)
            escalation = extra | {"level": 2, "summary": _summary(session, case)}
            return staff("staff.sla_escalation", [manager], escalation)
        case NoticeKind.SLA_ESCALATION_L3:
            escalation = extra | {"level": 3, "summary": _summary(session, case)}
            return staff("staff.sla_escalation", [settings.escalation.vp], escalation)
        case NoticeKind.UNASSIGNED_ALERT:
            alert = extra | {"created_at": case.created_at.isoformat()}
            return staff("staff.unassigned_alert", [settings.escalation.on_call], alert)
        case NoticeKind.HOLD_EXPIRED:
            if case.status is CaseStatus.ON_HOLD:
                casework.set_status(
                    session, desk, case, CaseStatus.IN_PROGRESS, now=now, author="scheduler", actor=Actor.SYSTEM,
                    notify_customer=False,
                )
            held = extra | {"hold_until": notice.deadline_at.isoformat()}
            return staff("staff.hold_expired", _owners(session, app, case), held)
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
    # Summed over the batches `tick` delivered: sent, retried, failed, requeued, batches.
    delivery: dict[str, int] | None
    # Per [[imap]] mailbox name: {"stored": N, "error": None}, or {"stored": 0, "error": why it
    # could not be polled}.
    imap: dict[str, dict[str, Any]] = field(default_factory=dict)

    def lines(self) -> list[str]:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.sla.by_kind.items())) or "none"
        lines = [
            f"imap {name}: " + (r["error"] or f"{r['stored']} message(s) stored")
            for name, r in self.imap.items()
        ]
        lines.append(f"deadlines: {self.sla.examined} cases due, {self.sla.queued} notices queued ({kinds})")
        lines.append(f"maintenance: {self.maintenance} notices queued")
        if self.delivery is not None:
            d = self.delivery
            lines.append(
                f"outbox: {d['sent']} sent, {d['retried']} to retry later, {d['failed']} failed"
                f" ({d['batches']} batch(es))"
            )
        return lines


def run_due_sweeps(app: App, now: datetime) -> tuple[SweepReport, int]:
    """Every scheduler sweep once, as of `now`."""
    from mailcase import broadcasts

    sla = sweep_case_deadlines(app, now)
    maintenance = broadcasts.sweep_maintenance(app, now) + broadcasts.sweep_master_updates(app, now)
    if app.settings.held.digest_address:
        sla.count("staff.held_digest", sweep_held_digest(app, now))
    return sla, maintenance


def sweep_held_digest(app: App, now: datetime) -> bool:
    """Tell `[held] digest_address` about messages held since the last digest, in one notice at
    most every `digest_interval_minutes`; True when a digest was queued. Nothing held, no mail."""
    from sqlmodel import func, select

    from mailcase.store.engine import transaction
    from mailcase.domain import NotificationIntent
    from mailcase.store.models import Outbox
    from mailcase.store.held import held_since
    from mailcase.store.retention import mark_warned
    from mailcase.store.outbox import enqueue

    settings = app.settings.held
    with transaction(app.engine) as session:
        last = session.exec(select(func.max(Outbox.created_at)).where(Outbox.kind == "staff.held_digest")).one()
        if last is not None and now - last < timedelta(minutes=settings.digest_interval_minutes):
            return False
        held = held_since(session=session, since=last, until=now)
        expiring = held_to_purge_soon(app, session, now)  # [retention] held_days: a week's warning
        if not held and not expiring:
            return False
        intent = NotificationIntent(
            kind="staff.held_digest",
            template="staff.held_digest",
            recipients=(settings.digest_address,),
            idempotency_key=f"staff.held_digest:{now.isoformat()}",
            due_at=now,
            context={
                "tz": app.settings.business.timezone,
                "held": [
                    {"id": h.id, "from": h.from_address, "subject": h.subject, "reason": h.reason,
                     "received_at": h.received_at.isoformat()}
                    for h in held
                ],
                "expiring": [
                    {"id": h.id, "from": h.from_address, "subject": h.subject, "received_at": h.received_at.isoformat()}
                    for h in expiring
                ],
                "purge_after_days": app.settings.retention.held_days,
            },
            locale="en",
            auto_submitted="auto-generated",
        )
        queued = enqueue(intent, session=session, now=now, hostname=app.settings.smtp.hostname) is not None
        if queued:
            mark_warned(session=session, held_ids=[h.id for h in expiring if h.id is not None], now=now)
        return queued


def held_to_purge_soon(app: App, session: Session, now: datetime) -> list[Any]:
    """Held messages within a week of their purge that no digest has named yet."""
    from mailcase.store.retention import WARNING_DAYS, held_to_warn

    days = app.settings.retention.held_days - WARNING_DAYS
    return held_to_warn(session=session, received_before=now - timedelta(days=days))


def deliver_outbox(app: App, now: datetime) -> object:
    """One batch of due notices (at most `[outbound] batch_size`), as `serve`'s delivery loop does."""
    from mailcase.notify.outbox import deliver_due

    return deliver_due(
        app.engine,
        now=now,
        transport=app.transport(),
        renderer=app.renderer(),
        settings=app.settings,
        secret=app.secret,
        limit=app.settings.outbound.batch_size,
        clock=app.clock.now,
    )


MAX_DRAIN_BATCHES = 10_000
"""A bound on `drain_outbox`'s batches (two million notices at the default batch size), so a bug
that left rows due forever cannot turn `tick` into an endless loop."""


def drain_outbox(app: App, now: datetime) -> dict[str, int]:
    """Deliver batch after batch until nothing is due at `now` (`mailcase tick`): every claimed row
    ends sent, failed or retried later (its next attempt after `now`), so each batch shrinks what
    is due and the loop ends when a batch finds nothing. Returns the summed counts."""
    totals = {"sent": 0, "retried": 0, "failed": 0, "requeued": 0, "batches": 0}
    for _ in range(MAX_DRAIN_BATCHES):
        report = deliver_outbox(app, now)
        counts = {name: int(getattr(report, name, 0)) for name in ("sent", "retried", "failed", "requeued")}
        for name, value in counts.items():
            totals[name] += value
        if counts["sent"] + counts["retried"] + counts["failed"] == 0:
            break
        totals["batches"] += 1
    return totals


def poll_mailboxes(app: App) -> dict[str, dict[str, Any]]:
    """One pass over every `[[imap]]` mailbox, as `serve`'s pollers do continuously (for cron set-ups).

    A mailbox that cannot be polled (refused login, unreachable server, busy database) is logged
    and reported, and the others and the sweeps still run: its mail waits for the next tick.
    """
    import threading

    from mailcase.errors import MailcaseError
    from mailcase.ingest.imap import CONNECTION_ERRORS, MailboxLoginFailed

    results: dict[str, dict[str, Any]] = {}
    if not app.settings.imap:
        return results
    pipeline = app.pipeline()
    for box in app.settings.imap:
        logger = logging.getLogger(f"mailcase.ingest.imap.{box.name}")
        poller = app.mailbox_poller(box, ingest=pipeline, stop=threading.Event(), logger=logger)
        try:
            results[box.name] = {"stored": poller.poll_once(), "error": None}
        except MailboxLoginFailed:
            # The poller has logged the ERROR line already.
            results[box.name] = {"stored": 0, "error": "login refused"}
        except (MailcaseError, *CONNECTION_ERRORS) as error:
            logger.error(
                "mailbox %s (%s at %s:%d): not polled this tick: %s: %s",
                box.name, box.user, box.host, box.port, type(error).__name__, error,
            )
            results[box.name] = {"stored": 0, "error": f"not polled ({type(error).__name__})"}
        finally:
            poller.close()
    return results


def tick(app: App, *, deliver: bool = True) -> TickReport:
    """`mailcase tick`: one pass over the IMAP mailboxes, every due sweep once (as of the app's clock,
    so `--now` works), then the outbox, so mail fetched by this tick is acknowledged by it."""
    now = app.clock.now()
    imap = poll_mailboxes(app)
    sla, maintenance = run_due_sweeps(app, now)
    delivery = drain_outbox(app, now) if deliver and app.settings.outbound.enabled else None
    return TickReport(sla=sla, maintenance=maintenance, delivery=delivery, imap=imap)


__all__ = ["DeadlineName", "SweepReport", "TickReport", "deliver_outbox", "drain_outbox", "poll_mailboxes", "run_due_sweeps", "sweep_case_deadlines", "tick"]
