"""SLA deadlines and the notices they cause, from plain case views and fixed instants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from mailcase.config import LifecycleSettings
from mailcase.domain import BusinessCalendarSpec, CaseKind, CaseStatus, CaseView, Priority
from mailcase.rules.businesstime import BusinessCalendar
from mailcase.rules.sla import (
    DEFAULT_TARGETS,
    Deadline,
    DeadlineName,
    NoticeKind,
    SlaPolicy,
    case_deadlines,
    check_overrides,
    next_check_at,
    notices_due,
    sla_start,
    start_on_arrival,
)

MT = ZoneInfo("America/Denver")
CALENDAR = BusinessCalendar(BusinessCalendarSpec())
LIFECYCLE = LifecycleSettings()
# Built exactly as the shell does from config: one Target per [sla.*] table.
POLICY = SlaPolicy(
    targets=dict(DEFAULT_TARGETS),
    nudge_business_days=LIFECYCLE.nudge_business_days,
    close_no_response_business_days=LIFECYCLE.close_no_response_business_days,
)
N = DeadlineName
K = NoticeKind


def mt(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=MT)  # type: ignore[misc]


def case(**changes: object) -> CaseView:
    values: dict[str, object] = {
        "id": 1,
        "number": 1042,
        "organisation_id": 7,
        "status": CaseStatus.NEW,
        "priority": Priority.P4,
        "assignee": "ana@support.example.com",
    }
    values.update(changes)
    if "created_at" not in values:
        values["created_at"] = mt(2026, 12, 4, 16, 0)
    return CaseView(**values)  # type: ignore[arg-type]


def deadlines_of(view: CaseView, now: datetime, **kwargs: object) -> dict[DeadlineName, Deadline]:
    found = case_deadlines(view, POLICY, CALENDAR, now, **kwargs)  # type: ignore[arg-type]
    names = [deadline.name for deadline in found]
    assert len(names) == len(set(names))
    return {deadline.name: deadline for deadline in found}


def due_kinds(view: CaseView, now: datetime) -> list[tuple[NoticeKind, DeadlineName]]:
    found = case_deadlines(view, POLICY, CALENDAR, now)
    return [(notice.kind, notice.deadline) for notice in notices_due(view, found, POLICY, now)]


def next_check(view: CaseView, now: datetime) -> datetime | None:
    return next_check_at(view, case_deadlines(view, POLICY, CALENDAR, now), POLICY, now)


# ------------------------------------------------------------------ initial response


def test_p4_created_friday_afternoon_is_due_monday_same_local_time() -> None:
    view = case(created_at=mt(2026, 12, 4, 16, 0))
    response = deadlines_of(view, mt(2026, 12, 4, 16, 1))[N.INITIAL_RESPONSE]
    assert response.due_at == mt(2026, 12, 7, 16, 0)
    assert response.calendar == "business days in America/Denver"
    assert response.reminder_at == mt(2026, 12, 7, 12, 0)  # 240 min lead
    assert response.escalation_l3_at == mt(2026, 12, 8, 16, 0)


def test_p4_created_before_thanksgiving_is_due_friday_and_explains_the_holiday() -> None:
    view = case(created_at=mt(2026, 11, 25, 16, 0))
    response = deadlines_of(view, mt(2026, 11, 25, 16, 1))[N.INITIAL_RESPONSE]
    assert response.due_at == mt(2026, 11, 27, 16, 0)
    assert [day.name for day in response.holidays_skipped] == ["Thanksgiving Day"]
    assert "Thanksgiving Day (2026-11-26)" in response.explanation
    assert "P4 target: 1 business day" in response.explanation
    assert "business days in America/Denver" in response.explanation
    assert "Pauses: none" in response.explanation


def test_p4_due_across_spring_forward_is_same_local_time_in_daylight_time() -> None:
    view = case(created_at=mt(2027, 3, 12, 16, 0))
    response = deadlines_of(view, mt(2027, 3, 12, 16, 1))[N.INITIAL_RESPONSE]
    assert response.due_at == datetime(2027, 3, 15, 22, 0, tzinfo=UTC)
    assert "Mon 2027-03-15 16:00 MDT" in response.explanation


def test_first_response_meets_the_initial_response_deadline_and_stops_its_notices() -> None:
    view = case(
        priority=Priority.P1,
        created_at=mt(2026, 12, 4, 10, 0),
        first_response_at=mt(2026, 12, 4, 10, 5),
    )
    now = mt(2026, 12, 4, 10, 20)
    response = deadlines_of(view, now)[N.INITIAL_RESPONSE]
    assert response.met and response.met_at == mt(2026, 12, 4, 10, 5)
    assert "met Fri 2026-12-04 10:05 MST" in response.explanation
    assert (K.SLA_ESCALATION_L2, N.INITIAL_RESPONSE) not in due_kinds(view, now)


def test_sla_start_at_overrides_receipt() -> None:
    view = case(created_at=mt(2026, 12, 4, 16, 0), sla_start_at=mt(2026, 12, 7, 9, 0))
    response = deadlines_of(view, mt(2026, 12, 7, 9, 0))[N.INITIAL_RESPONSE]
    assert response.due_at == mt(2026, 12, 8, 9, 0)


# ------------------------------------------------------------------ reminders and escalations


def test_p1_reminds_at_10_escalates_to_level_2_at_15_and_level_3_at_30_minutes() -> None:
    created = mt(2026, 12, 4, 10, 0)
    view = case(priority=Priority.P1, created_at=created)
    at = lambda minutes: created + timedelta(minutes=minutes)  # noqa: E731

    assert due_kinds(view, at(9)) == []
    assert next_check(view, at(9)) == at(10)
    assert due_kinds(view, at(10)) == [(K.SLA_REMINDER, N.INITIAL_RESPONSE)]
    assert next_check(view, at(10)) == at(15)
    assert due_kinds(view, at(15)) == [
        (K.SLA_REMINDER, N.INITIAL_RESPONSE),
        (K.SLA_ESCALATION_L2, N.INITIAL_RESPONSE),
    ]
    assert next_check(view, at(15)) == at(30)
    assert (K.SLA_ESCALATION_L3, N.INITIAL_RESPONSE) in due_kinds(view, at(30))
    assert next_check(view, at(30)) is None


def test_notice_carries_when_it_is_due_and_the_deadline_it_is_about() -> None:
    created = mt(2026, 12, 4, 10, 0)
    view = case(priority=Priority.P1, created_at=created)
    now = created + timedelta(minutes=10)
    found = case_deadlines(view, POLICY, CALENDAR, now)
    (reminder,) = notices_due(view, found, POLICY, now)
    assert reminder.due_at == created + timedelta(minutes=10)
    assert reminder.deadline_at == created + timedelta(minutes=15)
    assert reminder.idempotency_key(1042) == "sla_reminder:1042:initial_response:20261204T171500Z"


def test_unassigned_p1_alerts_at_once() -> None:
    created = mt(2026, 12, 4, 10, 0)
    view = case(priority=Priority.P1, created_at=created, assignee=None)
    assert due_kinds(view, created) == [(K.UNASSIGNED_ALERT, N.INITIAL_RESPONSE)]


def test_unassigned_p4_does_not_alert() -> None:
    created = mt(2026, 12, 4, 10, 0)
    assert due_kinds(case(created_at=created, assignee=None), created) == []


def test_p3_update_due_one_business_day_after_the_last_agent_update() -> None:
    view = case(
        priority=Priority.P3,
        status=CaseStatus.IN_PROGRESS,
        created_at=mt(2026, 12, 3, 9, 0),
        first_response_at=mt(2026, 12, 3, 10, 0),
        last_agent_update_at=mt(2026, 12, 4, 15, 0),
    )
    update = deadlines_of(view, mt(2026, 12, 4, 15, 0))[N.NEXT_UPDATE]
    assert update.due_at == mt(2026, 12, 7, 15, 0)
    assert update.started_at == mt(2026, 12, 4, 15, 0)
    assert "last agent update" in update.explanation


def test_no_update_deadline_before_the_first_response() -> None:
    view = case(priority=Priority.P2, status=CaseStatus.IN_PROGRESS)
    assert N.NEXT_UPDATE not in deadlines_of(view, mt(2026, 12, 4, 16, 0))


def test_master_case_gets_hourly_update_reminders() -> None:
    view = case(
        kind=CaseKind.MASTER,
        priority=Priority.P1G,
        status=CaseStatus.IN_PROGRESS,
        created_at=mt(2026, 12, 4, 9, 0),
        first_response_at=mt(2026, 12, 4, 9, 10),
        last_agent_update_at=mt(2026, 12, 4, 10, 0),
    )
    update = deadlines_of(view, mt(2026, 12, 4, 10, 0))[N.NEXT_UPDATE]
    assert update.due_at == mt(2026, 12, 4, 11, 0)
    assert due_kinds(view, mt(2026, 12, 4, 10, 55)) == [
        (K.MASTER_UPDATE_REMINDER, N.NEXT_UPDATE)
    ]


# ------------------------------------------------------------------ pauses and ETR


def test_on_hold_case_gets_no_update_reminder_until_the_hold_time() -> None:
    hold_until = mt(2026, 12, 4, 18, 0)
    view = case(
        priority=Priority.P2,
        status=CaseStatus.ON_HOLD,
        created_at=mt(2026, 12, 4, 9, 0),
        first_response_at=mt(2026, 12, 4, 9, 10),
        last_agent_update_at=mt(2026, 12, 4, 10, 0),
        hold_until=hold_until,
    )
    found = deadlines_of(view, mt(2026, 12, 4, 13, 0))
    update = found[N.NEXT_UPDATE]
    assert update.due_at == hold_until + timedelta(hours=2)
    assert update.reminder_at == hold_until + timedelta(minutes=110)
    assert "On Hold until Fri 2026-12-04 18:00 MST" in update.explanation
    assert found[N.HOLD_EXPIRY].due_at == hold_until
    # Long after the regular 2 h deadline of 12:00, still nothing about updates.
    assert due_kinds(view, mt(2026, 12, 4, 17, 59)) == []
    assert next_check(view, mt(2026, 12, 4, 13, 0)) == hold_until
    assert due_kinds(view, hold_until) == [(K.HOLD_EXPIRED, N.HOLD_EXPIRY)]


@pytest.mark.parametrize("status", [CaseStatus.SHIPPING, CaseStatus.RESOLVED_FOLLOW_UP])
def test_shipping_and_resolved_follow_up_pause_the_update_clock(status: CaseStatus) -> None:
    view = case(
        priority=Priority.P2,
        status=status,
        created_at=mt(2026, 12, 4, 9, 0),
        first_response_at=mt(2026, 12, 4, 9, 10),
    )
    update = deadlines_of(view, mt(2026, 12, 5, 9, 0))[N.NEXT_UPDATE]
    assert update.paused and update.due_at is None
    assert status.display in update.explanation
    assert due_kinds(view, mt(2026, 12, 5, 9, 0)) == []


def test_update_clock_restarts_when_a_pause_ends() -> None:
    view = case(
        priority=Priority.P2,
        status=CaseStatus.IN_PROGRESS,
        created_at=mt(2026, 12, 1, 9, 0),
        first_response_at=mt(2026, 12, 1, 9, 10),
        update_clock_resumed_at=mt(2026, 12, 4, 12, 0),
    )
    update = deadlines_of(view, mt(2026, 12, 4, 12, 0))[N.NEXT_UPDATE]
    assert update.due_at == mt(2026, 12, 4, 14, 0)


def test_future_etr_suppresses_update_reminders_until_it_passes() -> None:
    etr = mt(2026, 12, 4, 20, 0)
    view = case(
        priority=Priority.P2,
        status=CaseStatus.IN_PROGRESS,
        created_at=mt(2026, 12, 4, 9, 0),
        first_response_at=mt(2026, 12, 4, 9, 10),
        last_agent_update_at=mt(2026, 12, 4, 10, 0),
        etr=etr,
    )
    update = deadlines_of(view, mt(2026, 12, 4, 11, 0))[N.NEXT_UPDATE]
    assert update.due_at == etr
    assert "ETR Fri 2026-12-04 20:00 MST" in update.explanation
    # The regular deadline would have been 12:00 with a reminder at 11:50.
    assert due_kinds(view, mt(2026, 12, 4, 19, 59)) == []
    assert next_check(view, mt(2026, 12, 4, 11, 0)) == etr
    assert due_kinds(view, etr) == [
        (K.SLA_REMINDER, N.NEXT_UPDATE),
        (K.SLA_ESCALATION_L2, N.NEXT_UPDATE),
    ]


def test_etr_before_the_last_update_is_ignored() -> None:
    view = case(
        priority=Priority.P2,
        status=CaseStatus.IN_PROGRESS,
        created_at=mt(2026, 12, 4, 9, 0),
        first_response_at=mt(2026, 12, 4, 9, 10),
        last_agent_update_at=mt(2026, 12, 4, 10, 0),
        etr=mt(2026, 12, 4, 9, 30),
    )
    update = deadlines_of(view, mt(2026, 12, 4, 11, 0))[N.NEXT_UPDATE]
    assert update.due_at == mt(2026, 12, 4, 12, 0)


# ------------------------------------------------------------------ awaiting the customer


def test_awaiting_customer_nudges_after_one_and_closes_after_two_business_days() -> None:
    since = mt(2026, 12, 4, 15, 0)  # Friday
    view = case(
        priority=Priority.P3,
        status=CaseStatus.RESOLVED_FOLLOW_UP,
        first_response_at=mt(2026, 12, 4, 16, 10),
        awaiting_customer_since=since,
    )
    found = deadlines_of(view, since)
    assert found[N.CUSTOMER_NUDGE].due_at == mt(2026, 12, 7, 15, 0)
    assert found[N.CLOSE_NO_RESPONSE].due_at == mt(2026, 12, 8, 15, 0)
    assert due_kinds(view, mt(2026, 12, 7, 14, 59)) == []
    assert due_kinds(view, mt(2026, 12, 7, 15, 0)) == [(K.CUSTOMER_NUDGE, N.CUSTOMER_NUDGE)]
    assert next_check(view, mt(2026, 12, 7, 15, 0)) == mt(2026, 12, 8, 15, 0)
    # Closing replaces a nudge that is still due (e.g. the daemon was down for a day).
    assert due_kinds(view, mt(2026, 12, 8, 15, 0)) == [(K.CLOSE_NO_RESPONSE, N.CLOSE_NO_RESPONSE)]


def test_awaiting_customer_after_a_reply_also_pauses_update_reminders() -> None:
    since = mt(2026, 12, 4, 15, 0)
    view = case(
        priority=Priority.P2,
        status=CaseStatus.IN_PROGRESS,
        created_at=mt(2026, 12, 4, 9, 0),
        first_response_at=mt(2026, 12, 4, 9, 10),
        last_agent_update_at=since,
        awaiting_customer_since=since,
    )
    found = deadlines_of(view, since)
    assert found[N.NEXT_UPDATE].paused
    assert due_kinds(view, mt(2026, 12, 4, 20, 0)) == []


def test_customer_reply_stops_the_no_response_clock() -> None:
    view = case(
        status=CaseStatus.IN_PROGRESS,
        first_response_at=mt(2026, 12, 4, 16, 10),
        awaiting_customer_since=mt(2026, 12, 4, 17, 0),
        last_customer_activity_at=mt(2026, 12, 7, 9, 0),
    )
    found = deadlines_of(view, mt(2026, 12, 9, 9, 0))
    assert found[N.CLOSE_NO_RESPONSE].met
    kinds = {kind for kind, _ in due_kinds(view, mt(2026, 12, 9, 9, 0))}
    assert not kinds & {K.CUSTOMER_NUDGE, K.CLOSE_NO_RESPONSE}


def test_nudge_skips_holidays() -> None:
    view = case(
        status=CaseStatus.RESOLVED_FOLLOW_UP,
        first_response_at=mt(2026, 11, 24, 9, 0),
        awaiting_customer_since=mt(2026, 11, 25, 12, 0),
    )
    nudge = deadlines_of(view, mt(2026, 11, 25, 12, 0))[N.CUSTOMER_NUDGE]
    assert nudge.due_at == mt(2026, 11, 27, 12, 0)
    assert "Thanksgiving Day" in nudge.explanation


# ------------------------------------------------------------------ MACD


def test_standard_macd_received_friday_evening_counts_from_monday_opening() -> None:
    received = mt(2026, 12, 4, 20, 0)
    view = case(kind=CaseKind.MACD_STANDARD, created_at=received)
    assert sla_start(view, CALENDAR) == mt(2026, 12, 7, 7, 0)
    found = deadlines_of(view, received)
    assert found[N.INITIAL_RESPONSE].due_at == mt(2026, 12, 8, 7, 0)
    assert found[N.RESOLUTION].due_at == mt(2026, 12, 9, 7, 0)
    assert "extended business hours" in found[N.INITIAL_RESPONSE].explanation


def test_standard_macd_with_stored_sla_start_uses_it() -> None:
    received = mt(2026, 12, 4, 20, 0)
    view = case(
        kind=CaseKind.MACD_STANDARD,
        created_at=received,
        sla_start_at=CALENDAR.next_extended_opening(received),
    )
    assert deadlines_of(view, received)[N.INITIAL_RESPONSE].due_at == mt(2026, 12, 8, 7, 0)


def test_expedited_macd_counts_from_receipt() -> None:
    received = mt(2026, 12, 4, 20, 0)
    view = case(kind=CaseKind.MACD_EXPEDITED, created_at=received)
    found = deadlines_of(view, received)
    assert found[N.INITIAL_RESPONSE].due_at == received + timedelta(hours=4)
    assert found[N.INITIAL_RESPONSE].calendar == "wall-clock"
    assert found[N.RESOLUTION].due_at == mt(2026, 12, 7, 20, 0)  # 1 business day, from receipt


def test_macd_completion_deadline_reminds_and_escalates() -> None:
    received = mt(2026, 12, 7, 9, 0)
    view = case(
        kind=CaseKind.MACD_STANDARD,
        status=CaseStatus.IN_PROGRESS,
        created_at=received,
        first_response_at=mt(2026, 12, 7, 10, 0),
    )
    assert due_kinds(view, mt(2026, 12, 9, 5, 0)) == [(K.SLA_REMINDER, N.RESOLUTION)]
    assert (K.SLA_ESCALATION_L2, N.RESOLUTION) in due_kinds(view, mt(2026, 12, 9, 9, 0))
    assert next_check(view, mt(2026, 12, 9, 9, 0)) == mt(2026, 12, 11, 9, 0)  # 2 x 2 bd


def test_resolved_macd_has_met_its_completion_deadline() -> None:
    view = case(
        kind=CaseKind.MACD_STANDARD,
        status=CaseStatus.RESOLVED_FOLLOW_UP,
        created_at=mt(2026, 12, 7, 9, 0),
        first_response_at=mt(2026, 12, 7, 10, 0),
        awaiting_customer_since=mt(2026, 12, 8, 10, 0),
    )
    assert deadlines_of(view, mt(2026, 12, 8, 10, 0))[N.RESOLUTION].met


# ------------------------------------------------------------------ overrides and closed cases


def test_organisation_override_changes_the_target_and_says_so() -> None:
    view = case(created_at=mt(2026, 12, 4, 16, 0))
    overrides = {"P4": {"response_business_days": 2}}
    response = deadlines_of(view, mt(2026, 12, 4, 16, 0), overrides=overrides)[N.INITIAL_RESPONSE]
    assert response.due_at == mt(2026, 12, 8, 16, 0)
    assert "organisation override" in response.explanation


def test_override_of_one_unit_replaces_the_whole_target() -> None:
    target = POLICY.target_for(
        case(priority=Priority.P3), {"P3": {"response_business_days": 1}}
    )
    assert (target.response_business_days, target.response_minutes) == (1, 0)
    assert target.update_business_days == 1  # untouched


def test_overrides_for_other_priorities_do_not_apply() -> None:
    view = case(created_at=mt(2026, 12, 4, 16, 0))
    found = deadlines_of(view, mt(2026, 12, 4, 16, 0), overrides={"P1": {"response_minutes": 5}})
    assert found[N.INITIAL_RESPONSE].due_at == mt(2026, 12, 7, 16, 0)


def test_unknown_override_names_are_refused_naming_them() -> None:
    with pytest.raises(ValueError, match="response_days"):
        check_overrides({"P4": {"response_days": 2}})
    with pytest.raises(ValueError, match="P5"):
        check_overrides({"P5": {"response_minutes": 2}})


@pytest.mark.parametrize(
    "status", [CaseStatus.CLOSED, CaseStatus.CLOSED_NO_RESPONSE, CaseStatus.DUPLICATE]
)
def test_closed_cases_have_no_deadlines_and_no_notices(status: CaseStatus) -> None:
    view = case(priority=Priority.P1, status=status, assignee=None)
    now = mt(2026, 12, 9, 9, 0)
    assert case_deadlines(view, POLICY, CALENDAR, now) == ()
    assert due_kinds(view, now) == []
    assert next_check(view, now) is None


def test_every_deadline_explains_target_calendar_pauses_and_holidays() -> None:
    view = case(
        priority=Priority.P3,
        status=CaseStatus.ON_HOLD,
        created_at=mt(2026, 11, 24, 9, 0),
        first_response_at=mt(2026, 11, 24, 10, 0),
        hold_until=mt(2026, 11, 25, 9, 0),
    )
    for deadline in case_deadlines(view, POLICY, CALENDAR, mt(2026, 11, 24, 12, 0)):
        assert deadline.target in deadline.explanation
        assert deadline.calendar in deadline.explanation
        assert "Pauses:" in deadline.explanation
        assert "Holidays skipped:" in deadline.explanation
    update = deadlines_of(view, mt(2026, 11, 24, 12, 0))[N.NEXT_UPDATE]
    assert update.due_at == mt(2026, 11, 27, 9, 0)
    assert "Thanksgiving Day" in update.explanation
    assert "On Hold until" in update.explanation


def test_a_standard_macd_request_starts_its_clock_at_the_next_extended_opening_others_on_arrival() -> None:
    calendar = BusinessCalendar(BusinessCalendarSpec(timezone="America/Denver", holidays_country="US"))
    friday_evening = datetime(2026, 12, 5, 3, 0, tzinfo=UTC)  # Friday 20:00 in Denver
    monday_opening = datetime(2026, 12, 7, 14, 0, tzinfo=UTC)  # Monday 07:00 in Denver
    assert start_on_arrival(CaseKind.MACD_STANDARD, friday_evening, calendar) == monday_opening
    assert start_on_arrival(CaseKind.MACD_EXPEDITED, friday_evening, calendar) == friday_evening
    assert start_on_arrival(CaseKind.SUPPORT, friday_evening, calendar) == friday_evening
