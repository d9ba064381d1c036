"""The scheduler as the desk lives it, on SQLite and PostgreSQL: SLA deadlines on the business calendar, reminders
and escalations, holds, ETRs, waiting on the customer, and every notice queued exactly once, driven through
`mailcase --now … ingest / cases … / tick` with a fixed clock (SPEC.md §1)."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from mailcase import daemon
from mailcase.app import App
from mailcase.clock import FixedClock
from mailcase.config import load_config
from mailcase.notify.render import Renderer
from support.cli import REPO
from support.relay import CaptureRelay
from support.scheduler import (
    ANA,
    JOAO,
    ON_CALL,
    PAT,
    SUPPORT_MANAGER,
    VP,
    SchedulerDesk,
    mt,
    utc,
)

MONDAY = mt(2026, 12, 7, 9)  # Monday 2026-12-07 09:00 MT, an ordinary business day
REMINDER, ESCALATION = "staff.sla_reminder", "staff.sla_escalation"


@pytest.fixture
def desk(engine: Engine, tmp_path: Path) -> SchedulerDesk:
    return SchedulerDesk.on(engine, tmp_path)


def _answered(desk: SchedulerDesk, at: datetime, subject: str = "Voicemail not working") -> int:
    """A P4 case opened at `at` and answered by its assignee (Ana) half an hour later."""
    number = desk.open_case(PAT, subject, at=at)
    desk.run("cases", "reply", str(number), "--body", "We are looking into it.", "--from", ANA, at=at + timedelta(minutes=30))
    return number


# ---------------------------------------------------------------------------------------------
# Deadlines on the business calendar


def test_p4_case_opened_friday_afternoon_is_due_monday_at_the_same_time(desk: SchedulerDesk) -> None:
    friday = mt(2026, 12, 4, 16)
    number = desk.open_case(PAT, "Phone not ringing", at=friday)

    response = desk.sla(number, friday)["initial_response"]
    assert utc(response["due_at"]) == mt(2026, 12, 7, 16)
    assert utc(response["started_at"]) == friday
    assert response["calendar"] == "business days in America/Denver"
    assert utc(desk.show(number)["response_due_at"]) == mt(2026, 12, 7, 16)


def test_p4_case_opened_the_day_before_thanksgiving_is_due_on_friday(desk: SchedulerDesk) -> None:
    wednesday = mt(2026, 11, 25, 16)
    number = desk.open_case(PAT, "Phone not ringing", at=wednesday)

    response = desk.sla(number, wednesday)["initial_response"]
    assert utc(response["due_at"]) == mt(2026, 11, 27, 16)
    assert response["holidays_skipped"] == [{"date": "2026-11-26", "name": "Thanksgiving Day"}]
    assert utc(desk.show(number)["response_due_at"]) == mt(2026, 11, 27, 16)


def test_business_day_deadline_across_the_spring_dst_change_keeps_the_local_time(desk: SchedulerDesk) -> None:
    friday = mt(2027, 3, 12, 16)  # 16:00 MST (UTC-7); the clocks go forward on Sunday 2027-03-14
    number = desk.open_case(PAT, "Phone not ringing", at=friday)

    due = utc(desk.sla(number, friday)["initial_response"]["due_at"])
    assert due == datetime(2027, 3, 15, 22, 0, tzinfo=UTC)  # Monday 16:00 MDT (UTC-6): 71 hours later, not 72
    assert due == mt(2027, 3, 15, 16)

    # The reminder goes 4 wall-clock hours before: 12:00 MDT.
    assert desk.tick(mt(2027, 3, 15, 11, 59))["notices_queued"] == 0
    desk.tick(mt(2027, 3, 15, 12))
    assert desk.scheduled(number) == [(REMINDER, (ANA,))]


def test_p1_minutes_across_the_dst_change_are_wall_clock_minutes(desk: SchedulerDesk) -> None:
    number = desk.open_case(PAT, "Whole site down", at=mt(2027, 3, 14, 1, 30))
    set_at = mt(2027, 3, 14, 1, 50)  # 01:50 MST; at 02:00 the clocks jump to 03:00 MDT
    desk.run("cases", "update", str(number), "--priority", "P1", at=set_at)

    due = utc(desk.sla(number, set_at)["initial_response"]["due_at"])
    assert due == set_at + timedelta(minutes=15)
    assert due == mt(2027, 3, 14, 3, 5)  # 03:05 MDT: 15 minutes of real time later
    desk.tick(mt(2027, 3, 14, 3, 0))
    assert desk.scheduled(number) == [(REMINDER, (ANA,))]


# ---------------------------------------------------------------------------------------------
# P1: reminder, escalation, and unassigned cases


def test_p1_reminds_the_assignee_at_10_min_then_escalates_to_manager_at_15_and_vp_at_30(desk: SchedulerDesk) -> None:
    number = desk.open_case(PAT, "Whole site down", at=MONDAY - timedelta(minutes=30))
    desk.run("cases", "update", str(number), "--priority", "P1", at=MONDAY)  # the SLA counts from here

    expected = {
        5: [],
        9: [],
        10: [(REMINDER, (ANA,))],
        14: [(REMINDER, (ANA,))],
        15: [(REMINDER, (ANA,)), (ESCALATION, (SUPPORT_MANAGER,))],
        29: [(REMINDER, (ANA,)), (ESCALATION, (SUPPORT_MANAGER,))],
        30: [(REMINDER, (ANA,)), (ESCALATION, (SUPPORT_MANAGER,)), (ESCALATION, (VP,))],
    }
    for minutes, notices in expected.items():
        desk.tick(MONDAY + timedelta(minutes=minutes))
        assert desk.scheduled(number) == notices, f"after {minutes} min"

    levels = [row.context["level"] for row in desk.notices(number, ESCALATION)]
    assert levels == [2, 3]
    (reminder,) = desk.notices(number, REMINDER)
    assert reminder.context["deadline"] == "response"
    assert utc(reminder.context["due_at"]) == MONDAY + timedelta(minutes=15)


def test_answering_a_p1_in_time_stops_its_escalation(desk: SchedulerDesk) -> None:
    number = desk.open_case(PAT, "Whole site down", at=MONDAY)
    desk.run("cases", "update", str(number), "--priority", "P1", at=MONDAY)
    desk.tick(MONDAY + timedelta(minutes=10))
    desk.run("cases", "reply", str(number), "--body", "On it.", "--from", ANA, at=MONDAY + timedelta(minutes=12))

    for minutes in (15, 30, 45):
        desk.tick(MONDAY + timedelta(minutes=minutes))
    assert desk.scheduled(number) == [(REMINDER, (ANA,))]
    assert desk.sla(number, MONDAY + timedelta(minutes=45))["initial_response"]["met"] is True


@pytest.mark.parametrize("priority", ["P1", "P2"])
def test_unassigned_p1_or_p2_case_alerts_on_call_at_once(desk: SchedulerDesk, priority: str) -> None:
    number = desk.open_case(PAT, "Calls dropping", at=MONDAY)
    desk.run("cases", "update", str(number), "--priority", priority, "--assignee", "none", at=MONDAY)

    report = desk.tick(MONDAY)
    assert report["by_kind"] == {"unassigned_alert": 1}
    assert desk.scheduled(number) == [("staff.unassigned_alert", (ON_CALL,))]


def test_unassigned_p3_case_raises_no_on_call_alert(desk: SchedulerDesk) -> None:
    number = desk.open_case(PAT, "One handset faulty", at=MONDAY)
    desk.run("cases", "update", str(number), "--priority", "P3", "--assignee", "none", at=MONDAY)

    desk.tick(MONDAY + timedelta(minutes=5))
    assert desk.notices(number, "staff.unassigned_alert") == []


# ---------------------------------------------------------------------------------------------
# Pauses: on hold, ETR


def test_on_hold_case_gets_no_update_reminder_until_its_hold_time_then_returns_to_in_progress(
    desk: SchedulerDesk,
) -> None:
    number = _answered(desk, MONDAY)  # next update due Wednesday 09:30 (P4: 2 business days)
    hold_until = mt(2026, 12, 11, 10)  # Friday 10:00
    desk.run("cases", "update", str(number), "--hold-until", hold_until.isoformat(), at=MONDAY + timedelta(hours=1))
    assert desk.show(number)["status"] == "on_hold"

    for at in (mt(2026, 12, 9, 5, 30), mt(2026, 12, 9, 9, 30), mt(2026, 12, 10, 9, 30), mt(2026, 12, 11, 9, 59)):
        desk.tick(at)
    assert desk.scheduled(number) == []

    desk.tick(hold_until)
    assert desk.scheduled(number) == [("staff.hold_expired", (ANA,))]
    shown = desk.show(number)
    assert shown["status"] == "in_progress"
    assert shown["hold_until"] is None
    assert any("on_hold -> in_progress" in event["summary"] for event in shown["events"])

    # The update clock runs again from the end of the hold: 2 business days, reminder 4 h before.
    assert utc(shown["update_due_at"]) == mt(2026, 12, 15, 10)
    desk.tick(mt(2026, 12, 15, 6))
    assert desk.scheduled(number) == [("staff.hold_expired", (ANA,)), (REMINDER, (ANA,))]


def test_etr_suppresses_update_reminders_until_it_passes(desk: SchedulerDesk) -> None:
    number = _answered(desk, MONDAY)  # without the ETR: update reminder Wednesday 05:30, due 09:30
    etr = mt(2026, 12, 11, 12)
    desk.run("cases", "update", str(number), "--etr", etr.isoformat(), at=MONDAY + timedelta(hours=1))

    for at in (mt(2026, 12, 9, 5, 30), mt(2026, 12, 9, 9, 30), mt(2026, 12, 10, 12), mt(2026, 12, 11, 11, 59)):
        desk.tick(at)
    assert desk.scheduled(number) == []

    desk.tick(etr)
    assert desk.scheduled(number) == [(REMINDER, (ANA,)), (ESCALATION, (SUPPORT_MANAGER,))]
    (reminder,) = desk.notices(number, REMINDER)
    assert reminder.context["deadline"] == "update"
    assert utc(reminder.context["due_at"]) == etr


# ---------------------------------------------------------------------------------------------
# Waiting on the customer


def test_awaiting_customer_reply_nudges_after_one_business_day_and_closes_after_two(desk: SchedulerDesk) -> None:
    number = desk.open_case(PAT, "Voicemail not working", at=MONDAY)
    replied = MONDAY + timedelta(hours=1)
    desk.run(
        "cases", "reply", str(number), "--body", "Does it work now?", "--from", ANA, "--awaiting-customer", at=replied
    )

    desk.tick(replied + timedelta(days=1, minutes=-1))
    assert desk.scheduled(number) == []
    desk.tick(replied + timedelta(days=1))
    assert desk.scheduled(number) == [("customer.nudge", (PAT,))]
    desk.tick(replied + timedelta(days=2, minutes=-1))
    assert desk.show(number)["status"] == "in_progress"

    desk.tick(replied + timedelta(days=2))
    assert desk.scheduled(number) == [("customer.nudge", (PAT,)), ("customer.closed_no_response", (PAT,))]
    assert desk.show(number)["status"] == "closed_no_response"
    desk.tick(replied + timedelta(days=5))
    assert len(desk.scheduled(number)) == 2


def test_resolved_follow_up_counts_business_days_before_nudging_and_closing(desk: SchedulerDesk) -> None:
    friday = mt(2026, 12, 4, 15)
    number = _answered(desk, friday - timedelta(hours=2))
    desk.run("cases", "update", str(number), "--status", "resolved_follow_up", at=friday)

    desk.tick(mt(2026, 12, 7, 14, 59))  # the weekend does not count
    assert desk.scheduled(number) == []
    desk.tick(mt(2026, 12, 7, 15))
    assert desk.scheduled(number) == [("customer.nudge", (PAT,))]
    desk.tick(mt(2026, 12, 8, 15))
    assert desk.scheduled(number)[-1] == ("customer.closed_no_response", (PAT,))
    assert desk.show(number)["status"] == "closed_no_response"


def test_customer_reply_while_awaiting_cancels_the_nudge_and_the_closing(desk: SchedulerDesk) -> None:
    number = desk.open_case(PAT, "Voicemail not working", at=MONDAY)
    desk.run(
        "cases", "reply", str(number), "--body", "Does it work now?", "--from", ANA, "--awaiting-customer",
        at=MONDAY + timedelta(hours=1),
    )
    line = desk.mail(PAT, f"Re: [Case #{number:08d}] Voicemail not working", at=MONDAY + timedelta(hours=5))
    assert f"append_update case {number:08d}" in line

    for days in (1, 2, 3, 6):
        desk.tick(MONDAY + timedelta(days=days, hours=1))
    assert desk.notices(number, "customer.nudge") == []
    assert desk.notices(number, "customer.closed_no_response") == []
    assert desk.show(number)["status"] == "in_progress"
    deadlines = desk.sla(number, MONDAY + timedelta(days=6))
    assert "customer_nudge" not in deadlines and "close_no_response" not in deadlines


def test_customer_reply_after_a_long_wait_restarts_the_update_clock_instead_of_escalating(
    desk: SchedulerDesk,
) -> None:
    number = desk.open_case(PAT, "Calls dropping", at=MONDAY)
    desk.run("cases", "update", str(number), "--priority", "P1", at=MONDAY)
    desk.run(
        "cases", "reply", str(number), "--body", "Please restart the router.", "--from", ANA, "--awaiting-customer",
        at=MONDAY + timedelta(minutes=5),
    )
    came_back = MONDAY + timedelta(hours=3)  # three update periods later
    desk.mail(PAT, f"Re: [Case #{number:08d}] Calls dropping", at=came_back)

    desk.tick(came_back)
    assert desk.notices(number, ESCALATION) == []
    assert utc(desk.show(number)["update_due_at"]) == came_back + timedelta(hours=1)


# ---------------------------------------------------------------------------------------------
# Exactly once


def test_repeated_ticks_queue_every_notice_exactly_once(desk: SchedulerDesk) -> None:
    number = desk.open_case(PAT, "Whole site down", at=MONDAY)
    desk.run("cases", "update", str(number), "--priority", "P1", at=MONDAY)

    queued = []
    for minutes in (10, 10, 10, 12, 15, 15, 15, 20, 30, 30, 30, 45, 120):
        queued.append(desk.tick(MONDAY + timedelta(minutes=minutes))["notices_queued"])
    assert queued == [1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0]

    rows = desk.notices(number)
    assert Counter(row.idempotency_key for row in rows).most_common(1)[0][1] == 1
    assert desk.scheduled(number) == [(REMINDER, (ANA,)), (ESCALATION, (SUPPORT_MANAGER,)), (ESCALATION, (VP,))]


def test_jobs_tick_with_a_fixed_clock_delivers_each_reminder_once_through_the_relay(
    engine: Engine, tmp_path: Path
) -> None:
    desk = SchedulerDesk.on(engine, tmp_path)
    number = desk.open_case(PAT, "Whole site down", at=MONDAY)
    desk.run("cases", "update", str(number), "--priority", "P1", at=MONDAY)
    settings = load_config(REPO / "config.toml", {})
    clock = FixedClock(MONDAY)
    with CaptureRelay() as relay:
        app = App(settings=replace(settings, outbound=relay.outbound_settings(settings.outbound)), engine=engine, clock=clock)
        for minutes in (10, 10, 11, 15, 15, 30, 31, 31):
            clock.set(MONDAY + timedelta(minutes=minutes))
            daemon.tick(app)

    sla_rows = [row for row in desk.notices(number) if row.template in (REMINDER, ESCALATION)]
    assert {row.state for row in sla_rows} == {"sent"}
    delivered = Counter(captured.message["Message-ID"] for captured in relay.messages)
    assert [delivered[row.message_id] for row in sla_rows] == [1, 1, 1]
    by_id = {captured.message["Message-ID"]: captured.rcpt_tos for captured in relay.messages}
    assert [by_id[row.message_id] for row in sla_rows] == [(ANA,), (SUPPORT_MANAGER,), (VP,)]


# ---------------------------------------------------------------------------------------------
# `mailcase cases sla` explains


def test_cases_sla_explains_each_deadline_with_target_calendar_holidays_and_pauses(desk: SchedulerDesk) -> None:
    wednesday = mt(2026, 11, 25, 16)
    number = desk.open_case(PAT, "Phone not ringing", at=wednesday)

    text = desk.run("cases", "sla", str(number), at=wednesday).stdout
    assert "Initial response due Fri 2026-11-27 16:00 MST" in text
    assert "P4 target: 1 business day" in text
    assert "business days in America/Denver" in text
    assert "Holidays skipped: Thanksgiving Day (2026-11-26)" in text
    assert "escalation level 2 at the deadline" in text

    desk.run(
        "cases", "reply", str(number), "--body", "Is it ringing now?", "--from", ANA, "--awaiting-customer",
        at=wednesday + timedelta(hours=1),
    )
    later = wednesday + timedelta(hours=2)
    text = desk.run("cases", "sla", str(number), at=later).stdout
    rows = [line.strip().split("  ")[0] for line in text.splitlines() if line.startswith("  ") and not line.startswith("    ")]
    assert rows == ["Initial response", "Next update", "Customer nudge", "Close without response"]
    assert "Initial response due Fri 2026-11-27 16:00 MST" in text and "met Wed 2026-11-25 17:00 MST" in text
    assert "Next update: paused" in text and "awaiting the customer since Wed 2026-11-25 17:00 MST" in text
    assert "Customer nudge due Fri 2026-11-27 17:00 MST: awaiting-customer policy: 1 business day" in text
    assert "Close without response due Mon 2026-11-30 17:00 MST: awaiting-customer policy: 2 business days" in text
    assert text.count("Holidays skipped: Thanksgiving Day (2026-11-26)") >= 3

    deadlines = desk.sla(number, later)
    assert set(deadlines) == {"initial_response", "next_update", "customer_nudge", "close_no_response"}
    assert all(row["explanation"] and row["target"] and row["calendar"] for row in deadlines.values())


# ---------------------------------------------------------------------------------------------
# Templates: every scheduler notice renders, in the organisation's language


def test_scheduler_notices_are_delivered_in_the_organisations_language(engine: Engine, tmp_path: Path) -> None:
    with CaptureRelay() as relay:
        env = {
            "MAILCASE_OUTBOUND__HOST": relay.host,
            "MAILCASE_OUTBOUND__PORT": str(relay.port),
            "MAILCASE_OUTBOUND__TIMEOUT_SECONDS": "5",
        }
        desk = SchedulerDesk.on(engine, tmp_path, env=env)
        brisa = desk.open_case(JOAO, "Telefones sem linha", at=MONDAY)
        desk.run(
            "cases", "reply", str(brisa), "--body", "Pode testar agora?", "--from", ANA, "--awaiting-customer",
            at=MONDAY + timedelta(hours=1),
        )
        acme = desk.open_case(PAT, "Whole site down", at=MONDAY)
        desk.run("cases", "update", str(acme), "--priority", "P1", at=MONDAY)
        held = _answered(desk, MONDAY, "Handset swap")
        desk.run("cases", "update", str(held), "--hold-until", mt(2026, 12, 8, 9).isoformat(), at=MONDAY + timedelta(hours=1))
        alone = desk.open_case(PAT, "Trunk down", at=MONDAY)
        desk.run("cases", "update", str(alone), "--priority", "P2", "--assignee", "none", at=MONDAY)

        for at in (
            MONDAY + timedelta(minutes=10),
            MONDAY + timedelta(minutes=15),
            MONDAY + timedelta(minutes=30),
            mt(2026, 12, 8, 10),
            mt(2026, 12, 9, 10),
        ):
            desk.run("tick", at=at)

    rows = [row for row in desk.notices() if row.template.startswith(("staff.sla", "staff.unassigned", "staff.hold", "customer.nudge", "customer.closed"))]
    templates = {row.template for row in rows}
    assert templates == {
        "staff.sla_reminder",
        "staff.sla_escalation",
        "staff.unassigned_alert",
        "staff.hold_expired",
        "customer.nudge",
        "customer.closed_no_response",
    }
    assert {row.state for row in rows} == {"sent"}
    by_id = {captured.message["Message-ID"]: captured.message for captured in relay.messages}
    to_joao = [by_id[row.message_id] for row in rows if JOAO in row.recipients]
    subjects = [message["Subject"] for message in to_joao]
    assert subjects == [
        f"[Case #{brisa:08d}] Aguardando sua resposta: Telefones sem linha",
        f"[Case #{brisa:08d}] Fechado sem resposta: Telefones sem linha",
    ]
    nudge_text = to_joao[0].get_body(("plain",)).get_content()
    assert "Estamos aguardando sua resposta" in nudge_text and "fecharemos o chamado" in nudge_text
    closing_text = to_joao[1].get_body(("plain",)).get_content()
    assert "Fechado sem resposta" in closing_text
    assert to_joao[1].get_body(("html",)) is not None
    staff = [by_id[row.message_id] for row in rows if row.template.startswith("staff.")]
    assert all(message["Subject"].startswith("[Case #") for message in staff)
    assert any("SLA breach, escalation level 3" in message["Subject"] for message in staff)

    # Staff notices go out in English; their Portuguese files render from the same context too.
    renderer = Renderer(REPO / "templates")
    for row in rows:
        for locale in ("en", "pt"):
            rendered = renderer.render(row.template, locale, row.context)
            assert rendered.subject and rendered.text.strip() and rendered.html.strip()
            assert renderer.language(row.template, locale) == locale


# ---------------------------------------------------------------------------------------------
# Master cases


def test_master_update_reminder_is_counted_by_the_master_sweep_and_shown_by_tick(desk: SchedulerDesk) -> None:
    chris = "chris@support.example.com"
    created = desk.run(
        "cases", "master", "create", "--platform", "Microsoft Teams", "--subject", "Teams calls dropping",
        "--assignee", chris, "--json", at=MONDAY,
    ).json()
    number = int(created["number"])
    desk.run("cases", "reply", str(number), "--body", "We are on it.", "--from", chris, at=MONDAY + timedelta(minutes=5))

    # P1G: the next update is due an hour after the last one, its reminder 5 minutes before.
    report = desk.tick(MONDAY + timedelta(minutes=61))
    assert report["master_update_notices_queued"] == 1
    (reminder,) = desk.notices(number, "staff.master_update_reminder")
    assert reminder.recipients == [chris]
    assert desk.tick(MONDAY + timedelta(minutes=62))["master_update_notices_queued"] == 0
    text = desk.run("tick", "--no-deliver", at=MONDAY + timedelta(minutes=63)).stdout
    assert "master cases: 0 update reminders queued" in text
