"""What a matched reply does to a case over its life (SPEC.md §1 "Replies, reopen and related cases"): reopen within
the 7-day window, a related case after it or after Closed No Response, duplicates to their primary, machines never
reopen anything; and the status changes the customer is told about, delivered to a capture relay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.engine import Engine

from mailcase.domain import CaseStatus
from mailcase.rules.decide import reopen_deadline
from support.relay import CaptureRelay
from support.threads import OpenedCase, ThreadDesk, sample_settings

DENVER = ZoneInfo("America/Denver")
OPENED = datetime(2026, 11, 25, 23, 0, tzinfo=UTC)  # Wednesday 16:00 in Denver
CLOSED = datetime(2026, 12, 2, 10, 0, tzinfo=DENVER)  # a Wednesday, no DST change in the next week
# The clocks go forward on Sunday 2027-03-14: closed at 10:00 MST, the window ends at 10:00 MDT.
DST_CLOSED = datetime(2027, 3, 10, 10, 0, tzinfo=DENVER)
DST_BOUNDARY = datetime(2027, 3, 17, 10, 0, tzinfo=DENVER)


@pytest.fixture
def desk(engine: Engine) -> ThreadDesk:
    return ThreadDesk.start(engine, OPENED)


def _closed_case(desk: ThreadDesk, closed_at: datetime) -> tuple[OpenedCase, str]:
    """A case opened a week before `closed_at` and closed then; returns it and the closing notice's Message-ID."""
    desk.at(closed_at - timedelta(days=7))
    case = desk.open_case()
    desk.at(closed_at)
    desk.close(case.number)
    closing = [r for r in desk.outbox(kind="customer.status_changed", case=case.number) if r.context["status"] == "closed"]
    (notice,) = closing
    return case, notice.message_id


def _reply(desk: ThreadDesk, case: OpenedCase, in_reply_to: str) -> object:
    return desk.ingest("reply_gmail_after_close.eml", subject=f"Re: {case.tag} Closed: Phones down", in_reply_to=in_reply_to)


def test_reply_six_days_after_closing_reopens_the_case_and_tells_the_customer(desk: ThreadDesk) -> None:
    case, closing_id = _closed_case(desk, CLOSED)
    desk.at(CLOSED + timedelta(days=6))

    outcome = _reply(desk, case, closing_id)

    assert (outcome.decision, outcome.case_number) == ("reopen_case", case.padded)
    assert "within 7 days of closing" in outcome.reason
    reopened = desk.case(case.number)
    assert (reopened.status, reopened.closed_at, reopened.needs_attention) == (CaseStatus.CUSTOMER_REOPENED, None, True)
    (told,) = desk.outbox(kind="customer.reopened", case=case.number)
    assert (told.recipients, told.cc) == (["pat@acme.example"], ["lee@acme.example"])
    assert told.in_reply_to == outcome.message_id
    assert desk.outbox(kind="staff.customer_update", case=case.number)[-1].recipients == [reopened.assignee]
    assert "reopened" in [e["kind"] for e in desk.show(case.number)["events"]]
    assert desk.case_count() == 1


def test_reply_eight_days_after_closing_opens_a_related_case_whose_acknowledgement_names_both_numbers(
    engine: Engine,
) -> None:
    with CaptureRelay() as relay:
        desk = ThreadDesk.start(engine, OPENED, settings=sample_settings(relay))
        case, closing_id = _closed_case(desk, CLOSED)
        desk.at(CLOSED + timedelta(days=8))

        outcome = _reply(desk, case, closing_id)
        desk.tick()

    assert outcome.decision == "open_related_case"
    assert "more than 7 days after closing" in outcome.reason
    assert outcome.case_number not in (None, case.padded)
    related = int(outcome.case_number)
    assert desk.case(case.number).status == CaseStatus.CLOSED
    assert desk.show(case.number)["related_cases"] == [outcome.case_number]
    assert desk.show(related)["related_to"] == case.padded
    assert desk.case(related).priority == "P4"
    (ack,) = desk.outbox(kind="customer.ack", case=related)
    assert (ack.context["case_number"], ack.context["related_number"]) == (related, case.number)
    (delivered,) = [m for m in relay.messages if m.message["Message-ID"] == ack.message_id]
    body = delivered.message.get_body(("plain",)).get_content()
    assert outcome.case_number in body and case.padded in body
    assert outcome.case_number in delivered.message["Subject"]


@pytest.mark.parametrize(
    ("closed_at", "boundary"),
    [
        pytest.param(CLOSED, datetime(2026, 12, 9, 10, 0, tzinfo=DENVER), id="winter"),
        pytest.param(DST_CLOSED, DST_BOUNDARY, id="across-dst"),
    ],
)
def test_the_reopen_window_ends_at_the_same_local_time_seven_calendar_days_later(
    desk: ThreadDesk, closed_at: datetime, boundary: datetime
) -> None:
    assert reopen_deadline(closed_at.astimezone(UTC), days=7, timezone="America/Denver") == boundary
    early, early_closing = _closed_case(desk, closed_at)
    late, late_closing = _closed_case(desk, closed_at)

    desk.at(boundary - timedelta(seconds=1))
    just_before = _reply(desk, early, early_closing)
    desk.at(boundary)
    at_boundary = _reply(desk, late, late_closing)

    # Across DST the boundary is 10:00 MDT, an hour before 7 x 24 h: a naive window would still reopen.
    assert (just_before.decision, just_before.case_number) == ("reopen_case", early.padded)
    assert desk.case(early.number).status == CaseStatus.CUSTOMER_REOPENED
    assert at_boundary.decision == "open_related_case"
    assert at_boundary.case_number not in (late.padded, early.padded)
    assert desk.case(late.number).status == CaseStatus.CLOSED
    assert desk.show(int(at_boundary.case_number))["related_to"] == late.padded


def test_reply_to_a_closed_no_response_case_opens_a_related_case_whatever_its_age(desk: ThreadDesk) -> None:
    case = desk.open_case()
    desk.at(OPENED + timedelta(minutes=30))
    from mailcase.desk import cases as casework
    from mailcase.store.engine import transaction

    with transaction(desk.engine) as session:
        row = casework.find_case(session, case.number, lock=True)
        casework.public_reply(
            session, desk.app.desk(), row, "Is it working now?", now=desk.clock.now(),
            author="ana@support.example.com", awaiting_customer=True,
        )
    for day in range(1, 8):  # the sweeps nudge after 1 business day and close after 2 (Thanksgiving skipped)
        desk.at(OPENED + timedelta(days=day, hours=1))
        desk.sweep()
    assert len(desk.outbox(kind="customer.nudge", case=case.number)) == 1
    assert desk.case(case.number).status == CaseStatus.CLOSED_NO_RESPONSE
    (closed_notice,) = desk.outbox(kind="customer.closed_no_response", case=case.number)
    desk.at(desk.case(case.number).closed_at + timedelta(hours=2))  # well within 7 days

    outcome = _reply(desk, case, closed_notice.message_id)

    assert outcome.decision == "open_related_case"
    assert "Closed No Response" in outcome.reason
    related = int(outcome.case_number)
    assert desk.case(case.number).status == CaseStatus.CLOSED_NO_RESPONSE
    assert desk.show(related)["related_to"] == case.padded
    assert desk.show(case.number)["related_cases"] == [outcome.case_number]
    (ack,) = desk.outbox(kind="customer.ack", case=related)
    assert ack.context["related_number"] == case.number


def test_reply_to_a_duplicate_lands_on_its_primary(desk: ThreadDesk) -> None:
    primary = desk.open_case()
    desk.at(OPENED + timedelta(minutes=10))
    duplicate = desk.open_case("new_case_gmail_no_cc.eml", subject="Chicago phones not registering")
    desk.at(OPENED + timedelta(minutes=20))
    desk.set_status(duplicate.number, CaseStatus.DUPLICATE, duplicate_of=primary.number)
    desk.at(OPENED + timedelta(minutes=40))

    by_headers = desk.ingest(
        "reply_outlook_full_headers.eml", subject=f"RE: {duplicate.tag} Phones", in_reply_to=duplicate.ack_id,
        references=duplicate.ack_id,
    )
    desk.at(OPENED + timedelta(minutes=45))
    by_tag = desk.ingest("reply_mobile_headers_stripped.eml", subject=f"Re: {duplicate.tag} Chicago phones")

    for outcome in (by_headers, by_tag):
        assert (outcome.decision, outcome.case_number) == ("append_update", primary.padded)
        assert f"duplicate of {primary.padded}" in outcome.reason
    assert desk.case(duplicate.number).status == CaseStatus.DUPLICATE
    assert len([m for m in desk.show(primary.number)["messages"] if m["direction"] == "inbound"]) == 3
    assert desk.case(primary.number).needs_attention is True


def test_out_of_office_replies_and_bounces_never_reopen_anything(desk: ThreadDesk) -> None:
    case, closing_id = _closed_case(desk, CLOSED)
    desk.at(CLOSED + timedelta(hours=1))
    cases_before = desk.case_count()
    outbox_before = len(desk.outbox())

    ooo = desk.ingest("ooo_exchange_auto_reply.eml", subject=f"{case.tag} Closed: Phones down", in_reply_to=closing_id)
    bounce = desk.ingest("bounce_of_acknowledgement.eml", subject=f"{case.tag} Closed: Phones down", in_reply_to=closing_id)
    desk.at(CLOSED + timedelta(days=9))  # and after the window: still no related case
    late_ooo = desk.ingest("ooo_exchange_auto_reply.eml", subject=f"{case.tag} Closed", in_reply_to=closing_id)

    assert ooo.decision == "record_auto_reply" and late_ooo.decision == "record_auto_reply"
    assert bounce.decision == "record_bounce"
    assert desk.case(case.number).status == CaseStatus.CLOSED
    assert desk.case(case.number).needs_attention is False
    assert desk.case_count() == cases_before
    assert len(desk.outbox()) == outbox_before  # nobody is told anything
    (closing,) = [r for r in desk.outbox(case=case.number) if r.message_id == closing_id]
    assert closing.bounced_at is not None and "mailbox full" in closing.bounce_reason


def test_status_changes_that_matter_to_the_customer_are_emailed_to_them(engine: Engine) -> None:
    with CaptureRelay() as relay:
        desk = ThreadDesk.start(engine, OPENED, settings=sample_settings(relay))
        case = desk.open_case()
        steps: list[tuple[str, str]] = []

        desk.at(OPENED + timedelta(hours=1))
        desk.set_status(case.number, CaseStatus.IN_PROGRESS)
        desk.at(OPENED + timedelta(hours=2))
        desk.set_status(case.number, CaseStatus.ON_HOLD, hold_until=datetime(2026, 11, 30, 9, 0, tzinfo=DENVER))
        desk.at(OPENED + timedelta(hours=3))
        desk.set_status(case.number, CaseStatus.IN_PROGRESS)
        _set_etr(desk, case.number, datetime(2026, 12, 1, 17, 0, tzinfo=DENVER))
        desk.at(OPENED + timedelta(hours=4))
        desk.set_status(case.number, CaseStatus.RESOLVED_FOLLOW_UP)
        desk.at(OPENED + timedelta(hours=5))
        desk.set_status(case.number, CaseStatus.CLOSED)
        desk.tick()
        for message in relay.messages:
            if message.message["To"] == "pat@acme.example" and "Received" not in message.message["Subject"]:
                steps.append((message.message["Subject"], message.message.get_body(("plain",)).get_content()))

    notices = [r for r in desk.outbox(kind="customer.status_changed", case=case.number)]
    assert [(r.context["status"], r.idempotency_key.split(":")[2]) for r in notices] == [
        ("on_hold", "status"),
        ("in_progress", "etr"),
        ("resolved_follow_up", "status"),
        ("closed", "status"),
    ]
    bodies = [body for _subject, body in steps]
    assert len(bodies) == 4 and all(case.padded in subject for subject, _ in steps)
    on_hold, etr, resolved, closed = bodies
    # Times are shown in the organisation's zone (acme: America/Chicago).
    assert "Work is paused until Monday 30 November 2026, 10:00 CST" in on_hold
    assert "Estimated time to resolution: Tuesday 1 December 2026, 18:00 CST" in etr
    assert "Please reply to confirm" in resolved
    assert "If we do not hear from you by " in resolved and "we will close the case" in resolved
    assert "The case is closed" in closed and "within 7 days" in closed


def _set_etr(desk: ThreadDesk, number: int, etr: datetime) -> None:
    from mailcase.desk import cases as casework
    from mailcase.store.engine import transaction

    with transaction(desk.engine) as session:
        row = casework.find_case(session, number, lock=True)
        casework.set_etr(session, desk.app.desk(), row, etr.astimezone(UTC), now=desk.clock.now(), author="ana@support.example.com")
