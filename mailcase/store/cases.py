"""Reading and writing cases, their participants and their history; functions take `session=` and never commit."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict, Unpack

import sqlalchemy as sa
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col, select

from mailcase.domain import CaseKind, CaseStatus, CaseView, EventKind, Priority
from mailcase.store.common import insert_ignoring, insert_or_ignore, prepared, table_of
from mailcase.store.models import (
    AssignmentCursor,
    Case,
    CaseEvent,
    CaseParticipant,
    Counter,
    Message,
    Organisation,
    Technician,
)
from mailcase.store.technicians import team_members

CASE_NUMBER_COUNTER = "case_number"


def allocate_case_number(*, session: Session) -> int:
    """The next case number: one atomic UPDATE … RETURNING on a counter row.

    On PostgreSQL the UPDATE commits on its own (`Prepared.run_alone`), so its row lock does not
    hold every other case-opening transaction until this one commits; on SQLite the write lock
    (BEGIN IMMEDIATE) serialises writers. Numbers are never reused because the counter only grows;
    a case whose transaction rolls back leaves its number unused (a gap).
    """
    number: int | None = _next_case_number.run_alone(session).scalar_one_or_none()
    if number is None:  # the very first case: create the counter (once, whoever races), then count
        _create_counter.run_alone(session, {"name": CASE_NUMBER_COUNTER, "value": 0})
        number = _next_case_number.run_alone(session).scalar_one()
    return int(number)


class CaseFields(TypedDict, total=False):
    """What a new case may start with besides its subject, organisation and requester."""

    kind: CaseKind
    priority: Priority
    assignee: str | None
    team: str | None
    related_to_id: int | None
    platform: str | None
    sla_start_at: datetime | None
    participants: Iterable[str]
    author: str


def create_case(
    *,
    session: Session,
    now: datetime,
    subject: str,
    organisation_id: int | None,
    requester: str | None,
    **fields: Unpack[CaseFields],
) -> Case:
    """A new case and its "case opened" event (`insert_case`, event written at once)."""
    case, created = insert_case(
        session=session, now=now, subject=subject, organisation_id=organisation_id, requester=requester, **fields
    )
    add_events(session=session, events=[created])
    return case


def insert_case(
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
) -> tuple[Case, dict[str, Any]]:
    """`create_case` without writing its "case opened" event: returns the case and that event's
    values, for a caller that writes it together with the events that follow (`add_events`)."""
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
    # One Core INSERT … RETURNING id of the columns the ORM would write, then the object joins the
    # session as if loaded: an ORM flush of a new object cost more than the insert itself.
    table: sa.Table = table_of(Case)
    values = {c.key: getattr(case, c.key) for c in table.columns if c.key != "id"}
    case.id = int(_insert_case.run(session, values).scalar_one())
    make_transient_to_detached(case)
    session.add(case)
    # The requester first, so an address also copied keeps the requester role (ON CONFLICT DO NOTHING).
    rows = [{"case_id": case.id, "address": requester.lower(), "role": "requester"}] if requester else []
    seen = {row["address"] for row in rows}
    for address in dict.fromkeys(a.lower() for a in participants if a):
        if address not in seen:
            rows.append({"case_id": case.id, "address": address, "role": "cc"})
    _insert_participant.run_many(session, rows)
    created = event_values(
        case=case,
        kind=EventKind.CREATED,
        at=now,
        author=author or requester or "",
        summary=f"case opened ({kind.value}, {priority.value})",
        data={"related_to_id": related_to_id} if related_to_id else {},
    )
    return case, created


def save_deadlines(
    *, session: Session, case: Case, response_due_at: datetime | None, update_due_at: datetime | None,
    resolution_due_at: datetime | None, customer_due_at: datetime | None, next_due_at: datetime | None,
) -> None:
    """Store a case's deadlines and the next instant a sweep must look at it: one prepared UPDATE,
    and the loaded row takes the values as written (every new case and most updates replan, and
    the ORM's flush of the changed columns cost several times the statement)."""
    assert case.id is not None
    values = {
        "response_due_at": response_due_at, "update_due_at": update_due_at, "resolution_due_at": resolution_due_at,
        "customer_due_at": customer_due_at, "next_due_at": next_due_at,
    }
    _save_deadlines.run(session, {"case_id": case.id, **{f"new_{name}": value for name, value in values.items()}})
    for name, value in values.items():
        set_committed_value(case, name, value)


_DEADLINE_COLUMNS = ("response_due_at", "update_due_at", "resolution_due_at", "customer_due_at", "next_due_at")


@prepared
def _save_deadlines(dialect: str) -> Any:
    table: sa.Table = table_of(Case)
    return (
        sa.update(table)
        .where(table.c.id == sa.bindparam("case_id"))
        .values({name: sa.bindparam(f"new_{name}") for name in _DEADLINE_COLUMNS})
    )


def add_participants(
    *, session: Session, case_id: int, addresses: Iterable[str], role: str = "cc"
) -> list[str]:
    """Add addresses to a case; returns the ones that were new."""
    added = []
    for address in dict.fromkeys(a.lower() for a in addresses if a):
        values = {"case_id": case_id, "address": address, "role": role}
        if insert_or_ignore(session, table_of(CaseParticipant), values, conflict=["case_id", "address"]):
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
    values = event_values(case=case, kind=kind, at=at, author=author, summary=summary, data=data, message_id=message_id)
    return int(_insert_event.run(session, values).scalar_one())


def event_values(
    *,
    case: Case,
    kind: EventKind,
    at: datetime,
    author: str = "",
    summary: str = "",
    data: dict[str, Any] | None = None,
    message_id: int | None = None,
) -> dict[str, Any]:
    """One history line's column values, as `add_event` writes them (for `add_events`)."""
    assert case.id is not None
    return {
        "case_id": case.id,
        "kind": kind,
        "at": at,
        "author": author,
        "summary": summary,
        "data": data or {},
        "message_id": message_id,
    }


def add_events(*, session: Session, events: Sequence[dict[str, Any]]) -> None:
    """Append several history lines (`event_values`) in one statement, in list order."""
    _insert_event_plain.run_many(session, events)


@prepared
def _insert_event_plain(dialect: str) -> Any:
    return sa.insert(table_of(CaseEvent))


@prepared
def _next_case_number(dialect: str) -> Any:
    table: sa.Table = table_of(Counter)
    return (
        sa.update(table)
        .where(table.c.name == CASE_NUMBER_COUNTER)
        .values(value=table.c.value + 1)
        .returning(table.c.value)
    )


@prepared
def _create_counter(dialect: str) -> Any:
    """INSERT … ON CONFLICT (name) DO NOTHING of a counter row."""
    return insert_ignoring(dialect, table_of(Counter), ["name"])


@prepared
def _create_cursor(dialect: str) -> Any:
    """INSERT … ON CONFLICT (team) DO NOTHING of a team's round-robin cursor."""
    return insert_ignoring(dialect, table_of(AssignmentCursor), ["team"])


@prepared
def _insert_case(dialect: str) -> Any:
    table: sa.Table = table_of(Case)
    return sa.insert(table).returning(table.c.id)


@prepared
def _insert_participant(dialect: str) -> Any:
    """INSERT … ON CONFLICT (case_id, address) DO NOTHING, built once per dialect."""
    return insert_ignoring(dialect, table_of(CaseParticipant), ["case_id", "address"])


@prepared
def _insert_event(dialect: str) -> Any:
    table: sa.Table = table_of(CaseEvent)
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
    statuses: Sequence[CaseStatus] = (),
    open_only: bool = False,
    assignee: str | None = None,
    needs_attention: bool = False,
    due_before: datetime | None = None,
) -> list[Case]:
    """Cases newest first, filtered: any of `statuses` (or `status`), every status but the closed
    ones (`open_only`), one assignee (`"none"`: unassigned), needing attention, or with any
    deadline (response, update, resolution, customer) at or before `due_before`; `limit` 0: all."""
    from mailcase.domain import CLOSED_STATUSES

    statement = select(Case)
    wanted = [*statuses, *([status] if status is not None else [])]
    if wanted:
        statement = statement.where(col(Case.status).in_([str(s) for s in wanted]))
    if open_only:
        statement = statement.where(col(Case.status).not_in([str(s) for s in CLOSED_STATUSES]))
    if assignee is not None:
        statement = statement.where(
            col(Case.assignee).is_(None) if assignee.lower() in ("none", "-") else Case.assignee == assignee.lower()
        )
    if needs_attention:
        statement = statement.where(col(Case.needs_attention).is_(True))
    if due_before is not None:
        statement = statement.where(
            sa.or_(
                col(Case.response_due_at) <= due_before,
                col(Case.update_due_at) <= due_before,
                col(Case.resolution_due_at) <= due_before,
                col(Case.customer_due_at) <= due_before,
            )
        )
    if organisation_key is not None:
        statement = statement.join(Organisation, col(Organisation.id) == col(Case.organisation_id)).where(
            Organisation.key == organisation_key
        )
    statement = statement.order_by(col(Case.number).desc())
    if limit:
        statement = statement.limit(limit)
    return list(session.exec(statement))


def case_view(case: Case, participants: Sequence[str] = ()) -> CaseView:
    """The read-only view the rules see."""
    assert case.id is not None
    return CaseView(
        id=case.id,
        number=case.number,
        organisation_id=case.organisation_id,
        status=case.status,
        priority=case.priority,
        kind=case.kind,
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


def assign_next(*, session: Session, team: str) -> tuple[str | None, list[str]]:
    """The team's next technician in round-robin order (None: the team has no active technician)
    and the team's active technicians' addresses (by id), for a caller that also notifies the
    team: the technicians are read once, and the cursor moves in one UPDATE.

    The cursor moves in one atomic UPDATE, so two writers never hand out the same turn; on
    PostgreSQL it commits on its own (`Prepared.run_alone`, as the case number does), so a message
    whose transaction rolls back has passed a technician's turn.
    """
    technicians = team_members(session=session, team=team)
    if not technicians:  # the cursor row is made now all the same (committed on its own too)
        _create_cursor.run_alone(session, {"team": team})
        return None, []
    params = {"cursor_team": team, "first_id": technicians[0][0]}
    chosen: int | None = _advance_cursor.run_alone(session, params).scalar_one_or_none()
    if chosen is None:  # the team's first case: create its cursor (once, whoever races)
        _create_cursor.run_alone(session, {"team": team})
        chosen = _advance_cursor.run_alone(session, params).scalar_one()
    emails = dict(technicians)
    email = emails.get(chosen)
    if email is None:  # changed between the two statements (PostgreSQL, READ COMMITTED)
        email = session.exec(select(Technician.email).where(Technician.id == chosen)).first()
    return email, [address for _id, address in technicians]


@prepared
def _advance_cursor(dialect: str) -> Any:
    """The cursor moves to the next active technician of the team by id after the last one, or
    wraps to the first (`:first`); RETURNING the chosen technician's id."""
    cursor: sa.Table = table_of(AssignmentCursor)
    technician: sa.Table = table_of(Technician)
    following = (
        sa.select(sa.func.min(technician.c.id))
        .where(
            technician.c.team == sa.bindparam("cursor_team"),
            technician.c.active.is_(True),
            technician.c.id > sa.func.coalesce(cursor.c.last_technician_id, 0),
        )
        .scalar_subquery()
    )
    return (
        sa.update(cursor)
        .where(cursor.c.team == sa.bindparam("cursor_team"))
        .values(last_technician_id=sa.func.coalesce(following, sa.bindparam("first_id")))
        .returning(cursor.c.last_technician_id)
    )


def attachments_of_case(*, session: Session, case_id: int) -> list[tuple[Any, Any]]:
    """Every (MessageAttachment, Message) of a case's messages, oldest message first."""
    from mailcase.store.models import Message, MessageAttachment

    return list(
        session.exec(
            select(MessageAttachment, Message)
            .join(Message, col(Message.id) == col(MessageAttachment.message_id))
            .where(Message.case_id == case_id)
            .order_by(col(Message.received_at), col(Message.id), col(MessageAttachment.id))
        )
    )


def attachment_data(*, session: Session, sha256: str) -> bytes | None:
    """The stored bytes of one attachment (content-addressed), or None (never stored, or purged)."""
    from mailcase.store.models import Attachment

    row = session.get(Attachment, sha256)
    return bytes(row.data) if row is not None and row.purged_at is None else None


def store_attachment(*, session: Session, data: bytes) -> str:
    """Keep a file in the content-addressed attachment table (once per content); its SHA-256."""
    import hashlib

    from mailcase.store.models import Attachment
    from mailcase.store.retention import keep_attachment

    digest = hashlib.sha256(data).hexdigest()
    row = {"sha256": digest, "size": len(data), "data": data}
    if insert_or_ignore(session, table_of(Attachment), row, conflict=["sha256"]) is None:
        keep_attachment(session=session, sha256=digest, data=data)  # perhaps purged since
    return digest


def messages_of(*, session: Session, case_id: int) -> list[Message]:
    """A case's messages, inbound and outbound, in the order they arrived or left."""
    return list(
        session.exec(select(Message).where(Message.case_id == case_id).order_by(col(Message.received_at), col(Message.id)))
    )


@dataclass(frozen=True, slots=True)
class CaseLinks:
    """The numbers of the cases that point at one case: opened as related to it, closed as its
    duplicates, linked to it as their master case."""

    related: list[int]
    duplicates: list[int]
    linked: list[int]


def links_to(*, session: Session, case_id: int) -> CaseLinks:
    return CaseLinks(
        related=list(session.exec(select(Case.number).where(Case.related_to_id == case_id))),
        duplicates=list(session.exec(select(Case.number).where(Case.duplicate_of_id == case_id))),
        linked=list(session.exec(select(Case.number).where(Case.master_id == case_id))),
    )


def master_cases(*, session: Session) -> list[Case]:
    """Every master case, by number."""
    return list(session.exec(select(Case).where(Case.kind == CaseKind.MASTER).order_by(col(Case.number))))


def latest_master_update(*, session: Session, case_id: int) -> CaseEvent | None:
    """The newest update sent to a master case's followers (an outbound message event marked
    `master_update`), or None."""
    events = session.exec(
        select(CaseEvent)
        .where(CaseEvent.case_id == case_id, CaseEvent.kind == EventKind.OUTBOUND_MESSAGE)
        .order_by(col(CaseEvent.at).desc(), col(CaseEvent.id).desc())
    )
    return next((e for e in events if e.data.get("master_update")), None)
