"""What agents and customers do to cases (status, priority, assignee, ETR, hold, links, notes, replies,
escalation), applied in the caller's transaction.

Decisions come from `rules.lifecycle`; this module applies them, records history, replans the
case's deadlines and queues the customer notices they cause (through `desk.notices`). It never
commits and never sends mail.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlmodel import Session, select

from mailcase.desk.context import Desk
from mailcase.desk.notices import queue_customer_notice, queue_staff_notice
from mailcase.domain import CaseStatus, EventKind, Priority, format_case_number
from mailcase.errors import UsageError
from mailcase.rules.escalation import LEVEL_NAMES, TOP_LEVEL
from mailcase.rules.lifecycle import (
    Actor,
    Refused,
    StatusChange,
    can_link_to_master,
    change_priority,
    change_status,
)
from mailcase.store.cases import add_event, case_by_number, case_view, events_of
from mailcase.store.models import Case, Technician


def find_case(session: Session, number: int, *, lock: bool = False) -> Case:
    case = case_by_number(session=session, number=number, lock=lock)
    if case is None:
        raise UsageError(f"no case {format_case_number(number)}")
    return case


def _apply_status(case: Case, change: StatusChange) -> None:
    case.status = change.new
    if change.closed_at is not None:
        case.closed_at = change.closed_at
    if change.clear_closed_at:
        case.closed_at = None
    if change.resolved_at is not None:
        case.resolved_at = change.resolved_at
    if change.awaiting_customer_since is not None:
        case.awaiting_customer_since = change.awaiting_customer_since
    if change.clear_awaiting_customer:
        case.awaiting_customer_since = None
    if change.hold_until is not None:
        case.hold_until = change.hold_until
    if change.clear_hold_until:
        case.hold_until = None
    if change.duplicate_of_id is not None:
        case.duplicate_of_id = change.duplicate_of_id
    if change.clear_duplicate_of:
        case.duplicate_of_id = None
    if change.update_clock_resumed_at is not None:
        case.update_clock_resumed_at = change.update_clock_resumed_at


def set_status(
    session: Session,
    desk: Desk,
    case: Case,
    target: CaseStatus,
    *,
    now: datetime,
    author: str,
    actor: Actor = Actor.AGENT,
    hold_until: datetime | None = None,
    duplicate_of: Case | None = None,
    notify_customer: bool = True,
) -> StatusChange:
    """Change a case's status through the lifecycle rules; raises UsageError when they refuse."""
    assert case.id is not None
    primary_view = case_view(duplicate_of) if duplicate_of is not None else None
    decision = change_status(
        case_view(case), target, actor=actor, now=now, hold_until=hold_until, duplicate_of=primary_view
    )
    if isinstance(decision, Refused):
        raise UsageError(f"case {format_case_number(case.number)}: {decision.reason}")
    _apply_status(case, decision)
    case.updated_at = now
    if actor is Actor.AGENT:
        case.last_agent_update_at = now
        case.needs_attention = False
    data: dict[str, Any] = {"from": decision.old.value, "to": decision.new.value}
    summary = f"status {decision.old.value} -> {decision.new.value}"
    if decision.hold_until:
        data["hold_until"] = decision.hold_until.isoformat()
        summary += f" until {decision.hold_until.isoformat()}"
    if duplicate_of is not None:
        data["duplicate_of"] = format_case_number(duplicate_of.number)
        summary += f" (duplicate of {format_case_number(duplicate_of.number)})"
    add_event(session=session, case=case, kind=EventKind.STATUS_CHANGED, at=now, author=author, summary=summary, data=data)
    session.add(case)
    replan(desk, session, case, now)
    if notify_customer and target in CUSTOMER_VISIBLE_STATUSES:
        notify_customer_of(session, desk, case, event=f"status:{target.value}", now=now)
    return decision


# Status changes the customer is told about (issue: "the customer is told about status changes
# that matter to them").
CUSTOMER_VISIBLE_STATUSES = frozenset(
    {CaseStatus.RESOLVED_FOLLOW_UP, CaseStatus.ON_HOLD, CaseStatus.CLOSED, CaseStatus.DUPLICATE, CaseStatus.SHIPPING}
)


def notify_customer_of(
    session: Session,
    desk: Desk,
    case: Case,
    *,
    event: str,
    now: datetime,
    extra: dict[str, Any] | None = None,
) -> int | None:
    """Tell the customer about a change that matters to them (status, ETR).

    Inside `one_customer_notice(session)` the notice is deferred, so that one agent command making
    several changes sends one mail that states them all (the template shows the current state)."""
    deferred = session.info.get(_DEFERRED_NOTICES)
    if deferred is not None:
        deferred.setdefault(case.id, (case, []))[1].append(event)
        return None
    values: dict[str, Any] = {"reopen_window_days": desk.reopen_window_days}
    if case.hold_until and case.status is CaseStatus.ON_HOLD:
        values["hold_until"] = case.hold_until.isoformat()
    if case.status is CaseStatus.RESOLVED_FOLLOW_UP and case.customer_due_at:
        values["close_at"] = case.customer_due_at.isoformat()
    if case.etr and not case.status.is_closed:
        values["etr"] = case.etr.isoformat()
    if case.duplicate_of_id:
        primary = session.get(Case, case.duplicate_of_id)
        if primary is not None:
            values["duplicate_of"] = primary.number
    return queue_customer_notice(
        session, desk, case, template="customer.status_changed", event=event, now=now, extra=values | (extra or {})
    )


_DEFERRED_NOTICES = "mailcase.deferred_customer_notices"


@contextlib.contextmanager
def one_customer_notice(session: Session, desk: Desk, *, now: datetime) -> Iterator[None]:
    """Collect the status and ETR notices of the changes made inside; queue one per case at the end."""
    deferred: dict[int | None, tuple[Case, list[str]]] = {}
    session.info[_DEFERRED_NOTICES] = deferred
    try:
        yield
    finally:
        session.info.pop(_DEFERRED_NOTICES, None)
    for case, events in deferred.values():
        notify_customer_of(session, desk, case, event="+".join(events), now=now)



def replan(desk: Desk, session: Session, case: Case, now: datetime) -> None:
    """Recompute the case's deadlines and `next_due_at` after a change (rules.sla through the planner)."""
    if desk.planner is not None:
        desk.planner.replan(session, case, now)


def set_priority(session: Session, desk: Desk, case: Case, target: Priority, *, now: datetime, author: str) -> None:
    decision = change_priority(case_view(case), target)
    if isinstance(decision, Refused):
        raise UsageError(f"case {format_case_number(case.number)}: {decision.reason}")
    old = case.priority
    case.priority = decision
    case.updated_at = now
    # A new priority restarts its clock: the SLA counts from the moment the real priority is set.
    case.sla_start_at = now if case.first_response_at is None else case.sla_start_at
    add_event(
        session=session,
        case=case,
        kind=EventKind.PRIORITY_CHANGED,
        at=now,
        author=author,
        summary=f"priority {old} -> {decision.value}",
        data={"from": str(old), "to": decision.value},
    )
    session.add(case)
    replan(desk, session, case, now)


def set_assignee(session: Session, desk: Desk, case: Case, assignee: str, *, now: datetime, author: str) -> None:
    address = assignee.strip().lower()
    if address in ("", "none", "-"):
        new: str | None = None
    else:
        technician = session.exec(select(Technician).where(Technician.email == address)).first()
        if technician is None:
            raise UsageError(f"{address} is not a technician in the directory")
        if not technician.active:
            raise UsageError(f"{address} is not an active technician")
        new = address
        case.team = technician.team
    if new == case.assignee:
        raise UsageError(f"case {format_case_number(case.number)} is already assigned to {new or 'nobody'}")
    old = case.assignee
    case.assignee = new
    case.updated_at = now
    add_event(
        session=session,
        case=case,
        kind=EventKind.ASSIGNEE_CHANGED,
        at=now,
        author=author,
        summary=f"assignee {old or '-'} -> {new or '-'}",
        data={"from": old, "to": new},
    )
    session.add(case)
    replan(desk, session, case, now)


def set_etr(session: Session, desk: Desk, case: Case, etr: datetime, *, now: datetime, author: str) -> None:
    if etr <= now:
        raise UsageError("the ETR must be in the future")
    case.etr = etr
    case.updated_at = now
    case.last_agent_update_at = now
    add_event(
        session=session,
        case=case,
        kind=EventKind.ETR_CHANGED,
        at=now,
        author=author,
        summary=f"ETR set to {etr.isoformat()}",
        data={"etr": etr.isoformat()},
    )
    session.add(case)
    notify_customer_of(session, desk, case, event="etr", now=now)
    replan(desk, session, case, now)


def link_master(session: Session, desk: Desk, case: Case, master: Case, *, now: datetime, author: str) -> None:
    refused = can_link_to_master(case_view(case), case_view(master))
    if refused is not None:
        raise UsageError(refused.reason)
    case.master_id = master.id
    case.updated_at = now
    add_event(
        session=session,
        case=case,
        kind=EventKind.LINKED,
        at=now,
        author=author,
        summary=f"linked to master case {format_case_number(master.number)}",
        data={"master": format_case_number(master.number)},
    )
    add_event(
        session=session,
        case=master,
        kind=EventKind.LINKED,
        at=now,
        author=author,
        summary=f"case {format_case_number(case.number)} linked",
        data={"case": format_case_number(case.number)},
    )
    session.add(case)


def add_note(
    session: Session, case: Case, body: str, *, now: datetime, author: str, message_id: int | None = None
) -> None:
    """An internal note: kept in the history, never emailed to the customer."""
    if not body.strip():
        raise UsageError("a note needs a body")
    case.updated_at = now
    add_event(
        session=session, case=case, kind=EventKind.NOTE, at=now, author=author, summary=body.strip(), message_id=message_id
    )
    session.add(case)


def record_agent_response(session: Session, desk: Desk, case: Case, *, now: datetime, author: str) -> None:
    """An agent answered (a reply, a master update): the first response if it is one, the update
    clock restarts, the case no longer needs attention, and a new or reopened case is in progress."""
    if case.first_response_at is None:
        case.first_response_at = now
    case.last_agent_update_at = now
    case.needs_attention = False
    case.updated_at = now
    if case.status in (CaseStatus.NEW, CaseStatus.CUSTOMER_REOPENED):
        set_status(session, desk, case, CaseStatus.IN_PROGRESS, now=now, author=author, notify_customer=False)


def public_reply(
    session: Session,
    desk: Desk,
    case: Case,
    body: str,
    *,
    now: datetime,
    author: str,
    author_name: str = "",
    awaiting_customer: bool = False,
    attachments: Sequence[dict[str, str]] = (),
) -> int | None:
    """A technician's public reply, emailed to the requester (participants copied) from the support
    address — never from the technician's own — threaded on the customer's last message.
    `attachments`: stored files (filename, content_type, sha256) the reply carries."""
    if not body.strip():
        raise UsageError("a reply needs a body")
    if case.status in (CaseStatus.CLOSED, CaseStatus.CLOSED_NO_RESPONSE, CaseStatus.DUPLICATE):
        raise UsageError(f"case {format_case_number(case.number)} is {case.status}; reopen it first")
    record_agent_response(session, desk, case, now=now, author=author)
    if awaiting_customer:
        # After the status change, which stops any earlier wait (rules.lifecycle rule 6).
        case.awaiting_customer_since = now
    add_event(
        session=session,
        case=case,
        kind=EventKind.OUTBOUND_MESSAGE,
        at=now,
        author=author,
        summary=("reply sent, awaiting customer: " if awaiting_customer else "reply sent: ") + body.strip()[:300],
        data={"awaiting_customer": awaiting_customer},
    )
    outbox_id = queue_customer_notice(
        session,
        desk,
        case,
        template="customer.reply",
        event="reply",
        now=now,
        extra={"body": body.strip(), "author_name": author_name or "Support", "awaiting_customer": awaiting_customer}
        | ({"_stored_attachments": list(attachments)} if attachments else {}),
        auto_submitted="no",
    )
    session.add(case)
    replan(desk, session, case, now)
    return outbox_id


def escalate(session: Session, desk: Desk, case: Case, *, now: datetime, author: str) -> bool:
    """A customer's `#escalate`: one level up the path (max 4); the new owner gets the history, the customer is told."""
    if case.escalation_level >= TOP_LEVEL:
        add_event(
            session=session, case=case, kind=EventKind.ESCALATED, at=now, author=author,
            summary="escalation requested, already at the highest level (executive)",
        )
        return False
    case.escalation_level += 1
    level = case.escalation_level
    owner = desk.escalation.owner(level, case.team)
    add_event(
        session=session, case=case, kind=EventKind.ESCALATED, at=now, author=author,
        summary=f"escalated by the customer to level {level} ({LEVEL_NAMES[level]}: {owner})",
        data={"level": level, "owner": owner},
    )
    assert case.id is not None
    history = [
        {"at": e.at.isoformat(), "author": e.author, "summary": e.summary}
        for e in events_of(session=session, case_id=case.id)
    ]
    queue_staff_notice(
        session, desk, case, template="staff.escalated", recipients=[owner], now=now,
        key=f"staff.escalated:{case.id}:{level}",
        extra={"level": level, "owner_name": owner, "reason": "customer", "history": history[-50:]},
    )
    queue_customer_notice(
        session, desk, case, template="customer.escalated", event=f"escalated:{level}", now=now,
        extra={"level": level, "owner_name": f"{LEVEL_NAMES[level]} ({owner})", "reason": "customer"},
        key=f"customer.escalated:{case.id}:{level}",
    )
    session.add(case)
    return True
