"""Importing the customer directory and looking people up in it, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from mailcase.domain import Channel, RawMessage, Role
from mailcase.rules.directory_format import load_directory
from mailcase.store.directory import (
    ImportReport,
    KindReport,
    active_technicians,
    contacts_with_role,
    import_directory,
    maintenance_contacts_for_products,
    organisation_by_key,
    organisation_for_address,
    sender_view,
)
from mailcase.store.engine import transaction
from mailcase.store.models import (
    Case,
    Contact,
    ContactRole,
    Organisation,
    OrganisationProduct,
    Product,
    Technician,
)
from support.broadcasts import example_app

EXAMPLE_TEXT = (Path(__file__).resolve().parents[2] / "examples" / "directory.toml").read_text(
    encoding="utf-8"
)
SAM_ROLES = 'email = "sam@acme.example"\nroles = ["secondary", "maintenance"]'
ANA_SOUZA = (
    '[[organisations.contacts]]\nname = "Ana Souza"\nemail = "ana.souza@brisa.example.com.br"\n'
    'roles = ["secondary"]\n'
)
BRISA = '[[organisations]]\nid = "brisa"'


def _import(engine: Engine, text: str = EXAMPLE_TEXT) -> ImportReport:
    with transaction(engine) as session:
        return import_directory(load_directory(text), session=session)


def _snapshot(engine: Engine) -> dict[str, list[tuple[object, ...]]]:
    tables = (Product, Technician, Organisation, OrganisationProduct, Contact, ContactRole)
    with Session(engine) as session:
        return {
            table.__tablename__: sorted(
                tuple(getattr(row, column.name) for column in _columns(table))
                for row in session.exec(select(table)).all()
            )
            for table in tables
        }


def _columns(table: type) -> list[sa.Column[object]]:
    return list(sa.inspect(table).columns)


def _org_ids(engine: Engine) -> dict[str, int]:
    """Organisation ids by directory `id`, read in a session of their own."""
    with Session(engine) as session:
        rows = session.exec(select(Organisation.key, Organisation.id)).all()
        return {key: id_ for key, id_ in rows}


def test_importing_the_example_twice_creates_once_and_then_changes_nothing(engine):
    first = _import(engine)
    rows = _snapshot(engine)
    second = _import(engine)

    assert first.products == KindReport(created=3)
    assert first.technicians == KindReport(created=3)
    assert first.organisations == KindReport(created=2)
    assert first.contacts == KindReport(created=7)
    assert second == ImportReport(
        products=KindReport(unchanged=3),
        technicians=KindReport(unchanged=3),
        organisations=KindReport(unchanged=2),
        contacts=KindReport(unchanged=7),
    )
    assert not second.changed
    assert second.as_dict()["contacts"] == {
        "created": 0, "updated": 0, "unchanged": 7, "not_in_file": [],
    }  # fmt: skip
    assert _snapshot(engine) == rows
    assert len(rows["contact_role"]) == 9
    assert len(rows["organisation_product"]) == 4


def test_changing_a_contacts_roles_replaces_them(engine):
    _import(engine)
    new_roles = 'email = "sam@acme.example"\nroles = ["secondary", "finance"]'
    report = _import(engine, EXAMPLE_TEXT.replace(SAM_ROLES, new_roles))

    assert (report.contacts.updated, report.contacts.unchanged) == (1, 6)
    with Session(engine) as session:
        sam = sender_view("sam@acme.example", session=session)
        maintenance = maintenance_contacts_for_products(["Cisco"], session=session)
    assert sam.roles == {Role.SECONDARY, Role.FINANCE}
    assert [r.email for r in maintenance] == ["ops@acme.example"]


def test_an_mpoc_is_seen_with_organisation_and_roles(engine):
    _import(engine)
    acme = _org_ids(engine)["acme"]
    with Session(engine) as session:
        view = sender_view("Pat@ACME.example", session=session)

    assert view.address == "pat@acme.example"
    assert view.contact_id is not None
    assert view.organisation_id == acme
    assert view.roles == {Role.PRIMARY, Role.MAJOR_CASES}
    assert view.is_mpoc and not view.is_technician


def test_an_employee_without_roles_is_known_but_not_an_mpoc(engine):
    _import(engine)
    org = _org_ids(engine)
    with Session(engine) as session:
        view = sender_view("lee@acme.example", session=session)

    assert view.contact_id is not None
    assert view.organisation_id == org["acme"]
    assert view.roles == frozenset()
    assert not view.is_mpoc


def test_a_technician_is_seen_as_staff_without_an_organisation(engine):
    _import(engine)
    with Session(engine) as session:
        view = sender_view("chris@support.example.com", session=session)

    assert view.is_technician
    assert (view.contact_id, view.organisation_id, view.roles) == (None, None, frozenset())


def test_an_unknown_address_gets_an_empty_view(engine):
    _import(engine)
    with Session(engine) as session:
        view = sender_view("stranger@acme.example", session=session)

    assert view.address == "stranger@acme.example"
    assert (view.contact_id, view.organisation_id, view.roles, view.is_technician) == (
        None, None, frozenset(), False,
    )  # fmt: skip


def test_maintenance_contacts_for_products_lists_each_address_once(engine):
    _import(engine)
    org = _org_ids(engine)
    acme, brisa = org["acme"], org["brisa"]
    with Session(engine) as session:
        recipients = maintenance_contacts_for_products(
            ["Microsoft Teams", "Cisco", "Five9"], session=session
        )

    assert recipients == [
        ("ops@acme.example", acme, "en", "America/Chicago"),
        ("sam@acme.example", acme, "en", "America/Chicago"),
        ("joao@brisa.example.com.br", brisa, "pt", "America/Sao_Paulo"),
    ]


def test_maintenance_contacts_only_of_organisations_using_the_product(engine):
    _import(engine)
    with Session(engine) as session:
        five9 = maintenance_contacts_for_products(["Five9"], session=session)
        nothing = maintenance_contacts_for_products(["Avaya"], session=session)

    assert [r.email for r in five9] == ["joao@brisa.example.com.br"]
    assert nothing == []


def test_a_contact_moved_to_another_organisation_is_updated(engine):
    _import(engine)
    assert ANA_SOUZA in EXAMPLE_TEXT and BRISA in EXAMPLE_TEXT
    moved = EXAMPLE_TEXT.replace(ANA_SOUZA, "").replace(BRISA, ANA_SOUZA + "\n" + BRISA)

    report = _import(engine, moved)
    org = _org_ids(engine)

    assert (report.contacts.updated, report.contacts.unchanged) == (1, 6)
    with Session(engine) as session:
        view = sender_view("ana.souza@brisa.example.com.br", session=session)
        secondaries = contacts_with_role([org["brisa"]], Role.SECONDARY, session=session)
    assert view.organisation_id == org["acme"]
    assert view.roles == {Role.SECONDARY}
    assert secondaries == []


def test_contacts_missing_from_the_file_are_kept_and_reported(engine):
    _import(engine)
    lee = '[[organisations.contacts]]\nname = "Lee Chen"\nemail = "lee@acme.example"\nroles = []\n'
    without_lee = EXAMPLE_TEXT.replace(lee, "")
    without_sam = without_lee.replace(
        '[[organisations.contacts]]\nname = "Sam Rivera"\n' + SAM_ROLES + "\n", ""
    )

    report = _import(engine, without_sam)

    assert report.contacts == KindReport(
        unchanged=5, not_in_file=("lee@acme.example", "sam@acme.example")
    )
    with Session(engine) as session:
        sam = sender_view("sam@acme.example", session=session)
    assert sam.roles == {Role.SECONDARY, Role.MAINTENANCE}
    assert report.lines()[-1] == (
        "contacts: 0 created, 0 updated, 5 unchanged;"
        " kept, not in file: lee@acme.example, sam@acme.example"
    )


def test_an_organisations_products_are_replaced_to_match_the_file(engine):
    _import(engine)
    brisa_products = 'products = ["Five9", "Microsoft Teams"]'
    report = _import(engine, EXAMPLE_TEXT.replace(brisa_products, 'products = ["Cisco"]'))

    assert (report.organisations.updated, report.organisations.unchanged) == (1, 1)
    with Session(engine) as session:
        assert maintenance_contacts_for_products(["Five9"], session=session) == []
        cisco = maintenance_contacts_for_products(["Cisco"], session=session)
    assert "joao@brisa.example.com.br" in [r.email for r in cisco]


def test_an_inactive_contact_keeps_its_organisation_but_loses_its_roles(engine):
    _import(engine)
    pat_title = 'title = "IT Director"'
    _import(engine, EXAMPLE_TEXT.replace(pat_title, pat_title + "\nactive = false"))
    org = _org_ids(engine)

    with Session(engine) as session:
        view = sender_view("pat@acme.example", session=session)
        primaries = contacts_with_role([org["acme"]], Role.PRIMARY, session=session)
    assert view.organisation_id == org["acme"]
    assert not view.is_mpoc
    assert primaries == []


def test_contacts_with_role_lists_the_role_holders_of_the_given_organisations(engine):
    _import(engine)
    org = _org_ids(engine)
    acme, brisa = org["acme"], org["brisa"]
    with Session(engine) as session:
        primaries = contacts_with_role([acme, brisa], Role.PRIMARY, session=session)
        finance = contacts_with_role([brisa], Role.FINANCE, session=session)
        none = contacts_with_role([], Role.PRIMARY, session=session)

    assert [(r.email, r.organisation_id, r.locale) for r in primaries] == [
        ("pat@acme.example", acme, "en"),
        ("joao@brisa.example.com.br", brisa, "pt"),
    ]
    assert finance == [] and none == []


def test_organisation_for_address_by_contact_then_by_domain(engine):
    _import(engine)
    with Session(engine) as session:
        by_contact = organisation_for_address("ana.souza@brisa.example.com.br", session=session)
        by_domain = organisation_for_address("newhire@acme.example", session=session)
        by_subdomain = organisation_for_address("noc@eu.acme.example", session=session)
        unknown = organisation_for_address("someone@example.com.br", session=session)

    assert by_contact is not None and by_contact.key == "brisa"
    assert by_domain is not None and (by_domain.key, by_domain.name) == ("acme", "Acme Corp")
    assert by_subdomain is not None and by_subdomain.key == "acme"
    assert unknown is None


def test_active_technicians_of_a_team_in_a_stable_order(engine):
    _import(engine)
    ana_entry = 'email = "ana@support.example.com"\nteam = "support"\nactive = '
    _import(engine, EXAMPLE_TEXT.replace(ana_entry + "true", ana_entry + "false"))

    with Session(engine) as session:
        support = active_technicians("support", session=session)
        microsoft = active_technicians("microsoft", session=session)
        ana = sender_view("ana@support.example.com", session=session)

    assert [t.email for t in support] == ["bruno@support.example.com"]
    assert support[0].phone == "+1 303 555 0142"
    assert [t.email for t in microsoft] == ["chris@support.example.com"]
    assert not ana.is_technician


def test_sla_overrides_escalation_list_and_notes_are_stored(engine):
    text = EXAMPLE_TEXT.replace(
        'notes = "Contract renewal every March."',
        'notes = "Contract renewal every March."\nescalation = ["CIO@acme.example"]\n'
        "[organisations.sla.P4]\nresponse_business_days = 2",
    )
    _import(engine, text)
    report = _import(engine, text)

    assert not report.changed
    with Session(engine) as session:
        acme = organisation_by_key("acme", session=session)
        nobody = organisation_by_key("nobody", session=session)
        notes = session.exec(select(Organisation.extra).where(Organisation.key == "acme")).one()
    assert acme is not None and nobody is None
    assert acme.sla_overrides == {"P4": {"response_business_days": 2}}
    assert acme.escalation_contacts == ("cio@acme.example",)
    assert notes["notes"] == "Contract renewal every March."


def test_import_leaves_the_transaction_to_the_caller(engine):
    with Session(engine) as session:
        import_directory(load_directory(EXAMPLE_TEXT), session=session)
        session.rollback()

    with Session(engine) as session:
        assert session.exec(select(sa.func.count()).select_from(Contact)).one() == 0


def test_a_renamed_organisation_shares_its_domain_until_the_old_id_is_retired(engine):
    _import(engine)
    renamed = EXAMPLE_TEXT.replace('id = "acme"', 'id = "acme-corp"')
    _import(engine, renamed)
    with Session(engine) as session:
        ambiguous = organisation_for_address("newhire@acme.example", session=session)
    retired = renamed + '\n[[organisations]]\nid = "acme"\nname = "Acme (old)"\nactive = false\n'
    _import(engine, retired)
    with Session(engine) as session:
        resolved = organisation_for_address("newhire@acme.example", session=session)
        pat = organisation_for_address("pat@acme.example", session=session)

    assert ambiguous is None
    assert resolved is not None and resolved.key == "acme-corp"
    assert pat is not None and pat.key == "acme-corp"


def test_a_running_app_plans_with_an_sla_override_imported_after_it_started(engine: Engine) -> None:
    """One App serves for the life of the daemon; an operator's `directory import` of an
    organisation's SLA override applies to the next case it opens, without a restart."""
    monday = datetime(2026, 12, 7, 16, 0, tzinfo=UTC)  # 09:00 in Denver, an ordinary business day
    app = example_app(engine, monday)

    def opened(subject: str) -> Case:
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = "pat@acme.example", "support@support.example.com", subject
        message["Message-ID"] = f"<{subject.replace(' ', '.')}@acme.example>"
        message.set_content("Please help.\n")
        raw = RawMessage(data=message.as_bytes(), channel=Channel.PIPE, received_at=monday)
        outcome = app.pipeline().ingest_one(raw)
        assert outcome.decision == "open_case"
        with Session(engine) as session:
            return session.exec(select(Case).where(Case.number == int(outcome.case_number or 0))).one()

    before = opened("Voicemail not working")
    assert before.response_due_at == monday + timedelta(days=1)  # config.toml: P4, 1 business day
    _import(engine, EXAMPLE_TEXT.replace(
        'notes = "Contract renewal every March."',
        'notes = "Contract renewal every March."\n[organisations.sla.P4]\nresponse_business_days = 3',
    ))
    after = opened("Fax not working")
    assert after.response_due_at == monday + timedelta(days=3)
