"""How an erasure rewrites text: every spelling of the address, whole names only, JSON all the way down."""

from __future__ import annotations

from mailcase.store.erasure import ERASED_NAME, _scrubber, new_pseudonym, scrub_json

PSEUDONYM = "erased-0a1b2c3d4e5f@erased.invalid"


def test_the_address_in_any_case_and_whole_names_are_replaced() -> None:
    scrub = _scrubber("pat@acme.example", PSEUDONYM, ["Pat Doe", "Pat"])
    assert scrub("Thanks, Pat Doe <PAT@Acme.Example>") == f"Thanks, {ERASED_NAME} <{PSEUDONYM}>"
    # A name inside another word is another word: "Patrick", "compatible" stay.
    assert scrub("Patrick says it is compatible; Pat agrees.") == f"Patrick says it is compatible; {ERASED_NAME} agrees."


def test_json_values_are_scrubbed_at_every_depth_and_other_values_kept() -> None:
    scrub = _scrubber("pat@acme.example", PSEUDONYM, [])
    value = {"recipients": ["pat@acme.example", "sam@acme.example"], "pat@acme.example": {"n": 3, "ok": True}}
    assert scrub_json(value, scrub) == {"recipients": [PSEUDONYM, "sam@acme.example"], PSEUDONYM: {"n": 3, "ok": True}}


def test_pseudonyms_are_undeliverable_and_not_derived_from_the_address() -> None:
    first, second = new_pseudonym(), new_pseudonym()
    assert first != second and first.endswith("@erased.invalid")
