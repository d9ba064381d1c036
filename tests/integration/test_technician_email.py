"""Technicians working a case: by email (a reply to their case notification is relayed to the customer from the
support address; `#note` stays internal) and by CLI (`cases reply`); delivered by `mailcase tick` to a capture relay."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine

from mailcase.domain import CaseStatus, EventKind
from support.cli import MailcaseCli
from support.relay import CapturedMessage, CaptureRelay
from support.threads import OpenedCase, ThreadDesk

OPENED = datetime(2026, 11, 25, 23, 0, tzinfo=UTC)  # Wednesday 16:00 in Denver
CUSTOMER_WROTE = OPENED + timedelta(minutes=30)
ANSWERED = OPENED + timedelta(minutes=45)
ANA = "ana@support.example.com"


@pytest.fixture
def relay() -> Iterator[CaptureRelay]:
    with CaptureRelay() as running:
        yield running


@pytest.fixture
def desk(engine: Engine) -> ThreadDesk:
    return ThreadDesk.start(engine, OPENED)


@pytest.fixture
def cli(database_url: str, relay: CaptureRelay) -> MailcaseCli:
    """`mailcase` on the test database, its outbound relay the capture relay."""
    return MailcaseCli(database_url, env={"MAILCASE_OUTBOUND__PORT": str(relay.port)})


def _case_with_customer_reply(desk: ThreadDesk) -> tuple[OpenedCase, str]:
    """A case, and the Message-ID of the customer's latest message on it (a reply to our acknowledgement)."""
    case = desk.open_case()
    desk.at(CUSTOMER_WROTE)
    reply = desk.ingest(
        "reply_outlook_full_headers.eml",
        subject=f"RE: {case.tag} Received: Phones down",
        in_reply_to=case.ack_id,
        references=f"{case.customer_message_id} {case.ack_id}",
    )
    assert reply.case_number == case.padded
    return case, reply.message_id


def _delivered(relay: CaptureRelay, message_id: str) -> CapturedMessage:
    (captured,) = [m for m in relay.messages if m.message["Message-ID"] == message_id]
    return captured


def _technician_email(desk: ThreadDesk, case: OpenedCase, first_line: str) -> object:
    # One notice per technician, each with that technician's own reply token in Reply-To.
    (notification,) = [n for n in desk.outbox(kind="staff.new_case", case=case.number) if n.recipients == [ANA]]
    return desk.ingest(
        "technician_reply_by_email.eml",
        to=desk.staff_token_address(case.number, ANA),  # the notification's Reply-To
        subject=f"Re: {case.tag} New case: Phones down at the Chicago office",
        in_reply_to=notification.message_id,
        first_line=first_line,
    )


def test_technicians_emailed_reply_reaches_the_customer_from_the_support_address_only(
    desk: ThreadDesk, relay: CaptureRelay, cli: MailcaseCli
) -> None:
    case, customer_last = _case_with_customer_reply(desk)
    desk.at(ANSWERED)

    outcome = _technician_email(desk, case, "Hi Pat,")
    tick = cli("tick", now=ANSWERED.isoformat())

    assert tick.status == 0, tick.stderr
    assert (outcome.decision, outcome.case_number) == ("technician_reply", case.padded)
    assert "by message-id" in outcome.reason
    row = desk.case(case.number)
    assert (row.status, row.first_response_at, row.needs_attention) == (CaseStatus.IN_PROGRESS, ANSWERED, False)
    (reply,) = desk.outbox(kind="customer.reply", case=case.number)
    assert reply.state == "sent"
    delivered = _delivered(relay, reply.message_id)
    message = delivered.message
    assert message["From"].addresses[0].addr_spec == "support@support.example.com"
    assert (message["To"], message["Cc"]) == ("pat@acme.example", "lee@acme.example")
    assert set(delivered.rcpt_tos) == {"pat@acme.example", "lee@acme.example"}
    assert delivered.mail_from == "support@support.example.com"
    assert ANA.encode() not in delivered.data.lower()
    assert message["In-Reply-To"] == customer_last
    assert customer_last in message["References"].split()
    assert case.tag in message["Subject"]
    assert message["Reply-To"] == case.token_address
    assert message["Auto-Submitted"] is None  # a person's reply, not an automatic one (RFC 3834)
    body = message.get_body(("plain",)).get_content()
    assert "Hi Pat," in body and "power-cycle the PoE switch" in body
    assert "wrote:" not in body  # the quoted notification is not relayed


def test_notes_stay_internal_by_email_and_by_cli(desk: ThreadDesk, relay: CaptureRelay, cli: MailcaseCli) -> None:
    case, _ = _case_with_customer_reply(desk)
    customer_rows = len([r for r in desk.outbox(case=case.number) if r.kind.startswith("customer.")])
    desk.at(ANSWERED)

    outcome = _technician_email(desk, case, "#note")  # first line `#note`: an internal note
    by_cli = cli("cases", "note", case.padded, "--body", "Customer's switch is a 2014 model.", "--by", ANA,
                 now=ANSWERED.isoformat())
    cli("tick", now=ANSWERED.isoformat())

    assert (outcome.decision, outcome.case_number) == ("technician_reply", case.padded)
    assert by_cli.status == 0, by_cli.stderr
    notes = [e for e in desk.show(case.number)["events"] if e["kind"] == EventKind.NOTE]
    assert [n["author"] for n in notes] == [ANA, ANA]
    assert notes[0]["summary"].startswith("Please power-cycle the PoE switch")
    assert "#note" not in notes[0]["summary"]
    assert notes[1]["summary"] == "Customer's switch is a 2014 model."
    assert len([r for r in desk.outbox(case=case.number) if r.kind.startswith("customer.")]) == customer_rows
    assert not any(b"power-cycle" in m.data or b"2014 model" in m.data for m in relay.messages)
    assert desk.case(case.number).first_response_at is None


def test_cases_reply_records_first_response_and_threads_the_customer_reply(
    desk: ThreadDesk, relay: CaptureRelay, cli: MailcaseCli
) -> None:
    case, customer_last = _case_with_customer_reply(desk)
    now = ANSWERED.isoformat()

    result = cli(
        "cases", "reply", case.padded, "--body", "Please power-cycle the switch and tell us.",
        "--from", "bruno@support.example.com", "--awaiting-customer", now=now,
    )
    assert result.status == 0, result.stderr
    queued = [r for r in cli("outbox", "list", "--json").json() if r["kind"] == "customer.reply"]
    tick = cli("tick", now=now)

    assert tick.status == 0, tick.stderr
    row = desk.case(case.number)
    assert row.first_response_at == ANSWERED
    assert row.awaiting_customer_since == ANSWERED
    assert row.status == CaseStatus.IN_PROGRESS
    (listed,) = queued
    assert (listed["recipients"], listed["cc"], listed["state"]) == (["pat@acme.example"], ["lee@acme.example"], "queued")
    message = _delivered(relay, listed["message_id"]).message
    assert message["In-Reply-To"] == customer_last
    assert message["References"].split()[-1] == customer_last
    assert message["Subject"].startswith(case.tag)
    assert message["Reply-To"] == case.token_address
    assert message["From"].addresses[0].addr_spec == "support@support.example.com"
    body = message.get_body(("plain",)).get_content()
    assert "Please power-cycle the switch and tell us." in body
    assert "Bruno Costa" in body and "bruno@support.example.com" not in body
    assert "please reply to this message" in body
    events = desk.show(case.number)["events"]
    assert any(e["kind"] == "outbound_message" and e["author"] == "bruno@support.example.com" for e in events)


def test_technicians_reply_on_a_closed_case_is_held_until_the_case_is_reopened(desk: ThreadDesk, cli: MailcaseCli) -> None:
    case, customer_last = _case_with_customer_reply(desk)
    desk.at(ANSWERED)
    desk.close(case.number)
    desk.at(ANSWERED + timedelta(minutes=5))

    outcome = _technician_email(desk, case, "Hi Pat,")

    assert (outcome.decision, outcome.case_number) == ("hold_message", None)
    assert "which is closed: reopen it" in outcome.reason and "then release this message" in outcome.reason
    assert desk.outbox(kind="customer.reply") == []
    reopened = cli("cases", "update", case.padded, "--status", "in_progress", now=(ANSWERED + timedelta(minutes=6)).isoformat())
    released = cli("held", "release", str(outcome.held_id), now=(ANSWERED + timedelta(minutes=7)).isoformat())
    assert (reopened.status, released.status) == (0, 0), reopened.stderr + released.stderr
    assert "technician_reply" in released.stdout
    (reply,) = desk.outbox(kind="customer.reply", case=case.number)
    assert (reply.recipients, reply.in_reply_to) == (["pat@acme.example"], customer_last)


def test_technicians_out_of_office_answering_a_notification_never_reaches_the_customer(
    desk: ThreadDesk, relay: CaptureRelay, cli: MailcaseCli
) -> None:
    case = desk.open_case()
    (notification, *_others) = desk.outbox(kind="staff.new_case", case=case.number)
    desk.at(ANSWERED)

    outcome = desk.ingest(
        "technician_vacation_auto_reply.eml", to=case.token_address, subject=f"{case.tag} New case: Phones down",
        in_reply_to=notification.message_id,
    )
    cli("tick", now=ANSWERED.isoformat())

    assert (outcome.decision, outcome.case_number) == ("record_auto_reply", case.padded)
    assert desk.outbox(kind="customer.reply") == []
    row = desk.case(case.number)
    assert (row.first_response_at, row.status) == (None, CaseStatus.NEW)  # an out-of-office is no first response
    assert not any(b"vacation" in m.data for m in relay.messages)
