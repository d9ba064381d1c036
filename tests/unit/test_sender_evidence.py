"""Sender evidence: trusted Authentication-Results (RFC 8601 §5), our own DKIM check through a stub resolver, DMARC alignment, and one strict reading of From:."""

from __future__ import annotations

from pathlib import Path

import dkim
import pytest

from mailcase.ingest.authentication import DnsTemporaryError, trusted_results, verify_dkim
from mailcase.ingest.parse import parse_message
from mailcase.rules.authentication import (
    PublicSuffixes,
    aligned,
    organisational_domain,
    parse_dmarc_record,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
AUTH = FIXTURES / "mail" / "authentication"
KEYS = FIXTURES / "dkim"
OURS = ("mx.support.example.com", "filter.support.example.com")
SUFFIXES = PublicSuffixes.from_text("// test list\ncom\nexample\nuk\nco.uk\n*.ck\n!www.ck\n")


def verdict_of(fixture: str, trusted: tuple[str, ...] = OURS):  # type: ignore[no-untyped-def]
    message = parse_message((AUTH / fixture).read_bytes())
    return trusted_results(message.headers, trusted, from_domain=message.from_address.rpartition("@")[2])


# --- Authentication-Results from our own MTA ------------------------------------------------------


def test_a_trusted_pass_is_read_with_its_dkim_domain_and_spf_mailfrom() -> None:
    verdict = verdict_of("trusted_pass.eml")
    assert verdict is not None
    assert (verdict.dmarc, verdict.dmarc_policy, verdict.from_domain) == ("pass", "reject", "acme.example")
    assert verdict.source == "authentication-results:mx.support.example.com"
    by_method = {r.method: r for r in verdict.results}
    assert (by_method["dkim"].result, by_method["dkim"].domain) == ("pass", "acme.example")
    assert (by_method["spf"].result, by_method["spf"].domain) == ("pass", "acme.example")


def test_a_trusted_fail_is_a_fail_with_the_published_policy() -> None:
    verdict = verdict_of("trusted_fail.eml")
    assert verdict is not None and (verdict.dmarc, verdict.dmarc_policy) == ("fail", "reject")
    assert "dmarc=fail (p=reject) header.from=acme.example" in verdict.summary()


def test_a_header_the_sender_added_below_a_received_we_did_not_add_is_ignored() -> None:
    # The forger's "dkim=pass; dmarc=pass" carries our authserv-id but sits below their relay's Received:.
    verdict = verdict_of("forged_below_our_mta.eml")
    assert verdict is not None and verdict.dmarc == "fail"
    assert (verdict.result("dkim"), verdict.result("spf")) == ("none", "none")  # none of the forgery's results


def test_a_milters_header_just_below_our_own_received_is_trusted() -> None:
    # OpenDKIM/OpenDMARC behind Postfix: above the outside world's Received:, below Postfix's own.
    verdict = verdict_of("milter_below_our_received.eml")
    assert verdict is not None and (verdict.dmarc, verdict.result("dkim")) == ("pass", "pass")


def test_without_a_received_field_by_our_mta_no_header_is_trusted() -> None:
    assert verdict_of("no_received_by_our_mta.eml") is None


def test_of_several_trusted_instances_the_topmost_wins_per_method() -> None:
    verdict = verdict_of("several_instances.eml")
    assert verdict is not None
    assert (verdict.dmarc, verdict.result("dkim")) == ("fail", "fail")
    assert verdict.result("spf") == "pass"  # only the lower instance reported SPF


def test_an_unknown_authserv_id_is_no_evidence() -> None:
    assert verdict_of("unknown_authserv_id.eml") is None
    assert verdict_of("trusted_pass.eml", trusted=()) is None


def test_arc_sealed_forwarding_records_arc_but_never_reads_the_forwarders_results_as_ours() -> None:
    verdict = verdict_of("arc_sealed_forwarding.eml")
    assert verdict is not None
    # ARC-Authentication-Results (the forwarder's dmarc=pass) is not our MTA's verdict.
    assert (verdict.dmarc, verdict.result("arc")) == ("fail", "pass")


# --- our own DKIM check with a stub resolver -------------------------------------------------------


class StubResolver:
    """The DNS a test describes: TXT records by name, or a timeout for every lookup."""

    def __init__(self, records: dict[str, list[str]], *, timeout: bool = False) -> None:
        self.records = records
        self.timeout = timeout
        self.asked: list[str] = []

    def txt(self, name: str) -> list[str] | None:
        self.asked.append(name)
        if self.timeout:
            raise DnsTemporaryError(f"timeout for {name}")
        return self.records.get(name)


MESSAGE = (
    b"From: Pat Doe <pat@acme.example>\r\nTo: support@support.example.com\r\n"
    b"Subject: MACD: add 40 licences\r\nMessage-ID: <dkim-1@acme.example>\r\n"
    b"Date: Tue, 01 Dec 2026 10:00:00 -0700\r\n\r\nPlease add 40 licences.\r\n"
)


def signed(message: bytes = MESSAGE, key: str = "acme.key", domain: bytes = b"acme.example") -> bytes:
    signature = dkim.sign(
        message, b"sel", domain, (KEYS / key).read_bytes(), include_headers=[b"from", b"to", b"subject", b"message-id"]
    )
    return signature + message


def dns(policy: str = "reject", key: str = "acme.pub") -> dict[str, list[str]]:
    records = {"sel._domainkey.acme.example": [f"v=DKIM1; k=rsa; p={(KEYS / key).read_text().strip()}"]}
    if policy:
        records["_dmarc.acme.example"] = [f"v=DMARC1; p={policy}; rua=mailto:d@acme.example"]
    return records


def test_a_signature_that_verifies_and_aligns_passes_dmarc() -> None:
    verdict = verify_dkim(signed(), from_domain="acme.example", resolver=StubResolver(dns()), suffixes=SUFFIXES)
    assert (verdict.dmarc, verdict.dmarc_policy, verdict.result("dkim"), verdict.source) == ("pass", "reject", "pass", "dkim")


def test_a_tampered_body_fails() -> None:
    tampered = signed().replace(b"40 licences", b"400 licences")
    verdict = verify_dkim(tampered, from_domain="acme.example", resolver=StubResolver(dns()), suffixes=SUFFIXES)
    assert (verdict.dmarc, verdict.result("dkim")) == ("fail", "fail")


def test_a_signature_made_with_another_key_fails() -> None:
    verdict = verify_dkim(signed(key="other.key"), from_domain="acme.example", resolver=StubResolver(dns()), suffixes=SUFFIXES)
    assert (verdict.dmarc, verdict.result("dkim")) == ("fail", "fail")


def test_a_missing_key_record_fails_and_a_missing_dmarc_record_is_none() -> None:
    no_key = {"_dmarc.acme.example": ["v=DMARC1; p=quarantine"]}
    verdict = verify_dkim(signed(), from_domain="acme.example", resolver=StubResolver(no_key), suffixes=SUFFIXES)
    assert (verdict.dmarc, verdict.dmarc_policy, verdict.result("dkim")) == ("fail", "quarantine", "fail")
    no_dmarc = verify_dkim(signed(), from_domain="acme.example", resolver=StubResolver(dns(policy="")), suffixes=SUFFIXES)
    assert (no_dmarc.dmarc, no_dmarc.result("dkim")) == ("none", "pass")


def test_a_signature_by_an_unaligned_domain_does_not_pass_dmarc() -> None:
    records = dns() | {"sel._domainkey.evil.example": dns()["sel._domainkey.acme.example"]}
    verdict = verify_dkim(
        signed(domain=b"evil.example"), from_domain="acme.example", resolver=StubResolver(records), suffixes=SUFFIXES
    )
    assert (verdict.dmarc, verdict.result("dkim")) == ("fail", "pass")


def test_a_dns_timeout_is_a_temporary_state_never_a_pass_or_fail() -> None:
    verdict = verify_dkim(signed(), from_domain="acme.example", resolver=StubResolver(dns(), timeout=True), suffixes=SUFFIXES)
    assert (verdict.dmarc, verdict.temporary, verdict.result("dkim")) == ("temperror", True, "temperror")


def test_the_dmarc_record_of_the_organisational_domain_applies_to_a_subdomain() -> None:
    records = {"_dmarc.acme.example": ["v=DMARC1; p=none; sp=reject"]}
    resolver = StubResolver(records)
    verdict = verify_dkim(MESSAGE.replace(b"pat@acme.example", b"pat@mail.acme.example"), from_domain="mail.acme.example",
                          resolver=resolver, suffixes=SUFFIXES)
    assert (verdict.dmarc, verdict.dmarc_policy) == ("fail", "reject")
    assert resolver.asked == ["_dmarc.mail.acme.example", "_dmarc.acme.example"]


# --- alignment and records (pure) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("domain", "organisation"),
    [("mail.acme.example", "acme.example"), ("a.b.acme.co.uk", "acme.co.uk"), ("foo.bar.ck", "foo.bar.ck"),
     ("www.ck", "www.ck"), ("acme.example", "acme.example"), ("x.y.unlisted", "y.unlisted")],
)
def test_the_organisational_domain_follows_the_public_suffix_list(domain: str, organisation: str) -> None:
    assert organisational_domain(domain, SUFFIXES) == organisation


def test_relaxed_alignment_accepts_a_subdomain_and_strict_does_not() -> None:
    assert aligned("mail.acme.example", "acme.example", strict=False, suffixes=SUFFIXES)
    assert not aligned("mail.acme.example", "acme.example", strict=True, suffixes=SUFFIXES)
    assert not aligned("acme.example.evil.example", "acme.example", strict=False, suffixes=SUFFIXES)


def test_a_dmarc_record_needs_v_and_p() -> None:
    record = parse_dmarc_record("v=DMARC1; p=reject; adkim=s")
    assert record is not None and (record.policy, record.subdomain_policy, record.strict_dkim) == ("reject", "reject", True)
    assert parse_dmarc_record("v=spf1 -all") is None
    assert parse_dmarc_record("v=DMARC1; rua=mailto:x@y") is None


# --- one strict reading of From: -------------------------------------------------------------------


def from_header(value: bytes) -> bytes:
    return b"From: " + value + b"\r\nTo: support@support.example.com\r\nSubject: Help\r\nMessage-ID: <f@x>\r\n\r\nbody\r\n"


@pytest.mark.parametrize(
    "value",
    [b"=?utf-8?q?x:pat@acme.example,?= <attacker@evil.example>", b"pat@acme.example <attacker@evil.example>"],
)
def test_the_two_forged_from_forms_read_as_the_attackers_address(value: bytes) -> None:
    message = parse_message(from_header(value))
    assert message.from_address == "attacker@evil.example"
    assert message.authors == ("attacker@evil.example",)


def test_several_from_addresses_and_none_are_all_reported() -> None:
    assert parse_message(from_header(b"pat@acme.example, sam@acme.example")).authors == ("pat@acme.example", "sam@acme.example")
    two_fields = b"From: sam@acme.example\r\n" + from_header(b"pat@acme.example")
    assert parse_message(two_fields).authors == ("sam@acme.example", "pat@acme.example")
    assert parse_message(from_header(b"undisclosed-sender")).authors == ()


def test_a_display_name_never_supplies_the_address() -> None:
    message = parse_message(from_header(b'"pat@acme.example" <lee@acme.example>'))
    assert (message.from_address, message.from_name) == ("lee@acme.example", "pat@acme.example")
