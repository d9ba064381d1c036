"""The SQL of a person's erasure (`mailcase directory erase`): their address and name replaced by a
pseudonym wherever the desk kept them, the raw messages they sent emptied, their directory entry,
subscriptions and bounce record deleted, and one history line per case saying that an erasure
happened; `session=` in, never commits, and never writes the erased address or name anywhere."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from mailcase.domain import EventKind, OutboxState
from mailcase.store.common import rows_affected
from mailcase.store.models import (
    AutoReplyLog,
    Case,
    CaseEvent,
    CaseParticipant,
    Contact,
    ContactRole,
    HeldMessage,
    Message,
    Outbox,
    RawMessageRecord,
    RecipientHealth,
    Subscription,
)
from mailcase.store.retention import empty_raw

ERASED_NAME = "(erased)"
MIN_NAME_LENGTH = 3
"""Names shorter than this are not searched for in texts: "Al" would erase parts of other words' company."""


def new_pseudonym() -> str:
    """A random address in the reserved `.invalid` domain (RFC 2606): it cannot be mapped back to the
    person (no hash of the address to test guesses against) and mail to it can never be delivered."""
    return f"erased-{secrets.token_hex(6)}@erased.invalid"


@dataclass(slots=True)
class ErasureCounts:
    """What an erasure changed (or, dry, would change), by table."""

    cases: set[int] = field(default_factory=set)
    messages: int = 0
    participants: int = 0
    outbox: int = 0
    notices_cancelled: int = 0
    held: int = 0
    raw_messages: int = 0
    events: int = 0
    directory: int = 0
    subscriptions: int = 0

    def as_json(self) -> dict[str, int]:
        return {
            "cases": len(self.cases), "messages": self.messages, "participants": self.participants,
            "outbox": self.outbox, "notices_cancelled": self.notices_cancelled, "held": self.held,
            "raw_messages_deleted": self.raw_messages, "history_lines": self.events,
            "directory_entries": self.directory, "subscriptions": self.subscriptions,
        }


def erase_person(
    *, session: Session, address: str, pseudonym: str, now: datetime, actor: str
) -> ErasureCounts:
    """Replace `address` (and the names it went by) with `pseudonym` in cases, participants, messages,
    outbox and held rows and the history; empty the raw messages it sent; add one ERASURE line to the
    history of every case touched, by `actor`. Rules, in order: names are gathered first (the
    directory's and every From display name the address used), then each table is rewritten."""
    address = address.strip().lower()
    names = _names_of(session, address)
    scrub = _scrubber(address, pseudonym, names)
    counts = ErasureCounts()

    # Raw messages they sent: found before their messages' From is rewritten.
    sent_raw: set[int | None] = set(
        session.exec(select(Message.raw_id).where(sa.func.lower(Message.from_address) == address))
    )
    sent_raw.update(session.exec(select(HeldMessage.raw_id).where(sa.func.lower(HeldMessage.from_address) == address)).all())
    enveloped = select(RawMessageRecord.id).where(sa.func.lower(RawMessageRecord.envelope_from) == address)
    sent_raw.update(session.exec(enveloped).all())
    raw_ids = sorted(i for i in sent_raw if i is not None)
    counts.raw_messages, _ = empty_raw(session, raw_ids, now)
    for raw in _rows(session, RawMessageRecord, RawMessageRecord.id, raw_ids):
        raw.envelope_from = pseudonym if raw.envelope_from.strip().lower() == address else scrub(raw.envelope_from)
        raw.reason = scrub(raw.reason)
        session.add(raw)
    for raw in session.exec(select(RawMessageRecord).where(_mentions(address, RawMessageRecord.reason))):
        raw.reason = scrub(raw.reason)
        session.add(raw)

    for case in session.exec(
        select(Case).where(sa.or_(
            sa.func.lower(Case.requester) == address, _mentions(address, Case.subject),
            *(_mentions(name, Case.subject) for name in names),
        ))
    ):
        case.requester = pseudonym if (case.requester or "").lower() == address else case.requester
        case.subject = scrub(case.subject)
        session.add(case)
        counts.cases.add(_id(case.id))

    for case_id in session.exec(select(CaseParticipant.case_id).where(CaseParticipant.address == address)):
        counts.cases.add(case_id)
    counts.participants = rows_affected(
        session.execute(
            sa.update(CaseParticipant).where(col(CaseParticipant.address) == address).values(address=pseudonym)
        )
    )

    text_columns = (Message.subject, Message.text, Message.new_text, Message.to_addresses, Message.cc_addresses)
    by_name = [_mentions(name, column) for name in names for column in (Message.text, Message.new_text)]
    for message in session.exec(
        select(Message).where(
            sa.or_(sa.func.lower(Message.from_address) == address, *(_mentions(address, c) for c in text_columns), *by_name)
        )
    ):
        if message.from_address.lower() == address:
            message.from_address, message.from_name = pseudonym, ERASED_NAME
        message.to_addresses = scrub_json(message.to_addresses, scrub)
        message.cc_addresses = scrub_json(message.cc_addresses, scrub)
        message.subject, message.text, message.new_text = scrub(message.subject), scrub(message.text), scrub(message.new_text)
        message.details = scrub_json(message.details, scrub)
        session.add(message)
        counts.messages += 1
        if message.case_id is not None:
            counts.cases.add(message.case_id)

    for notice in session.exec(
        select(Outbox).where(sa.or_(
            *(_mentions(address, c) for c in (Outbox.recipients, Outbox.cc, Outbox.context)),
            *(_mentions(name, Outbox.context) for name in names if name.isascii()),  # JSON escapes the rest
        ))
    ):
        addressed = address in {a.lower() for a in [*notice.recipients, *notice.cc]}
        notice.recipients = scrub_json(notice.recipients, scrub)
        notice.cc = scrub_json(notice.cc, scrub)
        notice.context = scrub_json(notice.context, scrub)
        notice.last_error, notice.bounce_reason = scrub(notice.last_error), scrub(notice.bounce_reason)
        if addressed and notice.state is OutboxState.QUEUED:
            # Never deliver to a person who asked to be forgotten (nor to the undeliverable pseudonym).
            notice.state = OutboxState.CANCELLED
            notice.last_error = "cancelled: a recipient's personal data was erased"
            counts.notices_cancelled += 1
        session.add(notice)
        counts.outbox += 1
        if notice.case_id is not None:
            counts.cases.add(notice.case_id)

    for held in session.exec(
        select(HeldMessage).where(
            sa.or_(sa.func.lower(HeldMessage.from_address) == address, _mentions(address, HeldMessage.reason))
        )
    ):
        if held.from_address.strip().lower() == address:
            held.from_address = pseudonym
            held.subject = scrub(held.subject)
        held.reason = scrub(held.reason)
        session.add(held)
        counts.held += 1
        if held.case_id is not None:
            counts.cases.add(held.case_id)

    for event in session.exec(
        select(CaseEvent).where(
            sa.or_(sa.func.lower(CaseEvent.author) == address, _mentions(address, CaseEvent.summary),
                   _mentions(address, CaseEvent.data), *(_mentions(name, CaseEvent.summary) for name in names))
        )
    ):
        event.author = pseudonym if event.author.lower() == address else scrub(event.author)
        event.summary = scrub(event.summary)
        event.data = scrub_json(event.data, scrub)
        session.add(event)
        counts.events += 1
        counts.cases.add(event.case_id)

    counts.directory, counts.subscriptions = _forget(session, address)
    for case_id in sorted(counts.cases):
        # The history says that it happened, by whom and when; never what was erased.
        session.add(CaseEvent(
            case_id=case_id, kind=EventKind.ERASURE, at=now, author=actor,
            summary="one person's personal data was erased on request (mailcase directory erase)",
        ))
    return counts


def _forget(session: Session, address: str) -> tuple[int, int]:
    """Delete the directory entry, subscriptions, bounce record and reply-rate log of `address`."""
    contacts = [c for c in session.exec(select(Contact.id).where(sa.func.lower(Contact.email) == address)) if c]
    if contacts:
        session.execute(sa.delete(ContactRole).where(col(ContactRole.contact_id).in_(contacts)))
        session.execute(sa.delete(Contact).where(col(Contact.id).in_(contacts)))
    subscriptions = session.execute(sa.delete(Subscription).where(sa.func.lower(Subscription.address) == address))
    session.execute(sa.delete(RecipientHealth).where(sa.func.lower(RecipientHealth.address) == address))
    session.execute(sa.delete(AutoReplyLog).where(sa.func.lower(AutoReplyLog.address) == address))
    return len(contacts), rows_affected(subscriptions)


def _names_of(session: Session, address: str) -> list[str]:
    """The names `address` went by: the directory's and the From display names of its messages."""
    found = set(session.exec(select(Contact.name).where(sa.func.lower(Contact.email) == address)))
    found |= set(session.exec(select(Message.from_name).where(sa.func.lower(Message.from_address) == address)))
    return sorted((n.strip() for n in found if n and len(n.strip()) >= MIN_NAME_LENGTH), key=len, reverse=True)


def _scrubber(address: str, pseudonym: str, names: list[str]) -> Callable[[str], str]:
    """Text with every `address` (any case) replaced by `pseudonym` and every name by ERASED_NAME."""
    patterns = [(re.compile(re.escape(address), re.IGNORECASE), pseudonym)]
    patterns += [(re.compile(rf"(?<!\w){re.escape(name)}(?!\w)", re.IGNORECASE), ERASED_NAME) for name in names]

    def scrub(text: str) -> str:
        for pattern, replacement in patterns:
            text = pattern.sub(replacement, text)
        return text

    return scrub


def scrub_json(value: Any, scrub: Callable[[str], str]) -> Any:
    """`value` (JSON: dicts, lists, strings, numbers) with `scrub` applied to every string, keys included."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, list):
        return [scrub_json(v, scrub) for v in value]
    if isinstance(value, dict):
        return {scrub(k): scrub_json(v, scrub) for k, v in value.items()}
    return value


def _mentions(needle: str, column: Any) -> Any:
    """`column` (text or JSON) contains `needle`, any case (a full scan; an erasure is rare)."""
    escaped = needle.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return sa.func.lower(sa.cast(column, sa.Text)).like(f"%{escaped}%", escape="\\")


def _rows(session: Session, model: Any, key: Any, ids: list[int]) -> list[Any]:
    return list(session.exec(select(model).where(col(key).in_(ids)))) if ids else []


def _id(value: int | None) -> int:
    assert value is not None
    return value
