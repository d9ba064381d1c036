"""The directory file's validation: each operator mistake is one error naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailcase.domain import Role
from mailcase.errors import DirectoryError, MailcaseError
from mailcase.rules.directory_format import load_directory

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "directory.toml"

PRODUCTS = """
[[products]]
name = "Microsoft Teams"
"""

ACME = """
[[organisations]]
id = "acme"
name = "Acme Corp"
domains = ["acme.example"]
"""


def _error(text: str) -> str:
    with pytest.raises(DirectoryError) as raised:
        load_directory(text)
    return str(raised.value)


def test_example_directory_loads_with_every_entry():
    directory = load_directory(EXAMPLE.read_text(encoding="utf-8"))

    assert [p.name for p in directory.products] == ["Microsoft Teams", "Cisco", "Five9"]
    assert [(t.email, t.team) for t in directory.technicians] == [
        ("ana@support.example.com", "support"),
        ("bruno@support.example.com", "support"),
        ("chris@support.example.com", "microsoft"),
    ]
    acme, brisa = directory.organisations
    assert (acme.key, acme.locale, acme.timezone, acme.products) == (
        "acme", "en", "America/Chicago", ("Microsoft Teams", "Cisco"),
    )  # fmt: skip
    assert (brisa.key, brisa.locale, brisa.timezone, brisa.domains) == (
        "brisa", "pt", "America/Sao_Paulo", ("brisa.example.com.br",),
    )  # fmt: skip
    roles = {c.email: c.roles for org in directory.organisations for c in org.contacts}
    assert roles == {
        "pat@acme.example": {Role.PRIMARY, Role.MAJOR_CASES},
        "sam@acme.example": {Role.SECONDARY, Role.MAINTENANCE},
        "ops@acme.example": {Role.MAINTENANCE},
        "billing@acme.example": {Role.FINANCE},
        "lee@acme.example": set(),
        "joao@brisa.example.com.br": {Role.PRIMARY, Role.MAINTENANCE},
        "ana.souza@brisa.example.com.br": {Role.SECONDARY},
    }


def test_addresses_and_domains_are_lower_cased():
    directory = load_directory(
        """
        [[technicians]]
        email = "Ana@Support.Example.COM"
        team = "support"

        [[organisations]]
        id = "acme"
        name = "Acme"
        domains = ["ACME.Example"]
        escalation = ["CIO@Acme.Example"]
        [[organisations.contacts]]
        email = " Pat@ACME.example "
        """
    )
    org = directory.organisations[0]
    assert directory.technicians[0].email == "ana@support.example.com"
    assert org.domains == ("acme.example",)
    assert org.escalation == ("cio@acme.example",)
    assert org.contacts[0].email == "pat@acme.example"


def test_omitted_optional_keys_take_documented_defaults():
    directory = load_directory(ACME + '[[organisations.contacts]]\nemail = "lee@acme.example"\n')
    org = directory.organisations[0]
    contact = org.contacts[0]
    assert (org.locale, org.timezone, org.active, org.sla, org.products) == (
        "en", "America/Denver", True, {}, (),
    )  # fmt: skip
    assert (contact.roles, contact.active, contact.name) == (frozenset(), True, "")


def test_an_empty_file_is_an_empty_directory():
    directory = load_directory("")
    assert (directory.products, directory.technicians, directory.organisations) == ((), (), ())


def test_operator_extras_are_kept():
    directory = load_directory(
        PRODUCTS
        + """
        [[technicians]]
        email = "ana@support.example.com"
        team = "support"
        phone = "+1 303 555 0100"
        manager = true
        active = false

        [[organisations]]
        id = "acme"
        name = "Acme"
        notes = "VIP"
        active = false
        escalation = ["cio@acme.example"]
        [organisations.sla.P4]
        response_business_days = 2
        [organisations.sla.macd_standard]
        resolution_business_days = 3
        [[organisations.contacts]]
        email = "pat@acme.example"
        title = "IT Director"
        phone = "+1 312 555 0100"
        notes = "prefers phone"
        active = false
        """
    )
    technician = directory.technicians[0]
    org = directory.organisations[0]
    contact = org.contacts[0]
    assert (technician.phone, technician.manager, technician.active) == (
        "+1 303 555 0100", True, False,
    )  # fmt: skip
    assert org.sla == {
        "P4": {"response_business_days": 2},
        "macd_standard": {"resolution_business_days": 3},
    }
    assert (org.notes, org.active, org.escalation) == ("VIP", False, ("cio@acme.example",))
    assert (contact.title, contact.phone, contact.notes, contact.active) == (
        "IT Director", "+1 312 555 0100", "prefers phone", False,
    )  # fmt: skip


def test_directory_error_is_a_mailcase_error_that_keeps_the_key():
    with pytest.raises(MailcaseError) as raised:
        load_directory("[[products]]\nnmae = 'Cisco'\n")
    assert isinstance(raised.value, DirectoryError)
    assert raised.value.key == "products[0].nmae"
    assert str(raised.value) == "directory error: products[0].nmae: unknown key"


def test_unknown_contact_key_is_named_with_its_organisation_and_position():
    text = (
        ACME
        + """
        [[organisations]]
        id = "brisa"
        name = "Brisa"
        [[organisations.contacts]]
        email = "joao@brisa.example.com.br"
        rolez = ["primary"]
        """
    )
    assert "organisations[1].contacts[0].rolez: unknown key" in _error(text)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[[customers]]\nid = 'x'\n", "customers"),
        (
            "[[technicians]]\nemail = 'a@b.example'\nteam = 't'\ngroup = 'x'\n",
            "technicians[0].group",
        ),
        (ACME + "website = 'https://acme.example'\n", "organisations[0].website"),
    ],
)
def test_unknown_keys_anywhere_are_named(text, key):
    assert f"{key}: unknown key" in _error(text)


def test_unknown_role_is_named_with_the_known_roles():
    message = _error(
        ACME + '[[organisations.contacts]]\nemail = "pat@acme.example"\nroles = ["boss"]\n'
    )
    assert "organisations[0].contacts[0].roles[0]: unknown role 'boss'" in message
    assert "primary, secondary, major_cases, maintenance, finance, escalation" in message


def test_locale_other_than_en_or_pt_is_refused():
    message = _error(ACME + 'locale = "fr"\n')
    assert "organisations[0].locale: 'fr': must be one of en, pt" in message


def test_unknown_time_zone_is_refused():
    assert "organisations[0].timezone: unknown time zone 'Mars/Olympus'" in _error(
        ACME + 'timezone = "Mars/Olympus"\n'
    )


def test_product_not_listed_in_products_is_refused():
    message = _error(PRODUCTS + ACME + 'products = ["Microsoft Teams", "Cisco"]\n')
    expected = "organisations[0].products[1]: unknown product 'Cisco' (add it to [[products]])"
    assert expected in message


def test_the_same_contact_in_two_organisations_is_refused_naming_both():
    text = (
        ACME
        + '[[organisations.contacts]]\nemail = "pat@acme.example"\n'
        + '[[organisations]]\nid = "brisa"\nname = "Brisa"\n'
        + '[[organisations.contacts]]\nemail = "PAT@acme.example"\n'
    )
    message = _error(text)
    assert "organisations[1].contacts[0].email: duplicate contact 'pat@acme.example'" in message
    assert "(also at organisations[0].contacts[0].email)" in message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (PRODUCTS + PRODUCTS.replace("Teams", "TEAMS"), "products[1].name: duplicate product"),
        (
            "[[technicians]]\nemail = 'a@s.example'\nteam = 't'\n" * 2,
            "technicians[1].email: duplicate technician 'a@s.example'",
        ),
        (ACME + ACME, "organisations[1].id: duplicate organisation id 'acme'"),
        (
            ACME + ACME.replace('"acme"', '"acme2"'),
            "organisations[1].domains[0]: duplicate domain 'acme.example'",
        ),
        (
            "[[technicians]]\nemail = 'ana@acme.example'\nteam = 't'\n"
            + ACME
            + '[[organisations.contacts]]\nemail = "ana@acme.example"\n',
            "organisations[0].contacts[0].email: 'ana@acme.example' is a technician's address",
        ),
    ],
)
def test_entries_listed_twice_are_refused(text, message):
    assert message in _error(text)


@pytest.mark.parametrize(
    "address",
    [
        "pat",
        "pat@",
        "@acme.example",
        "pat@acme",
        "Pat Doe <pat@acme.example>",
        "pat doe@acme.example",
        "pat..doe@acme.example",
        "pat@acme..example",
        "pat@-acme.example",
        "",
    ],
)
def test_contact_email_that_is_not_an_address_is_refused(address):
    message = _error(ACME + f'[[organisations.contacts]]\nemail = "{address}"\n')
    assert f"organisations[0].contacts[0].email: not an email address: {address!r}" in message


def test_escalation_entry_that_is_not_an_address_is_refused():
    assert "organisations[0].escalation[1]: not an email address: 'cio'" in _error(
        ACME + 'escalation = ["ops@acme.example", "cio"]\n'
    )


def test_domain_that_is_not_a_host_name_is_refused():
    assert "organisations[0].domains[0]: not a domain name" in _error(
        '[[organisations]]\nid = "x"\nname = "X"\ndomains = ["@acme.example"]\n'
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[products]]\n", "products[0].name: missing (required)"),
        ("[[technicians]]\nteam = 'support'\n", "technicians[0].email: missing (required)"),
        ("[[technicians]]\nemail = 'a@s.example'\n", "technicians[0].team: missing (required)"),
        ("[[organisations]]\nname = 'Acme'\n", "organisations[0].id: missing (required)"),
        ("[[organisations]]\nid = 'acme'\n", "organisations[0].name: missing (required)"),
        (
            "[[organisations]]\nid = 'acme'\nname = '  '\n",
            "organisations[0].name: must not be empty",
        ),
        (
            ACME + "[[organisations.contacts]]\nname = 'Pat'\n",
            "organisations[0].contacts[0].email: missing",
        ),
    ],
)
def test_missing_required_keys_are_named(text, message):
    assert message in _error(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[products]]\nname = 3\n", "products[0].name: expected a string, got int 3"),
        ("products = 'Cisco'\n", "products: expected an array of tables"),
        (ACME + "domains2 = 1\n", "organisations[0].domains2: unknown key"),
        (
            ACME.replace('domains = ["acme.example"]', 'domains = "acme.example"'),
            "organisations[0].domains: expected an array",
        ),
        (ACME + "active = 'yes'\n", "organisations[0].active: expected true or false"),
        (ACME + '[[organisations.contacts]]\nemail = "p@acme.example"\nroles = "primary"\n',
         "organisations[0].contacts[0].roles: expected an array"),
    ],
)  # fmt: skip
def test_wrong_types_are_named(text, message):
    assert message in _error(text)


def test_organisation_id_must_be_a_slug():
    assert "organisations[0].id: 'Acme Corp': use lower-case letters" in _error(
        "[[organisations]]\nid = 'Acme Corp'\nname = 'Acme'\n"
    )


@pytest.mark.parametrize(
    ("sla", "message"),
    [
        ("[organisations.sla.P5]\nresponse_minutes = 10\n", "organisations[0].sla.P5: unknown key"),
        ("[organisations.sla.P4]\nresponse_days = 2\n",
         "organisations[0].sla.P4.response_days: unknown key"),
        ("[organisations.sla.P4]\nresponse_business_days = -1\n",
         "organisations[0].sla.P4.response_business_days: expected a whole number >= 0, got -1"),
        ("[organisations.sla.P4]\nupdate_minutes = 1.5\n",
         "organisations[0].sla.P4.update_minutes: expected a whole number"),
        ("[organisations.sla]\nP4 = 2\n", "organisations[0].sla.P4: expected a table"),
    ],
)  # fmt: skip
def test_sla_overrides_are_checked_against_the_sla_fields(sla, message):
    assert message in _error(ACME + sla)


def test_text_that_is_not_toml_is_one_error():
    assert _error("[[products]\nname = ").startswith("directory error: (file): not valid TOML")


def test_a_product_listed_twice_by_an_organisation_counts_once():
    twice = 'products = ["Microsoft Teams", "Microsoft Teams"]\n'
    directory = load_directory(PRODUCTS + ACME + twice)
    assert directory.organisations[0].products == ("Microsoft Teams",)
