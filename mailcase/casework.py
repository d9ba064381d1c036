"""What agents do to cases (status, priority, assignee, ETR, hold, links, notes, replies), applied in the caller's transaction.

Decisions come from `rules.lifecycle`; this module applies them, records history and queues the
customer notices they cause. It never commits and never sends mail.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from mailcase.domain import (
    AutoKind,
    CaseKind,
    CaseStatus,
    Direction,
    EventKind,
    NotificationIntent,
    Priority,
    format_case_number,
)
from mailcase.errors import UsageError
from mailcase.store.models import Case, Message, Organisation
from mailcase.rules.lifecycle import Actor, Refused, StatusChange, can_link_to_master, change_priority, change_status
from mailcase.store.cases import add_event, case_by_number, case_view, events_of, participants_of
from mailcase.store.outbox import enqueue

# Called after any change to a case so its deadlines and next_due_at follow (set by the app).
Replanner = Callable[[Session, Case, datetime], None]


@dataclass(frozen=True, slots=True)
class Desk:
    """What case work needs from the installation: addresses, hostname, and the deadline planner."""

    hostname: str
    support_address: str
    replan: Replanner | None = None
    timezone: str = "America/Denver"
    reopen_window_days: int = 7


def find_case(session: Session, number: int, *, lock: bool = False) -> Case:
    case = case_by_number(session=session, number=number, lock=lock)
    if case is None:
        raise UsageError(f"no case {format_case_number(number)}")
    return case


@dataclass(frozen=True, slots=True)
class CustomerThread:
    """Who hears from us about a case, in which language, and which message we answer."""

    recipients: tuple[str, ...]
    cc: tuple[str, ...]
    locale: str
    timezone: str
    in_reply_to: str
    references: tuple[str, ...]
    recipient_name: str = ""


def customer_thread(
    session: Session,
    case: Case,
    *,
    find_last_message: bool = True,
    participants: Sequence[str] | None = None,
    recipient_name: str | None = None,
    organisation: Any = None,
) -> CustomerThread:
    """Who a customer notice goes to and what it threads on; `find_last_message=False` when the
    caller names the message it answers (saves the costliest query of an acknowledgement).

    `participants` (in `participants_of` order) and `recipient_name` (the requester's contact
    name, "" for none) are for a caller that just wrote or read them: each saves a query, as does
    `organisation` (the case's organisation's `id`, `locale` and `timezone`, e.g. `ContactOrganisation`)."""
    assert case.id is not None
    people = list(participants) if participants is not None else participants_of(session=session, case_id=case.id)
    requester = case.requester or (people[0] if people else "")
    cc = tuple(p for p in people if p != requester)
    if organisation is None or not case.organisation_id or organisation.id != case.organisation_id:
        organisation = session.get(Organisation, case.organisation_id) if case.organisation_id else None
    from mailcase.store.models import Technician

    # The customer's last message: not a technician's emailed reply stored on the case (its id and
    # references are ours to keep), nor an out-of-office or a bounce.
    last = None if not find_last_message else session.exec(
        select(Message)
        .where(
            Message.case_id == case.id,
            Message.direction == Direction.INBOUND,
            Message.auto_kind == AutoKind.HUMAN,
            col(Message.from_address).not_in(select(Technician.email)),
        )
        .order_by(col(Message.received_at).desc(), col(Message.id).desc())
        .limit(1)
    ).first()
    references: tuple[str, ...] = ()
    in_reply_to = ""
    if last is not None and last.message_id:
        in_reply_to = last.message_id
        references = tuple(list(last.references)[-20:] + [last.message_id])
    from mailcase.store.models import Contact

    if recipient_name is not None:
        name: str | None = recipient_name
    else:
        name = session.exec(select(Contact.name).where(Contact.email == requester)).first() if requester else None
    return CustomerThread(
        recipient_name=(name or "").split(" ")[0],
        recipients=(requester,) if requester else (),
        cc=cc,
        locale=organisation.locale if organisation else "en",
        timezone=organisation.timezone if organisation else "America/Denver",
        in_reply_to=in_reply_to,
        references=references,
    )


def case_context(session: Session, case: Case, *, organisation: Any = None) -> dict[str, Any]:
    """The plain values every case template gets (docs/templates.md); `organisation`: the case's
    organisation (anything with its `id` and `name`) when the caller has it, which saves a lookup."""
    if organisation is None or not case.organisation_id or organisation.id != case.organisation_id:
        organisation = session.get(Organisation, case.organisation_id) if case.organisation_id else None
    return {
        "case_number": case.number,
        "case_subject": case.subject,
        "status": str(case.status),
        "priority": str(case.priority),
        "kind": str(case.kind),
        "assignee": case.assignee or "",
        "team": case.team or "",
        "requester": case.requester or "",
        "organisation_name": organisation.name if organisation else "",
    }


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
    deferred: dict[Any, tuple[Case, list[str]]] = {}
    session.info[_DEFERRED_NOTICES] = deferred
    try:
        yield
    finally:
        session.info.pop(_DEFERRED_NOTICES, None)
    for case, events in deferred.values():
        notify_customer_of(session, desk, case, event="+".join(events), now=now)


def queue_customer_notice(
    session: Session,
    desk: Desk,
    case: Case,
    *,
    template: str,
    event: str,
    now: datetime,
    extra: dict[str, Any] | None = None,
    auto_submitted: str = "auto-generated",
    in_reply_to: str | None = None,
    references: tuple[str, ...] | None = None,
    key: str | None = None,
    participants: Sequence[str] | None = None,
    recipient_name: str | None = None,
    organisation: Any = None,
) -> int | None:
    """Queue a message to the case's requester (participants copied), threaded on their last message.

    `participants` and `recipient_name`: as `customer_thread`'s, when the caller knows them."""
    thread = customer_thread(
        session, case, find_last_message=in_reply_to is None or references is None,
        participants=participants, recipient_name=recipient_name, organisation=organisation,
    )
    if not thread.recipients or case.kind is CaseKind.MASTER:
        return None
    context = case_context(session, case, organisation=organisation) | {"tz": thread.timezone}
    if thread.recipient_name:
        context["recipient_name"] = thread.recipient_name
    context |= extra or {}
    intent = NotificationIntent(
        kind=template,
        template=template,
        recipients=thread.recipients,
        cc=thread.cc,
        idempotency_key=key or f"{template}:{case.id}:{event}:{now.isoformat()}",
        due_at=now,
        context=context,
        locale=thread.locale,
        case_id=case.id,
        in_reply_to=thread.in_reply_to if in_reply_to is None else in_reply_to,
        references=thread.references if references is None else tuple(r for r in references if r)[-20:],
        auto_submitted=auto_submitted,
        reply_token_case=case.number,
    )
    return enqueue(intent, session=session, now=now, hostname=desk.hostname)


def queue_staff_notice(
    session: Session,
    desk: Desk,
    case: Case,
    *,
    template: str,
    recipients: Sequence[str],
    now: datetime,
    key: str,
    extra: dict[str, Any] | None = None,
    organisation: Any = None,
) -> int | None:
    """Queue a notice to technicians or managers; replies to it thread back through the token."""
    intents = staff_notice(
        session, desk, case, template=template, recipients=recipients, now=now, key=key, extra=extra,
        organisation=organisation,
    )
    first = None
    for intent in intents:
        queued = enqueue(intent, session=session, now=now, hostname=desk.hostname)
        first = first if first is not None else queued
    return first


def staff_notice(
    session: Session,
    desk: Desk,
    case: Case,
    *,
    template: str,
    recipients: Sequence[str],
    now: datetime,
    key: str,
    extra: dict[str, Any] | None = None,
    organisation: Any = None,
) -> list[NotificationIntent]:
    """The notices `queue_staff_notice` queues, for a caller that queues many at once: one per
    recipient, because each carries that person's own reply token (Reply-To bound to technician
    and case, rules/tokens.staff_reply_address): an emailed reply or `#note` counts only when it
    answers through it. Empty with no recipient."""
    people = tuple(dict.fromkeys(r.strip().lower() for r in recipients if r and r.strip()))
    if not people:
        return []
    context = case_context(session, case, organisation=organisation) | {"tz": desk.timezone} | (extra or {})
    return [
        NotificationIntent(
            kind=template,
            template=template,
            recipients=(person,),
            idempotency_key=key if len(people) == 1 else f"{key}:{person}",
            due_at=now,
            context=context,
            locale="en",
            case_id=case.id,
            auto_submitted="auto-generated",
            reply_token_case=case.number,
            reply_token_staff=person if person.count("@") == 1 else None,
            # Every staff notice of a case names one thread root, so technicians' clients thread them.
            in_reply_to=staff_thread_id(desk, case.number),
            references=(staff_thread_id(desk, case.number),),
        )
        for person in people
    ]


def staff_thread_id(desk: Desk, number: int) -> str:
    """The Message-ID every staff notice of case `number` refers to (RFC 5322 §3.6.4): stable,
    ours, never sent itself; clients thread notices that share it."""
    return f"<mc.case-{format_case_number(number)}.staff@{desk.hostname}>"


def queue_staff_new_case(
    session: Session,
    desk: Desk,
    case: Case,
    *,
    now: datetime,
    excerpt: str,
    extra: dict[str, Any] | None = None,
    technicians: Sequence[str] | None = None,
    organisation: Any = None,
) -> None:
    """Technicians of the assigned team hear about a new case; `technicians`: the team's active
    technicians' addresses when the caller just read them (e.g. to assign the case)."""
    from mailcase.store.models import Technician

    team = case.team or ""
    people = list(technicians) if technicians is not None else list(
        session.exec(select(Technician.email).where(Technician.team == team, col(Technician.active).is_(True)))
    )
    queue_staff_notice(
        session, desk, case, template="staff.new_case", recipients=people, now=now,
        key=f"staff.new_case:{case.id}", extra={"excerpt": _excerpt(excerpt)} | (extra or {}), organisation=organisation,
    )


def queue_staff_update(
    session: Session, desk: Desk, case: Case, *, now: datetime, sender: str, excerpt: str,
    extra: dict[str, Any] | None = None,
) -> None:
    """The assignee (or, with nobody assigned, the team) hears that the customer wrote."""
    from mailcase.store.models import Technician

    if case.assignee:
        people = [case.assignee]
    else:
        people = list(
            session.exec(select(Technician.email).where(Technician.team == (case.team or ""), col(Technician.active).is_(True)))
        )
    queue_staff_notice(
        session, desk, case, template="staff.customer_update", recipients=people, now=now,
        key=f"staff.customer_update:{case.id}:{now.isoformat()}",
        extra={"from_address": sender, "excerpt": _excerpt(excerpt)} | (extra or {}),
    )


def queue_reply_not_sent(session: Session, desk: Desk, message: Any, *, now: datetime, held_id: int, reason: str) -> int | None:
    """A technician's emailed reply that did not reach the customer: they are told why, and how to
    get it through (issue 12). Once per held message; never to an automatic message (the caller
    holds only human mail from technicians)."""
    intent = NotificationIntent(
        kind="staff.reply_not_sent",
        template="staff.reply_not_sent",
        recipients=(message.from_address,),
        idempotency_key=f"staff.reply_not_sent:{held_id}",
        due_at=now,
        context={"original_subject": message.subject, "reason": reason, "held_id": held_id, "tz": desk.timezone},
        locale="en",
        in_reply_to=message.message_id,
        references=(*message.references[-20:], message.message_id) if message.message_id else (),
        auto_submitted="auto-replied",
    )
    return enqueue(intent, session=session, now=now, hostname=desk.hostname)


def queue_non_mpoc_notice(session: Session, desk: Desk, message: Any, *, now: datetime, held_id: int) -> int | None:
    """The one polite notice that only designated contacts can open cases (SPEC.md §1)."""
    from mailcase.store.directory import organisation_for_address

    organisation = organisation_for_address(message.from_address, session=session)
    intent = NotificationIntent(
        kind="customer.non_mpoc",
        template="customer.non_mpoc",
        recipients=(message.from_address,),
        idempotency_key=f"customer.non_mpoc:{message.from_address}:{held_id}",
        due_at=now,
        # Never the sender's subject or body: the From address may be forged, and quoting it
        # would relay an attacker's text from our address (backscatter).
        context={
            "sender_address": message.from_address,
            "organisation_name": organisation.name if organisation else "",
        },
        locale=organisation.locale if organisation else "en",
        in_reply_to=message.message_id,
        references=(*message.references[-20:], message.message_id) if message.message_id else (),
        auto_submitted="auto-replied",
    )
    return enqueue(intent, session=session, now=now, hostname=desk.hostname)


def queue_sender_unverified_notice(
    session: Session, desk: Desk, message: Any, *, address: str, template: str, now: datetime, held_id: int, reason: str,
) -> int | None:
    """Tell a contact or technician, at their address on file, that a message claiming to be from
    them was held (issue 10). Not threaded on the held message: it may be a forgery, and its
    Message-ID and subject are the forger's; the subject is quoted in the body only."""
    from mailcase.store.directory import organisation_for_address

    organisation = organisation_for_address(address, session=session)
    intent = NotificationIntent(
        kind=template,
        template=template,
        recipients=(address,),
        idempotency_key=f"{template}:{address}:{held_id}",
        due_at=now,
        context={
            "original_subject": message.subject[:300],
            "claimed_address": address,
            "reason": reason[:500],
            "received_at": now.isoformat(),
            "organisation_name": organisation.name if organisation else "",
            "tz": (organisation.timezone if organisation and getattr(organisation, "timezone", None) else desk.timezone),
        },
        locale=organisation.locale if organisation else "en",
        auto_submitted="auto-generated",
    )
    return enqueue(intent, session=session, now=now, hostname=desk.hostname)




def attachment_context(parts: Sequence[Any], *, limit: int, case_number: int) -> dict[str, Any]:
    """What a staff notice says about a message's attachments, and which it carries.

    Every attachment is listed (`attachments`: filename, content_type, size, attached); the files
    are attached (`_stored_attachments`, read from the attachment table at delivery) while their
    total stays within `limit` bytes ([attachments] notice_max_bytes); the rest are named with the
    command that fetches them. `parts` are `AttachmentPart`s (filename, content_type, data, sha256).
    """
    if not parts:
        return {}
    listed, stored, total = [], [], 0
    for part in parts:
        size = len(part.data)
        attached = total + size <= limit
        if attached:
            total += size
            stored.append({"filename": part.filename, "content_type": part.content_type, "sha256": part.sha256})
        listed.append(
            {
                "filename": part.filename,
                "content_type": part.content_type,
                "size": size,
                "attached": attached,
                "fetch": f"mailcase attachments get {format_case_number(case_number)} {part.sha256[:12]}",
            }
        )
    return {"attachments": listed, "_stored_attachments": stored}


def _excerpt(text: str, limit: int = 20_000) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit].rstrip() + " …"


def replan(desk: Desk, session: Session, case: Case, now: datetime) -> None:
    if desk.replan is not None:
        desk.replan(session, case, now)


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
    from mailcase.store.models import Technician

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
    if case.first_response_at is None:
        case.first_response_at = now
    case.last_agent_update_at = now
    case.needs_attention = False
    case.updated_at = now
    if case.status in (CaseStatus.NEW, CaseStatus.CUSTOMER_REOPENED):
        set_status(session, desk, case, CaseStatus.IN_PROGRESS, now=now, author=author, notify_customer=False)
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


ESCALATION_LEVELS = {1: "support desk", 2: "support manager", 3: "VP of customer support", 4: "executive"}


def escalation_contact(settings: Any, case: Case, level: int) -> str:
    """Who owns a case at each level of the escalation path (config `[escalation]`)."""
    escalation = settings.escalation
    if level <= 1:
        return escalation.support_desk
    if level == 2:
        team = escalation.teams.get(case.team or "")
        return team.manager if team and team.manager else escalation.support_desk
    if level == 3:
        return escalation.vp
    return escalation.executive


def escalate(session: Session, desk: Desk, case: Case, *, now: datetime, author: str, settings: Any) -> bool:
    """A customer's `#escalate`: one level up the path (max 4); the new owner gets the history, the customer is told."""
    if case.escalation_level >= 4:
        add_event(
            session=session, case=case, kind=EventKind.ESCALATED, at=now, author=author,
            summary="escalation requested, already at the highest level (executive)",
        )
        return False
    case.escalation_level += 1
    level = case.escalation_level
    owner = escalation_contact(settings, case, level)
    add_event(
        session=session, case=case, kind=EventKind.ESCALATED, at=now, author=author,
        summary=f"escalated by the customer to level {level} ({ESCALATION_LEVELS[level]}: {owner})",
        data={"level": level, "owner": owner},
    )
    history = [
        {"at": e.at.isoformat(), "author": e.author, "summary": e.summary}
        for e in events_of(session=session, case_id=case.id)  # type: ignore[arg-type]
    ]
    queue_staff_notice(
        session, desk, case, template="staff.escalated", recipients=[owner], now=now,
        key=f"staff.escalated:{case.id}:{level}",
        extra={"level": level, "owner_name": owner, "reason": "customer", "history": history[-50:]},
    )
    queue_customer_notice(
        session, desk, case, template="customer.escalated", event=f"escalated:{level}", now=now,
        extra={"level": level, "owner_name": f"{ESCALATION_LEVELS[level]} ({owner})", "reason": "customer"},
        key=f"customer.escalated:{case.id}:{level}",
    )
    session.add(case)
    return True
