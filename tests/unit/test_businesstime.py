"""The business calendar: business days, holidays, extended hours and DST, with fixed instants."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailcase.domain import BusinessCalendarSpec
from mailcase.rules.businesstime import BusinessCalendar, SkippedDay

MT = ZoneInfo("America/Denver")
CALENDAR = BusinessCalendar(BusinessCalendarSpec())


def mt(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=MT)  # type: ignore[misc]


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


# ------------------------------------------------------------------ acceptance examples


def test_one_business_day_after_friday_afternoon_is_monday_same_local_time() -> None:
    assert CALENDAR.add_business_days(mt(2026, 12, 4, 16, 0), 1) == mt(2026, 12, 7, 16, 0)


def test_one_business_day_after_wednesday_before_thanksgiving_is_friday() -> None:
    result = CALENDAR.add_business_days_explained(mt(2026, 11, 25, 16, 0), 1)
    assert result.due_at == mt(2026, 11, 27, 16, 0)
    assert result.skipped == (SkippedDay(date(2026, 11, 26), "Thanksgiving Day"),)


def test_business_day_across_spring_forward_keeps_local_time_not_utc_offset() -> None:
    # Friday 16:00 MST (-07:00) -> Monday 16:00 MDT (-06:00): 22:00 UTC, not 23:00.
    due = CALENDAR.add_business_days(mt(2027, 3, 12, 16, 0), 1)
    assert due == utc(2027, 3, 15, 22, 0)
    assert CALENDAR.to_local(due).strftime("%H:%M %Z") == "16:00 MDT"


def test_business_day_across_fall_back_keeps_local_time() -> None:
    due = CALENDAR.add_business_days(mt(2026, 10, 30, 9, 0), 1)
    assert due == utc(2026, 11, 2, 16, 0)  # Monday 09:00 MST


def test_results_are_aware_utc() -> None:
    due = CALENDAR.add_business_days(mt(2026, 12, 4, 16, 0), 1)
    assert due.tzinfo is UTC


def test_macd_request_received_friday_evening_counts_from_monday_opening() -> None:
    assert CALENDAR.next_extended_opening(mt(2026, 12, 4, 20, 0)) == mt(2026, 12, 7, 7, 0)


# ------------------------------------------------------------------ non-business days


def test_instant_on_saturday_counts_from_start_of_monday() -> None:
    result = CALENDAR.add_business_days_explained(mt(2026, 12, 5, 10, 30), 1)
    assert result.counted_from == mt(2026, 12, 7, 0, 0)
    assert result.due_at == mt(2026, 12, 8, 0, 0)


def test_instant_on_a_holiday_counts_from_start_of_next_business_day_and_names_it() -> None:
    result = CALENDAR.add_business_days_explained(mt(2026, 11, 26, 9, 0), 1)
    assert result.counted_from == mt(2026, 11, 27, 0, 0)
    assert result.due_at == mt(2026, 11, 30, 0, 0)
    assert [day.name for day in result.skipped] == ["Thanksgiving Day"]


def test_adding_zero_business_days_on_a_business_day_is_the_instant_itself() -> None:
    assert CALENDAR.add_business_days(mt(2026, 12, 7, 10, 0), 0) == mt(2026, 12, 7, 10, 0)


def test_adding_zero_business_days_on_a_weekend_is_start_of_next_business_day() -> None:
    assert CALENDAR.add_business_days(mt(2026, 12, 6, 10, 0), 0) == mt(2026, 12, 7, 0, 0)


def test_weekends_holidays_and_observed_holidays_are_not_business_days() -> None:
    assert not CALENDAR.is_business_day(date(2026, 12, 5))  # Saturday
    assert not CALENDAR.is_business_day(date(2026, 12, 6))  # Sunday
    assert not CALENDAR.is_business_day(date(2026, 12, 25))  # Christmas Day
    assert not CALENDAR.is_business_day(date(2026, 7, 3))  # Independence Day (observed)
    assert CALENDAR.is_business_day(date(2026, 12, 7))


def test_observed_new_year_at_end_of_previous_year_is_skipped() -> None:
    # 2028-01-01 is a Saturday; the federal holiday is observed on Friday 2027-12-31.
    result = CALENDAR.add_business_days_explained(mt(2027, 12, 30, 12, 0), 1)
    assert result.due_at == mt(2028, 1, 3, 12, 0)
    assert [day.day for day in result.skipped] == [date(2027, 12, 31)]


def test_weekend_holidays_are_not_listed_as_skipped() -> None:
    # Independence Day 2026 is a Saturday, observed Friday 3 July: only that Friday costs a day.
    result = CALENDAR.add_business_days_explained(mt(2026, 7, 2, 10, 0), 1)
    assert result.due_at == mt(2026, 7, 6, 10, 0)
    assert [day.name for day in result.skipped] == ["Independence Day (observed)"]


def test_extra_configured_dates_are_skipped() -> None:
    calendar = BusinessCalendar(BusinessCalendarSpec(extra_holidays=("2026-12-24",)))
    result = calendar.add_business_days_explained(mt(2026, 12, 23, 9, 0), 1)
    assert result.due_at == mt(2026, 12, 28, 9, 0)  # 24th extra, 25th Christmas, then a weekend
    assert [day.day for day in result.skipped] == [date(2026, 12, 24), date(2026, 12, 25)]


def test_empty_country_means_weekends_only() -> None:
    calendar = BusinessCalendar(BusinessCalendarSpec(holidays_country=""))
    assert calendar.add_business_days(mt(2026, 11, 25, 16, 0), 1) == mt(2026, 11, 26, 16, 0)


def test_another_country_uses_its_own_holidays() -> None:
    calendar = BusinessCalendar(
        BusinessCalendarSpec(timezone="America/Sao_Paulo", holidays_country="BR")
    )
    assert not calendar.is_business_day(date(2026, 9, 7))  # Independência do Brasil
    assert calendar.is_business_day(date(2026, 11, 26))  # no Thanksgiving in Brazil


def test_unknown_holiday_country_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="XX"):
        BusinessCalendar(BusinessCalendarSpec(holidays_country="XX"))


def test_naive_instants_and_negative_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        CALENDAR.add_business_days(datetime(2026, 12, 4, 16, 0), 1)
    with pytest.raises(ValueError, match="negative"):
        CALENDAR.add_business_days(mt(2026, 12, 4, 16, 0), -1)


# ------------------------------------------------------------------ wall clock and calendar days


def test_minutes_are_wall_clock_across_dst() -> None:
    # Saturday 2027-03-14 01:30 MST + 60 min = 03:30 MDT: one real hour, support is 24x7.
    assert CALENDAR.add_minutes(mt(2027, 3, 14, 1, 30), 60) == mt(2027, 3, 14, 3, 30)
    assert CALENDAR.add_minutes(mt(2027, 3, 14, 1, 30), 60) - mt(2027, 3, 14, 1, 30) == timedelta(
        hours=1
    )


def test_calendar_days_keep_local_wall_time_across_dst() -> None:
    closed = mt(2027, 3, 10, 12, 0)  # MST
    reopen_until = CALENDAR.add_calendar_days(closed, 7)
    assert reopen_until == mt(2027, 3, 17, 12, 0)  # MDT
    assert reopen_until - closed == timedelta(days=7, hours=-1)


def test_local_date_uses_desk_time_zone() -> None:
    assert CALENDAR.local_date(utc(2026, 12, 5, 3, 0)) == date(2026, 12, 4)


def test_wall_time_in_spring_forward_gap_moves_forward_by_the_gap() -> None:
    assert CALENDAR.at_local(date(2027, 3, 14), time(2, 30)) == utc(2027, 3, 14, 9, 30)  # 03:30 MDT


def test_ambiguous_wall_time_means_first_occurrence() -> None:
    assert CALENDAR.at_local(date(2026, 11, 1), time(1, 30)) == utc(2026, 11, 1, 7, 30)  # 01:30 MDT


# ------------------------------------------------------------------ extended hours (MACD)


@pytest.mark.parametrize(
    ("received", "counts_from"),
    [
        (mt(2026, 12, 4, 20, 0), mt(2026, 12, 7, 7, 0)),  # Friday evening -> Monday opening
        (mt(2026, 12, 5, 11, 0), mt(2026, 12, 7, 7, 0)),  # Saturday -> Monday opening
        (mt(2026, 12, 7, 6, 0), mt(2026, 12, 7, 7, 0)),  # Monday early -> Monday opening
        (mt(2026, 12, 7, 7, 0), mt(2026, 12, 7, 7, 0)),  # at opening: inside
        (mt(2026, 12, 7, 12, 15), mt(2026, 12, 7, 12, 15)),  # inside: unchanged
        (mt(2026, 12, 7, 19, 0), mt(2026, 12, 8, 7, 0)),  # at closing: outside
        (mt(2026, 11, 25, 19, 30), mt(2026, 11, 27, 7, 0)),  # before Thanksgiving -> Friday
    ],
)
def test_next_extended_opening(received: datetime, counts_from: datetime) -> None:
    assert CALENDAR.next_extended_opening(received) == counts_from


def test_extended_hours_come_from_the_spec() -> None:
    calendar = BusinessCalendar(
        BusinessCalendarSpec(extended_hours_start="08:30", extended_hours_end="17:00")
    )
    assert calendar.next_extended_opening(mt(2026, 12, 7, 8, 0)) == mt(2026, 12, 7, 8, 30)
    assert calendar.next_extended_opening(mt(2026, 12, 7, 17, 0)) == mt(2026, 12, 8, 8, 30)


# ------------------------------------------------------------------ properties

instants = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2029, 12, 31), timezones=st.just(UTC)
)
counts = st.integers(min_value=0, max_value=30)
FAST = settings(max_examples=150, deadline=None)


@FAST
@given(instants, counts)
def test_adding_business_days_never_lands_on_a_weekend_or_holiday(start: datetime, n: int) -> None:
    assert CALENDAR.is_business_day(CALENDAR.local_date(CALENDAR.add_business_days(start, n)))


@FAST
@given(instants, counts)
def test_adding_business_days_is_strictly_increasing_in_the_count(start: datetime, n: int) -> None:
    assert CALENDAR.add_business_days(start, n) < CALENDAR.add_business_days(start, n + 1)


@FAST
@given(instants, instants, counts)
def test_adding_business_days_is_monotonic_in_the_start(a: datetime, b: datetime, n: int) -> None:
    # In America/Denver the clocks change on Sundays, so no business-day wall time is repeated
    # or skipped; in a zone changing on a weekday, starts inside the repeated hour could reorder.
    early, late = min(a, b), max(a, b)
    assert CALENDAR.add_business_days(early, n) <= CALENDAR.add_business_days(late, n)


@FAST
@given(instants, counts, counts)
def test_adding_business_days_composes(start: datetime, n: int, m: int) -> None:
    # Holds for every start here: a start on a non-business day becomes 00:00 of the next
    # business day on the first step either way, and every business-day wall time exists once in
    # America/Denver. (Where a business day has a DST gap, a start in the gap would shift.)
    once = CALENDAR.add_business_days(start, n + m)
    twice = CALENDAR.add_business_days(CALENDAR.add_business_days(start, n), m)
    assert once == twice


@FAST
@given(instants, st.integers(min_value=1, max_value=30))
def test_business_days_keep_local_wall_time_or_start_at_midnight(start: datetime, n: int) -> None:
    local_start = CALENDAR.to_local(start)
    local_due = CALENDAR.to_local(CALENDAR.add_business_days(start, n))
    if CALENDAR.is_business_day(local_start.date()):
        assert local_due.time() == local_start.time()
    else:
        assert local_due.time() == time(0, 0)
    assert (local_due.date() - local_start.date()).days >= n


@FAST
@given(instants)
def test_next_extended_opening_is_inside_extended_hours_and_not_earlier(start: datetime) -> None:
    opening = CALENDAR.next_extended_opening(start)
    assert opening >= start
    assert CALENDAR.is_within_extended_hours(opening)
