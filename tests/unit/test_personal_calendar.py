"""Each maintenance recipient's .ics is exactly what `window_calendar` would build for them, however long
their address (the fan-out builds one calendar per notice and changes only the ATTENDEE line)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import icalendar
import pytest

from mailcase.notify.ics import PersonalCalendar, window_calendar

START = datetime(2026, 12, 19, 5, 0, tzinfo=UTC)
ARGS = ("mw-7@mailcase.localhost", 2, START, START + timedelta(hours=6), "Scheduled maintenance: Cisco",
        "Core router upgrade.\n\nWhy: security fix", "REQUEST", "support@support.example.com", START - timedelta(days=7))


@pytest.mark.parametrize(
    "address",
    ["sam@acme.example", "joao@brisa.example.com.br", "a" * 60 + "@" + "very-long-subdomain." * 8 + "example"],
)
def test_each_recipients_calendar_equals_one_built_for_them_alone(address: str) -> None:
    expected = window_calendar(*ARGS, attendees=(address,)).decode("utf-8")  # type: ignore[arg-type]
    assert PersonalCalendar(*ARGS).for_attendee(address) == expected  # type: ignore[arg-type]


def test_cancel_calendar_names_its_attendee_and_parses() -> None:
    args = (*ARGS[:6], "CANCEL", *ARGS[7:])
    text = PersonalCalendar(*args).for_attendee("ops@acme.example")  # type: ignore[arg-type]
    calendar = icalendar.Calendar.from_ical(text)
    (event,) = calendar.walk("VEVENT")
    assert str(calendar["METHOD"]) == "CANCEL"
    assert str(event["attendee"]) == "mailto:ops@acme.example"
    assert int(event["sequence"]) == 2
