"""The lookups an inbound message's decision needs, returned as the rules' read-only views
(`CaseView`, plain tuples and counts); it never returns ORM rows to rules and never writes.

These run once per ingested message (the hot path): each is one statement, and the counts are
done by the database rather than by loading rows.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, case, col, func, select

from mailcase.domain import CaseView, Direction, SenderView
from mailcase.store.cases import case_view, cases_by_ids, participants_of
from mailcase.store.common import prepared, table_of
from mailcase.store.models import (
    AutoReplyLog,
    Case,
    CaseParticipant,
    Contact,
    Message,
    Outbox,
    Technician,
)

NON_MPOC_NOTICE = "customer.non_mpoc"
"""The auto-reply log's kind for the notice to a non-MPOC sender (the hourly caps count it)."""


def known_ids(*, session: Session, ids: tuple[str, ...]) -> tuple[dict[str, int], dict[str, int]]:
    """Our own Message-IDs (outbox) and customers' earlier Message-IDs on cases, among `ids`."""
    if not ids:
        return {}, {}
    ours = {
        mid: case_id
        for mid, case_id in session.exec(
            select(Outbox.message_id, Outbox.case_id).where(col(Outbox.message_id).in_(ids), col(Outbox.case_id).is_not(None))
        )
        if case_id is not None
    }
    customers: dict[str, int] = {}
    for mid, case_id, direction in session.exec(
        select(Message.message_id, Message.case_id, Message.direction).where(
            col(Message.message_id).in_(ids), col(Message.case_id).is_not(None)
        )
    ):
        if case_id is None:
            continue
        if direction == Direction.OUTBOUND:
            ours.setdefault(mid, case_id)
        else:
            customers.setdefault(mid, case_id)
    return ours, customers


def case_id_by_number(*, session: Session, number: int) -> int | None:
    """The id of the case numbered `number` (a reply token or a technician's token names it)."""
    return session.exec(select(Case.id).where(Case.number == number)).first()


def case_ids_by_numbers(*, session: Session, numbers: Collection[int]) -> list[int]:
    """The ids of the cases a subject's `[#…]` tags name (unknown numbers are left out)."""
    if not numbers:
        return []
    return [case_id for case_id in session.exec(select(Case.id).where(col(Case.number).in_(numbers))) if case_id]


def case_views(*, session: Session, ids: Collection[int]) -> dict[int, CaseView]:
    """The rules' views of the cases `ids`, with their participants, by case id."""
    return {
        case_id: case_view(row, participants_of(session=session, case_id=case_id))
        for case_id, row in cases_by_ids(session=session, ids=ids).items()
    }


def primary_of(*, session: Session, case: CaseView) -> CaseView | None:
    """Follow duplicate_of to the primary case (a short chain; cycles are refused by the lifecycle)."""
    current: CaseView | None = case
    for _ in range(10):
        if current is None or current.duplicate_of_id is None:
            return current if current is not case else None
        current = case_views(session=session, ids={current.duplicate_of_id}).get(current.duplicate_of_id)
    return current


def linked_case_of(*, session: Session, master: CaseView, sender: SenderView) -> CaseView | None:
    """The sender's own case linked to a master case (SPEC.md §1: replies go to that case), else,
    for an MPOC, their organisation's newest case linked to it (issue 12)."""
    row = session.exec(
        select(Case.id)
        .join(CaseParticipant, col(CaseParticipant.case_id) == col(Case.id))
        .where(Case.master_id == master.id, CaseParticipant.address == sender.address)
        .order_by(col(Case.id).desc())
        .limit(1)
    ).first()
    if row is None and sender.is_mpoc and sender.organisation_id is not None:
        row = session.exec(
            select(Case.id)
            .where(Case.master_id == master.id, Case.organisation_id == sender.organisation_id)
            .order_by(col(Case.id).desc())
            .limit(1)
        ).first()
    return case_views(session=session, ids={row}).get(row) if row else None


def message_texts_of_cases(*, session: Session, case_ids: Collection[int]) -> list[str]:
    """The text of every message on the cases `case_ids` (what a quote may be cut against)."""
    if not case_ids:
        return []
    return list(session.exec(select(Message.text).where(col(Message.case_id).in_(case_ids))))


def auto_reply_history(
    *, session: Session, address: str, now: datetime, notice_since: datetime, subject_key: str
) -> tuple[int, int, bool, int]:
    """Automatic replies to `address` in the last hour and the last day, whether a non-MPOC notice
    went to it after `notice_since`, and how many of the last hour's answered `subject_key` (the
    loop guard's count): one query over ix_auto_reply_address_at.

    Counted by the database: loading the rows made every message cost more than the one before
    for a busy sender (bench/ingest profile, "decide" stage).
    """
    if not address:
        return 0, 0, False, 0
    day_start, hour_start = now - timedelta(days=1), now - timedelta(hours=1)
    params: dict[str, str | datetime] = {
        "address": address, "day_start": day_start, "hour_start": hour_start, "notice_since": notice_since,
        "since": min(day_start, notice_since), "subject_key": subject_key,
    }
    day, hour, notices, same_subject = _auto_reply_history_query.run(session, params).one()
    return int(hour), int(day), bool(notices), int(same_subject)


def non_mpoc_notices_since(*, session: Session, since: datetime) -> int:
    """Non-MPOC notices sent to anyone since `since` (the global hourly cap; ix_auto_reply_kind_at)."""
    return int(
        session.execute(
            sa.select(func.count()).where(col(AutoReplyLog.kind) == NON_MPOC_NOTICE, col(AutoReplyLog.at) > since)
        ).scalar_one()
    )


def auto_replied_since(*, session: Session, address: str, kind: str, since: datetime) -> bool:
    """Whether `address` got an automatic reply of `kind` after `since` (one notice per period)."""
    recently = session.exec(
        select(AutoReplyLog.id).where(
            AutoReplyLog.address == address, AutoReplyLog.kind == kind, col(AutoReplyLog.at) > since
        ).limit(1)
    ).first()
    return recently is not None


@prepared
def _auto_reply_history_query(dialect: str) -> sa.Select[int, int, int, int]:
    """Prepared once (values are parameters): building the CASE expressions per message cost more than running them."""
    at = col(AutoReplyLog.at)
    when = functools.partial(sa.bindparam, type_=table_of(AutoReplyLog).c.at.type)
    in_day = case((at > when("day_start"), 1), else_=0)
    in_hour = case((at > when("hour_start"), 1), else_=0)
    noticed = case(((col(AutoReplyLog.kind) == NON_MPOC_NOTICE) & (at > when("notice_since")), 1), else_=0)
    same_subject = case(((at > when("hour_start")) & (col(AutoReplyLog.subject_key) == sa.bindparam("subject_key")), 1), else_=0)
    return sa.select(
        func.coalesce(func.sum(in_day), 0), func.coalesce(func.sum(in_hour), 0), func.coalesce(func.max(noticed), 0),
        func.coalesce(func.sum(same_subject), 0),
    ).where(col(AutoReplyLog.address) == sa.bindparam("address"), at > when("since"))


def on_file_address(*, session: Session, address: str) -> tuple[str, bool] | None:
    """The directory's own spelling of `address` and whether it is a technician's (else a
    contact's); None when neither knows it."""
    technician = session.exec(select(Technician.email).where(Technician.email == address)).first()
    if technician:
        return technician, True
    contact = session.exec(select(Contact.email).where(Contact.email == address)).first()
    return (contact, False) if contact else None


def technicians_among(*, session: Session, addresses: Sequence[str]) -> set[str]:
    """Which of `addresses` are technicians' (active or not)."""
    return set(session.exec(select(Technician.email).where(col(Technician.email).in_(addresses))))


def contacts_of_organisation_among(*, session: Session, addresses: Sequence[str], organisation_id: int) -> set[str]:
    """Which of `addresses` are contacts of the organisation `organisation_id`."""
    return set(
        session.exec(
            select(Contact.email).where(col(Contact.email).in_(addresses), Contact.organisation_id == organisation_id)
        )
    )
