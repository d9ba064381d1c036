"""The .ics of maintenance notices and the per-product feed, read back as a calendar client does."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import icalendar
import pytest

from mailcase.notify.ics import product_feed, window_calendar

START = datetime(2026, 12, 19, 5, 0, tzinfo=UTC)
END = datetime(2026, 12, 19, 11, 0, tzinfo=UTC)
STAMP = datetime(2026, 12, 1, 16, 0, tzinfo=UTC)


def notice_ics(**overrides: object) -> icalendar.Calendar:
    arguments: dict[str, object] = {
        "uid": "mw-7@support.example.com",
        "sequence": 0,
        "start": START,
        "end": END,
        "summary": "Scheduled maintenance: Microsoft Teams",
        "description": "Monthly patching; calls may drop for up to 5 minutes.",
        "method": "REQUEST",
        "organizer": "noc@support.example.com",
        "dtstamp": STAMP,
    }
    arguments.update(overrides)
    return icalendar.Calendar.from_ical(window_calendar(**arguments))  # type: ignore[arg-type]


def only_event(calendar: icalendar.Calendar) -> icalendar.Event:
    (event,) = calendar.walk("VEVENT")
    return event


def test_notice_calendar_is_a_request_with_the_windows_identity_and_times() -> None:
    calendar = notice_ics()
    event = only_event(calendar)

    assert str(calendar["METHOD"]) == "REQUEST"
    assert str(calendar["VERSION"]) == "2.0"
    assert "mailcase" in str(calendar["PRODID"])
    assert str(event["UID"]) == "mw-7@support.example.com"
    assert int(event["SEQUENCE"]) == 0
    assert event.decoded("DTSTART") == START
    assert event.decoded("DTEND") == END
    assert event.decoded("DTSTAMP") == STAMP
    assert str(event["STATUS"]) == "CONFIRMED"
    assert str(event["SUMMARY"]) == "Scheduled maintenance: Microsoft Teams"
    assert "calls may drop" in str(event["DESCRIPTION"])
    assert str(event["ORGANIZER"]) == "mailto:noc@support.example.com"


def test_times_are_written_in_utc() -> None:
    raw = window_calendar(
        "mw-7", 0, START, END, "s", "d", "REQUEST", "noc@support.example.com", STAMP
    ).decode()

    assert "DTSTART:20261219T050000Z" in raw
    assert "DTEND:20261219T110000Z" in raw


def test_local_input_times_are_converted_to_utc() -> None:
    from zoneinfo import ZoneInfo

    local_start = START.astimezone(ZoneInfo("America/Denver"))

    event = only_event(notice_ics(start=local_start))

    assert event.decoded("DTSTART") == START
    assert event.decoded("DTSTART").utcoffset().total_seconds() == 0


def test_cancellation_keeps_the_uid_with_a_higher_sequence() -> None:
    calendar = notice_ics(method="CANCEL", sequence=3)
    event = only_event(calendar)

    assert str(calendar["METHOD"]) == "CANCEL"
    assert str(event["UID"]) == "mw-7@support.example.com"
    assert int(event["SEQUENCE"]) == 3
    assert str(event["STATUS"]) == "CANCELLED"


def test_recipients_can_be_listed_as_non_participant_attendees() -> None:
    event = only_event(notice_ics(attendees=["pat@acme.example"]))

    attendee = event["ATTENDEE"]
    assert str(attendee) == "mailto:pat@acme.example"
    assert attendee.params["ROLE"] == "NON-PARTICIPANT"


def test_text_with_commas_semicolons_and_newlines_round_trips() -> None:
    text = "Line one; with, punctuation\nLine two: done"

    event = only_event(notice_ics(description=text))

    assert str(event["DESCRIPTION"]) == text


def test_unknown_method_is_refused() -> None:
    with pytest.raises(ValueError, match="REQUEST or CANCEL"):
        notice_ics(method="PUBLISH")


def test_window_ending_before_its_start_is_refused() -> None:
    with pytest.raises(ValueError, match="not after its start"):
        notice_ics(start=END, end=START)


@dataclass(frozen=True)
class Window:
    id: int
    uid: str
    kind: str
    start: datetime
    end: datetime
    products: tuple[str, ...]
    description: str = "Work"
    justification: str = ""
    status: str = "planned"
    sequence: int = 0
    updated_at: datetime | None = None


def test_product_feed_holds_every_window_of_that_product_and_no_method() -> None:
    windows = [
        Window(1, "mw-1@x", "scheduled", START, END, ("Microsoft Teams", "Cisco")),
        Window(2, "mw-2@x", "connect", START, END, ("Cisco",)),
        Window(3, "mw-3@x", "unscheduled", START, END, ("Microsoft Teams",), status="cancelled",
               sequence=2, updated_at=STAMP),
    ]

    calendar = icalendar.Calendar.from_ical(product_feed(windows, "Microsoft Teams", dtstamp=STAMP))
    events = {str(e["UID"]): e for e in calendar.walk("VEVENT")}

    assert "METHOD" not in calendar
    assert set(events) == {"mw-1@x", "mw-3@x"}
    assert events["mw-1@x"].decoded("DTSTART") == START
    assert events["mw-1@x"].decoded("DTEND") == END
    assert str(events["mw-3@x"]["STATUS"]) == "CANCELLED"
    assert int(events["mw-3@x"]["SEQUENCE"]) == 2
    assert "Microsoft Teams" in str(calendar["X-WR-CALNAME"])


def test_product_feed_of_a_window_without_uid_gets_a_stable_one() -> None:
    window = Window(9, "", "scheduled", START, END, ("Cisco",))

    first = icalendar.Calendar.from_ical(product_feed([window], "Cisco", dtstamp=STAMP))
    second = icalendar.Calendar.from_ical(product_feed([window], "Cisco", dtstamp=END))

    assert str(only_event(first)["UID"]) == str(only_event(second)["UID"])
    assert str(only_event(first)["UID"])


def test_empty_product_feed_is_still_a_valid_calendar() -> None:
    calendar = icalendar.Calendar.from_ical(product_feed([], "Cisco"))

    assert calendar.walk("VEVENT") == []
    assert str(calendar["VERSION"]) == "2.0"
