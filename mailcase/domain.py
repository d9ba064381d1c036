"""The support plan's vocabulary: enums and frozen value types shared by every layer; no I/O here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class CaseStatus(StrEnum):
    """A case's status; values are the machine names of SPEC.md §1."""

    NEW = "new"
    IN_PROGRESS = "in_progress"
    DUPLICATE = "duplicate"
    ON_HOLD = "on_hold"
    SHIPPING = "shipping"
    RESOLVED_FOLLOW_UP = "resolved_follow_up"
    CUSTOMER_REOPENED = "customer_reopened"
    CLOSED_NO_RESPONSE = "closed_no_response"
    CLOSED = "closed"

    @property
    def display(self) -> str:
        return STATUS_DISPLAY[self]

    @property
    def is_closed(self) -> bool:
        return self in CLOSED_STATUSES


STATUS_DISPLAY: dict[CaseStatus, str] = {
    CaseStatus.NEW: "New",
    CaseStatus.IN_PROGRESS: "In Progress",
    CaseStatus.DUPLICATE: "Duplicate",
    CaseStatus.ON_HOLD: "On Hold",
    CaseStatus.SHIPPING: "Shipping",
    CaseStatus.RESOLVED_FOLLOW_UP: "Resolved Follow-up Needed",
    CaseStatus.CUSTOMER_REOPENED: "Customer Reopened",
    CaseStatus.CLOSED_NO_RESPONSE: "Closed No Response",
    CaseStatus.CLOSED: "Closed",
}

CLOSED_STATUSES = frozenset({CaseStatus.CLOSED, CaseStatus.CLOSED_NO_RESPONSE, CaseStatus.DUPLICATE})
# Statuses that pause the update clock (SPEC.md §1, "Priorities and SLA targets").
PAUSED_STATUSES = frozenset({CaseStatus.ON_HOLD, CaseStatus.SHIPPING, CaseStatus.RESOLVED_FOLLOW_UP})


class Priority(StrEnum):
    P1 = "P1"
    P2 = "P2"
    P3 = "P3"
    P4 = "P4"
    P1G = "P1G"


class CaseKind(StrEnum):
    """What kind of work a case tracks; MACD cases have their own targets (SPEC.md §1)."""

    SUPPORT = "support"
    MACD_STANDARD = "macd_standard"
    MACD_EXPEDITED = "macd_expedited"
    MASTER = "master"


class Role(StrEnum):
    """A contact's role in the organisation's support plan."""

    PRIMARY = "primary"
    SECONDARY = "secondary"
    MAJOR_CASES = "major_cases"
    MAINTENANCE = "maintenance"
    FINANCE = "finance"
    ESCALATION = "escalation"


MPOC_ROLES = frozenset({Role.PRIMARY, Role.SECONDARY})


class Channel(StrEnum):
    SMTP = "smtp"
    IMAP = "imap"
    PIPE = "pipe"
    CLI = "cli"


class Direction(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class EventKind(StrEnum):
    """What happened to a case; each is one row of its history."""

    CREATED = "created"
    INBOUND_MESSAGE = "inbound_message"
    AUTO_REPLY = "auto_reply"
    OUTBOUND_MESSAGE = "outbound_message"
    NOTE = "note"
    STATUS_CHANGED = "status_changed"
    PRIORITY_CHANGED = "priority_changed"
    ASSIGNEE_CHANGED = "assignee_changed"
    ETR_CHANGED = "etr_changed"
    HOLD_CHANGED = "hold_changed"
    LINKED = "linked"
    ESCALATED = "escalated"
    REOPENED = "reopened"
    NOTICE_QUEUED = "notice_queued"
    SENDER_CHECK = "sender_check"  # `monitor`: a sender check that `enforce` would have held on
    NOTICE_FAILED = "notice_failed"
    NOTICE_WITHHELD = "notice_withheld"
    ERASURE = "erasure"  # `directory erase`: that personal data was erased, never what


class AutoKind(StrEnum):
    """Why an inbound message was machine-generated (RFC 3834, RFC 3464); HUMAN when it was not."""

    HUMAN = "human"
    AUTO_REPLY = "auto_reply"
    AUTO_GENERATED = "auto_generated"
    BULK = "bulk"
    LIST = "list"
    BOUNCE = "bounce"


class OutboxState(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    CANCELLED = "cancelled"


class HeldState(StrEnum):
    HELD = "held"
    RELEASED = "released"
    DISCARDED = "discarded"


class MaintenanceKind(StrEnum):
    SCHEDULED = "scheduled"
    UNSCHEDULED = "unscheduled"
    CONNECT = "connect"


class MaintenanceStatus(StrEnum):
    PLANNED = "planned"
    CANCELLED = "cancelled"


def format_case_number(number: int) -> str:
    """Case numbers are shown zero-padded to 8 digits (SPEC.md §2)."""
    return f"{number:08d}"


def format_size(size: int) -> str:
    """A byte count as people read it, in notices and on the CLI: 512 B, 14.2 KB, 3.1 MB."""
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / (1024 * 1024):.1f} MB"


def parse_case_number(text: str) -> int:
    """Accept `1042`, `00001042` or `#00001042`; raise ValueError otherwise."""
    cleaned = text.strip().lstrip("#")
    if not cleaned.isdigit():
        raise ValueError(f"not a case number: {text!r}")
    value = int(cleaned)
    if value <= 0:
        raise ValueError(f"not a case number: {text!r}")
    return value


@dataclass(frozen=True, slots=True)
class BusinessCalendarSpec:
    """What the business calendar needs: zone, holiday country, extra dates, extended hours."""

    timezone: str = "America/Denver"
    holidays_country: str = "US"
    extra_holidays: tuple[str, ...] = ()
    extended_hours_start: str = "07:00"
    extended_hours_end: str = "19:00"


@dataclass(frozen=True, slots=True)
class CaseView:
    """A read-only view of a case for the rules; never an ORM row."""

    id: int
    number: int
    organisation_id: int | None
    status: CaseStatus
    priority: Priority
    kind: CaseKind = CaseKind.SUPPORT
    requester: str | None = None
    participants: frozenset[str] = frozenset()
    assignee: str | None = None
    team: str | None = None
    duplicate_of_id: int | None = None
    master_id: int | None = None
    created_at: datetime | None = None
    closed_at: datetime | None = None
    first_response_at: datetime | None = None
    last_customer_activity_at: datetime | None = None
    last_agent_update_at: datetime | None = None
    awaiting_customer_since: datetime | None = None
    hold_until: datetime | None = None
    etr: datetime | None = None
    escalation_level: int = 1
    sla_start_at: datetime | None = None
    # When a pause of the update clock (on hold, shipping, resolved follow-up) last ended; the
    # next update is then due a full update period later (rules.sla). None: never paused.
    update_clock_resumed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SenderView:
    """What the rules know about who sent a message."""

    address: str
    contact_id: int | None = None
    organisation_id: int | None = None
    roles: frozenset[Role] = field(default_factory=frozenset)
    is_technician: bool = False

    @property
    def is_mpoc(self) -> bool:
        return bool(self.roles & MPOC_ROLES)


@dataclass(frozen=True, slots=True)
class RawMessage:
    """Inbound bytes exactly as a channel received them, with where they came from."""

    data: bytes
    channel: Channel
    received_at: datetime
    envelope_from: str = ""
    envelope_to: tuple[str, ...] = ()
    source: str = ""  # e.g. "imap:inbox uidvalidity=7 uid=42", or the file name for `ingest`


@dataclass(frozen=True, slots=True)
class AttachmentPart:
    filename: str
    content_type: str
    data: bytes
    sha256: str
    inline: bool = False
    content_id: str = ""


@dataclass(frozen=True, slots=True)
class BounceReport:
    """What a delivery status notification (RFC 3464) says about our mail."""

    original_message_ids: tuple[str, ...] = ()
    failed_recipients: tuple[str, ...] = ()
    status: str = ""
    diagnostic: str = ""


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A parsed inbound message: everything the rules look at, decoded once.

    Addresses are lower-cased bare addresses; Message-IDs keep their angle brackets.
    `text` is the full readable body; `new_text` is that body with quoted replies and the
    signature stripped. `content_digest` is the SHA-256 of sender, subject and body (SPEC.md §3).
    """

    message_id: str
    in_reply_to: str
    references: tuple[str, ...]
    from_address: str
    from_name: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    reply_to: tuple[str, ...]
    subject: str
    text: str
    new_text: str
    date: datetime | None
    auto_kind: AutoKind
    auto_reason: str
    content_digest: str
    raw_sha256: str
    headers: tuple[tuple[str, str], ...] = ()
    attachments: tuple[AttachmentPart, ...] = ()
    defects: tuple[str, ...] = ()
    bounce: BounceReport | None = None
    # Every address RFC 5322 parsing found in the From field(s) (display names never supply
    # one); exactly one is an author the rules can act on, zero or several are held.
    from_addresses: tuple[str, ...] | None = None

    @property
    def authors(self) -> tuple[str, ...]:
        """The From addresses; `(from_address,)` for a message built without the strict reading."""
        if self.from_addresses is None:
            return (self.from_address,) if self.from_address else ()
        return self.from_addresses

    @property
    def is_automatic(self) -> bool:
        return self.auto_kind is not AutoKind.HUMAN

    def header(self, name: str) -> str:
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return ""


class SenderPolicy(StrEnum):
    """`[security] sender_policy`: what a failed sender authentication does."""

    ENFORCE = "enforce"  # hold it, act on nothing
    MONITOR = "monitor"  # act as before, record the verdict on the case
    OFF = "off"  # no DMARC decisions (technician proof still applies)


@dataclass(frozen=True, slots=True)
class MethodResult:
    """One authentication method's result (RFC 8601 §2.7): e.g. dkim=pass header.d=acme.example."""

    method: str  # dmarc, dkim, spf, arc, auth
    result: str  # pass, fail, none, neutral, softfail, temperror, permerror, policy
    domain: str = ""  # header.d (dkim), smtp.mailfrom's domain (spf), header.from (dmarc), smtp.auth (auth)
    policy: str = ""  # dmarc: the published policy (reject, quarantine, none) when known


@dataclass(frozen=True, slots=True)
class SenderVerdict:
    """Who vouches for the From domain: the trusted MTA's Authentication-Results, our own DKIM
    check, or nobody (`source` "none"). Stored with the message and shown by `trace`."""

    source: str  # "authentication-results:<authserv-id>", "dkim", or "none"
    from_domain: str = ""
    dmarc: str = "none"
    dmarc_policy: str = ""
    results: tuple[MethodResult, ...] = ()
    temporary: bool = False  # a DNS lookup failed: the answer may differ later

    def result(self, method: str) -> str:
        for item in self.results:
            if item.method == method:
                return item.result
        return "none"

    @property
    def passed(self) -> bool:
        return self.dmarc == "pass"

    def summary(self) -> str:
        """`dmarc=fail (p=reject) header.from=acme.example; dkim=fail d=evil.example; via …`."""
        dmarc = f"dmarc={self.dmarc}" + (f" (p={self.dmarc_policy})" if self.dmarc_policy else "")
        if self.from_domain:
            dmarc += f" header.from={self.from_domain}"
        parts = [dmarc]
        for item in self.results:
            if item.method == "dmarc":
                continue
            parts.append(f"{item.method}={item.result}" + (f" d={item.domain}" if item.domain else ""))
        parts.append(f"via {self.source}" + (" (temporary DNS failure)" if self.temporary else ""))
        return "; ".join(parts)

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "from_domain": self.from_domain,
            "dmarc": self.dmarc,
            "dmarc_policy": self.dmarc_policy,
            "temporary": self.temporary,
            "results": [
                {"method": r.method, "result": r.result, "domain": r.domain, "policy": r.policy} for r in self.results
            ],
            "summary": self.summary(),
        }


NO_VERDICT = SenderVerdict(source="none")


@dataclass(frozen=True, slots=True)
class NotificationIntent:
    """A notice or reply that a decision or a sweep causes; the outbox row is made from it.

    `idempotency_key` is unique across the outbox (kind, case or window, due instant, recipient
    where it matters): enqueuing the same intent twice sends one message.
    `context` holds plain JSON-able values only; templates are `<audience>.<event>` names.
    """

    kind: str
    template: str
    recipients: tuple[str, ...]
    idempotency_key: str
    due_at: datetime
    context: Mapping[str, Any] = field(default_factory=dict)
    locale: str = "en"
    cc: tuple[str, ...] = ()
    case_id: int | None = None
    maintenance_id: int | None = None
    in_reply_to: str = ""
    references: tuple[str, ...] = ()
    auto_submitted: str = "auto-generated"  # "auto-replied" for acknowledgements, "no" for human replies
    reply_token_case: int | None = None  # case number whose reply-token address goes in Reply-To
    # A staff notice's single recipient: Reply-To then carries the per-technician token
    # (rules/tokens.staff_reply_address) bound to this address and `reply_token_case`.
    reply_token_staff: str | None = None


class Audience(StrEnum):
    """Who a decision's notice goes to, named as a role: the desk resolves it to addresses in the
    transaction that applies the decision (a new case's requester, copied participants and
    assigned team exist only once its row does)."""

    REQUESTER = "requester"  # the case's requester, its customer participants copied, threaded on this message
    TEAM = "team"  # the active technicians of the case's team (the team that just got a new case)
    ASSIGNEE = "assignee"  # the case's assignee, or with nobody assigned its team's active technicians
    SENDER = "sender"  # the message's From: address, answered on its own thread (no case)
    CLAIMED = "claimed"  # the person the From: claims to be, at the address the directory has on file


@dataclass(frozen=True, slots=True)
class NoticeIntent:
    """A notice a decision causes, as the rule names it: the desk turns it into `NotificationIntent`s
    (one per technician for staff notices) and outbox rows in the decision's transaction.

    `template` and `idempotency_key` are patterns: `{case}` (the case's id), `{held}` (the held
    message's id), `{sender}` (the From: address), `{now}` (`due_at` in ISO form) and, in the
    template only, `{role}` (`staff` or `customer`, the directory's word for a CLAIMED person) are
    filled by the desk. `context` holds the plain values the rule knows; `context_keys` names the
    ones the desk adds from the message and the case (`excerpt`, `attachments`, `response_due_at`).
    `loop_guarded`: an automatic answer that the loop guard counts (rules.decide.auto_reply_withheld).
    """

    template: str
    audience: Audience
    idempotency_key: str
    due_at: datetime
    auto_submitted: str = "auto-generated"
    context: Mapping[str, Any] = field(default_factory=dict)
    context_keys: tuple[str, ...] = ()
    loop_guarded: bool = False


# ---------------------------------------------------------------------------------------------
# Values that rules build and store keeps (here, so that store needs no rules import)


DEFAULT_LOCALE = "en"
DEFAULT_TIMEZONE = "America/Denver"


@dataclass(frozen=True, slots=True)
class ProductEntry:
    name: str


@dataclass(frozen=True, slots=True)
class TechnicianEntry:
    email: str
    team: str
    name: str = ""
    phone: str = ""
    manager: bool = False
    active: bool = True


@dataclass(frozen=True, slots=True)
class ContactEntry:
    """A person at a customer; no roles means an employee who may not open cases."""

    email: str
    name: str = ""
    roles: frozenset[Role] = frozenset()
    title: str = ""
    phone: str = ""
    notes: str = ""
    active: bool = True


@dataclass(frozen=True, slots=True)
class OrganisationEntry:
    """A customer organisation; `key` is the file's `id`, stable across imports."""

    key: str
    name: str
    locale: str = DEFAULT_LOCALE
    timezone: str = DEFAULT_TIMEZONE
    domains: tuple[str, ...] = ()
    products: tuple[str, ...] = ()
    contacts: tuple[ContactEntry, ...] = ()
    sla: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    escalation: tuple[str, ...] = ()
    notes: str = ""
    active: bool = True


@dataclass(frozen=True, slots=True)
class Directory:
    """The whole directory file, validated."""

    products: tuple[ProductEntry, ...] = ()
    technicians: tuple[TechnicianEntry, ...] = ()
    organisations: tuple[OrganisationEntry, ...] = ()


@dataclass(frozen=True, slots=True)
class PlannedWindow:
    """A window the plan generates; `plan_key` is stable so planning twice creates it once."""

    kind: MaintenanceKind
    start: datetime
    end: datetime
    plan_key: str
