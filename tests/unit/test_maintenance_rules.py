"""Maintenance windows: when they fall, which notices go out and when, and how times read."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailcase.domain import MaintenanceKind
from mailcase.rules.maintenance import (
    NoticeStage,
    NoticeStageName,
    WindowChange,
    change_notice,
    connect_windows,
    due_stages,
    monthly_windows,
    next_stage_at,
    notice_schedule,
    stage_key,
    window_display,
)

DENVER = ZoneInfo("America/Denver")
AHEAD, ANNOUNCE, START, END = (
    NoticeStageName.AHEAD,
    NoticeStageName.ANNOUNCE,
    NoticeStageName.START,
    NoticeStageName.END,
)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def names(stages: tuple[NoticeStage, ...]) -> list[str]:
    return [s.name.value for s in stages]


# --- monthly scheduled windows ----------------------------------------------------------------


def test_monthly_windows_are_third_friday_22_to_04_mountain_time() -> None:
    windows = monthly_windows(date(2026, 12, 1), 2)

    assert [(w.start, w.end) for w in windows] == [
        (utc(2026, 12, 19, 5, 0), utc(2026, 12, 19, 11, 0)),  # Fri 18 Dec 22:00 MST
        (utc(2027, 1, 16, 5, 0), utc(2027, 1, 16, 11, 0)),  # Fri 15 Jan 22:00 MST
    ]
    assert [w.plan_key for w in windows] == ["scheduled:2026-12", "scheduled:2027-01"]
    assert all(w.kind is MaintenanceKind.SCHEDULED for w in windows)


def test_monthly_window_keeps_local_hours_in_summer_time() -> None:
    (june,) = monthly_windows(date(2027, 6, 1), 1)

    assert june.start == utc(2027, 6, 19, 4, 0)  # Fri 18 Jun 22:00 MDT (UTC-6)
    assert june.start.astimezone(DENVER).hour == 22
    assert june.end.astimezone(DENVER).hour == 4


def test_monthly_windows_skip_a_window_already_before_from_date() -> None:
    windows = monthly_windows(date(2026, 12, 19), 2)

    assert [w.plan_key for w in windows] == ["scheduled:2027-01"]


def test_monthly_window_on_from_date_itself_is_kept() -> None:
    (window,) = monthly_windows(date(2026, 12, 18), 1)

    assert window.plan_key == "scheduled:2026-12"


def test_planning_twice_gives_the_same_plan_keys() -> None:
    assert monthly_windows(date(2026, 12, 1), 6) == monthly_windows(date(2026, 12, 1), 6)


def test_monthly_windows_refuse_a_negative_month_count() -> None:
    with pytest.raises(ValueError, match="months"):
        monthly_windows(date(2026, 12, 1), -1)


def test_monthly_windows_in_another_zone_use_that_zones_wall_clock() -> None:
    (window,) = monthly_windows(date(2026, 12, 1), 1, tz="America/Sao_Paulo")

    assert window.start == utc(2026, 12, 19, 1, 0)  # 22:00 at UTC-3


@given(st.dates(min_value=date(2000, 1, 1), max_value=date(2090, 12, 1)), st.integers(1, 14))
def test_every_monthly_window_is_a_third_friday_night_of_six_local_hours(
    from_date: date, months: int
) -> None:
    windows = monthly_windows(from_date, months)

    assert months - 1 <= len(windows) <= months
    for window in windows:
        local_start, local_end = window.start.astimezone(DENVER), window.end.astimezone(DENVER)
        assert local_start.weekday() == 4 and 15 <= local_start.day <= 21
        assert (local_start.hour, local_start.minute) == (22, 0)
        assert local_end.date() == local_start.date() + timedelta(days=1)
        assert (local_end.hour, local_end.minute) == (4, 0)
        assert local_start.date() >= from_date
        assert window.start.tzinfo is UTC


# --- Connect updates --------------------------------------------------------------------------


def test_connect_updates_fall_every_third_tuesday_from_the_anchor() -> None:
    windows = connect_windows(date(2026, 12, 1), date(2026, 12, 1), date(2027, 1, 31))

    assert [w.plan_key for w in windows] == [
        "connect:2026-12-01",
        "connect:2026-12-22",
        "connect:2027-01-12",
    ]
    first = windows[0]
    assert (first.start, first.end) == (utc(2026, 12, 2, 4, 0), utc(2026, 12, 2, 6, 0))
    assert all(w.kind is MaintenanceKind.CONNECT for w in windows)


def test_connect_updates_start_at_the_first_cycle_date_on_or_after_from_date() -> None:
    windows = connect_windows(date(2026, 12, 1), date(2026, 12, 2), date(2026, 12, 22))

    assert [w.plan_key for w in windows] == ["connect:2026-12-22"]


def test_connect_updates_are_not_planned_before_the_anchor() -> None:
    windows = connect_windows(date(2026, 12, 22), date(2026, 11, 1), date(2026, 12, 31))

    assert [w.plan_key for w in windows] == ["connect:2026-12-22"]


def test_connect_updates_keep_21_to_23_local_across_the_spring_clock_change() -> None:
    windows = connect_windows(date(2027, 2, 23), date(2027, 2, 23), date(2027, 3, 16))

    assert [w.start for w in windows] == [
        utc(2027, 2, 24, 4, 0),  # 21:00 MST
        utc(2027, 3, 17, 3, 0),  # 21:00 MDT: the clocks went forward on 14 March
    ]
    assert all(w.end.astimezone(DENVER).hour == 23 for w in windows)


def test_connect_anchor_that_is_not_a_tuesday_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"2026-12-02 is a Wednesday, not a Tuesday"):
        connect_windows(date(2026, 12, 2), date(2026, 12, 1), date(2027, 1, 1))


# --- notice schedules -------------------------------------------------------------------------

START_AT = utc(2026, 12, 19, 5, 0)
END_AT = utc(2026, 12, 19, 11, 0)


def test_scheduled_window_notices_a_week_ahead_at_start_and_at_end() -> None:
    schedule = notice_schedule(MaintenanceKind.SCHEDULED, START_AT, END_AT, utc(2026, 11, 1))

    assert schedule == (
        NoticeStage(AHEAD, utc(2026, 12, 12, 5, 0)),
        NoticeStage(START, START_AT),
        NoticeStage(END, END_AT),
    )


def test_scheduled_window_created_within_the_week_sends_its_ahead_notice_at_once() -> None:
    created = utc(2026, 12, 15, 17, 0)

    schedule = notice_schedule(MaintenanceKind.SCHEDULED, START_AT, END_AT, created)

    assert schedule[0] == NoticeStage(AHEAD, created)


def test_scheduled_notice_lead_time_comes_from_settings() -> None:
    schedule = notice_schedule(
        MaintenanceKind.SCHEDULED, START_AT, END_AT, utc(2026, 11, 1), scheduled_notice_days=14
    )

    assert schedule[0].at == START_AT - timedelta(days=14)


def test_scheduled_window_entered_after_it_started_sends_no_ahead_notice() -> None:
    schedule = notice_schedule(MaintenanceKind.SCHEDULED, START_AT, END_AT, utc(2026, 12, 19, 6))

    assert names(schedule) == ["start", "end"]


def test_connect_update_gets_only_a_notice_24_hours_ahead() -> None:
    start, end = utc(2026, 12, 2, 4, 0), utc(2026, 12, 2, 6, 0)

    schedule = notice_schedule(MaintenanceKind.CONNECT, start, end, utc(2026, 11, 1))

    assert schedule == (NoticeStage(AHEAD, utc(2026, 12, 1, 4, 0)),)


def test_connect_update_entered_after_it_started_sends_nothing() -> None:
    start, end = utc(2026, 12, 2, 4, 0), utc(2026, 12, 2, 6, 0)

    assert notice_schedule(MaintenanceKind.CONNECT, start, end, utc(2026, 12, 2, 5)) == ()


def test_unscheduled_window_is_announced_immediately_then_at_start_and_end() -> None:
    created = utc(2026, 12, 19, 1, 0)

    schedule = notice_schedule(MaintenanceKind.UNSCHEDULED, START_AT, END_AT, created)

    assert schedule == (
        NoticeStage(ANNOUNCE, created),
        NoticeStage(START, START_AT),
        NoticeStage(END, END_AT),
    )


def test_unscheduled_window_entered_once_under_way_gets_no_second_start_notice() -> None:
    created = utc(2026, 12, 19, 6, 0)

    schedule = notice_schedule(MaintenanceKind.UNSCHEDULED, START_AT, END_AT, created)

    assert names(schedule) == ["announce", "end"]


def test_window_ending_before_it_starts_is_refused() -> None:
    with pytest.raises(ValueError, match="not after its start"):
        notice_schedule(MaintenanceKind.SCHEDULED, END_AT, START_AT, utc(2026, 11, 1))


def test_naive_instants_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        notice_schedule(MaintenanceKind.SCHEDULED, datetime(2026, 12, 19), END_AT, utc(2026, 11, 1))


# --- due stages -------------------------------------------------------------------------------

SCHEDULE = notice_schedule(MaintenanceKind.SCHEDULED, START_AT, END_AT, utc(2026, 11, 1))


def test_nothing_is_due_before_the_first_notice() -> None:
    assert due_stages(SCHEDULE, utc(2026, 12, 12, 4, 59)) == ()
    assert next_stage_at(SCHEDULE, utc(2026, 12, 12, 4, 59)) == utc(2026, 12, 12, 5, 0)


def test_each_notice_is_due_from_its_instant() -> None:
    assert names(due_stages(SCHEDULE, utc(2026, 12, 12, 5, 0))) == ["ahead"]
    assert names(due_stages(SCHEDULE, START_AT)) == ["start"]
    assert names(due_stages(SCHEDULE, END_AT + timedelta(minutes=1))) == ["end"]


def test_after_downtime_only_the_news_still_true_is_due() -> None:
    after_the_window = END_AT + timedelta(hours=3)

    assert names(due_stages(SCHEDULE, after_the_window)) == ["end"]


def test_next_stage_is_none_after_the_last_notice() -> None:
    assert next_stage_at(SCHEDULE, START_AT) == END_AT
    assert next_stage_at(SCHEDULE, END_AT) is None


def test_stage_key_changes_when_the_stage_moves() -> None:
    moved = NoticeStage(START, START_AT + timedelta(days=7))

    assert stage_key("mw-1", SCHEDULE[1]) == "maintenance:mw-1:start:2026-12-19T05:00:00+00:00"
    assert stage_key("mw-1", SCHEDULE[1]) != stage_key("mw-1", moved)


# --- cancellations and reschedules ------------------------------------------------------------


def test_cancellation_goes_to_someone_already_notified_with_a_calendar_cancel() -> None:
    notice = change_notice(
        True, WindowChange.CANCELLED, sequence=2, now=utc(2026, 12, 13), end=END_AT
    )

    assert notice is not None
    assert (notice.change, notice.method, notice.sequence) == (WindowChange.CANCELLED, "CANCEL", 3)


def test_reschedule_goes_to_someone_already_notified_as_a_calendar_update() -> None:
    notice = change_notice(
        True, WindowChange.RESCHEDULED, sequence=0, now=utc(2026, 12, 13), end=END_AT
    )

    assert notice is not None
    assert (notice.method, notice.sequence) == ("REQUEST", 1)


def test_nobody_who_was_never_notified_hears_of_a_change() -> None:
    for change in WindowChange:
        assert change_notice(False, change, sequence=0, now=utc(2026, 12, 1), end=END_AT) is None


def test_changing_a_window_that_already_ended_tells_nobody() -> None:
    assert change_notice(True, WindowChange.CANCELLED, sequence=0, now=END_AT, end=END_AT) is None


# --- display ----------------------------------------------------------------------------------


def test_display_gives_the_organisations_zone_and_mountain_time() -> None:
    shown = window_display(START_AT, END_AT, "America/Chicago")

    assert shown["org_start"] == "2026-12-18 23:00 CST"
    assert shown["org_end"] == "2026-12-19 05:00 CST"
    assert shown["desk_start"] == "2026-12-18 22:00 MST"
    assert shown["desk_range"] == "2026-12-18 22:00 – 2026-12-19 04:00 MST"
    assert shown["org_timezone"] == "America/Chicago"
    assert shown["desk_timezone"] == "America/Denver"
    assert shown["start_utc"] == "2026-12-19T05:00:00Z"
    assert shown["duration"] == "6 h"


def test_display_of_a_same_day_window_gives_one_date() -> None:
    shown = window_display(utc(2026, 12, 2, 4), utc(2026, 12, 2, 6), "Europe/Lisbon")

    assert shown["desk_range"] == "2026-12-01 21:00–23:00 MST"
    assert shown["org_range"] == "2026-12-02 04:00–06:00 WET"


def test_display_of_a_zone_without_letter_abbreviation_shows_the_utc_offset() -> None:
    shown = window_display(START_AT, END_AT, "America/Sao_Paulo")

    assert shown["org_start"] == "2026-12-19 02:00 UTC-03:00"
