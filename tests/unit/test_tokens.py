"""Token addresses (reply, staff reply, one-click unsubscribe): round trips, forgeries and case folding."""

from __future__ import annotations

import hmac
import inspect

import pytest

from mailcase.rules.tokens import (
    MAINTENANCE_SCOPE,
    TOKEN_LENGTH,
    case_from_address,
    case_token,
    master_scope,
    reply_address,
    request_is_genuine,
    staff_case_from_address,
    staff_reply_address,
    unsubscribe_address,
    unsubscribe_request,
)

SUPPORT = "support@support.example.com"
SECRET = b"test-secret-0123456789"


def test_reply_address_round_trips_to_its_case_number() -> None:
    for number in (1, 42, 1042, 99_999_999, 123_456_789_012):
        address = reply_address(SUPPORT, number, SECRET)
        assert case_from_address(address, SUPPORT, SECRET) == number


def test_reply_address_is_plus_addressed_lower_case_support_address() -> None:
    address = reply_address(SUPPORT, 1042, SECRET)
    local, domain = address.split("@")
    assert domain == "support.example.com"
    assert local.startswith("support+c1042-")
    assert len(local.rsplit("-", 1)[1]) == TOKEN_LENGTH
    assert address == address.lower()


def test_upper_cased_address_from_a_case_folding_server_still_matches() -> None:
    address = reply_address(SUPPORT, 1042, SECRET).upper()
    assert case_from_address(address, SUPPORT, SECRET) == 1042


def test_address_in_angle_brackets_matches() -> None:
    address = reply_address(SUPPORT, 7, SECRET)
    assert case_from_address(f" <{address}> ", SUPPORT, SECRET) == 7


def test_forged_token_is_refused() -> None:
    address = reply_address(SUPPORT, 1042, SECRET)
    local, domain = address.split("@")
    base, mac = local.rsplit("-", 1)
    forged_mac = ("a" if mac[0] != "a" else "b") + mac[1:]
    assert case_from_address(f"{base}-{forged_mac}@{domain}", SUPPORT, SECRET) is None


def test_token_of_another_case_does_not_open_this_case() -> None:
    mac_of_1041 = case_token(1041, SECRET)
    assert case_from_address(f"support+c1042-{mac_of_1041}@support.example.com", SUPPORT, SECRET) is None


def test_token_made_under_an_old_secret_is_refused() -> None:
    stale = reply_address(SUPPORT, 1042, b"the-old-secret")
    assert case_from_address(stale, SUPPORT, SECRET) is None


@pytest.mark.parametrize(
    "address",
    [
        "support@support.example.com",
        "support+1042@support.example.com",
        "support+c1042@support.example.com",
        "support+c-abc@support.example.com",
        "support+c0-aaaaaaaaaaaaaaaa@support.example.com",
        "support+cabc-aaaaaaaaaaaaaaaa@support.example.com",
        "sales+c1042-aaaaaaaaaaaaaaaa@support.example.com",
        "not an address",
        "",
        "a@b@c",
    ],
)
def test_malformed_addresses_name_no_case(address: str) -> None:
    assert case_from_address(address, SUPPORT, SECRET) is None


def test_valid_token_at_another_domain_is_refused() -> None:
    address = reply_address(SUPPORT, 1042, SECRET).replace("support.example.com", "evil.example")
    assert case_from_address(address, SUPPORT, SECRET) is None


def test_token_comparison_is_constant_time() -> None:
    calls: list[tuple[str, str]] = []

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return hmac.compare_digest(a, b)

    address = reply_address(SUPPORT, 1042, SECRET)
    assert case_from_address(address, SUPPORT, SECRET, compare=spy) == 1042
    assert calls == [(case_token(1042, SECRET), case_token(1042, SECRET))]
    default = inspect.signature(case_from_address).parameters["compare"].default
    assert default is hmac.compare_digest


def test_empty_secret_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        reply_address(SUPPORT, 1, b"")
    with pytest.raises(ValueError):
        case_from_address("support+c1-aaaaaaaaaaaaaaaa@support.example.com", SUPPORT, b"")


# ---------------------------------------------------------------------------------------------
# One codec for every token: the addresses already sent must keep working


def test_every_token_kind_is_byte_identical_to_the_addresses_mail_already_carries() -> None:
    """Values made by the two codecs before they became one (rules.tokens and subscriptions.py)."""
    secret = b"0123456789abcdef0123456789abcdef"
    assert reply_address("Support@Support.Example.com", 1042, secret) == "support+c1042-aue3qmyibo225i5w@support.example.com"
    assert (
        staff_reply_address(SUPPORT, 1042, "Chris@Support.example.com", secret)
        == "support+s1042-rjnq3c2jomwdphy3@support.example.com"
    )
    assert (
        unsubscribe_address(SUPPORT, MAINTENANCE_SCOPE, "Pat@Acme.example", secret)
        == "support+unsub-m-lslhsdqvhngdar2z@support.example.com"
    )
    assert (
        unsubscribe_address(SUPPORT, master_scope(1042), "pat@acme.example", secret)
        == "support+unsub-c1042-edkvlsf4z7rphag4@support.example.com"
    )


@pytest.mark.parametrize("scope", [MAINTENANCE_SCOPE, master_scope(1), master_scope(1042)])
def test_unsubscribe_address_round_trips_for_its_recipient_only(scope: str) -> None:
    address = unsubscribe_address(SUPPORT, scope, "Pat@Acme.example", SECRET)
    request = unsubscribe_request(["someone@else.example", f"<{address.upper()}>"], SUPPORT)
    assert request is not None and request.scope == scope
    assert request_is_genuine(request, "pat@acme.example", SECRET)
    assert not request_is_genuine(request, "sam@acme.example", SECRET)
    assert not request_is_genuine(request, "pat@acme.example", b"the-old-secret")


def test_staff_reply_address_round_trips_for_its_technician_only() -> None:
    address = staff_reply_address(SUPPORT, 1042, "chris@support.example.com", SECRET)
    assert staff_case_from_address(address, SUPPORT, SECRET, author="Chris@support.example.com") == 1042
    assert staff_case_from_address(address, SUPPORT, SECRET, author="ana@support.example.com") is None


def test_a_reply_token_is_not_an_unsubscribe_token_nor_the_reverse() -> None:
    assert unsubscribe_request([reply_address(SUPPORT, 1042, SECRET)], SUPPORT) is None
    unsubscribe = unsubscribe_address(SUPPORT, master_scope(1042), "pat@acme.example", SECRET)
    assert case_from_address(unsubscribe, SUPPORT, SECRET) is None


def test_unsubscribe_request_ignores_other_domains_and_unknown_scopes() -> None:
    address = unsubscribe_address(SUPPORT, MAINTENANCE_SCOPE, "pat@acme.example", SECRET)
    assert unsubscribe_request([address.replace("support.example.com", "elsewhere.example")], SUPPORT) is None
    with pytest.raises(ValueError):
        unsubscribe_address(SUPPORT, "x1", "pat@acme.example", SECRET)
