"""Reading and writing cases, their participants and their history; functions take `session=` and never commit."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from mailcase.domain import CaseKind, CaseStatus, CaseView, EventKind, Priority
from mailcase.models import (
    AssignmentCursor,
    Case,
    CaseEvent,
    CaseParticipant,
    Counter,
    Organisation,
    Technician,
)
from mailcase.store.common import insert_or_ignore

CASE_NUMBER_COUNTER = "case_number"


def allocate_case_number(*, session: Session) -> int:
    """The next case number: one atomic UPDATE … RETURNING on a counter row.

    The row lock (PostgreSQL) or the write lock (SQLite, BEGIN IMMEDIATE) serialises concurrent
    writers, and a rolled-back transaction gives its number back only if nobody took a later one —
    numbers are never reused because the counter only grows.
    """
    table = Counter.__table__
    statement = (
        sa.update(table)
        .where(table.c.name == CASE_NUMBER_COUNTER)
        .values(value=table.c.value + 1)
        .returning(table.c.value)
    )
    number = session.execute(statement).scalar_one_or_none()
    if number is None:  # the very first case: create the counter (once, whoever races), then count
        insert_or_ignore(session, Counter.__table__, {"name": CASE_NUMBER_COUNTER, "value": 0}, conflict=["name"])
        number = session.execute(statement).scalar_one()
    return int(number)


def create_case(
    *,
    session: Session,
    now: datetime,
    subject: str,
    organisation_id: int | None,
    requester: str | None,
    kind: CaseKind = CaseKind.SUPPORT,
    priority: Priority = Priority.P4,
    assignee: str | None = None,
    team: str | None = None,
    related_to_id: int | None = None,
    platform: str | None = None,
    sla_start_at: datetime | None = None,
    participants: Iterable[str] = (),
    author: str = "",
) -> Case:
    case = Case(
        number=allocate_case_number(session=session),
        kind=kind,
        organisation_id=organisation_id,
        requester=requester,
        subject=subject[:998],
        priority=priority,
        status=CaseStatus.NEW,
        assignee=assignee,
        team=team,
        related_to_id=related_to_id,
        platform=platform,
        created_at=now,
        updated_at=now,
        sla_start_at=sla_start_at or now,
        last_customer_activity_at=now if requester else None,
    )
    session.add(case)
    session.flush()
    assert case.id is not None
    if requester:
        add_participants(session=session, case_id=case.id, addresses=[requester], role="requester")
    add_participants(session=session, case_id=case.id, addresses=participants)
    add_event(
        session=session,
        case=case,
        kind=EventKind.CREATED,
        at=now,
        author=author or requester or "",
        summary=f"case opened ({kind.value}, {priority.value})",
        data={"related_to_id": related_to_id} if related_to_id else {},
    )
    return case


def add_participants(
    *, session: Session, case_id: int, addresses: Iterable[str], role: str = "cc"
) -> list[str]:
    """Add addresses to a case; returns the ones that were new."""
    added = []
    for address in dict.fromkeys(a.lower() for a in addresses if a):
        values = {"case_id": case_id, "address": address, "role": role}
        if insert_or_ignore(session, CaseParticipant.__table__, values, conflict=["case_id", "address"]):
            added.append(address)
    return added


def participants_of(*, session: Session, case_id: int) -> list[str]:
    rows = session.exec(
        select(CaseParticipant.address)
        .where(CaseParticipant.case_id == case_id)
        .order_by(col(CaseParticipant.role).desc(), CaseParticipant.address)
    )
    return list(rows)


def add_event(
    *,
    session: Session,
    case: Case,
    kind: EventKind,
    at: datetime,
    author: str = "",
    summary: str = "",
    data: dict[str, Any] | None = None,
    message_id: int | None = None,
) -> int:
    """Append one line to the case's history at once (a Core INSERT … RETURNING, in call order);
    returns the event's id. Building a CaseEvent object and flushing it cost more than the insert."""
    assert case.id is not None
    values = {
        "case_id": case.id,
        "kind": kind,
        "at": at,
        "author": author,
        "summary": summary,
        "data": data or {},
        "message_id": message_id,
    }
    return int(session.execute(_insert_event(), values).scalar_one())


@functools.cache
def _insert_event() -> Any:
    """Built once: values go in as parameters, so the compiled statement is reused from the cache."""
    table: sa.Table = CaseEvent.__table__  # type: ignore[assignment]
    return sa.insert(table).returning(table.c.id)


def events_of(*, session: Session, case_id: int) -> list[CaseEvent]:
    return list(
        session.exec(
            select(CaseEvent).where(CaseEvent.case_id == case_id).order_by(col(CaseEvent.id))
        )
    )


def case_by_number(*, session: Session, number: int, lock: bool = False) -> Case | None:
    statement = select(Case).where(Case.number == number)
    if lock:
        statement = statement.with_for_update()
    return session.exec(statement).first()


def case_by_id(*, session: Session, case_id: int, lock: bool = False) -> Case | None:
    statement = select(Case).where(Case.id == case_id)
    if lock:
        statement = statement.with_for_update()
    return session.exec(statement).first()


def cases_by_ids(*, session: Session, ids: Iterable[int]) -> dict[int, Case]:
    wanted = list(set(ids))
    if not wanted:
        return {}
    return {c.id: c for c in session.exec(select(Case).where(col(Case.id).in_(wanted))) if c.id}


def list_cases(
    *,
    session: Session,
    status: CaseStatus | None = None,
    organisation_key: str | None = None,
    limit: int = 1000,
) -> list[Case]:
    statement = select(Case)
    if status is not None:
        statement = statement.where(Case.status == status)
    if organisation_key is not None:
        statement = statement.join(Organisation, col(Organisation.id) == col(Case.organisation_id)).where(
            Organisation.key == organisation_key
        )
    statement = statement.order_by(col(Case.number).desc()).limit(limit)
    return list(session.exec(statement))


def case_view(case: Case, participants: Sequence[str] = ()) -> CaseView:
    """The read-only view the rules see."""
    assert case.id is not None
    return CaseView(
        id=case.id,
        number=case.number,
        organisation_id=case.organisation_id,
        status=CaseStatus(case.status),
        priority=Priority(case.priority),
        kind=CaseKind(case.kind),
        requester=case.requester,
        participants=frozenset(participants),
        assignee=case.assignee,
        team=case.team,
        duplicate_of_id=case.duplicate_of_id,
        master_id=case.master_id,
        created_at=case.created_at,
        closed_at=case.closed_at,
        first_response_at=case.first_response_at,
        last_customer_activity_at=case.last_customer_activity_at,
        last_agent_update_at=case.last_agent_update_at,
        awaiting_customer_since=case.awaiting_customer_since,
        update_clock_resumed_at=case.update_clock_resumed_at,
        hold_until=case.hold_until,
        etr=case.etr,
        escalation_level=case.escalation_level,
        sla_start_at=case.sla_start_at,
    )


def next_assignee(*, session: Session, team: str) -> str | None:
    """Round-robin among the team's active technicians, in a stable order (by id).

    The team's cursor row is locked for the rest of the transaction, so two writers never hand
    out the same turn.
    """
    locked = select(AssignmentCursor).where(AssignmentCursor.team == team).with_for_update()
    cursor = session.exec(locked).first()
    if cursor is None:  # the team's first case: create its cursor (once, whoever races)
        insert_or_ignore(session, AssignmentCursor.__table__, {"team": team}, conflict=["team"])
        cursor = session.exec(locked).one()
    technicians = list(
        session.exec(
            select(Technician)
            .where(Technician.team == team, col(Technician.active).is_(True))
            .order_by(col(Technician.id))
        )
    )
    if not technicians:
        return None
    last = cursor.last_technician_id or 0
    chosen = next((t for t in technicians if (t.id or 0) > last), technicians[0])
    cursor.last_technician_id = chosen.id
    session.add(cursor)
    return chosen.email
