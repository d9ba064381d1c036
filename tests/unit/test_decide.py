"""`rules.decide` with plain values: what a matched reply does (update, reopen, related case, primary of a duplicate),
the exact 7-day reopen boundary in the desk's zone (DST included), machines, technicians and escalation."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from mailcase.domain import (
    Audience,
    AutoKind,
    CaseKind,
    CaseStatus,
    CaseView,
    InboundMessage,
    Priority,
    Role,
    SenderView,
)
from mailcase.rules.authentication import Authentication
from mailcase.rules.decide import (
    AppendUpdate,
    Facts,
    HoldMessage,
    IgnoreMessage,
    OpenCase,
    OpenRelatedCase,
    RecordAutoReply,
    RecordBounce,
    ReopenCase,
    TechnicianReply,
    Unsubscribe,
    decide,
    reopen_deadline,
)
from mailcase.rules.matching import Matched, MatchRule, Unmatched
from mailcase.rules.tokens import UnsubscribeRequest

DENVER = ZoneInfo("America/Denver")
DESK = "America/Denver"
ACME, BRISA = 1, 2


def utc(*args: int, fold: int = 0) -> datetime:
    """A Denver wall-clock time as an aware UTC instant."""
    return datetime(*args, tzinfo=DENVER, fold=fold).astimezone(UTC)


CLOSED_AT = utc(2026, 12, 2, 10, 0)
OPEN = CaseView(
    id=10,
    number=1042,
    organisation_id=ACME,
    status=CaseStatus.IN_PROGRESS,
    priority=Priority.P4,
    requester="pat@acme.example",
    participants=frozenset({"pat@acme.example", "lee@acme.example"}),
    assignee="ana@support.example.com",
    team="support",
)
CLOSED = dataclasses.replace(OPEN, status=CaseStatus.CLOSED, closed_at=CLOSED_AT)
PRIMARY = dataclasses.replace(OPEN, id=20, number=1000)
DUPLICATE = dataclasses.replace(OPEN, status=CaseStatus.DUPLICATE, duplicate_of_id=PRIMARY.id, closed_at=CLOSED_AT)
PAT = SenderView("pat@acme.example", contact_id=1, organisation_id=ACME, roles=frozenset({Role.PRIMARY}))
LEE = SenderView("lee@acme.example", contact_id=2, organisation_id=ACME)
JOAO = SenderView("joao@brisa.example.com.br", contact_id=5, organisation_id=BRISA, roles=frozenset({Role.PRIMARY}))
ANA = SenderView("ana@support.example.com", is_technician=True)
EVE = SenderView("eve@outsider.example")
BY_ID = Matched(OPEN.id, MatchRule.MESSAGE_ID, "answers our message <mc.1@mailcase.localhost>")


def message(
    text: str = "The phones dropped off again.",
    *,
    sender: SenderView = PAT,
    subject: str = "Re: [Case #00001042] Phones",
    auto: AutoKind = AutoKind.HUMAN,
) -> InboundMessage:
    return InboundMessage(
        message_id="<m@acme.example>",
        in_reply_to="<mc.1@mailcase.localhost>",
        references=(),
        from_address=sender.address,
        from_name="",
        to=("support@support.example.com",),
        cc=(),
        reply_to=(),
        subject=subject,
        text=text + "\n\n> quoted",
        new_text=text,
        date=None,
        auto_kind=auto,
        auto_reason="" if auto is AutoKind.HUMAN else f"{auto.value} (test)",
        content_digest="d",
        raw_sha256="r",
    )


def facts(
    case: CaseView | None,
    *,
    now: datetime,
    sender: SenderView = PAT,
    msg: InboundMessage | None = None,
    match: Matched | Unmatched | None = None,
    **extra: object,
) -> Facts:
    if sender.is_technician and case is not None and "authentication" not in extra:
        # A technician answering through their own reply token for the case (the proven path).
        extra["authentication"] = Authentication(technician_token_case=case.number)
    return Facts(
        message=msg or message(sender=sender),
        sender=sender,
        match=match or (dataclasses.replace(BY_ID, case_id=case.id) if case else Unmatched()),
        now=now,
        case=case,
        desk_timezone=DESK,
        **extra,  # type: ignore[arg-type]
    )


# --- the 7-day boundary ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("closed", "boundary", "elapsed"),
    [
        pytest.param(utc(2026, 12, 2, 10, 0), utc(2026, 12, 9, 10, 0), timedelta(days=7), id="no-dst-change"),
        # Clocks go forward Sunday 2027-03-14: 10:00 MST + 7 days is 10:00 MDT, 6 days 23 hours later.
        pytest.param(utc(2027, 3, 10, 10, 0), utc(2027, 3, 17, 10, 0), timedelta(days=6, hours=23), id="spring-forward"),
        # Clocks go back Sunday 2026-11-01: 10:00 MDT + 7 days is 10:00 MST, 7 days 1 hour later.
        pytest.param(utc(2026, 10, 30, 10, 0), utc(2026, 11, 6, 10, 0), timedelta(days=7, hours=1), id="fall-back"),
        # 02:30 on 2027-03-14 does not exist in Denver: read with the offset before the change (MST),
        # i.e. 03:30 MDT, exactly 7 x 24 h later.
        pytest.param(utc(2027, 3, 7, 2, 30), datetime(2027, 3, 14, 9, 30, tzinfo=UTC), timedelta(days=7), id="gap"),
        # 01:30 on 2026-11-01 happens twice: the first (MDT) occurrence is the boundary.
        pytest.param(utc(2026, 10, 25, 1, 30), datetime(2026, 11, 1, 7, 30, tzinfo=UTC), timedelta(days=7), id="repeat"),
    ],
)
def test_reopen_deadline_is_the_same_local_time_seven_calendar_days_later(
    closed: datetime, boundary: datetime, elapsed: timedelta
) -> None:
    deadline = reopen_deadline(closed, days=7, timezone=DESK)
    assert deadline == boundary
    assert deadline - closed == elapsed
    assert deadline.tzinfo is not None and deadline.utcoffset() == timedelta(0)


def test_reopen_deadline_follows_the_configured_window_and_zone() -> None:
    closed = datetime(2026, 12, 2, 13, 0, tzinfo=UTC)  # 10:00 in Sao Paulo (no DST there)
    assert reopen_deadline(closed, days=3, timezone="America/Sao_Paulo") == datetime(2026, 12, 5, 13, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "closed_at", [pytest.param(CLOSED_AT, id="no-dst-change"), pytest.param(utc(2027, 3, 10, 10, 0), id="spring-forward")]
)
def test_a_reply_strictly_before_the_boundary_reopens_and_at_the_boundary_opens_a_related_case(
    closed_at: datetime,
) -> None:
    case = dataclasses.replace(CLOSED, closed_at=closed_at)
    boundary = reopen_deadline(closed_at, days=7, timezone=DESK)

    before = decide(facts(case, now=boundary - timedelta(microseconds=1)))
    at = decide(facts(case, now=boundary))

    assert isinstance(before, ReopenCase) and before.case == case and before.acknowledge
    assert "within 7 days of closing" in before.reason and "by message-id" in before.reason
    assert isinstance(at, OpenRelatedCase) and at.original == case and at.acknowledge
    assert "more than 7 days after closing" in at.reason


def test_replies_six_and_eight_days_after_closing() -> None:
    assert isinstance(decide(facts(CLOSED, now=CLOSED_AT + timedelta(days=6))), ReopenCase)
    assert isinstance(decide(facts(CLOSED, now=CLOSED_AT + timedelta(days=8))), OpenRelatedCase)


def test_a_shorter_configured_window_is_honoured() -> None:
    decision = decide(facts(CLOSED, now=CLOSED_AT + timedelta(days=3), reopen_window_days=2))
    assert isinstance(decision, OpenRelatedCase) and "more than 2 days" in decision.reason


# --- other statuses --------------------------------------------------------------------------------


def test_reply_to_a_closed_no_response_case_opens_a_related_case_however_soon() -> None:
    case = dataclasses.replace(CLOSED, status=CaseStatus.CLOSED_NO_RESPONSE)
    decision = decide(facts(case, now=CLOSED_AT + timedelta(minutes=1)))
    assert isinstance(decision, OpenRelatedCase) and decision.original == case
    assert "Closed No Response" in decision.reason


@pytest.mark.parametrize(
    "status",
    [s for s in CaseStatus if s not in (CaseStatus.CLOSED, CaseStatus.CLOSED_NO_RESPONSE, CaseStatus.DUPLICATE)],
)
def test_reply_to_an_open_case_is_an_update(status: CaseStatus) -> None:
    case = dataclasses.replace(OPEN, status=status)
    decision = decide(facts(case, now=CLOSED_AT))
    assert decision == AppendUpdate(decision.reason, case, escalate=False, notices=decision.notices)
    assert [(n.audience, n.template) for n in decision.notices] == [(Audience.ASSIGNEE, "staff.customer_update")]
    assert decision.reason.startswith("update; matched case 00001042 by message-id")


def test_reply_to_a_duplicate_goes_to_its_primary() -> None:
    decision = decide(facts(DUPLICATE, now=CLOSED_AT + timedelta(days=30), primary=PRIMARY))
    assert isinstance(decision, AppendUpdate) and decision.case == PRIMARY
    assert "duplicate of 00001000" in decision.reason


def test_reply_to_a_duplicate_whose_primary_is_closed_follows_the_primarys_window() -> None:
    primary = dataclasses.replace(PRIMARY, status=CaseStatus.CLOSED, closed_at=CLOSED_AT)
    soon = decide(facts(DUPLICATE, now=CLOSED_AT + timedelta(days=1), primary=primary))
    late = decide(facts(DUPLICATE, now=CLOSED_AT + timedelta(days=10), primary=primary))
    assert isinstance(soon, ReopenCase) and soon.case == primary
    assert isinstance(late, OpenRelatedCase) and late.original == primary


# --- machines ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("days", [1, 30])
def test_an_out_of_office_reply_never_reopens_or_opens_anything(days: int) -> None:
    msg = message("I am out of the office.", auto=AutoKind.AUTO_REPLY)
    decision = decide(facts(CLOSED, now=CLOSED_AT + timedelta(days=days), msg=msg))
    assert isinstance(decision, RecordAutoReply) and decision.case == CLOSED


def test_an_automatic_message_from_someone_not_on_the_case_is_ignored() -> None:
    msg = message("Auto: received", sender=EVE, auto=AutoKind.AUTO_GENERATED)
    assert isinstance(decide(facts(OPEN, now=CLOSED_AT, sender=EVE, msg=msg)), IgnoreMessage)


def test_a_bounce_is_recorded_even_when_it_matched_a_closed_case() -> None:
    msg = message("Undeliverable", auto=AutoKind.BOUNCE)
    assert isinstance(decide(facts(CLOSED, now=CLOSED_AT + timedelta(days=1), msg=msg)), RecordBounce)


def test_an_automatic_message_that_matched_nothing_is_ignored() -> None:
    msg = message("Out of office", auto=AutoKind.AUTO_REPLY)
    assert isinstance(decide(facts(None, now=CLOSED_AT, msg=msg)), IgnoreMessage)


# --- senders ----------------------------------------------------------------------------------------


def test_a_sender_not_allowed_on_the_case_is_held_even_with_our_message_id() -> None:
    decision = decide(facts(OPEN, now=CLOSED_AT, sender=EVE))
    assert isinstance(decision, HoldMessage)
    assert decision.reason.startswith("eve@outsider.example is not a participant of case 00001042")


def test_an_agent_released_message_from_a_non_participant_updates_the_case() -> None:
    assert isinstance(decide(facts(OPEN, now=CLOSED_AT, sender=EVE, released=True)), AppendUpdate)


def test_an_outsiders_ignored_tag_is_named_in_the_hold_reason() -> None:
    note = "subject tag [Case #00001042] ignored: eve@outsider.example is not allowed on that case"
    decision = decide(facts(None, now=CLOSED_AT, sender=EVE, match=Unmatched((note,))))
    assert isinstance(decision, HoldMessage)
    assert decision.reason == f"eve@outsider.example is not a designated contact of any organisation; {note}"


def test_an_mpoc_quoting_another_organisations_case_opens_a_new_case_and_says_the_tag_was_ignored() -> None:
    note = "subject tag [Case #00001042] ignored: joao@brisa.example.com.br is not allowed on that case"
    decision = decide(facts(None, now=CLOSED_AT, sender=JOAO, match=Unmatched((note,))))
    assert isinstance(decision, OpenCase) and decision.reason.endswith(note)


# --- technicians ------------------------------------------------------------------------------------


def test_a_technicians_reply_is_relayed_and_a_note_stays_internal() -> None:
    reply = decide(facts(OPEN, now=CLOSED_AT, sender=ANA, msg=message("Hi Pat, try this.", sender=ANA)))
    note = decide(facts(OPEN, now=CLOSED_AT, sender=ANA, msg=message("#note\nswitch is old", sender=ANA)))
    assert isinstance(reply, TechnicianReply) and reply.internal_note is False
    assert isinstance(note, TechnicianReply) and note.internal_note is True


def test_a_technicians_reply_on_a_duplicate_goes_to_the_primary() -> None:
    msg = message("Hi Pat", sender=ANA)
    decision = decide(facts(DUPLICATE, now=CLOSED_AT, sender=ANA, msg=msg, primary=PRIMARY))
    assert isinstance(decision, TechnicianReply) and decision.case == PRIMARY


@pytest.mark.parametrize("case", [CLOSED, dataclasses.replace(CLOSED, status=CaseStatus.CLOSED_NO_RESPONSE)])
def test_a_technicians_public_reply_on_a_closed_case_is_held_but_a_note_is_kept(case: CaseView) -> None:
    reply = decide(facts(case, now=CLOSED_AT, sender=ANA, msg=message("Hi Pat", sender=ANA)))
    note = decide(facts(case, now=CLOSED_AT, sender=ANA, msg=message("#note\nfollow-up", sender=ANA)))
    assert isinstance(reply, HoldMessage)
    assert reply.reason.startswith(f"technician reply on case 00001042, which is {case.status.value}: reopen it")
    assert isinstance(note, TechnicianReply) and note.internal_note is True


def test_a_technicians_out_of_office_is_recorded_never_relayed_to_the_customer() -> None:
    msg = message("I am on vacation.", sender=ANA, auto=AutoKind.AUTO_REPLY)
    decision = decide(facts(OPEN, now=CLOSED_AT, sender=ANA, msg=msg))
    assert isinstance(decision, RecordAutoReply) and decision.case == OPEN


def test_a_technicians_mail_without_any_case_reference_is_held() -> None:
    decision = decide(facts(None, now=CLOSED_AT, sender=ANA, msg=message("Hi", sender=ANA, subject="Chicago")))
    assert isinstance(decision, HoldMessage) and decision.tell_technician
    assert decision.reason.startswith("technician ana@support.example.com wrote without a case reference")


def test_a_customers_hash_note_is_just_an_update() -> None:
    decision = decide(facts(OPEN, now=CLOSED_AT, msg=message("#note to self: call Lee")))
    assert isinstance(decision, AppendUpdate) and decision.escalate is False


# --- escalation -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "subject", "sender"),
    [
        pytest.param("#escalate\nStill down.", "Re: [Case #00001042] Phones", PAT, id="first-line"),
        pytest.param("#Escalate please", "Re: [Case #00001042] Phones", LEE, id="first-line-participant"),
        pytest.param("Still down.", "ESCALATE Re: [Case #00001042] Phones", PAT, id="subject"),
    ],
)
def test_an_allowed_sender_asks_to_escalate(text: str, subject: str, sender: SenderView) -> None:
    msg = message(text, sender=sender, subject=subject)
    decision = decide(facts(OPEN, now=CLOSED_AT, sender=sender, msg=msg))
    assert isinstance(decision, AppendUpdate) and decision.escalate is True


def test_escalate_not_on_the_first_line_does_not_escalate() -> None:
    msg = message("Thanks.\n#escalate")
    decision = decide(facts(OPEN, now=CLOSED_AT, msg=msg))
    assert isinstance(decision, AppendUpdate) and decision.escalate is False


def test_a_sender_not_allowed_on_the_case_cannot_escalate() -> None:
    msg = message("#escalate now", sender=EVE)
    assert isinstance(decide(facts(OPEN, now=CLOSED_AT, sender=EVE, msg=msg)), HoldMessage)


# --- one-click unsubscribe: rule 1, before everything else -----------------------------------------


MASTER = dataclasses.replace(OPEN, id=30, number=2000, kind=CaseKind.MASTER, priority=Priority.P1G)


def _one_click(scope: str, **extra: object) -> Facts:
    request = UnsubscribeRequest(recipient=f"support+unsub-{scope}-mac@support.example.com", scope=scope, mac="mac")
    return facts(None, now=CLOSED_AT, unsubscribe=request, **extra)


def test_a_one_click_unsubscribe_is_a_request_never_a_case_even_when_it_is_a_bounce() -> None:
    bounce = message(auto=AutoKind.BOUNCE)
    decision = decide(_one_click("m", unsubscribe_genuine=True, msg=bounce))
    assert decision == Unsubscribe(
        "pat@acme.example unsubscribed from maintenance notices (List-Unsubscribe)",
        address="pat@acme.example", maintenance=True,
    )


def test_a_token_not_issued_to_the_sender_changes_nothing() -> None:
    decision = decide(_one_click("c2000", unsubscribe_case=MASTER))
    assert isinstance(decision, Unsubscribe) and decision.address == "" and decision.case is None
    assert decision.reason == "unsubscribe request from pat@acme.example with a token not issued to it; nothing changed"


def test_a_master_case_unsubscribe_is_confirmed_unless_automatic_and_an_unknown_case_changes_nothing() -> None:
    human = decide(_one_click("c2000", unsubscribe_genuine=True, unsubscribe_case=MASTER))
    assert human == Unsubscribe(
        "pat@acme.example unsubscribed from master case 00002000 (List-Unsubscribe)",
        address="pat@acme.example", case=MASTER, confirm=True,
    )
    machine = decide(_one_click("c2000", unsubscribe_genuine=True, unsubscribe_case=MASTER, msg=message(auto=AutoKind.AUTO_REPLY)))
    assert isinstance(machine, Unsubscribe) and machine.case == MASTER and not machine.confirm
    unknown = decide(_one_click("c2001", unsubscribe_genuine=True))
    assert unknown == Unsubscribe("unsubscribe request for unknown master case 2001; nothing changed")
