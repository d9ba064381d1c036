"""Which notices each route of `rules.decide` causes, with plain values: the rule that decides also
names who is told, with which template, key and context (the desk only resolves the audience)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from mailcase.domain import (
    Audience,
    AutoKind,
    CaseKind,
    CaseStatus,
    CaseView,
    InboundMessage,
    NoticeIntent,
    Priority,
    Role,
    SenderPolicy,
    SenderView,
)
from mailcase.rules.authentication import Authentication
from mailcase.rules.decide import (
    AppendUpdate,
    Decision,
    Facts,
    HoldMessage,
    IgnoreMessage,
    OpenCase,
    OpenRelatedCase,
    RecordAutoReply,
    ReopenCase,
    decide,
)
from mailcase.rules.matching import Matched, MatchRule, Unmatched

NOW = datetime(2026, 12, 2, 17, 0, tzinfo=UTC)
CASE = CaseView(
    id=10, number=1042, organisation_id=1, status=CaseStatus.IN_PROGRESS, priority=Priority.P4,
    requester="pat@acme.example", participants=frozenset({"pat@acme.example"}), assignee="ana@support.example.com",
    team="support",
)
PAT = SenderView("pat@acme.example", contact_id=1, organisation_id=1, roles=frozenset({Role.PRIMARY}))
ANA = SenderView("ana@support.example.com", is_technician=True)
EVE = SenderView("eve@acme.example")


def message(sender: SenderView = PAT, *, subject: str = "Phones down", auto: AutoKind = AutoKind.HUMAN) -> InboundMessage:
    return InboundMessage(
        message_id="<m@acme.example>", in_reply_to="", references=(), from_address=sender.address, from_name="",
        to=("support@support.example.com",), cc=(), reply_to=(), subject=subject, text="The phones dropped.", new_text="The phones dropped.", date=None,
        content_digest="d", raw_sha256="r",
        auto_kind=auto, auto_reason="" if auto is AutoKind.HUMAN else "auto-submitted: auto-replied",
    )


def facts(case: CaseView | None = None, *, sender: SenderView = PAT, **extra: object) -> Facts:
    msg = extra.pop("msg", None) or message(sender)
    return Facts(
        message=msg,  # type: ignore[arg-type]
        sender=sender,
        match=Matched(case.id, MatchRule.MESSAGE_ID, "answers ours") if case else Unmatched(),
        now=NOW,
        case=case,
        **extra,  # type: ignore[arg-type]
    )


def told(decision: Decision) -> list[tuple[Audience, str, str]]:
    notices: tuple[NoticeIntent, ...] = getattr(decision, "notices", ())
    return [(n.audience, n.template, n.idempotency_key) for n in notices]


def test_a_new_case_from_an_mpoc_acknowledges_the_requester_and_tells_the_team() -> None:
    decision = decide(facts())
    assert isinstance(decision, OpenCase)
    assert told(decision) == [
        (Audience.REQUESTER, "customer.ack", "customer.ack:{case}:ack:{now}"),
        (Audience.TEAM, "staff.new_case", "staff.new_case:{case}"),
    ]
    ack, staff = decision.notices
    assert (ack.auto_submitted, ack.loop_guarded, ack.due_at, dict(ack.context)) == ("auto-replied", True, NOW, {})
    assert (staff.auto_submitted, staff.loop_guarded, dict(staff.context)) == ("auto-generated", False, {})
    assert staff.context_keys == ("excerpt", "response_due_at", "attachments")


def test_a_macd_request_says_which_in_its_acknowledgement() -> None:
    decision = decide(facts(msg=message(subject="MACD: add a line")))
    assert isinstance(decision, OpenCase) and decision.kind is CaseKind.MACD_STANDARD
    assert dict(decision.notices[0].context) == {"macd": "standard"}


def test_a_withheld_acknowledgement_leaves_only_the_teams_notice_saying_why() -> None:
    decision = decide(facts(auto_replies_last_hour=30))
    assert isinstance(decision, OpenCase) and not decision.acknowledge and decision.withheld
    assert told(decision) == [(Audience.TEAM, "staff.new_case", "staff.new_case:{case}")]
    assert dict(decision.notices[0].context) == {
        "customer_not_told": f"the customer was not sent the acknowledgement: {decision.withheld}"
    }


def test_an_update_tells_the_assignee_only() -> None:
    decision = decide(facts(CASE))
    assert isinstance(decision, AppendUpdate)
    assert told(decision) == [(Audience.ASSIGNEE, "staff.customer_update", "staff.customer_update:{case}:{now}")]
    assert decision.notices[0].context_keys == ("from_address", "excerpt", "attachments")


def test_a_reopen_tells_the_customer_and_the_assignee() -> None:
    closed = dataclasses.replace(CASE, status=CaseStatus.CLOSED, closed_at=NOW)
    decision = decide(facts(closed))
    assert isinstance(decision, ReopenCase)
    assert told(decision) == [
        (Audience.REQUESTER, "customer.reopened", "customer.reopened:{case}:reopened:{now}"),
        (Audience.ASSIGNEE, "staff.customer_update", "staff.customer_update:{case}:{now}"),
    ]


def test_a_withheld_reopen_notice_is_named_in_the_assignees_notice() -> None:
    closed = dataclasses.replace(CASE, status=CaseStatus.CLOSED, closed_at=NOW)
    decision = decide(facts(closed, auto_replies_last_day=200))
    assert isinstance(decision, ReopenCase) and not decision.acknowledge
    assert told(decision) == [(Audience.ASSIGNEE, "staff.customer_update", "staff.customer_update:{case}:{now}")]
    assert dict(decision.notices[0].context) == {
        "customer_not_told": f"the customer was not sent the reopen notice: {decision.withheld}"
    }


def test_a_reply_to_a_closed_no_response_case_opens_a_related_case_acknowledged_with_its_number() -> None:
    stale = dataclasses.replace(CASE, status=CaseStatus.CLOSED_NO_RESPONSE, closed_at=NOW)
    decision = decide(facts(stale))
    assert isinstance(decision, OpenRelatedCase)
    assert [n.template for n in decision.notices] == ["customer.ack", "staff.new_case"]
    assert [dict(n.context) for n in decision.notices] == [{"related_number": 1042}, {"related_number": 1042}]


def test_an_auto_reply_tells_nobody() -> None:
    decision = decide(facts(CASE, msg=message(auto=AutoKind.AUTO_REPLY)))
    assert isinstance(decision, RecordAutoReply) and told(decision) == []
    assert isinstance(decide(facts(msg=message(auto=AutoKind.AUTO_REPLY))), IgnoreMessage)


def test_a_non_mpoc_of_a_known_organisation_gets_the_one_polite_notice() -> None:
    decision = decide(facts(sender=EVE, sender_organisation_known=True))
    assert isinstance(decision, HoldMessage) and decision.notify_sender
    assert told(decision) == [(Audience.SENDER, "customer.non_mpoc", "customer.non_mpoc:{address}:{held}")]
    assert decision.notices[0].loop_guarded


def test_a_stranger_gets_nothing() -> None:
    decision = decide(facts(sender=EVE))
    assert isinstance(decision, HoldMessage) and told(decision) == []


def test_a_technicians_mail_without_a_case_reference_tells_them_why_it_was_held() -> None:
    decision = decide(facts(sender=ANA))
    assert isinstance(decision, HoldMessage) and decision.tell_technician
    assert told(decision) == [(Audience.SENDER, "staff.reply_not_sent", "staff.reply_not_sent:{held}")]
    assert dict(decision.notices[0].context) == {"reason": decision.reason}
    assert not decision.notices[0].loop_guarded


def test_an_unproven_technician_tells_the_person_claimed_at_the_address_on_file() -> None:
    decision = decide(facts(CASE, sender=ANA, authentication=Authentication(policy=SenderPolicy.MONITOR)))
    assert isinstance(decision, HoldMessage) and decision.notify_claimed
    assert told(decision) == [
        (Audience.CLAIMED, "{role}.sender_unverified", "{role}.sender_unverified:{address}:{held}")
    ]
