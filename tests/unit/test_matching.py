"""`rules.matching` with plain values: which case a message belongs to, in SPEC.md §3's order, and who may use a tag."""

from __future__ import annotations

import dataclasses

import pytest

from mailcase.domain import (
    AutoKind,
    CaseStatus,
    CaseView,
    InboundMessage,
    Priority,
    Role,
    SenderView,
)
from mailcase.rules.matching import (
    MAX_REFERENCES,
    Matched,
    MatchRule,
    Unmatched,
    match_case,
    sender_allowed,
    thread_ids,
)

ACME, BRISA = 1, 2
CASE = CaseView(
    id=10,
    number=1042,
    organisation_id=ACME,
    status=CaseStatus.IN_PROGRESS,
    priority=Priority.P4,
    requester="pat@acme.example",
    participants=frozenset({"pat@acme.example", "lee@acme.example"}),
)
OTHER = dataclasses.replace(CASE, id=11, number=1043, requester="sam@acme.example", participants=frozenset())
PAT = SenderView("pat@acme.example", contact_id=1, organisation_id=ACME, roles=frozenset({Role.PRIMARY}))
LEE = SenderView("lee@acme.example", contact_id=2, organisation_id=ACME)  # employee, copied on CASE
SAM = SenderView("sam@acme.example", contact_id=3, organisation_id=ACME, roles=frozenset({Role.SECONDARY}))
OPS = SenderView("ops@acme.example", contact_id=4, organisation_id=ACME, roles=frozenset({Role.MAINTENANCE}))
JOAO = SenderView("joao@brisa.example.com.br", contact_id=5, organisation_id=BRISA, roles=frozenset({Role.PRIMARY}))
ANA = SenderView("ana@support.example.com", is_technician=True)
EVE = SenderView("eve@outsider.example")
OUR_ACK = "<mc.ack@mailcase.localhost>"
OUR_REPLY = "<mc.reply@mailcase.localhost>"
PATS_FIRST = "<first@acme.example>"


def message(
    *, subject: str = "Re: Phones", in_reply_to: str = "", references: tuple[str, ...] = (), message_id: str = "<m@x>"
) -> InboundMessage:
    return InboundMessage(
        message_id=message_id,
        in_reply_to=in_reply_to,
        references=references,
        from_address="pat@acme.example",
        from_name="Pat",
        to=("support@support.example.com",),
        cc=(),
        reply_to=(),
        subject=subject,
        text="hello",
        new_text="hello",
        date=None,
        auto_kind=AutoKind.HUMAN,
        auto_reason="",
        content_digest="d",
        raw_sha256="r",
    )


def match(msg: InboundMessage, sender: SenderView = PAT, **facts: object):
    values: dict[str, object] = {
        "our_ids": {},
        "customer_ids": {},
        "token_case_id": None,
        "tagged_cases": [],
        "cases": {CASE.id: CASE, OTHER.id: OTHER},
    }
    values.update(facts)
    return match_case(msg, sender, **values)  # type: ignore[arg-type]


# --- thread ids --------------------------------------------------------------------------------


def test_thread_ids_are_newest_first_in_reply_to_then_references_backwards_without_repeats() -> None:
    msg = message(in_reply_to="<c>", references=("<a>", "<b>", "<c>"), message_id="<self>")
    assert thread_ids(msg) == ("<c>", "<b>", "<a>")


def test_thread_ids_skip_the_message_own_id_and_are_capped() -> None:
    references = tuple(f"<r{i}@x>" for i in range(300)) + ("<self>",)
    ids = thread_ids(message(references=references, message_id="<self>"))
    assert len(ids) == MAX_REFERENCES
    assert ids[0] == "<r299@x>" and "<self>" not in ids


# --- the order of the rules ------------------------------------------------------------------------


def test_our_message_id_in_in_reply_to_wins_over_token_and_tag() -> None:
    msg = message(subject="Re: [Case #00001043] other", in_reply_to=OUR_ACK)
    result = match(msg, our_ids={OUR_ACK: CASE.id}, token_case_id=OTHER.id, tagged_cases=[OTHER])
    assert result == Matched(CASE.id, MatchRule.MESSAGE_ID, f"answers our message {OUR_ACK}")


def test_our_message_id_deep_in_references_still_matches_when_in_reply_to_is_foreign() -> None:
    msg = message(in_reply_to="<colleague@acme.example>", references=(OUR_ACK, "<x@y>", "<colleague@acme.example>"))
    result = match(msg, our_ids={OUR_ACK: CASE.id})
    assert isinstance(result, Matched) and (result.case_id, result.rule) == (CASE.id, MatchRule.MESSAGE_ID)


def test_the_newest_of_our_ids_decides_when_a_thread_names_two_cases() -> None:
    msg = message(in_reply_to=OUR_REPLY, references=(OUR_ACK, OUR_REPLY))
    result = match(msg, our_ids={OUR_ACK: OTHER.id, OUR_REPLY: CASE.id})
    assert isinstance(result, Matched) and result.case_id == CASE.id


def test_a_valid_reply_token_matches_without_thread_headers_or_tag() -> None:
    result = match(message(subject="A completely new subject"), token_case_id=CASE.id)
    assert isinstance(result, Matched) and (result.case_id, result.rule) == (CASE.id, MatchRule.REPLY_TOKEN)


def test_a_reply_token_wins_over_a_subject_tag_naming_another_case() -> None:
    result = match(message(subject="Re: [Case #00001043]"), token_case_id=CASE.id, tagged_cases=[OTHER])
    assert isinstance(result, Matched) and result.rule is MatchRule.REPLY_TOKEN and result.case_id == CASE.id


def test_subject_tag_matches_for_an_allowed_sender() -> None:
    result = match(message(subject="Re: [Case #00001042] Phones"), tagged_cases=[CASE])
    assert result == Matched(CASE.id, MatchRule.SUBJECT_TAG, "subject tag [Case #00001042]")


def test_subject_tag_from_an_outsider_is_ignored_and_noted() -> None:
    result = match(message(subject="Re: [Case #00001042] Phones"), EVE, tagged_cases=[CASE])
    assert result == Unmatched(
        ("subject tag [Case #00001042] ignored: eve@outsider.example is not allowed on that case",)
    )


def test_the_first_tag_the_sender_is_allowed_on_wins() -> None:
    brisa_case = dataclasses.replace(OTHER, id=12, number=7, organisation_id=BRISA, requester="joao@brisa.example.com.br")
    result = match(message(subject="[Case #00000007] [Case #00001042]"), PAT, tagged_cases=[brisa_case, CASE])
    assert isinstance(result, Matched) and result.case_id == CASE.id


def test_a_colleague_answering_the_customers_own_message_matches_when_allowed() -> None:
    msg = message(subject="Re: Phones", in_reply_to=PATS_FIRST)
    allowed = match(msg, LEE, customer_ids={PATS_FIRST: CASE.id})
    refused = match(msg, EVE, customer_ids={PATS_FIRST: CASE.id})
    assert isinstance(allowed, Matched) and allowed.rule is MatchRule.CUSTOMER_THREAD
    assert refused == Unmatched()


def test_our_ids_are_looked_at_before_a_customers_earlier_message() -> None:
    msg = message(in_reply_to=PATS_FIRST, references=(OUR_ACK, PATS_FIRST))
    result = match(msg, customer_ids={PATS_FIRST: OTHER.id}, our_ids={OUR_ACK: CASE.id})
    assert isinstance(result, Matched) and (result.case_id, result.rule) == (CASE.id, MatchRule.MESSAGE_ID)


def test_no_reference_no_token_no_tag_is_unmatched() -> None:
    assert match(message(subject="Phones down", in_reply_to="<unknown@x>")) == Unmatched()


def test_the_subject_alone_never_matches_without_a_tag() -> None:
    """A reply whose subject equals the case's subject but carries no tag, id or token is a new message."""
    assert match(message(subject="Re: Phones down at the Chicago office")) == Unmatched()


# --- who may write on a case -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sender", "allowed"),
    [
        pytest.param(PAT, True, id="requester"),
        pytest.param(LEE, True, id="participant"),
        pytest.param(SAM, True, id="mpoc-of-the-organisation"),
        pytest.param(ANA, True, id="technician"),
        pytest.param(OPS, False, id="same-organisation-not-mpoc-not-copied"),
        pytest.param(JOAO, False, id="mpoc-of-another-organisation"),
        pytest.param(EVE, False, id="outsider"),
    ],
)
def test_sender_allowed_on_a_case(sender: SenderView, allowed: bool) -> None:
    assert sender_allowed(CASE, sender) is allowed


def test_an_mpoc_is_not_allowed_on_a_case_without_an_organisation() -> None:
    orphan = dataclasses.replace(CASE, organisation_id=None, requester="x@y", participants=frozenset())
    assert sender_allowed(orphan, SAM) is False
