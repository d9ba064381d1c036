"""The case lifecycle as a pure transition table: which status changes are allowed, and what each change records.

No I/O and no clock reads: the caller passes `now` and applies the returned change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import assert_never

from mailcase.domain import PAUSED_STATUSES, CaseKind, CaseStatus, CaseView, Priority

S = CaseStatus


class Actor(StrEnum):
    """Who asks for a change: an agent (CLI or technician email), the customer, or the scheduler."""

    AGENT = "agent"
    CUSTOMER = "customer"
    SYSTEM = "system"


# Statuses an agent may move a case to, from each status. Customer and system moves are below.
AGENT_TRANSITIONS: dict[CaseStatus, frozenset[CaseStatus]] = {
    S.NEW: frozenset({S.IN_PROGRESS, S.ON_HOLD, S.SHIPPING, S.RESOLVED_FOLLOW_UP, S.DUPLICATE, S.CLOSED}),
    S.IN_PROGRESS: frozenset({S.ON_HOLD, S.SHIPPING, S.RESOLVED_FOLLOW_UP, S.DUPLICATE, S.CLOSED}),
    S.ON_HOLD: frozenset({S.IN_PROGRESS, S.SHIPPING, S.RESOLVED_FOLLOW_UP, S.DUPLICATE, S.CLOSED}),
    S.SHIPPING: frozenset({S.IN_PROGRESS, S.ON_HOLD, S.RESOLVED_FOLLOW_UP, S.CLOSED}),
    S.RESOLVED_FOLLOW_UP: frozenset(
        {S.IN_PROGRESS, S.ON_HOLD, S.CLOSED, S.CLOSED_NO_RESPONSE}
    ),
    S.CUSTOMER_REOPENED: frozenset(
        {S.IN_PROGRESS, S.ON_HOLD, S.SHIPPING, S.RESOLVED_FOLLOW_UP, S.DUPLICATE, S.CLOSED}
    ),
    # An agent may reopen a finished case by hand; customers reopen through replies (SPEC.md §1).
    S.CLOSED: frozenset({S.IN_PROGRESS}),
    S.CLOSED_NO_RESPONSE: frozenset({S.IN_PROGRESS}),
    S.DUPLICATE: frozenset({S.IN_PROGRESS}),
}

# A customer's reply within the reopen window is the only way into customer_reopened.
CUSTOMER_TRANSITIONS: dict[CaseStatus, frozenset[CaseStatus]] = {
    S.CLOSED: frozenset({S.CUSTOMER_REOPENED}),
    S.RESOLVED_FOLLOW_UP: frozenset({S.IN_PROGRESS}),
    S.ON_HOLD: frozenset(),
}

# The scheduler: a hold time passes (back to in_progress); nobody answered (closed_no_response).
SYSTEM_TRANSITIONS: dict[CaseStatus, frozenset[CaseStatus]] = {
    S.ON_HOLD: frozenset({S.IN_PROGRESS}),
    S.RESOLVED_FOLLOW_UP: frozenset({S.CLOSED_NO_RESPONSE}),
    S.IN_PROGRESS: frozenset({S.CLOSED_NO_RESPONSE}),
    S.NEW: frozenset({S.CLOSED_NO_RESPONSE}),
    S.CUSTOMER_REOPENED: frozenset({S.CLOSED_NO_RESPONSE}),
}


def allowed_targets(current: CaseStatus, actor: Actor) -> frozenset[CaseStatus]:
    match actor:
        case Actor.AGENT:
            return AGENT_TRANSITIONS.get(current, frozenset())
        case Actor.CUSTOMER:
            return CUSTOMER_TRANSITIONS.get(current, frozenset())
        case Actor.SYSTEM:
            return SYSTEM_TRANSITIONS.get(current, frozenset())
        case _:
            assert_never(actor)


@dataclass(frozen=True, slots=True)
class StatusChange:
    """An allowed change and every field it sets; `None` in a `clear_*` flag means leave as is."""

    old: CaseStatus
    new: CaseStatus
    closed_at: datetime | None = None
    clear_closed_at: bool = False
    resolved_at: datetime | None = None
    awaiting_customer_since: datetime | None = None
    clear_awaiting_customer: bool = False
    hold_until: datetime | None = None
    clear_hold_until: bool = False
    duplicate_of_id: int | None = None
    clear_duplicate_of: bool = False
    update_clock_resumed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    """A change the lifecycle does not allow, with a reason a person can act on."""

    reason: str


def change_status(
    case: CaseView,
    target: CaseStatus,
    *,
    actor: Actor,
    now: datetime,
    hold_until: datetime | None = None,
    duplicate_of: CaseView | None = None,
) -> StatusChange | Refused:
    """Decide a status change. Rules, in order:

    1. The target must differ from the current status.
    2. The (current, target) pair must be in the actor's transition table.
    3. `on_hold` needs a hold-until instant in the future.
    4. `duplicate` needs a primary case that is another case, not itself a duplicate.
    5. Closing (`closed`, `closed_no_response`, `duplicate`) records the closing instant;
       leaving a closed status clears it.
    6. `resolved_follow_up` records the resolution and starts waiting on the customer;
       any other status stops waiting.
    7. Leaving a pause status for a running one restarts the update clock.
    """
    if target == case.status:
        return Refused(f"case is already {target.value}")
    if target not in allowed_targets(case.status, actor):
        return Refused(f"cannot change status from {case.status.value} to {target.value}")
    if target is S.ON_HOLD:
        if hold_until is None:
            return Refused("on_hold needs a hold-until instant (--hold-until)")
        if hold_until <= now:
            return Refused("the hold-until instant must be in the future")
    elif hold_until is not None:
        return Refused("a hold-until instant only goes with status on_hold")
    if target is S.DUPLICATE:
        if duplicate_of is None:
            return Refused("duplicate needs the primary case (--duplicate-of)")
        if duplicate_of.id == case.id:
            return Refused("a case cannot be a duplicate of itself")
        if duplicate_of.status is S.DUPLICATE:
            return Refused("the primary case is itself a duplicate; point at its primary")
    elif duplicate_of is not None:
        return Refused("--duplicate-of only goes with status duplicate")

    closing = target.is_closed
    return StatusChange(
        old=case.status,
        new=target,
        closed_at=now if closing else None,
        clear_closed_at=not closing and case.status.is_closed,
        resolved_at=now if target is S.RESOLVED_FOLLOW_UP else None,
        awaiting_customer_since=now if target is S.RESOLVED_FOLLOW_UP else None,
        clear_awaiting_customer=target is not S.RESOLVED_FOLLOW_UP,
        hold_until=hold_until if target is S.ON_HOLD else None,
        clear_hold_until=target is not S.ON_HOLD,
        duplicate_of_id=duplicate_of.id if target is S.DUPLICATE and duplicate_of else None,
        clear_duplicate_of=target is not S.DUPLICATE,
        # Leaving a pause (on hold, shipping, waiting on the customer) restarts the update clock.
        update_clock_resumed_at=now if case.status in PAUSED_STATUSES and target not in PAUSED_STATUSES else None,
    )


def change_priority(case: CaseView, target: Priority) -> Priority | Refused:
    """P1G belongs to master cases only, and a master case stays P1G."""
    if target == case.priority:
        return Refused(f"case is already {target.value}")
    if case.status.is_closed:
        return Refused(f"cannot change the priority of a {case.status.value} case")
    if case.kind is CaseKind.MASTER:
        return Refused("a master case is always P1G")
    if target is Priority.P1G:
        return Refused("P1G is for master cases; create one with `cases master create`")
    return target


def can_link_to_master(case: CaseView, master: CaseView) -> Refused | None:
    if master.kind is not CaseKind.MASTER:
        return Refused(f"case {master.number:08d} is not a master case")
    if case.kind is CaseKind.MASTER:
        return Refused("a master case cannot be linked to another master case")
    if master.status.is_closed:
        return Refused(f"master case {master.number:08d} is {master.status.value}")
    return None
