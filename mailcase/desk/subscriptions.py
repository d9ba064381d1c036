"""Who follows master cases: subscribe and unsubscribe (email commands, CLI, one-click List-Unsubscribe), each
confirmed by a `customer.subscription` notice; applied in the caller's transaction, never commits or sends mail.

Email commands (SPEC.md §1, "Master cases"): `subscribe <case>` / `subscribe platform <name>` /
`unsubscribe …`, or a bare `subscribe` in reply to one of our messages about a case. A case
number that is not a master case means the master case it is linked to.

Every broadcast carries `List-Unsubscribe: <mailto:support+unsub-<scope>-<mac>@domain>`
(RFC 2369 §3.2; one-click in the sense of RFC 8058 §3.1, by mail). `<scope>` is `m` (maintenance
notices) or `c<master number>`; `<mac>` is an HMAC-SHA256 of scope and recipient under the
installation secret (`rules.tokens`), so the address works only for the recipient it was made
for and cannot be guessed or replayed for someone else. Mail to such an address unsubscribes its
sender: `rules.decide` (its rule 1) says so, and the pipeline applies it with `opt_out_of_maintenance`
or `unsubscribe`.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from mailcase.desk.context import Desk
from mailcase.desk.notices import recipient_key
from mailcase.domain import CaseKind, InboundMessage, NotificationIntent, format_case_number
from mailcase.rules.classify import Subscribe, Unsubscribe
from mailcase.store.cases import case_by_id, case_by_number
from mailcase.store.directory import organisation_for_address
from mailcase.store.models import Case, Message, Outbox, Product
from mailcase.store.outbox import enqueue
from mailcase.store.subscriptions import (
    OPTOUT_MAINTENANCE,
    add_subscription,
    case_optout_target,
    case_target,
    platform_target,
    remove_subscriptions,
)

log = logging.getLogger(__name__)


def opt_out_of_maintenance(session: Session, *, address: str, now: datetime) -> None:
    """The address gets no more maintenance notices (a one-click List-Unsubscribe of scope `m`)."""
    add_subscription(session=session, address=address.strip().lower(), target=OPTOUT_MAINTENANCE, now=now)


# ---------------------------------------------------------------------------------------------
# Subscribing and unsubscribing


def master_of(session: Session, case: Case) -> Case | None:
    """A master case itself, or the master case a case is linked to; None otherwise."""
    if case.kind == CaseKind.MASTER:
        return case
    if case.master_id is not None:
        return case_by_id(session=session, case_id=case.master_id)
    return None


def canonical_platform(session: Session, name: str) -> str:
    """The directory's spelling of a product name (case-insensitive), else the name as typed."""
    cleaned = " ".join(name.split())
    for product in session.exec(select(Product.name)):
        if product.casefold() == cleaned.casefold():
            return product
    return cleaned


def subscribe(
    session: Session,
    desk: Desk,
    *,
    address: str,
    now: datetime,
    case: Case | None = None,
    platform: str | None = None,
    notify: bool = True,
    answering: InboundMessage | None = None,
) -> bool:
    """Follow one master case or every master case of a platform; True when the row is new.

    Subscribing to a case also withdraws an earlier one-click opt-out of it. The confirmation
    is sent even when the address was already subscribed: the person asked and gets an answer.
    """
    address = address.strip().lower()
    if case is not None:
        assert case.id is not None
        new = add_subscription(
            session=session, address=address, target=case_target(case.id), now=now, case_id=case.id
        )
        remove_subscriptions(session=session, address=address, targets=[case_optout_target(case.id)])
    elif platform:
        platform = canonical_platform(session, platform)
        new = add_subscription(
            session=session, address=address, target=platform_target(platform), now=now, platform=platform
        )
    else:
        raise ValueError("subscribe needs a master case or a platform")
    if notify:
        _confirm(session, desk, address, "subscribed", case=case, platform=platform, now=now, answering=answering)
    return new


def unsubscribe(
    session: Session,
    desk: Desk,
    *,
    address: str,
    now: datetime,
    case: Case | None = None,
    platform: str | None = None,
    notify: bool = True,
    answering: InboundMessage | None = None,
) -> bool:
    """Stop following a master case (its subscription, its platform's, and an opt-out so linked-case
    mail stops too) or a platform; True when a subscription existed."""
    address = address.strip().lower()
    if case is not None:
        assert case.id is not None
        targets = [case_target(case.id)]
        if case.platform:
            targets.append(platform_target(case.platform))
        removed = remove_subscriptions(session=session, address=address, targets=targets)
        add_subscription(
            session=session, address=address, target=case_optout_target(case.id), now=now, case_id=case.id
        )
    elif platform:
        platform = canonical_platform(session, platform)
        removed = remove_subscriptions(session=session, address=address, targets=[platform_target(platform)])
    else:
        raise ValueError("unsubscribe needs a master case or a platform")
    if notify:
        _confirm(session, desk, address, "unsubscribed", case=case, platform=platform, now=now, answering=answering)
    return removed > 0


def _confirm(
    session: Session,
    desk: Desk,
    address: str,
    action: str,
    *,
    case: Case | None,
    platform: str | None,
    now: datetime,
    answering: InboundMessage | None,
) -> int | None:
    organisation = organisation_for_address(address, session=session)
    context: dict[str, Any] = {"action": action, "support_address": desk.support_address}
    if case is not None:
        context |= {"master_number": case.number, "master_subject": case.subject, "platform": case.platform or ""}
        target = case_target(case.id or 0)
    else:
        context |= {"platform": platform or ""}
        target = platform_target(platform or "")
    in_reply_to, references = "", tuple[str, ...]()
    if answering is not None and answering.message_id:
        in_reply_to = answering.message_id
        references = (*answering.references[-20:], answering.message_id)
    intent = NotificationIntent(
        kind="customer.subscription",
        template="customer.subscription",
        recipients=(address,),
        idempotency_key=recipient_key(f"customer.subscription:{target}:{action}:{now.isoformat()}", address),
        due_at=now,
        context=context,
        locale=organisation.locale if organisation else "en",
        case_id=case.id if case is not None else None,
        in_reply_to=in_reply_to,
        references=references,
        # An answer to a person's mail is auto-replied (RFC 3834 §5); one an agent caused is auto-generated.
        auto_submitted="auto-replied" if answering is not None else "auto-generated",
    )
    return enqueue(intent, session=session, now=now, hostname=desk.hostname)


# ---------------------------------------------------------------------------------------------
# Email commands


def apply_email_command(
    session: Session,
    desk: Desk,
    command: Subscribe | Unsubscribe,
    *,
    address: str,
    now: datetime,
    message: InboundMessage,
) -> Case | None:
    """Carry out `subscribe …` / `unsubscribe …` from an email and confirm it to the sender.

    Rules, in order:
    1. `platform <name>` follows (or stops following) every master case of that platform;
    2. a case number names a master case, or a case linked to one (meaning its master);
    3. no argument: the case of the thread the message answers (our Message-ID in
       In-Reply-To/References), then as in 2;
    4. a case that is unknown, or neither a master case nor linked to one, changes nothing and
       gets no confirmation (logged); the pipeline records the decision either way.
    Returns the master case concerned (None for a platform or when nothing was done).
    """
    verb = "subscribe" if isinstance(command, Subscribe) else "unsubscribe"
    apply = subscribe if isinstance(command, Subscribe) else unsubscribe
    if command.platform:
        apply(session, desk, address=address, platform=command.platform, now=now, answering=message)
        return None
    target: Case | None = None
    if command.case_number is not None:
        target = case_by_number(session=session, number=command.case_number)
    else:
        target = _thread_case(session, message)
    master = master_of(session, target) if target is not None else None
    if master is None:
        log.info(
            "%s command from %s names no master case (%s); nothing changed",
            verb,
            address,
            format_case_number(command.case_number) if command.case_number else "no case in the thread",
        )
        return None
    apply(session, desk, address=address, case=master, now=now, answering=message)
    return master


def _thread_case(session: Session, message: InboundMessage) -> Case | None:
    """The case of our message (or a message on a case) that this one answers, newest reference first."""
    ids = [i for i in (message.in_reply_to, *reversed(message.references)) if i]
    for mid in dict.fromkeys(ids):
        case_id = session.exec(
            select(Outbox.case_id).where(Outbox.message_id == mid, col(Outbox.case_id).is_not(None))
        ).first()
        if case_id is None:
            case_id = session.exec(
                select(Message.case_id).where(Message.message_id == mid, col(Message.case_id).is_not(None))
            ).first()
        if case_id is not None:
            return case_by_id(session=session, case_id=case_id)
    return None
