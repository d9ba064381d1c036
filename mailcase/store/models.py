"""The data model (SQLModel tables) for everything the support plan keeps; no queries or behaviour here.

Every instant is stored as aware UTC (`UtcDateTime`); statuses and kinds are stored as their
machine names. Tables that a scheduler sweep reads carry an indexed `*_due_at` column.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from mailcase.domain import (
    AutoKind,
    CaseKind,
    CaseStatus,
    Channel,
    Direction,
    EventKind,
    HeldState,
    MaintenanceKind,
    MaintenanceStatus,
    OutboxState,
    Priority,
)


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC in and out, on SQLite (which keeps no offset) and PostgreSQL alike."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: store aware UTC instants")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class EnumString(TypeDecorator[str]):
    """A StrEnum stored as its machine name (a plain VARCHAR) and read back as the enum member,
    so `case.status is CaseStatus.CLOSED` holds for loaded rows as for new ones."""

    impl = sa.String
    cache_ok = True

    def __init__(self, enum: type[StrEnum], length: int) -> None:
        super().__init__(length)
        self.enum = enum

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> str | None:
        return None if value is None else self.enum(value).value

    def process_result_value(self, value: str | None, dialect: sa.Dialect) -> Any:
        return None if value is None else self.enum(value)


def _at(*, index: bool = False, nullable: bool = True) -> Any:
    return Field(default=None, sa_type=UtcDateTime, index=index, nullable=nullable)


def _json(default: Any = None) -> Any:
    factory = (lambda: list(default)) if isinstance(default, list) else (lambda: dict(default or {}))
    return Field(default_factory=factory, sa_type=sa.JSON, nullable=False)


class Counter(SQLModel, table=True):
    """Named monotonic counters (case numbers); incremented with one UPDATE … RETURNING."""

    __tablename__ = "counter"
    name: str = Field(primary_key=True, max_length=64)
    value: int = Field(default=0, sa_type=sa.BigInteger)


class Installation(SQLModel, table=True):
    """Per-installation values generated once by `mailcase init` (e.g. the reply-token secret)."""

    __tablename__ = "installation"
    key: str = Field(primary_key=True, max_length=64)
    value: str


# ---------------------------------------------------------------------------------------------
# The directory


class Product(SQLModel, table=True):
    """A product or platform customers use (e.g. "Microsoft Teams")."""

    __tablename__ = "product"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, max_length=200)


class Organisation(SQLModel, table=True):
    __tablename__ = "organisation"
    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True, max_length=100)
    name: str = Field(max_length=300)
    locale: str = Field(default="en", max_length=8)
    timezone: str = Field(default="America/Denver", max_length=64)
    domains: list[str] = _json([])
    sla_overrides: dict[str, Any] = _json({})
    escalation_contacts: list[str] = _json([])
    extra: dict[str, Any] = _json({})
    active: bool = True


class OrganisationProduct(SQLModel, table=True):
    __tablename__ = "organisation_product"
    organisation_id: int = Field(foreign_key="organisation.id", primary_key=True, ondelete="CASCADE")
    product_id: int = Field(foreign_key="product.id", primary_key=True, index=True, ondelete="CASCADE")


class Contact(SQLModel, table=True):
    """A person at a customer organisation; roles decide what they may do (MPOC, maintenance, …)."""

    __tablename__ = "contact"
    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(unique=True, max_length=320)
    name: str = Field(default="", max_length=300)
    title: str = Field(default="", max_length=300)
    phone: str = Field(default="", max_length=64)
    organisation_id: int = Field(foreign_key="organisation.id", index=True)
    active: bool = True
    extra: dict[str, Any] = _json({})


class ContactRole(SQLModel, table=True):
    __tablename__ = "contact_role"
    contact_id: int = Field(foreign_key="contact.id", primary_key=True, ondelete="CASCADE")
    role: str = Field(primary_key=True, max_length=32, index=True)


class Technician(SQLModel, table=True):
    __tablename__ = "technician"
    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(unique=True, max_length=320)
    name: str = Field(default="", max_length=300)
    team: str = Field(max_length=100, index=True)
    active: bool = True
    extra: dict[str, Any] = _json({})


class AssignmentCursor(SQLModel, table=True):
    """Where round-robin assignment left off in each team."""

    __tablename__ = "assignment_cursor"
    team: str = Field(primary_key=True, max_length=100)
    last_technician_id: int | None = None


# ---------------------------------------------------------------------------------------------
# Cases


class Case(SQLModel, table=True):
    __tablename__ = "support_case"
    __table_args__ = (sa.Index("ix_case_status_org", "status", "organisation_id"),)

    id: int | None = Field(default=None, primary_key=True)
    number: int = Field(unique=True, sa_type=sa.BigInteger)
    kind: CaseKind = Field(default=CaseKind.SUPPORT, sa_type=EnumString(CaseKind, 24))
    organisation_id: int | None = Field(default=None, foreign_key="organisation.id", index=True)
    requester: str | None = Field(default=None, max_length=320)
    subject: str = Field(default="", max_length=998)
    priority: Priority = Field(default=Priority.P4, sa_type=EnumString(Priority, 8))
    status: CaseStatus = Field(default=CaseStatus.NEW, sa_type=EnumString(CaseStatus, 32))
    assignee: str | None = Field(default=None, max_length=320, index=True)
    team: str | None = Field(default=None, max_length=100)
    platform: str | None = Field(default=None, max_length=200)
    related_to_id: int | None = Field(default=None, foreign_key="support_case.id")
    duplicate_of_id: int | None = Field(default=None, foreign_key="support_case.id")
    master_id: int | None = Field(default=None, foreign_key="support_case.id", index=True)
    etr: datetime | None = _at()
    hold_until: datetime | None = _at()
    needs_attention: bool = False
    escalation_level: int = 1
    awaiting_customer_since: datetime | None = _at()
    update_clock_resumed_at: datetime | None = _at()
    created_at: datetime = Field(sa_type=UtcDateTime, nullable=False)
    updated_at: datetime = Field(sa_type=UtcDateTime, nullable=False)
    sla_start_at: datetime | None = _at()
    first_response_at: datetime | None = _at()
    last_customer_activity_at: datetime | None = _at()
    last_agent_update_at: datetime | None = _at()
    resolved_at: datetime | None = _at()
    closed_at: datetime | None = _at()
    # Deadlines as last computed by rules.sla, shown by `cases sla`; the sweeps read next_due_at.
    response_due_at: datetime | None = _at()
    update_due_at: datetime | None = _at()
    resolution_due_at: datetime | None = _at()
    customer_due_at: datetime | None = _at()
    next_due_at: datetime | None = _at(index=True)


class CaseParticipant(SQLModel, table=True):
    """Customer-side addresses on a case: the requester and whoever the customer copied."""

    __tablename__ = "case_participant"
    case_id: int = Field(foreign_key="support_case.id", primary_key=True, ondelete="CASCADE")
    address: str = Field(primary_key=True, max_length=320, index=True)
    role: str = Field(default="cc", max_length=16)


class CaseEvent(SQLModel, table=True):
    """One line of a case's history: who did what, when."""

    __tablename__ = "case_event"
    id: int | None = Field(default=None, primary_key=True)
    case_id: int = Field(foreign_key="support_case.id", index=True)
    kind: EventKind = Field(sa_type=EnumString(EventKind, 32))
    at: datetime = Field(sa_type=UtcDateTime, nullable=False)
    author: str = Field(default="", max_length=320)
    summary: str = Field(default="", sa_type=sa.Text)
    data: dict[str, Any] = _json({})
    message_id: int | None = Field(default=None, foreign_key="message.id")


# ---------------------------------------------------------------------------------------------
# Mail


class RawMessageRecord(SQLModel, table=True):
    """Every inbound message exactly as received, with what was decided about it (for `trace`)."""

    __tablename__ = "raw_message"
    __table_args__ = (sa.Index("ix_raw_message_received_at", "received_at"),)  # the retention purge
    id: int | None = Field(default=None, primary_key=True)
    channel: Channel = Field(sa_type=EnumString(Channel, 8))
    received_at: datetime = Field(sa_type=UtcDateTime, nullable=False)
    envelope_from: str = Field(default="", max_length=998)
    envelope_to: list[str] = _json([])
    source: str = Field(default="", max_length=500)
    size: int = 0
    sha256: str = Field(max_length=64, index=True)
    data: bytes = Field(sa_type=sa.LargeBinary)
    message_id_header: str = Field(default="", max_length=998, index=True)
    dedupe_key: str | None = Field(default=None, unique=True, max_length=200)
    decision: str = Field(default="", max_length=40)
    reason: str = Field(default="", sa_type=sa.Text)
    case_id: int | None = Field(default=None, foreign_key="support_case.id", index=True)
    # Who vouched for the From domain (domain.SenderVerdict.as_json): shown by `trace`, `cases show`.
    sender_verdict: dict[str, Any] = _json({})
    # When the retention purge or an erasure deleted `data` (left empty); the row and its decision stay.
    purged_at: datetime | None = _at()


class Message(SQLModel, table=True):
    """A parsed message on a case, inbound or outbound."""

    __tablename__ = "message"
    id: int | None = Field(default=None, primary_key=True)
    case_id: int | None = Field(default=None, foreign_key="support_case.id", index=True)
    direction: Direction = Field(sa_type=EnumString(Direction, 8))
    message_id: str = Field(default="", max_length=998, index=True)
    in_reply_to: str = Field(default="", max_length=998)
    references: list[str] = _json([])
    from_address: str = Field(default="", max_length=320)
    from_name: str = Field(default="", max_length=300)
    to_addresses: list[str] = _json([])
    cc_addresses: list[str] = _json([])
    subject: str = Field(default="", sa_type=sa.Text)
    text: str = Field(default="", sa_type=sa.Text)
    new_text: str = Field(default="", sa_type=sa.Text)
    auto_kind: AutoKind = Field(default=AutoKind.HUMAN, sa_type=EnumString(AutoKind, 16))
    raw_id: int | None = Field(default=None, foreign_key="raw_message.id", index=True)
    outbox_id: int | None = Field(default=None, foreign_key="outbox.id")
    received_at: datetime = Field(sa_type=UtcDateTime, nullable=False)
    details: dict[str, Any] = _json({})


class Attachment(SQLModel, table=True):
    """Attachment bodies, content-addressed by SHA-256 so each is stored once."""

    __tablename__ = "attachment"
    sha256: str = Field(primary_key=True, max_length=64)
    size: int = 0
    data: bytes = Field(sa_type=sa.LargeBinary)
    # When the retention purge deleted `data` (left empty); file names and sizes stay on the messages.
    purged_at: datetime | None = _at()


class MessageAttachment(SQLModel, table=True):
    __tablename__ = "message_attachment"
    id: int | None = Field(default=None, primary_key=True)
    message_id: int = Field(foreign_key="message.id", index=True, ondelete="CASCADE")
    sha256: str = Field(foreign_key="attachment.sha256", max_length=64)
    filename: str = Field(default="", max_length=500)
    content_type: str = Field(default="application/octet-stream", max_length=200)
    inline: bool = False
    content_id: str = Field(default="", max_length=500)


class HeldMessage(SQLModel, table=True):
    """A message kept for an agent's review instead of opening or updating a case."""

    __tablename__ = "held_message"
    id: int | None = Field(default=None, primary_key=True)
    raw_id: int = Field(foreign_key="raw_message.id", index=True)
    from_address: str = Field(default="", max_length=998)
    subject: str = Field(default="", sa_type=sa.Text)
    reason: str = Field(default="", sa_type=sa.Text)
    received_at: datetime = Field(sa_type=UtcDateTime, nullable=False)
    state: HeldState = Field(default=HeldState.HELD, sa_type=EnumString(HeldState, 16), index=True)
    resolved_at: datetime | None = _at()
    resolved_by: str = Field(default="", max_length=320)
    case_id: int | None = Field(default=None, foreign_key="support_case.id")
    # When the held digest warned that this message will be purged ([retention] held_days).
    purge_warned_at: datetime | None = _at()


# ---------------------------------------------------------------------------------------------
# Outgoing mail


class Outbox(SQLModel, table=True):
    """One outgoing message; unique idempotency key (kind, subject of the notice, due instant)."""

    __tablename__ = "outbox"
    __table_args__ = (sa.Index("ix_outbox_state_next", "state", "next_attempt_at"),)

    id: int | None = Field(default=None, primary_key=True)
    idempotency_key: str = Field(unique=True, max_length=400)
    kind: str = Field(max_length=64, index=True)
    case_id: int | None = Field(default=None, foreign_key="support_case.id", index=True)
    maintenance_id: int | None = Field(default=None, foreign_key="maintenance_window.id", index=True)
    recipients: list[str] = _json([])
    cc: list[str] = _json([])
    template: str = Field(max_length=200)
    locale: str = Field(default="en", max_length=8)
    context: dict[str, Any] = _json({})
    message_id: str = Field(max_length=998, index=True)
    in_reply_to: str = Field(default="", max_length=998)
    references: list[str] = _json([])
    reply_to: str = Field(default="", max_length=320)
    auto_submitted: str = Field(default="auto-generated", max_length=32)
    state: OutboxState = Field(default=OutboxState.QUEUED, sa_type=EnumString(OutboxState, 16))
    attempts: int = 0
    next_attempt_at: datetime | None = _at()
    # While `sending`: who holds the row ("host:pid:start", notify/outbox.claimant) and until when;
    # the holder renews the lease as it works, so only a dead holder's rows are taken over.
    claimed_by: str = Field(default="", max_length=200, sa_column_kwargs={"server_default": ""})
    lease_until: datetime | None = _at()
    created_at: datetime = Field(sa_type=UtcDateTime, nullable=False)
    due_at: datetime = Field(sa_type=UtcDateTime, nullable=False)
    sent_at: datetime | None = _at()
    last_error: str = Field(default="", sa_type=sa.Text)
    bounced_at: datetime | None = _at()
    bounce_reason: str = Field(default="", sa_type=sa.Text)


class RecipientHealth(SQLModel, table=True):
    """Addresses that bounced our mail (RFC 3464), so operators can see who is failing."""

    __tablename__ = "recipient_health"
    address: str = Field(primary_key=True, max_length=320)
    failing: bool = True
    last_bounce_at: datetime | None = _at()
    reason: str = Field(default="", sa_type=sa.Text)
    bounces: int = 0


class AutoReplyLog(SQLModel, table=True):
    """Automatic replies sent to an address, for the per-sender rate limit (SPEC.md §3)."""

    __tablename__ = "auto_reply_log"
    __table_args__ = (
        sa.Index("ix_auto_reply_address_at", "address", "at"),
        sa.Index("ix_auto_reply_kind_at", "kind", "at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    address: str = Field(max_length=320)
    kind: str = Field(max_length=64)
    at: datetime = Field(sa_type=UtcDateTime, nullable=False)
    # What the answered message was about (`rules.decide.subject_key`), for the loop guard.
    subject_key: str = Field(default="", max_length=200, sa_column_kwargs={"server_default": ""})


# ---------------------------------------------------------------------------------------------
# Broadcasts


class MaintenanceWindow(SQLModel, table=True):
    __tablename__ = "maintenance_window"
    id: int | None = Field(default=None, primary_key=True)
    uid: str = Field(unique=True, max_length=200)
    kind: MaintenanceKind = Field(sa_type=EnumString(MaintenanceKind, 16))
    start: datetime = Field(sa_type=UtcDateTime, nullable=False)
    end: datetime = Field(sa_type=UtcDateTime, nullable=False)
    description: str = Field(default="", sa_type=sa.Text)
    justification: str = Field(default="", sa_type=sa.Text)
    status: MaintenanceStatus = Field(default=MaintenanceStatus.PLANNED, sa_type=EnumString(MaintenanceStatus, 16))
    sequence: int = 0
    plan_key: str | None = Field(default=None, unique=True, max_length=100)
    created_at: datetime = Field(sa_type=UtcDateTime, nullable=False)
    updated_at: datetime = Field(sa_type=UtcDateTime, nullable=False)
    next_due_at: datetime | None = _at(index=True)


class MaintenanceProduct(SQLModel, table=True):
    __tablename__ = "maintenance_product"
    window_id: int = Field(foreign_key="maintenance_window.id", primary_key=True, ondelete="CASCADE")
    product_id: int = Field(foreign_key="product.id", primary_key=True, index=True)


class Subscription(SQLModel, table=True):
    """A contact's subscription to one master case or to every master case of a platform."""

    __tablename__ = "subscription"
    __table_args__ = (sa.UniqueConstraint("address", "target", name="uq_subscription_address_target"),)
    id: int | None = Field(default=None, primary_key=True)
    address: str = Field(max_length=320, index=True)
    target: str = Field(max_length=300, index=True)  # "case:<id>" or "platform:<name>"
    case_id: int | None = Field(default=None, foreign_key="support_case.id")
    platform: str | None = Field(default=None, max_length=200)
    created_at: datetime = Field(sa_type=UtcDateTime, nullable=False)


# ---------------------------------------------------------------------------------------------
# Mailboxes


class MailboxCursor(SQLModel, table=True):
    """Where an IMAP poller left off: UIDVALIDITY and the last UID stored."""

    __tablename__ = "mailbox_cursor"
    mailbox: str = Field(primary_key=True, max_length=500)
    uidvalidity: int = Field(default=0, sa_type=sa.BigInteger)
    last_uid: int = Field(default=0, sa_type=sa.BigInteger)
    updated_at: datetime = Field(sa_type=UtcDateTime, nullable=False)


# ---------------------------------------------------------------------------------------------
# Who did what


class AuditEntry(SQLModel, table=True):
    """One agent or operator action (a case change, a held-message decision, a purge, an erasure):
    who, when, what; `mailcase audit` lists them across cases. Never the erased data itself."""

    __tablename__ = "audit_entry"
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_type=UtcDateTime, nullable=False, index=True)
    actor: str = Field(max_length=320, index=True)
    action: str = Field(max_length=64)
    case_id: int | None = Field(default=None, foreign_key="support_case.id", index=True)
    target: str = Field(default="", max_length=200)
    summary: str = Field(default="", sa_type=sa.Text)
