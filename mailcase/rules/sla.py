"""SLA deadlines of a case, the notices they cause, and how each was derived (SPEC.md §1).

Pure: a `CaseView`, an `SlaPolicy`, a `BusinessCalendar` and `now` in; deadlines, notices and
explanations out. It must not read the clock, log, or know about the database or the outbox
(the shell turns `SlaNotice`s into notification intents and stores `next_check_at`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import MappingProxyType

from mailcase.domain import PAUSED_STATUSES, CaseKind, CaseStatus, CaseView, Priority
from mailcase.rules.businesstime import BusinessCalendar, SkippedDay

WALL_CLOCK = "wall-clock"


class DeadlineName(StrEnum):
    INITIAL_RESPONSE = "initial_response"
    NEXT_UPDATE = "next_update"
    RESOLUTION = "resolution"
    CUSTOMER_NUDGE = "customer_nudge"
    CLOSE_NO_RESPONSE = "close_no_response"
    HOLD_EXPIRY = "hold_expiry"

    @property
    def display(self) -> str:
        return _DEADLINE_DISPLAY[self]


_DEADLINE_DISPLAY = {
    DeadlineName.INITIAL_RESPONSE: "Initial response",
    DeadlineName.NEXT_UPDATE: "Next update",
    DeadlineName.RESOLUTION: "Resolution",
    DeadlineName.CUSTOMER_NUDGE: "Customer nudge",
    DeadlineName.CLOSE_NO_RESPONSE: "Close without response",
    DeadlineName.HOLD_EXPIRY: "Hold expiry",
}

# Deadlines owed to the customer by the desk: they get a reminder and the escalation path.
SLA_DEADLINES = frozenset(
    {DeadlineName.INITIAL_RESPONSE, DeadlineName.NEXT_UPDATE, DeadlineName.RESOLUTION}
)


class NoticeKind(StrEnum):
    SLA_REMINDER = "sla_reminder"
    SLA_ESCALATION_L2 = "sla_escalation_l2"
    SLA_ESCALATION_L3 = "sla_escalation_l3"
    UNASSIGNED_ALERT = "unassigned_alert"
    CUSTOMER_NUDGE = "customer_nudge"
    CLOSE_NO_RESPONSE = "close_no_response"
    HOLD_EXPIRED = "hold_expired"
    MASTER_UPDATE_REMINDER = "master_update_reminder"


# ---------------------------------------------------------------------------------------------
# Targets and policy


@dataclass(frozen=True, slots=True)
class Span:
    """A target duration: business days (in the desk's calendar) and then wall-clock minutes."""

    minutes: int = 0
    business_days: int = 0

    @property
    def is_set(self) -> bool:
        return self.minutes > 0 or self.business_days > 0

    def describe(self) -> str:
        """`15 min`, `4 h`, `1 business day`, `2 business days + 1 h 30 min`."""
        parts: list[str] = []
        if self.business_days:
            plural = "s" if self.business_days != 1 else ""
            parts.append(f"{self.business_days} business day{plural}")
        if self.minutes:
            parts.append(_describe_minutes(self.minutes))
        return " + ".join(parts) or "none"

    def calendar(self, calendar: BusinessCalendar) -> str:
        if self.business_days and self.minutes:
            return f"{calendar.describe()}, then {WALL_CLOCK} minutes"
        return calendar.describe() if self.business_days else WALL_CLOCK


@dataclass(frozen=True, slots=True)
class Target:
    """One priority's (or MACD kind's) SLA targets; 0 means not set.

    Minutes are wall-clock; business days follow the business calendar. `[sla.<key>]` in the
    configuration is read straight into these (`mailcase.config`), over DEFAULT_TARGETS.
    """

    response_minutes: int = 0
    response_business_days: int = 0
    update_minutes: int = 0
    update_business_days: int = 0
    resolution_minutes: int = 0
    resolution_business_days: int = 0
    reminder_lead_minutes: int = 0

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{item.name} must be a whole number >= 0, got {value!r}")

    @property
    def response(self) -> Span:
        return Span(self.response_minutes, self.response_business_days)

    @property
    def update(self) -> Span:
        return Span(self.update_minutes, self.update_business_days)

    @property
    def resolution(self) -> Span:
        return Span(self.resolution_minutes, self.resolution_business_days)

    def overridden(self, changes: Mapping[str, int]) -> Target:
        """This target with an organisation's changes applied.

        Giving either unit of a span (e.g. `response_business_days`) replaces the whole span: the
        unit not given becomes 0, so {"response_business_days": 2} on a 4 h target means 2
        business days, not 2 business days + 4 h. Unknown names and negative values are refused.
        """
        for name in changes:
            if name not in TARGET_FIELDS:
                raise ValueError(f"unknown SLA target field {name!r}")
        values = asdict(self)
        for span in ("response", "update", "resolution"):
            minutes, days = f"{span}_minutes", f"{span}_business_days"
            if minutes in changes or days in changes:
                values[minutes] = changes.get(minutes, 0)
                values[days] = changes.get(days, 0)
        if "reminder_lead_minutes" in changes:
            values["reminder_lead_minutes"] = changes["reminder_lead_minutes"]
        return Target(**values)


TARGET_FIELDS = frozenset(item.name for item in fields(Target))
# The support plan's targets when `[sla]` does not change them: priorities, then MACD kinds.
DEFAULT_TARGETS: Mapping[str, Target] = MappingProxyType({
    "P1": Target(response_minutes=15, update_minutes=60, reminder_lead_minutes=5),
    "P2": Target(response_minutes=30, update_minutes=120, reminder_lead_minutes=10),
    "P3": Target(response_minutes=240, update_business_days=1, reminder_lead_minutes=60),
    "P4": Target(response_business_days=1, update_business_days=2, reminder_lead_minutes=240),
    "P1G": Target(response_minutes=15, update_minutes=60, reminder_lead_minutes=5),
    "macd_standard": Target(response_business_days=1, resolution_business_days=2, reminder_lead_minutes=240),
    "macd_expedited": Target(response_minutes=240, resolution_business_days=1, reminder_lead_minutes=60),
})
TARGET_KEYS = tuple(DEFAULT_TARGETS)
NO_OVERRIDES: Mapping[str, Mapping[str, int]] = MappingProxyType({})


def check_overrides(overrides: Mapping[str, Mapping[str, int]]) -> None:
    """Refuse an organisation's SLA overrides that name an unknown key (ValueError naming it).

    For the directory import, so a typo fails at import rather than at the next sweep.
    """
    for key, changes in overrides.items():
        if key not in TARGET_KEYS:
            expected = ", ".join(TARGET_KEYS)
            raise ValueError(f"unknown SLA target {key!r} (expected one of {expected})")
        try:
            Target().overridden(changes)
        except ValueError as error:
            raise ValueError(f"{key}: {error}") from None


@dataclass(frozen=True, slots=True)
class SlaPolicy:
    """The desk's targets by key (TARGET_KEYS) and the awaiting-customer clocks (business days)."""

    targets: Mapping[str, Target]
    nudge_business_days: int = 1
    close_no_response_business_days: int = 2
    unassigned_alert_priorities: frozenset[Priority] = frozenset({Priority.P1, Priority.P2})

    def target_key(self, case: CaseView) -> str:
        """MACD kinds have their own targets; master cases are P1G; otherwise the priority."""
        if case.kind is CaseKind.MACD_STANDARD:
            return "macd_standard"
        if case.kind is CaseKind.MACD_EXPEDITED:
            return "macd_expedited"
        if case.kind is CaseKind.MASTER:
            return Priority.P1G.value
        return case.priority.value

    def target_for(
        self, case: CaseView, overrides: Mapping[str, Mapping[str, int]] = NO_OVERRIDES
    ) -> Target:
        """The case's target, with the organisation's overrides for its key applied."""
        key = self.target_key(case)
        try:
            target = self.targets[key]
        except KeyError:
            raise ValueError(f"no SLA target configured for {key!r}") from None
        changes = overrides.get(key)
        return target.overridden(changes) if changes else target


# ---------------------------------------------------------------------------------------------
# Deadlines


@dataclass(frozen=True, slots=True)
class Deadline:
    """One deadline of a case and how it was derived (what `mailcase cases sla` shows).

    `due_at` is None only while `paused` with no known end. `reminder_at` and
    `escalation_l3_at` are set for the SLA deadlines (initial response, next update, resolution):
    the reminder goes `reminder_lead_minutes` before the deadline, escalation level 2 at the
    deadline, level 3 at twice the target.
    """

    name: DeadlineName
    due_at: datetime | None
    started_at: datetime | None
    target: str
    calendar: str
    explanation: str
    pauses: tuple[str, ...] = ()
    holidays_skipped: tuple[SkippedDay, ...] = ()
    met: bool = False
    met_at: datetime | None = None
    paused: bool = False
    reminder_at: datetime | None = None
    escalation_l3_at: datetime | None = None

    @property
    def pending(self) -> bool:
        """Still owed: neither met nor paused, with a due instant."""
        return not self.met and not self.paused and self.due_at is not None

    def overdue(self, now: datetime) -> bool:
        return self.pending and self.due_at is not None and self.due_at <= now


@dataclass(frozen=True, slots=True)
class SlaNotice:
    """A notice a deadline causes: `due_at` is when to send it; `deadline_at`, the deadline."""

    kind: NoticeKind
    deadline: DeadlineName
    due_at: datetime
    deadline_at: datetime

    def idempotency_key(self, case_number: int) -> str:
        """Unique per (kind, case, deadline, deadline instant): a notice is never sent twice."""
        instant = self.deadline_at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        return f"{self.kind.value}:{case_number}:{self.deadline.value}:{instant}"


def sla_start(case: CaseView, calendar: BusinessCalendar) -> datetime | None:
    """When the case's SLA clock starts: `sla_start_at` if the shell stored one, else receipt.

    A Standard MACD request received outside extended business hours counts from the next
    opening (SPEC.md §1, "MACD requests"); Expedited ones count from receipt.
    """
    if case.sla_start_at is not None:
        return case.sla_start_at
    if case.created_at is None:
        return None
    return start_on_arrival(case.kind, case.created_at, calendar)


def start_on_arrival(kind: CaseKind, received_at: datetime, calendar: BusinessCalendar) -> datetime:
    """When a new case's SLA clock starts, stored as its `sla_start_at`. Rules, in order:
    1. a standard MACD request counts from the next opening of extended hours (the instant itself
       inside them; SPEC.md §1, "MACD requests");
    2. every other case, an expedited MACD request included, counts from its arrival."""
    if kind is CaseKind.MACD_STANDARD:
        return calendar.next_extended_opening(received_at)
    return received_at


def case_deadlines(
    case: CaseView,
    policy: SlaPolicy,
    calendar: BusinessCalendar,
    now: datetime,
    overrides: Mapping[str, Mapping[str, int]] = NO_OVERRIDES,
) -> tuple[Deadline, ...]:
    """Every deadline of the case, met ones included (for display). Rules, in order:

    1. Closed statuses (closed, closed_no_response, duplicate) have no deadlines; nor does a
       case with neither `sla_start_at` nor `created_at`.
    2. Initial response: SLA start + response target; met once `first_response_at` is set.
    3. Next update (targets with an update frequency, after the first response): the later of
       first response, last agent update, end of the last pause (`update_clock_resumed_at`) and,
       while On Hold, the hold time, + update target. Paused without a due instant while
       Shipping, Resolved Follow-up Needed, On Hold with no hold time, or awaiting the customer.
       An ETR later than that start replaces the deadline: no reminder before the ETR, the
       reminder and level-2 escalation when it passes, level 3 one update period later.
    4. Resolution (targets with one, i.e. MACD completion): SLA start + resolution target; met
       while the case is Resolved Follow-up Needed.
    5. Awaiting the customer (`awaiting_customer_since`): a nudge after `nudge_business_days`
       and closing without response after `close_no_response_business_days`; both met once the
       customer wrote after that instant.
    6. On Hold with a hold time: a hold-expiry deadline at the hold time.
    `now` only words the explanations (pending / overdue); deadlines do not depend on it.
    """
    if case.status.is_closed:
        return ()
    start = sla_start(case, calendar)
    if start is None:
        return ()
    key = policy.target_key(case)
    target = policy.target_for(case, overrides)
    overridden = target != policy.targets.get(key)
    label = f"{key} target{' (organisation override)' if overridden else ''}"
    builder = _Builder(case, calendar, now, target, label)
    deadlines = [
        builder.initial_response(start),
        builder.next_update(),
        builder.resolution(start),
        *builder.awaiting_customer(policy),
        builder.hold_expiry(),
    ]
    return tuple(deadline for deadline in deadlines if deadline is not None)


# ---------------------------------------------------------------------------------------------
# Notices


def scheduled_notices(
    case: CaseView, deadlines: tuple[Deadline, ...], policy: SlaPolicy
) -> tuple[SlaNotice, ...]:
    """Every notice the pending deadlines will cause, at any instant, in time order.

    SLA deadlines: `sla_reminder` at the reminder instant (`master_update_reminder` for a master
    case's next update), `sla_escalation_l2` at the deadline, `sla_escalation_l3` at twice the
    target. An unassigned case of an alerting priority (P1, P2) gets `unassigned_alert` at the
    SLA start while its initial response is pending. Awaiting the customer: `customer_nudge` and
    `close_no_response` at their deadlines. On Hold: `hold_expired` at the hold time.
    """
    if case.status.is_closed:
        return ()
    notices = [
        notice
        for deadline in deadlines
        if deadline.pending
        for notice in _notices_of(case, deadline, policy)
    ]
    return tuple(sorted(notices, key=lambda notice: notice.due_at))  # stable: reminder first


def notices_due(
    case: CaseView, deadlines: tuple[Deadline, ...], policy: SlaPolicy, now: datetime
) -> tuple[SlaNotice, ...]:
    """The notices whose instant is <= now and whose deadline is still pending.

    Already-sent ones come back too (the outbox's idempotency key drops them). When closing
    without response is due, the customer nudge is left out: the customer gets the closing notice,
    not a nudge a moment before it.
    """
    due = [notice for notice in scheduled_notices(case, deadlines, policy) if notice.due_at <= now]
    if any(notice.kind is NoticeKind.CLOSE_NO_RESPONSE for notice in due):
        due = [notice for notice in due if notice.kind is not NoticeKind.CUSTOMER_NUDGE]
    return tuple(due)


def next_check_at(
    case: CaseView, deadlines: tuple[Deadline, ...], policy: SlaPolicy, now: datetime
) -> datetime | None:
    """The earliest instant after `now` at which a new notice falls due; None when none will.

    The shell stores it in the case's indexed `next_due_at`, so sweeps cost what is due.
    """
    notices = scheduled_notices(case, deadlines, policy)
    later = [notice.due_at for notice in notices if notice.due_at > now]
    return min(later, default=None)


def _notices_of(case: CaseView, deadline: Deadline, policy: SlaPolicy) -> Iterator[SlaNotice]:
    assert deadline.due_at is not None
    name, due = deadline.name, deadline.due_at
    if name in SLA_DEADLINES:
        if (
            name is DeadlineName.INITIAL_RESPONSE
            and case.assignee is None
            and case.priority in policy.unassigned_alert_priorities
            and deadline.started_at is not None
        ):
            yield SlaNotice(NoticeKind.UNASSIGNED_ALERT, name, deadline.started_at, due)
        if deadline.reminder_at is not None:
            reminder = (
                NoticeKind.MASTER_UPDATE_REMINDER
                if name is DeadlineName.NEXT_UPDATE and _is_master(case)
                else NoticeKind.SLA_REMINDER
            )
            yield SlaNotice(reminder, name, deadline.reminder_at, due)
        yield SlaNotice(NoticeKind.SLA_ESCALATION_L2, name, due, due)
        if deadline.escalation_l3_at is not None:
            yield SlaNotice(NoticeKind.SLA_ESCALATION_L3, name, deadline.escalation_l3_at, due)
    elif name is DeadlineName.CUSTOMER_NUDGE:
        yield SlaNotice(NoticeKind.CUSTOMER_NUDGE, name, due, due)
    elif name is DeadlineName.CLOSE_NO_RESPONSE:
        yield SlaNotice(NoticeKind.CLOSE_NO_RESPONSE, name, due, due)
    elif name is DeadlineName.HOLD_EXPIRY:
        yield SlaNotice(NoticeKind.HOLD_EXPIRED, name, due, due)


def _is_master(case: CaseView) -> bool:
    return case.kind is CaseKind.MASTER or case.priority is Priority.P1G


# ---------------------------------------------------------------------------------------------
# How each deadline is derived


@dataclass(frozen=True, slots=True)
class _Advanced:
    due_at: datetime
    skipped: tuple[SkippedDay, ...] = ()


@dataclass(frozen=True, slots=True)
class _Builder:
    case: CaseView
    calendar: BusinessCalendar
    now: datetime
    target: Target
    label: str

    def advance(self, start: datetime, span: Span, times: int = 1) -> _Advanced:
        """start + times x span: business days first, then wall-clock minutes."""
        due = start.astimezone(UTC)
        skipped: tuple[SkippedDay, ...] = ()
        if span.business_days:
            counted = self.calendar.add_business_days_explained(start, span.business_days * times)
            due, skipped = counted.due_at, counted.skipped
        if span.minutes:
            due = self.calendar.add_minutes(due, span.minutes * times)
        return _Advanced(due, skipped)

    def at(self, instant: datetime | None) -> str:
        if instant is None:
            return "-"
        return self.calendar.to_local(instant).strftime("%a %Y-%m-%d %H:%M %Z")

    def sla_deadline(
        self,
        name: DeadlineName,
        start: datetime,
        start_reason: str,
        span: Span,
        met_at: datetime | None,
        met: bool,
    ) -> Deadline:
        """A response or resolution deadline: reminder, level 2 at the deadline, level 3 at 2x."""
        advanced = self.advance(start, span)
        due = advanced.due_at
        reminder = self.reminder_before(start, due)
        level3 = self.advance(start, span, times=2).due_at
        deadline = Deadline(
            name=name,
            due_at=due,
            started_at=start.astimezone(UTC),
            target=f"{self.label}: {span.describe()}",
            calendar=span.calendar(self.calendar),
            explanation="",
            holidays_skipped=advanced.skipped,
            met=met,
            met_at=met_at,
            reminder_at=reminder,
            escalation_l3_at=level3,
        )
        return _explained(deadline, self, f"from {self.at(start)} ({start_reason})")

    def reminder_before(self, start: datetime, due: datetime) -> datetime | None:
        lead = self.target.reminder_lead_minutes
        if not lead:
            return None
        return max(start.astimezone(UTC), due - timedelta(minutes=lead))

    def start_reason(self, start: datetime) -> str:
        created = self.case.created_at
        if created is None or created == start:
            return "case received"
        if self.case.kind is CaseKind.MACD_STANDARD:
            return (
                f"SLA start; received {self.at(created)}, counted from the next opening of "
                "extended business hours"
            )
        return f"SLA start; case received {self.at(created)}"

    def initial_response(self, start: datetime) -> Deadline | None:
        span = self.target.response
        if not span.is_set:
            return None
        met_at = self.case.first_response_at
        reason = self.start_reason(start)
        met = met_at is not None
        return self.sla_deadline(DeadlineName.INITIAL_RESPONSE, start, reason, span, met_at, met)

    def resolution(self, start: datetime) -> Deadline | None:
        span = self.target.resolution
        if not span.is_set:
            return None
        resolved = self.case.status is CaseStatus.RESOLVED_FOLLOW_UP
        met_at = self.case.awaiting_customer_since if resolved else None
        return self.sla_deadline(
            DeadlineName.RESOLUTION, start, self.start_reason(start), span, met_at, resolved
        )

    def next_update(self) -> Deadline | None:
        case, span = self.case, self.target.update
        if not span.is_set or case.first_response_at is None:
            return None
        candidates = [
            (case.first_response_at, "first response"),
            (case.last_agent_update_at, "last agent update"),
            (case.update_clock_resumed_at, "end of the last pause"),
        ]
        pauses: list[str] = []
        paused = False
        if case.status is CaseStatus.ON_HOLD:
            if case.hold_until is None:
                pauses.append("On Hold with no hold time")
                paused = True
            else:
                pauses.append(f"On Hold until {self.at(case.hold_until)}")
                candidates.append((case.hold_until, "end of the hold"))
        elif case.status in PAUSED_STATUSES:
            pauses.append(f"status {case.status.display}")
            paused = True
        if self.awaiting_since() is not None:
            pauses.append(f"awaiting the customer since {self.at(case.awaiting_customer_since)}")
            paused = True
        start, reason = max(
            ((instant, why) for instant, why in candidates if instant is not None),
            key=lambda item: item[0],
        )
        origin = f"from {self.at(start)} ({reason})"
        regular = f"{self.label}: {span.describe()}"
        blank = Deadline(
            name=DeadlineName.NEXT_UPDATE,
            due_at=None,
            started_at=start.astimezone(UTC),
            target=regular,
            calendar=span.calendar(self.calendar),
            explanation="",
            paused=True,
        )
        if paused:
            return _explained(replace(blank, pauses=tuple(pauses)), self, origin)
        etr = case.etr
        if etr is not None and etr > start:
            pauses.append(f"ETR {self.at(etr)}: no update reminders before it passes")
            deadline = replace(
                blank,
                due_at=etr.astimezone(UTC),
                target=f"the ETR (instead of the {regular})",
                pauses=tuple(pauses),
                paused=False,
                reminder_at=etr.astimezone(UTC),
                escalation_l3_at=self.advance(etr, span).due_at,
            )
            return _explained(deadline, self, origin)
        advanced = self.advance(start, span)
        deadline = replace(
            blank,
            due_at=advanced.due_at,
            pauses=tuple(pauses),
            paused=False,
            holidays_skipped=advanced.skipped,
            reminder_at=self.reminder_before(start, advanced.due_at),
            escalation_l3_at=self.advance(start, span, times=2).due_at,
        )
        return _explained(deadline, self, origin)

    def awaiting_since(self) -> datetime | None:
        """When the case started waiting on the customer, unless the customer wrote since."""
        since = self.case.awaiting_customer_since
        if since is None or self.customer_replied_after(since):
            return None
        return since

    def customer_replied_after(self, since: datetime) -> bool:
        activity = self.case.last_customer_activity_at
        return activity is not None and activity > since

    def awaiting_customer(self, policy: SlaPolicy) -> tuple[Deadline, ...]:
        since = self.case.awaiting_customer_since
        if since is None:
            return ()
        replied = self.customer_replied_after(since)
        made: list[Deadline] = []
        for name, days in (
            (DeadlineName.CUSTOMER_NUDGE, policy.nudge_business_days),
            (DeadlineName.CLOSE_NO_RESPONSE, policy.close_no_response_business_days),
        ):
            if days <= 0:
                continue
            span = Span(business_days=days)
            advanced = self.advance(since, span)
            deadline = Deadline(
                name=name,
                due_at=advanced.due_at,
                started_at=since.astimezone(UTC),
                target=f"awaiting-customer policy: {span.describe()}",
                calendar=span.calendar(self.calendar),
                explanation="",
                holidays_skipped=advanced.skipped,
                met=replied,
                met_at=self.case.last_customer_activity_at if replied else None,
            )
            origin = f"from {self.at(since)} (awaiting the customer)"
            made.append(_explained(deadline, self, origin))
        return tuple(made)

    def hold_expiry(self) -> Deadline | None:
        hold_until = self.case.hold_until
        if self.case.status is not CaseStatus.ON_HOLD or hold_until is None:
            return None
        deadline = Deadline(
            name=DeadlineName.HOLD_EXPIRY,
            due_at=hold_until.astimezone(UTC),
            started_at=None,
            target="the hold time the agent set",
            calendar=WALL_CLOCK,
            explanation="",
        )
        return _explained(deadline, self, "")


def _explained(deadline: Deadline, builder: _Builder, origin: str) -> Deadline:
    """The deadline with its explanation: target, calendar, origin, holidays, pauses, state."""
    at = builder.at
    if deadline.due_at is None:
        head = f"{deadline.name.display}: paused"
    else:
        head = f"{deadline.name.display} due {at(deadline.due_at)}"
    holidays = ", ".join(day.describe() for day in deadline.holidays_skipped) or "none"
    pauses = "; ".join(deadline.pauses) or "none"
    calendar = f"{WALL_CLOCK} time" if deadline.calendar == WALL_CLOCK else deadline.calendar
    counted = f", counted in {calendar} {origin}" if origin else f" ({calendar})"
    sentences = [
        f"{head}: {deadline.target}{counted}.",
        f"Holidays skipped: {holidays}.",
        f"Pauses: {pauses}.",
    ]
    if deadline.name in SLA_DEADLINES and deadline.due_at is not None:
        reminder = (
            f"reminder {at(deadline.reminder_at)}, " if deadline.reminder_at is not None else ""
        )
        level3 = (
            f", level 3 {at(deadline.escalation_l3_at)}"
            if deadline.escalation_l3_at is not None
            else ""
        )
        sentences.append(f"Notices: {reminder}escalation level 2 at the deadline{level3}.")
    sentences.append(f"State: {_state(deadline, builder)}.")
    return replace(deadline, explanation=" ".join(sentences))


def _state(deadline: Deadline, builder: _Builder) -> str:
    if deadline.met:
        if deadline.met_at is None:
            return "met"
        late = deadline.due_at is not None and deadline.met_at > deadline.due_at
        return f"met {builder.at(deadline.met_at)}{' (late)' if late else ''}"
    if deadline.paused:
        return "paused"
    if deadline.due_at is not None and deadline.due_at == builder.now:
        return "due now"
    if deadline.due_at is not None and deadline.due_at < builder.now:
        return f"overdue by {_describe_minutes(_minutes(builder.now - deadline.due_at))}"
    return "pending"


def _minutes(delta: timedelta) -> int:
    return int(delta.total_seconds() // 60)


def _describe_minutes(minutes: int) -> str:
    hours, rest = divmod(minutes, 60)
    if not hours:
        return f"{rest} min"
    return f"{hours} h" if not rest else f"{hours} h {rest} min"

