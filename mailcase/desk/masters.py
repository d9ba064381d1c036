"""P1G master cases: creating them, fanning an agent's update out to every follower (one outbox row each, with a
one-click List-Unsubscribe), closing them with or without their linked cases, and the sweep of their update
reminders; in the caller's (or the sweep's) transaction.

Who follows a master case comes from its linked cases and the subscriptions (`desk.subscriptions`);
every row's idempotency key names the notice and the recipient. Nothing here renders or sends mail.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from mailcase.desk import cases as casework
from mailcase.desk.context import Desk
from mailcase.desk.notices import recipient_key as _key
from mailcase.desk.subscriptions import canonical_platform
from mailcase.domain import (
    CaseKind,
    CaseStatus,
    EventKind,
    NotificationIntent,
    Priority,
    format_case_number,
)
from mailcase.errors import UsageError
from mailcase.rules.maintenance import DESK_TIMEZONE
from mailcase.rules.tokens import list_unsubscribe, master_scope
from mailcase.store.cases import add_event, create_case
from mailcase.store.directory import organisation_for_address
from mailcase.store.models import Case, Organisation
from mailcase.store.outbox import enqueue
from mailcase.store.subscriptions import (
    addresses_for,
    case_optout_target,
    case_target,
    platform_target,
)


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
    rows: list[Organisation] = (
        list(session.exec(select(Organisation).where(col(Organisation.id).in_(org_ids)))) if org_ids else []
    )
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
        theirs = organisation_for_address(address, session=session)
        found[address] = Follower(
            address,
            theirs.locale if theirs else "en",
            theirs.timezone if theirs else desk_tz,
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
    desk: Desk,
    master: Case,
    body: str,
    *,
    now: datetime,
    author: str,
) -> int:
    """An agent's update on a master case, sent to every follower (one message each, with a one-click
    List-Unsubscribe); records the response/update on the master and on its open linked cases (their
    customers got the update too). Returns the number of messages queued.
    """
    secret, desk_tz = desk.secret.get(session), desk.timezone
    _require_master(master)
    text = body.strip()
    if not text:
        raise UsageError("a master update needs a body")
    if master.status.is_closed:
        raise UsageError(f"master case {format_case_number(master.number)} is {master.status}; reopen it first")
    assert master.id is not None
    casework.record_agent_response(session, desk, master, now=now, author=author)
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
    desk: Desk,
    master: Case,
    *,
    now: datetime,
    author: str,
    close_linked: bool,
    body: str = "",
) -> MasterClosing:
    """After a master case was closed: tell every follower (`customer.master_closed`, the last
    message about it) and, with `close_linked`, close the open linked cases too, their requesters
    told in that same notice. Without it the open linked cases are returned, to offer closing them
    (`close_linked_cases` later)."""
    secret, desk_tz = desk.secret.get(session), desk.timezone
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
    desk: Desk,
    master: Case,
    *,
    now: datetime,
    author: str,
) -> MasterClosing:
    """Close the open linked cases of an already closed master case (the offer `master_closed` made),
    each requester told with `customer.master_closed` naming their case."""
    secret, desk_tz = desk.secret.get(session), desk.timezone
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
