"""Which case a reply lands on, with messages shaped as real clients send them (SPEC.md §3 "Threading order"),
through the real pipeline on SQLite and PostgreSQL; `trace` and `cases show` say which rule matched and why."""

from __future__ import annotations

import hmac
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine

from mailcase.rules import tokens
from support.cli import MailcaseCli
from support.threads import ThreadDesk, fresh_message_id

OPENED = datetime(2026, 11, 25, 23, 0, tzinfo=UTC)  # Wednesday 16:00 in Denver
LATER = OPENED + timedelta(minutes=40)
LEE = "Lee Chen <lee@acme.example>"  # an acme employee (no MPOC role)
EVE = "Eve Mallory <eve@outsider.example>"  # in no organisation


@pytest.fixture
def desk(engine: Engine) -> ThreadDesk:
    return ThreadDesk.start(engine, OPENED)


def _inbound(desk: ThreadDesk, number: int) -> list[dict]:
    return [m for m in desk.show(number)["messages"] if m["direction"] == "inbound"]


def test_reply_with_full_headers_updates_the_case_tells_the_assignee_and_keeps_both_texts(desk: ThreadDesk) -> None:
    case = desk.open_case()
    assignee = desk.case(case.number).assignee
    desk.at(LATER)

    outcome = desk.ingest(
        "reply_outlook_full_headers.eml",
        subject=f"RE: {case.tag} Received: Phones down at the Chicago office",
        in_reply_to=case.ack_id,
        references=f"{case.customer_message_id} {case.ack_id}",
    )

    assert (outcome.decision, outcome.case_number) == ("append_update", case.padded)
    assert "message-id" in outcome.reason and case.ack_id in outcome.reason
    assert desk.case(case.number).needs_attention is True
    (notice,) = desk.outbox(kind="staff.customer_update", case=case.number)
    assert notice.recipients == [assignee]
    assert notice.context["from_address"] == "pat@acme.example"
    assert "second floor are back" in notice.context["excerpt"]
    assert desk.case_count() == 1
    # The full text is kept; the new text (Outlook's quoted block stripped) is stored beside it.
    reply = _inbound(desk, case.number)[-1]
    assert reply["new_text"] == "The phones on the second floor are back, the first floor is still down."
    assert reply["text"].startswith(reply["new_text"])
    assert "Sent: Wednesday, November 25, 2026 4:00 PM" in reply["text"]
    assert "We received your message and opened a case." in reply["text"]


def test_reply_with_headers_stripped_but_tag_kept_threads_by_the_subject_tag(desk: ThreadDesk) -> None:
    case = desk.open_case()
    desk.at(LATER)

    outcome = desk.ingest("reply_mobile_headers_stripped.eml", subject=f"Re: {case.tag} Phones down")

    assert (outcome.decision, outcome.case_number) == ("append_update", case.padded)
    assert "subject-tag" in outcome.reason
    assert [m["subject"] for m in _inbound(desk, case.number)][-1] == f"Re: {case.tag} Phones down"
    assert desk.case_count() == 1


def test_reply_to_the_token_address_with_a_new_subject_and_no_thread_headers_threads_by_the_token(
    desk: ThreadDesk,
) -> None:
    case = desk.open_case()
    desk.at(LATER)

    outcome = desk.ingest(
        "reply_token_address_new_subject.eml",
        to=case.token_address,
        subject="Rebooting the handsets?",
        envelope_to=(case.token_address,),
    )

    assert (outcome.decision, outcome.case_number) == ("append_update", case.padded)
    assert "reply-token" in outcome.reason
    assert desk.case_count() == 1


def test_forged_reply_token_is_ignored_and_checked_with_a_constant_time_comparison(
    desk: ThreadDesk, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = desk.open_case()
    other = desk.open_case(subject="Fax line noisy", message_id=fresh_message_id("acme.example"))
    compared: list[tuple[str, str]] = []
    default = tokens.case_from_address.__kwdefaults__["compare"]
    assert default is hmac.compare_digest

    def spy(presented: str, expected: str) -> bool:
        compared.append((presented, expected))
        return hmac.compare_digest(presented, expected)

    monkeypatch.setitem(tokens.case_from_address.__kwdefaults__, "compare", spy)
    real_mac = case.token_address.split("@")[0].rsplit("-", 1)[1]
    forged_mac = real_mac[::-1] if real_mac[::-1] != real_mac else "a" * len(real_mac)
    other_mac = other.token_address.split("@")[0].rsplit("-", 1)[1]
    desk.at(LATER)

    for mac in (forged_mac, other_mac):  # right format; a wrong MAC, and the MAC of another case
        forged = f"support+c{case.number}-{mac}@support.example.com"
        outcome = desk.ingest(
            "reply_token_address_new_subject.eml", to=forged, subject="Rebooting the handsets?", envelope_to=(forged,)
        )
        assert outcome.decision == "open_case"  # pat is an MPOC: the forged address counts as plain support@
        assert outcome.case_number not in (None, case.padded)
        assert "reply-token" not in outcome.reason

    assert (forged_mac, real_mac) in compared and (other_mac, real_mac) in compared
    assert len(_inbound(desk, case.number)) == 1  # only the customer's first message


def test_forwarded_message_from_an_mpoc_opens_a_new_case_whatever_the_forwarded_headers_say(
    desk: ThreadDesk,
) -> None:
    case = desk.open_case()
    desk.at(LATER)

    outcome = desk.ingest(
        "forwarded_by_mpoc.eml",
        subject="ALARM trunk-2 down",
        forwarded_id=fresh_message_id("monitor.acme.example"),
        in_reply_to=case.ack_id,  # the forwarded message (message/rfc822) answered our ack; the forward did not
    )

    assert outcome.decision == "open_case"
    assert outcome.case_number not in (None, case.padded)
    new = desk.show(int(outcome.case_number))
    assert (new["requester"], new["subject"]) == ("sam@acme.example", "ALARM trunk-2 down")
    assert len(_inbound(desk, case.number)) == 1


def test_reply_from_a_colleague_the_customer_copied_lands_on_the_case_and_mail_copies_them(desk: ThreadDesk) -> None:
    case = desk.open_case()  # pat writes with lee@acme.example (an employee, not an MPOC) in Cc
    assert desk.show(case.number)["participants"] == ["pat@acme.example", "lee@acme.example"]
    (ack,) = desk.outbox(kind="customer.ack", case=case.number)
    assert (ack.recipients, ack.cc) == (["pat@acme.example"], ["lee@acme.example"])

    desk.at(LATER)
    reply_all = desk.ingest(  # Lee answers Pat's original mail with reply-all (support was in To)
        "reply_all_from_copied_colleague.eml",
        subject="Re: Phones down at the Chicago office",
        in_reply_to=case.customer_message_id,
    )
    desk.at(LATER + timedelta(minutes=5))
    to_ack = desk.ingest(  # Lee answers the acknowledgement he was copied on
        "reply_outlook_full_headers.eml",
        from_header=LEE,
        subject=f"RE: {case.tag} Phones down",
        in_reply_to=case.ack_id,
        references=case.ack_id,
    )
    desk.at(LATER + timedelta(minutes=10))
    tagged = desk.ingest("reply_mobile_headers_stripped.eml", from_header=LEE, subject=f"RE: {case.tag} Phones down")

    assert (reply_all.decision, reply_all.case_number) == ("append_update", case.padded)
    assert "by customer-thread" in reply_all.reason
    assert (to_ack.case_number, tagged.case_number) == (case.padded, case.padded)
    assert "by message-id" in to_ack.reason and "by subject-tag" in tagged.reason
    assert [m["from"] for m in _inbound(desk, case.number)] == [
        "pat@acme.example",
        "lee@acme.example",
        "lee@acme.example",
        "lee@acme.example",
    ]
    assert desk.case_count() == 1


def test_outsider_quoting_a_real_case_number_never_lands_on_that_case(desk: ThreadDesk) -> None:
    case = desk.open_case()
    desk.at(LATER)

    outcome = desk.ingest("reply_outsider_quoting_case_number.eml", subject=f"Re: {case.tag} Phones down")

    assert outcome.decision == "hold_message"
    assert outcome.case_number is None
    (held,) = desk.held()
    assert f"subject tag {case.tag} ignored" in held.reason
    assert "eve@outsider.example is not allowed on that case" in held.reason
    assert len(_inbound(desk, case.number)) == 1
    assert desk.case(case.number).needs_attention is False
    assert desk.outbox(kind="staff.customer_update") == []


def test_thread_headers_from_someone_not_on_the_case_are_held_not_added(desk: ThreadDesk) -> None:
    case = desk.open_case("new_case_gmail_no_cc.eml")  # pat alone: lee is neither copied nor an MPOC
    desk.at(LATER)

    outsider = desk.ingest(  # answers our acknowledgement
        "reply_outlook_full_headers.eml",
        from_header=EVE,
        subject=f"RE: {case.tag} Phones down",
        in_reply_to=case.ack_id,
        references=case.ack_id,
    )
    employee = desk.ingest(  # answers pat's own message (reply-all)
        "reply_all_from_copied_colleague.eml",
        subject="Re: Phones down at the Chicago office",
        in_reply_to=case.customer_message_id,
    )

    assert (outsider.decision, outsider.case_number) == ("hold_message", None)
    assert f"eve@outsider.example is not a participant of case {case.padded}" in outsider.reason
    assert (employee.decision, employee.case_number) == ("hold_message", None)
    assert len(desk.held()) == 2
    assert len(_inbound(desk, case.number)) == 1
    assert desk.show(case.number)["participants"] == ["pat@acme.example"]


def test_trace_and_cases_show_say_which_rule_matched_and_why(desk: ThreadDesk, database_url: str) -> None:
    case = desk.open_case()
    desk.at(LATER)
    by_id = desk.ingest(
        "reply_outlook_full_headers.eml", subject=f"RE: {case.tag} Phones", in_reply_to=case.ack_id, references=case.ack_id
    )
    desk.at(LATER + timedelta(minutes=1))
    by_token = desk.ingest(
        "reply_token_address_new_subject.eml", to=case.token_address, subject="New question",
        envelope_to=(case.token_address,),
    )
    desk.at(LATER + timedelta(minutes=2))
    by_tag = desk.ingest("reply_mobile_headers_stripped.eml", subject=f"Re: {case.tag} Phones down")
    cli = MailcaseCli(database_url)

    for outcome, rule in ((by_id, "message-id"), (by_token, "reply-token"), (by_tag, "subject-tag")):
        result = cli("trace", outcome.message_id, "--json")
        assert result.status == 0, result.stderr
        (record,) = result.json()
        assert (record["decision"], record["case"]) == ("append_update", case.padded)
        assert f"by {rule}" in record["reason"]
        text = cli("trace", outcome.message_id)
        assert f"by {rule}" in text.stdout

    shown = cli("cases", "show", case.padded, "--json").json()
    reasons = [m["reason"] for m in shown["messages"] if m["direction"] == "inbound"]
    assert reasons[0].startswith("new case: pat@acme.example is an MPOC")
    assert [r.split(" by ")[1].split(" ")[0] for r in reasons[1:]] == ["message-id", "reply-token", "subject-tag"]
    text = cli("cases", "show", case.padded).stdout
    assert "by reply-token (sent to the case's reply-token address)" in text
    assert f"by subject-tag (subject tag {case.tag})" in text
