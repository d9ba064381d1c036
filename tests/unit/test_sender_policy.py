"""The sender policy as pure rules: enforce | monitor | off, technicians' proof, per-technician reply tokens, From: with zero or several addresses."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from mailcase.domain import (
    AutoKind,
    CaseStatus,
    CaseView,
    InboundMessage,
    MethodResult,
    Priority,
    Role,
    SenderPolicy,
    SenderVerdict,
    SenderView,
)
from mailcase.rules.authentication import Authentication, technician_proof
from mailcase.rules.decide import (
    AppendUpdate,
    Facts,
    HoldMessage,
    OpenCase,
    SubscriptionCommand,
    TechnicianReply,
    decide,
)
from mailcase.rules.matching import Matched, MatchRule, Unmatched
from mailcase.rules.tokens import case_from_address, staff_case_from_address, staff_reply_address

NOW = datetime(2026, 12, 1, 17, 0, tzinfo=UTC)
SUPPORT = "support@support.example.com"
SECRET = b"unit-test-secret"
PAT = SenderView("pat@acme.example", contact_id=1, organisation_id=1, roles=frozenset({Role.PRIMARY}))
ANA = SenderView("ana@support.example.com", is_technician=True)
BOB = SenderView("bob@globex.example", contact_id=9, organisation_id=2, roles=frozenset({Role.PRIMARY}))
CASE = CaseView(id=7, number=1042, organisation_id=1, status=CaseStatus.IN_PROGRESS, priority=Priority.P4,
                requester=PAT.address, participants=frozenset({PAT.address, BOB.address}))
PASS = SenderVerdict("authentication-results:mx.support.example.com", "acme.example", "pass", "reject",
                     (MethodResult("dmarc", "pass", "acme.example", "reject"),))
FAIL = dataclasses.replace(PASS, dmarc="fail", results=(MethodResult("dmarc", "fail", "acme.example", "reject"),))
NONE = SenderVerdict("none", "acme.example")


def message(sender: SenderView = PAT, *, subject: str = "Phones down", text: str = "All phones are down.",
            authors: tuple[str, ...] | None = None) -> InboundMessage:
    return InboundMessage(
        message_id="<m@x>", in_reply_to="", references=(), from_address=sender.address, from_name="", to=(SUPPORT,),
        cc=(), reply_to=(), subject=subject, text=text, new_text=text, date=None, auto_kind=AutoKind.HUMAN,
        auto_reason="", content_digest="d", raw_sha256="r", from_addresses=authors,
    )


def facts(msg: InboundMessage, sender: SenderView, *, policy: SenderPolicy, verdict: SenderVerdict = NONE,
          case: CaseView | None = None, rule: MatchRule = MatchRule.MESSAGE_ID, token_case: int | None = None,
          organisation_domain: bool = True) -> Facts:
    domain = sender.address.rpartition("@")[2]
    return Facts(
        message=msg, sender=sender,
        match=Matched(case.id, rule, "test") if case else Unmatched(), now=NOW, case=case,
        authentication=Authentication(
            policy=policy, verdict=dataclasses.replace(verdict, from_domain=domain), from_domain=domain,
            organisation_domain=organisation_domain and not sender.is_technician,
            our_domain=sender.is_technician, technician_token_case=token_case,
        ),
    )


# --- an organisation's domain failing DMARC --------------------------------------------------------


def test_enforce_holds_a_failing_mpoc_and_tells_the_claimed_contact() -> None:
    decision = decide(facts(message(), PAT, policy=SenderPolicy.ENFORCE, verdict=FAIL))
    assert isinstance(decision, HoldMessage)
    assert decision.reason.startswith("sender not authenticated (dmarc=fail, p=reject, d=acme.example)")
    assert (decision.notify_claimed, decision.notify_sender, decision.unauthenticated) == (True, False, True)


@pytest.mark.parametrize("policy", [SenderPolicy.MONITOR, SenderPolicy.OFF])
def test_monitor_and_off_let_the_failing_mpoc_open_the_case(policy: SenderPolicy) -> None:
    assert isinstance(decide(facts(message(), PAT, policy=policy, verdict=FAIL)), OpenCase)


def test_no_aligned_pass_under_a_reject_policy_is_held_but_a_pass_opens() -> None:
    temperror = dataclasses.replace(FAIL, dmarc="temperror")
    assert isinstance(decide(facts(message(), PAT, policy=SenderPolicy.ENFORCE, verdict=temperror)), HoldMessage)
    assert isinstance(decide(facts(message(), PAT, policy=SenderPolicy.ENFORCE, verdict=PASS)), OpenCase)
    # Nothing known (no trusted header, no check): a plain case still opens in enforce.
    assert isinstance(decide(facts(message(), PAT, policy=SenderPolicy.ENFORCE, verdict=NONE)), OpenCase)


# --- what needs a pass in enforce, whatever the domain publishes -----------------------------------


def test_macd_escalate_and_subscription_need_a_pass_in_enforce() -> None:
    macd = message(subject="MACD: add 40 licences")
    escalate = message(subject="Re: [Case #00001042] Phones", text="#escalate\nStill down.")
    subscribe = message(subject="subscribe 00001042")
    for msg, case, ok in ((macd, None, OpenCase), (escalate, CASE, AppendUpdate), (subscribe, None, SubscriptionCommand)):
        held = decide(facts(msg, PAT, policy=SenderPolicy.ENFORCE, verdict=NONE, case=case))
        assert isinstance(held, HoldMessage) and "needs an authenticated sender" in held.reason, held
        assert isinstance(decide(facts(msg, PAT, policy=SenderPolicy.ENFORCE, verdict=PASS, case=case)), ok)
        assert isinstance(decide(facts(msg, PAT, policy=SenderPolicy.MONITOR, verdict=NONE, case=case)), ok)


def test_a_released_message_is_vouched_for_by_the_agent() -> None:
    released = dataclasses.replace(facts(message(), PAT, policy=SenderPolicy.ENFORCE, verdict=FAIL), released=True)
    assert isinstance(decide(released), OpenCase)


# --- reply tokens are not identity -----------------------------------------------------------------


def test_a_token_with_failing_dmarc_from_another_organisation_is_held_unless_off() -> None:
    for policy in (SenderPolicy.ENFORCE, SenderPolicy.MONITOR):
        decision = decide(facts(message(BOB), BOB, policy=policy, verdict=FAIL, case=CASE, rule=MatchRule.REPLY_TOKEN))
        assert isinstance(decision, HoldMessage), policy
    off = decide(facts(message(BOB), BOB, policy=SenderPolicy.OFF, verdict=FAIL, case=CASE, rule=MatchRule.REPLY_TOKEN))
    assert isinstance(off, AppendUpdate)
    passing = decide(facts(message(BOB), BOB, policy=SenderPolicy.MONITOR, verdict=PASS, case=CASE, rule=MatchRule.REPLY_TOKEN))
    assert isinstance(passing, AppendUpdate)


# --- technicians ----------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", list(SenderPolicy))
def test_a_technician_without_proof_is_held_in_every_mode_and_told(policy: SenderPolicy) -> None:
    decision = decide(facts(message(ANA, text="Click here"), ANA, policy=policy, verdict=NONE, case=CASE))
    assert isinstance(decision, HoldMessage) and decision.notify_claimed
    assert "technician ana@support.example.com not proven on case 00001042" in decision.reason


@pytest.mark.parametrize("policy", list(SenderPolicy))
def test_a_technician_with_their_token_for_this_case_replies_in_every_mode(policy: SenderPolicy) -> None:
    decision = decide(facts(message(ANA, text="Try this"), ANA, policy=policy, case=CASE, token_case=1042))
    assert isinstance(decision, TechnicianReply) and "technician reply token" in decision.reason
    other_case = decide(facts(message(ANA, text="Try this"), ANA, policy=policy, case=CASE, token_case=999))
    assert isinstance(other_case, HoldMessage)


def test_a_technician_is_proven_by_a_pass_for_our_domain_or_an_authenticated_submission() -> None:
    ours = Authentication(verdict=dataclasses.replace(PASS, from_domain="support.example.com"), our_domain=True)
    assert technician_proof(ours, 1042) is not None
    assert technician_proof(dataclasses.replace(ours, our_domain=False), 1042) is None
    assert technician_proof(Authentication(submitted_authenticated=True), 1042) == "authenticated submission"
    assert technician_proof(Authentication(), 1042) is None


def test_a_technician_note_without_proof_is_held_too() -> None:
    note = decide(facts(message(ANA, text="#note\ninternal"), ANA, policy=SenderPolicy.OFF, case=CASE))
    assert isinstance(note, HoldMessage)


# --- per-technician reply tokens -------------------------------------------------------------------


def test_a_staff_token_proves_its_technician_and_case_only() -> None:
    address = staff_reply_address(SUPPORT, 1042, ANA.address, SECRET)
    assert address.startswith("support+s1042-") and address.endswith("@support.example.com")
    assert staff_case_from_address(address, SUPPORT, SECRET, author=ANA.address) == 1042
    assert staff_case_from_address(address.upper(), SUPPORT, SECRET, author="ANA@support.example.com") == 1042
    assert staff_case_from_address(address, SUPPORT, SECRET, author="bruno@support.example.com") is None
    assert staff_case_from_address(address.replace("s1042", "s1043"), SUPPORT, SECRET, author=ANA.address) is None
    assert staff_case_from_address(address, SUPPORT, b"another-secret", author=ANA.address) is None
    assert case_from_address(address, SUPPORT, SECRET) is None  # not a customer token either


# --- From: ----------------------------------------------------------------------------------------


def test_zero_or_several_from_addresses_are_held_with_that_reason() -> None:
    none = decide(facts(message(authors=()), PAT, policy=SenderPolicy.OFF))
    several = decide(facts(message(authors=("pat@acme.example", "sam@acme.example")), PAT, policy=SenderPolicy.OFF))
    assert isinstance(none, HoldMessage) and "From: has no valid RFC 5322 address" in none.reason
    assert isinstance(several, HoldMessage) and "From: has 2 addresses (pat@acme.example, sam@acme.example)" in several.reason


# --- configuration --------------------------------------------------------------------------------


def test_the_sender_authentication_keys_are_validated_and_named() -> None:
    from mailcase.config import load_config
    from mailcase.errors import ConfigError

    settings = load_config(None, {"MAILCASE_SECURITY__TRUSTED_AUTHSERV_IDS": "mx.support.example.com, filter.example"})
    assert settings.security.sender_policy == "monitor"  # the default: an upgraded desk is not cut off
    assert settings.security.trusted_authserv_ids == ("mx.support.example.com", "filter.example")
    for key, value, named in (
        ("SENDER_POLICY", "strict", "security.sender_policy"),
        ("VERIFY", "spf", "security.verify"),
        ("DNS_TIMEOUT_SECONDS", "0", "security.dns_timeout_seconds"),
        ("DNS_SERVERS", "127.0.0.1:dns", "security.dns_servers[0]"),
    ):
        with pytest.raises(ConfigError) as raised:
            load_config(None, {f"MAILCASE_SECURITY__{key}": value})
        assert raised.value.key == named
