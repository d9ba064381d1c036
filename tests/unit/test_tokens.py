"""Reply-token addresses: round trips, forgeries and case folding."""

from __future__ import annotations

import hmac
import inspect

import pytest

from mailcase.rules.tokens import TOKEN_LENGTH, case_from_address, case_token, reply_address

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
