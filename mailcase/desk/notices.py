"""The notices case work queues: to the customer (threaded on their last message) and to staff (one per person,
each with its own reply token), as outbox rows in the caller's transaction.

It decides nothing about *whether* to tell anyone, nor with which template (the actions in
`desk.cases` and the rules do: a decision's `NoticeIntent`s, resolved here by `queue_notices`); it
never commits, renders or sends mail.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, assert_never

from sqlmodel import Session, col, select

from mailcase.desk.context import Desk
from mailcase.domain import (
    AttachmentPart,
    Audience,
    AutoKind,
    CaseKind,
    Direction,
    InboundMessage,
    NoticeIntent,
    NotificationIntent,
    format_case_number,
)
from mailcase.store.cases import participants_of
from mailcase.store.directory import ContactOrganisation, organisation_for_address
from mailcase.store.facts import auto_replied_since, on_file_address
from mailcase.store.messages import log_auto_reply
from mailcase.store.models import Case, Contact, Message, Organisation, Technician
from mailcase.store.outbox import enqueue, enqueue_many
from mailcase.store.technicians import team_addresses

# The case's organisation as a caller may already hold it: the row, or a contact's lookup of it.
ShownOrganisation = Organisation | ContactOrganisation

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
    organisation: ShownOrganisation | None = None,
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


def case_context(session: Session, case: Case, *, organisation: ShownOrganisation | None = None) -> dict[str, Any]:
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


def queue_customer_notice(
    session: Session,
    desk: Desk,
    case: Case,
    *,
    template: str,
    event: str,
    now: datetime,
    extra: dict[str, Any] | None = None,
    key: str | None = None,
    auto_submitted: str = "auto-generated",
) -> int | None:
    """Queue a message to the case's requester (participants copied), threaded on their last
    message (`customer_notice`); the new outbox id, or None when nothing was queued."""
    intent = customer_notice(
        session, desk, case, template=template, event=event, now=now, extra=extra, key=key,
        auto_submitted=auto_submitted,
    )
    return enqueue(intent, session=session, now=now, hostname=desk.hostname) if intent is not None else None


def customer_notice(
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
    organisation: ShownOrganisation | None = None,
) -> NotificationIntent | None:
    """A message to the case's requester (participants copied), threaded on their last message,
    for a caller that queues it (None: nobody to tell, or a master case, whose customers hear
    through its linked cases). `participants` and `recipient_name`: as `customer_thread`'s, when
    the caller knows them."""
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
    return NotificationIntent(
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
    organisation: ShownOrganisation | None = None,
) -> None:
    """Queue a notice to technicians or managers (one statement for all of them); replies to it
    thread back through the token."""
    intents = staff_notice(
        session, desk, case, template=template, recipients=recipients, now=now, key=key, extra=extra,
        organisation=organisation,
    )
    enqueue_many(intents, session=session, now=now, hostname=desk.hostname)


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
    organisation: ShownOrganisation | None = None,
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


def _reply_not_sent(
    desk: Desk, message: InboundMessage, *, template: str, now: datetime, key: str, held_id: int, reason: str,
) -> NotificationIntent:
    """A technician's emailed reply that did not reach the customer: they are told why, and how to
    get it through (issue 12). Once per held message; never to an automatic message (the caller
    holds only human mail from technicians)."""
    return NotificationIntent(
        kind=template,
        template=template,
        recipients=(message.from_address,),
        idempotency_key=key,
        due_at=now,
        context={"original_subject": message.subject, "reason": reason, "held_id": held_id, "tz": desk.timezone},
        locale="en",
        in_reply_to=message.message_id,
        references=(*message.references[-20:], message.message_id) if message.message_id else (),
        auto_submitted="auto-replied",
    )


def _non_mpoc_notice(session: Session, message: InboundMessage, *, now: datetime, key: str) -> NotificationIntent:
    """The one polite notice that only designated contacts can open cases (SPEC.md §1)."""
    organisation = organisation_for_address(message.from_address, session=session)
    return NotificationIntent(
        kind="customer.non_mpoc",
        template="customer.non_mpoc",
        recipients=(message.from_address,),
        idempotency_key=key,
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


def _sender_unverified_notice(
    session: Session, desk: Desk, message: InboundMessage, *, address: str, template: str, now: datetime, key: str, reason: str,
) -> NotificationIntent:
    """Tell a contact or technician, at their address on file, that a message claiming to be from
    them was held (issue 10). Not threaded on the held message: it may be a forgery, and its
    Message-ID and subject are the forger's; the subject is quoted in the body only."""
    organisation = organisation_for_address(address, session=session)
    return NotificationIntent(
        kind=template,
        template=template,
        recipients=(address,),
        idempotency_key=key,
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




@dataclass(frozen=True, slots=True)
class Known:
    """What the code applying a decision already holds, each saving a query when notices are
    resolved: the case's participants and requester's name (as `customer_thread` takes them), its
    organisation, the technicians it was just assigned among, the held message's id, and the
    values a notice's `context_keys` name that only the desk computes (`response_due_at`, the
    `attachments` context)."""

    participants: Sequence[str] | None = None
    recipient_name: str | None = None
    organisation: ShownOrganisation | None = None
    technicians: Sequence[str] | None = None
    held_id: int | None = None
    context: dict[str, dict[str, Any]] = field(default_factory=dict)
    subject_key: str = ""  # the loop guard's key of the message answered (rules.decide.subject_key)
    claimed_notice_since: datetime | None = None  # a CLAIMED person told since then is not told again


def queue_notices(
    session: Session, desk: Desk, notices: Sequence[NoticeIntent], *, message: InboundMessage, now: datetime,
    case: Case | None = None, known: Known = Known(),
) -> None:
    """Turn a decision's notices into outbox rows: resolve each audience to addresses, fill the
    key's and template's placeholders and the context the rule named; log the automatic answers
    the loop guard counts. The rule chose the template, the audience and the key: nothing here does.
    All of them go in as one statement (a new case's acknowledgement and its notice to each
    technician), in the rule's order."""
    queued: list[NotificationIntent] = []
    for notice in notices:
        for address, template in _queue_notice(
            session, desk, notice, message=message, now=now, case=case, known=known, into=queued,
        ):
            if notice.loop_guarded:
                log_auto_reply(session=session, address=address, kind=template, at=now, subject_key=known.subject_key)
    if queued:
        enqueue_many(queued, session=session, now=now, hostname=desk.hostname)


def _fill(pattern: str, case: Case | None, known: Known, *, address: str = "", role: str = "") -> str:
    return (
        pattern.replace("{case}", str(case.id if case else "")).replace("{held}", str(known.held_id))
        .replace("{address}", address).replace("{role}", role)
    )


def _desk_context(notice: NoticeIntent, message: InboundMessage, known: Known) -> dict[str, Any]:
    available: dict[str, dict[str, Any]] = {
        "excerpt": {"excerpt": _excerpt(message.new_text or message.text)},
        "from_address": {"from_address": message.from_address},
    } | known.context
    context: dict[str, Any] = {}
    for key in notice.context_keys:
        context |= available.get(key, {})
    return context | dict(notice.context)


def _queue_notice(
    session: Session, desk: Desk, notice: NoticeIntent, *, message: InboundMessage, now: datetime, case: Case | None,
    known: Known, into: list[NotificationIntent],
) -> list[tuple[str, str]]:
    """Resolve one notice into outbox rows, added to `into` for the caller's one statement; returns
    the addresses it goes to with the template sent (for the loop guard's log)."""
    key = _fill(notice.idempotency_key, case, known).replace("{now}", notice.due_at.isoformat())
    match notice.audience:
        case Audience.REQUESTER:
            assert case is not None
            intent = customer_notice(
                session, desk, case, template=notice.template, event="", now=notice.due_at, extra=dict(notice.context),
                auto_submitted=notice.auto_submitted, in_reply_to=message.message_id,
                references=(*message.references, message.message_id), key=key, participants=known.participants,
                recipient_name=known.recipient_name, organisation=known.organisation,
            )
            if intent is not None:
                into.append(intent)
            return [(message.from_address, notice.template)]
        case Audience.TEAM | Audience.ASSIGNEE:
            assert case is not None
            if notice.audience is Audience.TEAM:
                people = list(known.technicians) if known.technicians is not None else team_addresses(session=session, team=case.team)
            else:
                people = [case.assignee] if case.assignee else team_addresses(session=session, team=case.team)
            into.extend(staff_notice(
                session, desk, case, template=notice.template, recipients=people, now=notice.due_at, key=key,
                extra=_desk_context(notice, message, known), organisation=known.organisation,
            ))
            return [(person, notice.template) for person in people]
        case Audience.SENDER:
            assert known.held_id is not None
            key = _fill(notice.idempotency_key, case, known, address=message.from_address)
            if notice.template == "customer.non_mpoc":
                into.append(_non_mpoc_notice(session, message, now=notice.due_at, key=key))
            else:
                into.append(_reply_not_sent(
                    desk, message, template=notice.template, now=notice.due_at, key=key, held_id=known.held_id,
                    reason=str(notice.context.get("reason", "")),
                ))
            return [(message.from_address, notice.template)]
        case Audience.CLAIMED:
            found = on_file_address(session=session, address=message.from_address)
            if found is None:
                return []
            on_file, technician = found
            role = "staff" if technician else "customer"
            template = _fill(notice.template, case, known, role=role)
            assert known.claimed_notice_since is not None
            if auto_replied_since(session=session, address=on_file, kind=template, since=known.claimed_notice_since):
                return []
            into.append(_sender_unverified_notice(
                session, desk, message, address=on_file, template=template, now=notice.due_at,
                key=_fill(notice.idempotency_key, case, known, address=on_file, role=role),
                reason=str(notice.context.get("reason", "")),
            ))
            return [(on_file, template)]
        case _:
            assert_never(notice.audience)


def attachment_context(parts: Sequence[AttachmentPart], *, limit: int, case_number: int) -> dict[str, Any]:
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


def recipient_key(prefix: str, address: str) -> str:
    """`<prefix>:<address>`: an outbox idempotency key per recipient, or the address's digest when
    that would not fit the column (400 characters)."""
    key = f"{prefix}:{address}"
    if len(key) <= 400:
        return key
    return f"{prefix[:300]}:sha256:{hashlib.sha256(address.encode()).hexdigest()}"
