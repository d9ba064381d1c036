"""Customer-initiated escalation (SPEC.md §1 "Escalation"): `#escalate` on the first line, or ESCALATE in the subject,
from a sender allowed on the case moves it one level up the configured path (1 desk, 2 the team's support manager,
3 the VP, 4 the executive) and never beyond; the new owner gets the history, the customer is told who owns it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine

from mailcase.desk import cases as casework
from mailcase.store.engine import transaction
from support.cli import MailcaseCli
from support.relay import CaptureRelay
from support.threads import OpenedCase, ThreadDesk, sample_settings

OPENED = datetime(2026, 11, 25, 23, 0, tzinfo=UTC)  # Wednesday 16:00 in Denver
PAT = "Pat Doe <pat@acme.example>"
LEE = "Lee Chen <lee@acme.example>"  # copied by pat: a participant
EVE = "Eve Mallory <eve@outsider.example>"
# config.toml [escalation]: who owns a case at levels 2 (team "support"), 3 and 4.
MANAGER = "support-manager@support.example.com"
VP = "vp-support@support.example.com"
EXECUTIVE = "executive@support.example.com"


@pytest.fixture
def desk(engine: Engine) -> ThreadDesk:
    return ThreadDesk.start(engine, OPENED)


def _escalate(desk: ThreadDesk, case: OpenedCase, *, sender: str = PAT, subject: str = "", first_line: str = "#escalate"):
    return desk.ingest(
        "reply_escalate_outlook.eml",
        from_header=sender,
        to="support@support.example.com",
        subject=subject or f"RE: {case.tag} Phones down at the Chicago office",
        in_reply_to=case.ack_id,
        first_line=first_line,
    )


def test_escalate_on_the_first_line_climbs_one_level_per_request_up_to_the_executive(
    engine: Engine, database_url: str
) -> None:
    with CaptureRelay() as relay:
        desk = ThreadDesk.start(engine, OPENED, settings=sample_settings(relay))
        case = desk.open_case()
        levels = []
        for hours in (1, 2, 3, 4):  # four requests: 1 -> 2 -> 3 -> 4, and the fourth stays at 4
            desk.at(OPENED + timedelta(hours=hours))
            outcome = _escalate(desk, case)
            assert (outcome.decision, outcome.case_number) == ("append_update", case.padded)
            levels.append(desk.case(case.number).escalation_level)
        desk.tick()

    assert levels == [2, 3, 4, 4]
    staff = desk.outbox(kind="staff.escalated", case=case.number)
    assert [(r.recipients, r.context["level"]) for r in staff] == [([MANAGER], 2), ([VP], 3), ([EXECUTIVE], 4)]
    told = desk.outbox(kind="customer.escalated", case=case.number)
    assert [(r.recipients, r.cc, r.context["level"]) for r in told] == [
        (["pat@acme.example"], ["lee@acme.example"], level) for level in (2, 3, 4)
    ]
    assert [r.context["owner_name"] for r in told] == [
        f"support manager ({MANAGER})",
        f"VP of customer support ({VP})",
        f"executive ({EXECUTIVE})",
    ]
    escalated = [e["summary"] for e in desk.show(case.number)["events"] if e["kind"] == "escalated"]
    assert escalated[-1] == "escalation requested, already at the highest level (executive)"
    # The manager's email carries the case history; the customer's says who owns the case now.
    (to_manager,) = [m for m in relay.messages if m.message["Message-ID"] == staff[0].message_id]
    manager_text = to_manager.message.get_body(("plain",)).get_content()
    assert "History:" in manager_text and "message received: Phones down at the Chicago office" in manager_text
    assert "#escalate" in manager_text  # the escalating reply itself is in the history
    (to_customer,) = [m for m in relay.messages if m.message["Message-ID"] == told[0].message_id]
    customer_text = to_customer.message.get_body(("plain",)).get_content()
    assert "has been escalated" in customer_text and f"owned by support manager ({MANAGER})" in customer_text
    cli = MailcaseCli(database_url)
    assert cli("cases", "show", case.padded, "--json").json()["escalation_level"] == 4
    assert "escalation level: 4" in cli("cases", "show", case.padded).stdout


def test_escalate_in_the_subject_from_a_copied_colleague_escalates(desk: ThreadDesk) -> None:
    case = desk.open_case()
    desk.at(OPENED + timedelta(hours=1))

    outcome = _escalate(
        desk, case, sender=LEE, subject=f"ESCALATE RE: {case.tag} Phones down", first_line="Please escalate this."
    )

    assert outcome.case_number == case.padded
    assert desk.case(case.number).escalation_level == 2
    (staff,) = desk.outbox(kind="staff.escalated", case=case.number)
    assert staff.recipients == [MANAGER]


def test_level_two_is_the_manager_of_the_team_that_owns_the_case(desk: ThreadDesk) -> None:
    case = desk.open_case()
    with transaction(desk.engine) as session:
        row = casework.find_case(session, case.number, lock=True)
        casework.set_assignee(session, desk.app.desk(), row, "chris@support.example.com", now=desk.clock.now(), author="agent")
    desk.at(OPENED + timedelta(hours=1))

    _escalate(desk, case)

    (staff,) = desk.outbox(kind="staff.escalated", case=case.number)
    assert staff.recipients == ["ms-manager@support.example.com"]


def test_a_sender_not_allowed_on_the_case_cannot_escalate_it(desk: ThreadDesk) -> None:
    case = desk.open_case()
    desk.at(OPENED + timedelta(hours=1))

    by_first_line = _escalate(desk, case, sender=EVE)  # answering our acknowledgement (In-Reply-To)
    by_subject = _escalate(desk, case, sender=EVE, subject=f"ESCALATE {case.tag}", first_line="Escalate now.")

    for outcome in (by_first_line, by_subject):
        assert (outcome.decision, outcome.case_number) == ("hold_message", None)
    assert desk.case(case.number).escalation_level == 1
    assert desk.outbox(kind="staff.escalated") == [] and desk.outbox(kind="customer.escalated") == []
    assert not [e for e in desk.show(case.number)["events"] if e["kind"] == "escalated"]
