"""The case lifecycle: every allowed and forbidden status change per actor, and what each change records."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from mailcase.domain import CaseKind, CaseStatus, CaseView, Priority
from mailcase.rules.lifecycle import (
    Actor,
    Refused,
    StatusChange,
    allowed_targets,
    can_link_to_master,
    change_priority,
    change_status,
)

S = CaseStatus
NOW = datetime(2026, 11, 25, 23, 0, tzinfo=UTC)
LATER = NOW + timedelta(days=2)

# The support plan's transitions, written out here independently of the implementation's tables
# so that a change to either is a deliberate, reviewed change to both.
EXPECTED: dict[Actor, dict[CaseStatus, set[CaseStatus]]] = {
    Actor.AGENT: {
        S.NEW: {S.IN_PROGRESS, S.ON_HOLD, S.SHIPPING, S.RESOLVED_FOLLOW_UP, S.DUPLICATE, S.CLOSED},
        S.IN_PROGRESS: {S.ON_HOLD, S.SHIPPING, S.RESOLVED_FOLLOW_UP, S.DUPLICATE, S.CLOSED},
        S.ON_HOLD: {S.IN_PROGRESS, S.SHIPPING, S.RESOLVED_FOLLOW_UP, S.DUPLICATE, S.CLOSED},
        S.SHIPPING: {S.IN_PROGRESS, S.ON_HOLD, S.RESOLVED_FOLLOW_UP, S.CLOSED},
        S.RESOLVED_FOLLOW_UP: {S.IN_PROGRESS, S.ON_HOLD, S.CLOSED, S.CLOSED_NO_RESPONSE},
        S.CUSTOMER_REOPENED: {S.IN_PROGRESS, S.ON_HOLD, S.SHIPPING, S.RESOLVED_FOLLOW_UP, S.DUPLICATE, S.CLOSED},
        S.CLOSED: {S.IN_PROGRESS},
        S.CLOSED_NO_RESPONSE: {S.IN_PROGRESS},
        S.DUPLICATE: {S.IN_PROGRESS},
    },
    Actor.CUSTOMER: {
        S.CLOSED: {S.CUSTOMER_REOPENED},
        S.RESOLVED_FOLLOW_UP: {S.IN_PROGRESS},
    },
    Actor.SYSTEM: {
        S.ON_HOLD: {S.IN_PROGRESS},
        S.NEW: {S.CLOSED_NO_RESPONSE},
        S.IN_PROGRESS: {S.CLOSED_NO_RESPONSE},
        S.CUSTOMER_REOPENED: {S.CLOSED_NO_RESPONSE},
        S.RESOLVED_FOLLOW_UP: {S.CLOSED_NO_RESPONSE},
    },
}

ALL_PAIRS = [
    (actor, current, target)
    for actor in Actor
    for current, target in itertools.product(CaseStatus, CaseStatus)
]
ALLOWED = [p for p in ALL_PAIRS if p[2] in EXPECTED[p[0]].get(p[1], set())]
FORBIDDEN = [p for p in ALL_PAIRS if p not in ALLOWED]


def case(
    status: CaseStatus = S.NEW,
    *,
    id: int = 1,
    priority: Priority = Priority.P4,
    kind: CaseKind = CaseKind.SUPPORT,
    closed_at: datetime | None = None,
) -> CaseView:
    return CaseView(
        id=id, number=1000 + id, organisation_id=1, status=status, priority=priority, kind=kind, closed_at=closed_at
    )


PRIMARY = case(S.IN_PROGRESS, id=2)


def decide(current: CaseStatus, target: CaseStatus, actor: Actor = Actor.AGENT) -> StatusChange | Refused:
    """Ask for a change with whatever the target needs, so only the transition table can refuse it."""
    return change_status(
        case(current, closed_at=NOW - timedelta(days=1) if current.is_closed else None),
        target,
        actor=actor,
        now=NOW,
        hold_until=LATER if target is S.ON_HOLD else None,
        duplicate_of=PRIMARY if target is S.DUPLICATE else None,
    )


def _pair_id(pair: tuple[Actor, CaseStatus, CaseStatus]) -> str:
    return f"{pair[0].value}:{pair[1].value}->{pair[2].value}"


# ---------------------------------------------------------------------------------------------
# The transition tables


@pytest.mark.parametrize("pair", ALLOWED, ids=_pair_id)
def test_allowed_transition_is_granted(pair: tuple[Actor, CaseStatus, CaseStatus]) -> None:
    actor, current, target = pair

    change = decide(current, target, actor)

    assert isinstance(change, StatusChange), change
    assert (change.old, change.new) == (current, target)


@pytest.mark.parametrize("pair", FORBIDDEN, ids=_pair_id)
def test_forbidden_transition_is_refused_with_a_reason(pair: tuple[Actor, CaseStatus, CaseStatus]) -> None:
    actor, current, target = pair

    refused = decide(current, target, actor)

    assert isinstance(refused, Refused), refused
    if current == target:
        assert refused.reason == f"case is already {target.value}"
    else:
        assert refused.reason == f"cannot change status from {current.value} to {target.value}"


@pytest.mark.parametrize("actor", list(Actor))
def test_allowed_targets_match_the_support_plan(actor: Actor) -> None:
    for status in CaseStatus:
        assert allowed_targets(status, actor) == frozenset(EXPECTED[actor].get(status, set())), status


def test_nobody_moves_a_case_back_to_new() -> None:
    assert all(S.NEW not in allowed_targets(status, actor) for status in CaseStatus for actor in Actor)


def test_only_a_customer_reopens_a_closed_case() -> None:
    movers = {(actor, status) for actor in Actor for status in CaseStatus if S.CUSTOMER_REOPENED in allowed_targets(status, actor)}

    assert movers == {(Actor.CUSTOMER, S.CLOSED)}


def test_a_customer_reply_cannot_reopen_closed_no_response_or_a_duplicate() -> None:
    """Such replies open a related case or go to the primary instead (SPEC.md §1)."""
    assert allowed_targets(S.CLOSED_NO_RESPONSE, Actor.CUSTOMER) == frozenset()
    assert allowed_targets(S.DUPLICATE, Actor.CUSTOMER) == frozenset()


# ---------------------------------------------------------------------------------------------
# on_hold needs a future hold-until instant


def test_on_hold_without_a_hold_until_is_refused() -> None:
    refused = change_status(case(S.IN_PROGRESS), S.ON_HOLD, actor=Actor.AGENT, now=NOW)

    assert isinstance(refused, Refused)
    assert "hold-until" in refused.reason


@pytest.mark.parametrize("hold_until", [NOW, NOW - timedelta(minutes=1)], ids=["now", "past"])
def test_on_hold_until_a_time_not_in_the_future_is_refused(hold_until: datetime) -> None:
    refused = change_status(case(S.IN_PROGRESS), S.ON_HOLD, actor=Actor.AGENT, now=NOW, hold_until=hold_until)

    assert refused == Refused("the hold-until instant must be in the future")


def test_on_hold_records_the_hold_until_instant() -> None:
    change = change_status(case(S.IN_PROGRESS), S.ON_HOLD, actor=Actor.AGENT, now=NOW, hold_until=LATER)

    assert isinstance(change, StatusChange)
    assert change.hold_until == LATER
    assert change.clear_hold_until is False


def test_a_hold_until_without_on_hold_is_refused() -> None:
    refused = change_status(case(S.NEW), S.IN_PROGRESS, actor=Actor.AGENT, now=NOW, hold_until=LATER)

    assert isinstance(refused, Refused)
    assert "on_hold" in refused.reason


def test_leaving_on_hold_clears_the_hold_until_instant() -> None:
    change = change_status(case(S.ON_HOLD), S.IN_PROGRESS, actor=Actor.SYSTEM, now=NOW)

    assert isinstance(change, StatusChange)
    assert change.clear_hold_until is True
    assert change.hold_until is None


# ---------------------------------------------------------------------------------------------
# duplicate needs another, non-duplicate primary


def test_duplicate_without_a_primary_is_refused() -> None:
    refused = change_status(case(S.NEW), S.DUPLICATE, actor=Actor.AGENT, now=NOW)

    assert isinstance(refused, Refused)
    assert "--duplicate-of" in refused.reason


def test_a_case_cannot_be_a_duplicate_of_itself() -> None:
    me = case(S.NEW, id=7)

    refused = change_status(me, S.DUPLICATE, actor=Actor.AGENT, now=NOW, duplicate_of=me)

    assert refused == Refused("a case cannot be a duplicate of itself")


def test_the_primary_of_a_duplicate_cannot_itself_be_a_duplicate() -> None:
    other_duplicate = case(S.DUPLICATE, id=3)

    refused = change_status(case(S.NEW), S.DUPLICATE, actor=Actor.AGENT, now=NOW, duplicate_of=other_duplicate)

    assert isinstance(refused, Refused)
    assert "itself a duplicate" in refused.reason


def test_a_duplicate_of_without_status_duplicate_is_refused() -> None:
    refused = change_status(case(S.NEW), S.IN_PROGRESS, actor=Actor.AGENT, now=NOW, duplicate_of=PRIMARY)

    assert isinstance(refused, Refused)
    assert "duplicate" in refused.reason


def test_duplicate_points_at_the_primary_and_closes_the_case() -> None:
    change = change_status(case(S.NEW), S.DUPLICATE, actor=Actor.AGENT, now=NOW, duplicate_of=PRIMARY)

    assert isinstance(change, StatusChange)
    assert change.duplicate_of_id == PRIMARY.id
    assert change.clear_duplicate_of is False
    assert change.closed_at == NOW


def test_a_closed_primary_is_still_a_valid_primary() -> None:
    change = change_status(case(S.NEW), S.DUPLICATE, actor=Actor.AGENT, now=NOW, duplicate_of=case(S.CLOSED, id=4))

    assert isinstance(change, StatusChange)
    assert change.duplicate_of_id == 4


def test_reopening_a_duplicate_drops_the_link_to_its_primary() -> None:
    change = change_status(case(S.DUPLICATE, closed_at=NOW), S.IN_PROGRESS, actor=Actor.AGENT, now=NOW)

    assert isinstance(change, StatusChange)
    assert change.clear_duplicate_of is True
    assert change.clear_closed_at is True


# ---------------------------------------------------------------------------------------------
# Closing and reopening


@pytest.mark.parametrize(
    ("current", "target", "actor"),
    [
        (S.IN_PROGRESS, S.CLOSED, Actor.AGENT),
        (S.RESOLVED_FOLLOW_UP, S.CLOSED_NO_RESPONSE, Actor.AGENT),
        (S.RESOLVED_FOLLOW_UP, S.CLOSED_NO_RESPONSE, Actor.SYSTEM),
        (S.IN_PROGRESS, S.DUPLICATE, Actor.AGENT),
    ],
)
def test_closing_records_the_closing_instant(current: CaseStatus, target: CaseStatus, actor: Actor) -> None:
    change = decide(current, target, actor)

    assert isinstance(change, StatusChange)
    assert change.closed_at == NOW
    assert change.clear_closed_at is False


@pytest.mark.parametrize(
    ("current", "target", "actor"),
    [
        (S.CLOSED, S.IN_PROGRESS, Actor.AGENT),
        (S.CLOSED_NO_RESPONSE, S.IN_PROGRESS, Actor.AGENT),
        (S.DUPLICATE, S.IN_PROGRESS, Actor.AGENT),
        (S.CLOSED, S.CUSTOMER_REOPENED, Actor.CUSTOMER),
    ],
)
def test_leaving_a_closed_status_clears_the_closing_instant(
    current: CaseStatus, target: CaseStatus, actor: Actor
) -> None:
    change = decide(current, target, actor)

    assert isinstance(change, StatusChange)
    assert change.clear_closed_at is True
    assert change.closed_at is None


def test_a_change_between_open_statuses_leaves_the_closing_instant_alone() -> None:
    change = decide(S.NEW, S.IN_PROGRESS)

    assert isinstance(change, StatusChange)
    assert change.closed_at is None
    assert change.clear_closed_at is False


# ---------------------------------------------------------------------------------------------
# Waiting on the customer


def test_resolved_follow_up_records_the_resolution_and_starts_waiting_on_the_customer() -> None:
    change = decide(S.IN_PROGRESS, S.RESOLVED_FOLLOW_UP)

    assert isinstance(change, StatusChange)
    assert change.resolved_at == NOW
    assert change.awaiting_customer_since == NOW
    assert change.clear_awaiting_customer is False


@pytest.mark.parametrize(
    ("target", "actor"), [(S.IN_PROGRESS, Actor.CUSTOMER), (S.ON_HOLD, Actor.AGENT), (S.CLOSED, Actor.AGENT)]
)
def test_leaving_resolved_follow_up_stops_waiting_on_the_customer(target: CaseStatus, actor: Actor) -> None:
    change = decide(S.RESOLVED_FOLLOW_UP, target, actor)

    assert isinstance(change, StatusChange)
    assert change.clear_awaiting_customer is True
    assert change.awaiting_customer_since is None
    assert change.resolved_at is None


# ---------------------------------------------------------------------------------------------
# The update clock pauses in on_hold, shipping and resolved_follow_up


@pytest.mark.parametrize(
    ("current", "actor"),
    [(S.ON_HOLD, Actor.AGENT), (S.ON_HOLD, Actor.SYSTEM), (S.SHIPPING, Actor.AGENT), (S.RESOLVED_FOLLOW_UP, Actor.CUSTOMER)],
)
def test_leaving_a_pause_for_in_progress_restarts_the_update_clock(current: CaseStatus, actor: Actor) -> None:
    change = decide(current, S.IN_PROGRESS, actor)

    assert isinstance(change, StatusChange)
    assert change.update_clock_resumed_at == NOW


@pytest.mark.parametrize(
    ("current", "target"),
    [(S.ON_HOLD, S.SHIPPING), (S.SHIPPING, S.ON_HOLD), (S.SHIPPING, S.RESOLVED_FOLLOW_UP), (S.NEW, S.IN_PROGRESS)],
)
def test_the_update_clock_is_not_restarted_without_leaving_a_pause(current: CaseStatus, target: CaseStatus) -> None:
    change = decide(current, target)

    assert isinstance(change, StatusChange)
    assert change.update_clock_resumed_at is None


# ---------------------------------------------------------------------------------------------
# Priorities


@pytest.mark.parametrize("target", [Priority.P1, Priority.P2, Priority.P3])
def test_an_agent_sets_the_real_priority_of_a_p4_case(target: Priority) -> None:
    assert change_priority(case(S.NEW), target) == target


def test_setting_the_same_priority_is_refused() -> None:
    assert change_priority(case(S.NEW, priority=Priority.P2), Priority.P2) == Refused("case is already P2")


@pytest.mark.parametrize("kind", [CaseKind.SUPPORT, CaseKind.MACD_STANDARD, CaseKind.MACD_EXPEDITED])
def test_p1g_is_only_for_master_cases(kind: CaseKind) -> None:
    refused = change_priority(case(S.NEW, kind=kind), Priority.P1G)

    assert isinstance(refused, Refused)
    assert "master" in refused.reason


@pytest.mark.parametrize("target", [Priority.P1, Priority.P4])
def test_a_master_case_stays_p1g(target: Priority) -> None:
    master = case(S.IN_PROGRESS, kind=CaseKind.MASTER, priority=Priority.P1G)

    assert change_priority(master, target) == Refused("a master case is always P1G")


@pytest.mark.parametrize("status", sorted(s for s in CaseStatus if s.is_closed))
def test_a_closed_case_keeps_its_priority(status: CaseStatus) -> None:
    refused = change_priority(case(status), Priority.P1)

    assert isinstance(refused, Refused)
    assert status.value in refused.reason


# ---------------------------------------------------------------------------------------------
# Master links


def test_a_case_links_to_an_open_master() -> None:
    master = case(S.IN_PROGRESS, id=9, kind=CaseKind.MASTER, priority=Priority.P1G)

    assert can_link_to_master(case(S.NEW), master) is None


def test_a_case_cannot_link_to_a_case_that_is_not_a_master() -> None:
    refused = can_link_to_master(case(S.NEW), case(S.IN_PROGRESS, id=9))

    assert refused == Refused("case 00001009 is not a master case")


def test_a_master_cannot_link_to_another_master() -> None:
    master = case(S.IN_PROGRESS, id=9, kind=CaseKind.MASTER, priority=Priority.P1G)
    other = case(S.IN_PROGRESS, id=8, kind=CaseKind.MASTER, priority=Priority.P1G)

    assert isinstance(can_link_to_master(other, master), Refused)


def test_a_case_cannot_link_to_a_closed_master() -> None:
    master = case(S.CLOSED, id=9, kind=CaseKind.MASTER, priority=Priority.P1G)

    refused = can_link_to_master(case(S.NEW), master)

    assert isinstance(refused, Refused)
    assert "closed" in refused.reason
