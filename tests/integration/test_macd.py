"""MACD (move/add/change/delete) requests on SQLite and PostgreSQL: Standard targets counted from the next opening of
extended business hours, Expedited ones from receipt, reminders and escalations on the completion target, and
requests from anyone but an MPOC held (SPEC.md §1 "MACD requests")."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from support.scheduler import (
    ANA,
    EVE,
    LEE,
    PAT,
    SUPPORT_MANAGER,
    VP,
    SchedulerDesk,
    mt,
    utc,
)

FRIDAY_EVENING = mt(2026, 12, 4, 20)  # Friday 20:00 MT, after extended hours (07:00-19:00)
MACD_ADDRESS = "macd@support.example.com"


@pytest.fixture
def desk(engine: Engine, tmp_path: Path) -> SchedulerDesk:
    return SchedulerDesk.on(engine, tmp_path)


def test_standard_request_received_friday_evening_counts_from_monday_opening(desk: SchedulerDesk) -> None:
    number = desk.open_case(PAT, "MACD: add 3 users", at=FRIDAY_EVENING)

    deadlines = desk.sla(number, FRIDAY_EVENING)
    response, completion = deadlines["initial_response"], deadlines["resolution"]
    assert utc(response["started_at"]) == mt(2026, 12, 7, 7)  # Monday 07:00
    assert utc(response["due_at"]) == mt(2026, 12, 8, 7)  # 1 business day: Tuesday 07:00
    assert utc(completion["due_at"]) == mt(2026, 12, 9, 7)  # 2 business days: Wednesday 07:00
    assert response["target"] == "macd_standard target: 1 business day"
    assert completion["target"] == "macd_standard target: 2 business days"
    assert "counted from the next opening of extended business hours" in response["explanation"]

    shown = desk.show(number)
    assert shown["kind"] == "macd_standard"
    assert shown["priority"] == "P4"
    assert utc(shown["response_due_at"]) == mt(2026, 12, 8, 7)
    assert utc(shown["resolution_due_at"]) == mt(2026, 12, 9, 7)


@pytest.mark.parametrize(
    ("received", "counted_from"),
    [
        (mt(2026, 12, 9, 10), mt(2026, 12, 9, 10)),  # Wednesday 10:00, within extended hours: from receipt
        (mt(2026, 12, 7, 6), mt(2026, 12, 7, 7)),  # Monday 06:00, before the opening: from 07:00 that day
        (mt(2026, 12, 4, 19), mt(2026, 12, 7, 7)),  # Friday 19:00, the closing instant: from Monday
        (mt(2026, 12, 5, 11), mt(2026, 12, 7, 7)),  # Saturday: from Monday
        (mt(2026, 11, 25, 20), mt(2026, 11, 27, 7)),  # the evening before Thanksgiving: from Friday
    ],
)
def test_standard_request_counts_from_receipt_or_the_next_opening(
    desk: SchedulerDesk, received: datetime, counted_from: datetime
) -> None:
    number = desk.open_case(PAT, "MACD: add 3 users", at=received)

    response = desk.sla(number, received)["initial_response"]
    assert utc(response["started_at"]) == counted_from


def test_expedited_request_counts_from_receipt_with_4_hours_and_1_business_day(desk: SchedulerDesk) -> None:
    number = desk.open_case(PAT, "MACD: expedite move 5 phones to suite 400", at=FRIDAY_EVENING)

    deadlines = desk.sla(number, FRIDAY_EVENING)
    assert utc(deadlines["initial_response"]["started_at"]) == FRIDAY_EVENING
    assert utc(deadlines["initial_response"]["due_at"]) == FRIDAY_EVENING + timedelta(hours=4)  # Saturday 00:00
    assert utc(deadlines["resolution"]["due_at"]) == mt(2026, 12, 7, 20)  # Monday 20:00
    assert desk.show(number)["kind"] == "macd_expedited"


def test_mail_to_the_macd_address_opens_a_standard_macd_case(desk: SchedulerDesk) -> None:
    line = desk.mail(PAT, "Add 3 users to hunt group 200", at=FRIDAY_EVENING, to=MACD_ADDRESS)
    number = int(line.split("open_case case ")[1].split(":")[0])

    assert desk.show(number)["kind"] == "macd_standard"
    assert utc(desk.sla(number, FRIDAY_EVENING)["initial_response"]["started_at"]) == mt(2026, 12, 7, 7)


@pytest.mark.parametrize("sender", [LEE, EVE])
def test_macd_request_from_anyone_but_an_mpoc_is_held(desk: SchedulerDesk, sender: str) -> None:
    line = desk.mail(sender, "MACD: add 3 users", at=FRIDAY_EVENING)

    assert "hold_message" in line
    assert desk.run("cases", "list", "--json").json() == []
    (held,) = desk.run("held", "list", "--json").json()
    assert held["from"] == sender and held["subject"] == "MACD: add 3 users"


def test_completion_target_gets_reminder_and_escalations(desk: SchedulerDesk) -> None:
    number = desk.open_case(PAT, "MACD: add 3 users", at=FRIDAY_EVENING)
    desk.run("cases", "reply", str(number), "--body", "Scheduled for Tuesday.", "--from", ANA, at=mt(2026, 12, 7, 8))

    desk.tick(mt(2026, 12, 9, 2, 59))
    assert desk.scheduled(number) == []
    desk.tick(mt(2026, 12, 9, 3))  # 4 h before Wednesday 07:00
    assert desk.scheduled(number) == [("staff.sla_reminder", (ANA,))]
    (reminder,) = desk.notices(number, "staff.sla_reminder")
    assert reminder.context["deadline"] == "resolution"
    desk.tick(mt(2026, 12, 9, 7))
    desk.tick(mt(2026, 12, 11, 7))  # twice the target: 4 business days from Monday 07:00
    assert desk.scheduled(number) == [
        ("staff.sla_reminder", (ANA,)),
        ("staff.sla_escalation", (SUPPORT_MANAGER,)),
        ("staff.sla_escalation", (VP,)),
    ]


def test_completed_macd_request_is_not_escalated(desk: SchedulerDesk) -> None:
    number = desk.open_case(PAT, "MACD: add 3 users", at=FRIDAY_EVENING)
    desk.run("cases", "reply", str(number), "--body", "Done: 3 users added.", "--from", ANA, at=mt(2026, 12, 7, 8))
    desk.run("cases", "update", str(number), "--status", "resolved_follow_up", at=mt(2026, 12, 8, 15))

    desk.tick(mt(2026, 12, 9, 7))
    assert [template for template, _ in desk.scheduled(number)] == []
    completion = desk.sla(number, mt(2026, 12, 9, 7))["resolution"]
    assert completion["met"] is True
