"""The shared vocabulary: case numbers, status names, and the one clock's parsing of `--now`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from mailcase.clock import FixedClock, SystemClock, as_utc, parse_instant
from mailcase.domain import (
    CLOSED_STATUSES,
    PAUSED_STATUSES,
    CaseStatus,
    Priority,
    format_case_number,
    parse_case_number,
)


@pytest.mark.parametrize(
    ("number", "shown"), [(1, "00000001"), (1042, "00001042"), (99_999_999, "99999999"), (123_456_789, "123456789")]
)
def test_case_numbers_are_shown_zero_padded_to_8_digits(number: int, shown: str) -> None:
    assert format_case_number(number) == shown


@pytest.mark.parametrize("text", ["1042", "00001042", "#00001042", " 1042 "])
def test_a_case_number_is_accepted_with_or_without_padding_and_hash(text: str) -> None:
    assert parse_case_number(text) == 1042


@pytest.mark.parametrize("text", ["", "0", "00000000", "-5", "12a", "#", "1e3"])
def test_a_malformed_case_number_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a case number"):
        parse_case_number(text)


def test_status_machine_names_and_display_names_follow_the_spec() -> None:
    assert {s.value: s.display for s in CaseStatus} == {
        "new": "New",
        "in_progress": "In Progress",
        "duplicate": "Duplicate",
        "on_hold": "On Hold",
        "shipping": "Shipping",
        "resolved_follow_up": "Resolved Follow-up Needed",
        "customer_reopened": "Customer Reopened",
        "closed_no_response": "Closed No Response",
        "closed": "Closed",
    }


def test_duplicate_and_both_closed_statuses_count_as_closed() -> None:
    assert {CaseStatus.CLOSED, CaseStatus.CLOSED_NO_RESPONSE, CaseStatus.DUPLICATE} == CLOSED_STATUSES
    assert [s for s in CaseStatus if s.is_closed] == [s for s in CaseStatus if s in CLOSED_STATUSES]


def test_on_hold_shipping_and_resolved_follow_up_pause_the_update_clock() -> None:
    assert {CaseStatus.ON_HOLD, CaseStatus.SHIPPING, CaseStatus.RESOLVED_FOLLOW_UP} == PAUSED_STATUSES


def test_priorities_are_p1_to_p4_and_p1g() -> None:
    assert [p.value for p in Priority] == ["P1", "P2", "P3", "P4", "P1G"]


# ---------------------------------------------------------------------------------------------
# The clock


@pytest.mark.parametrize(
    "text",
    ["2026-12-04T16:00:00-07:00", "2026-12-04T16:00-07:00", "2026-12-04T23:00:00Z", "2026-12-04T23:00:00+00:00"],
)
def test_now_accepts_iso_8601_with_an_offset_and_returns_utc(text: str) -> None:
    instant = parse_instant(text)

    assert instant == datetime(2026, 12, 4, 23, 0, tzinfo=UTC)
    assert instant.utcoffset() == timedelta(0)


def test_now_without_an_offset_is_refused() -> None:
    with pytest.raises(ValueError, match="no UTC offset"):
        parse_instant("2026-12-04T16:00:00")


def test_a_fixed_clock_says_the_same_utc_instant_until_moved() -> None:
    clock = FixedClock(datetime(2026, 12, 4, 16, 0, tzinfo=timezone(timedelta(hours=-7))))

    assert clock.now() == clock.now() == datetime(2026, 12, 4, 23, 0, tzinfo=UTC)
    assert clock.now().tzinfo == UTC
    assert clock.advance(minutes=30) == datetime(2026, 12, 4, 23, 30, tzinfo=UTC)


def test_naive_datetimes_are_refused_by_the_clock() -> None:
    with pytest.raises(ValueError, match="naive"):
        as_utc(datetime(2026, 12, 4, 16, 0))
    with pytest.raises(ValueError):
        FixedClock(datetime(2026, 12, 4, 16, 0))


def test_the_system_clock_is_aware_utc() -> None:
    assert SystemClock().now().utcoffset() == timedelta(0)
