"""The customer directory in the database: idempotent import and lookups; no commits, no files.

Every function takes `session=` as a keyword; the caller owns the transaction. Lookups return
frozen views (`SenderView`, `OrganisationView`, `TechnicianView`, `Recipient`), never ORM rows.
Addresses are compared lower-cased, as the directory file stores them.

An import never deletes: products, technicians, organisations and contacts missing from the
file are kept as they are and listed in the report (`not_in_file`), because a truncated or
half-edited file must not silently strip a customer's MPOCs. Revoke someone by keeping them in
the file with `roles = []` or `active = false`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Mapped
from sqlmodel import Session, SQLModel, col, select

from mailcase.domain import (
    ContactEntry,
    Directory,
    OrganisationEntry,
    ProductEntry,
    Role,
    SenderView,
    TechnicianEntry,
)
from mailcase.store.common import prepared
from mailcase.store.models import (
    Contact,
    ContactRole,
    Organisation,
    OrganisationProduct,
    Product,
    Technician,
)
from mailcase.store.technicians import active_in_team

_Item = TypeVar("_Item")

__all__ = [
    "Directory",
    "ImportReport",
    "KindReport",
    "OrganisationView",
    "Recipient",
    "TechnicianView",
    "active_technicians",
    "contacts_with_role",
    "import_directory",
    "maintenance_contacts_for_products",
    "organisation_by_id",
    "organisation_by_key",
    "organisation_for_address",
    "sender_view",
]


# ---------------------------------------------------------------------------------------------
# Views


class Recipient(NamedTuple):
    """A contact to write to, with what the notice needs to be rendered for them."""

    email: str
    organisation_id: int
    locale: str
    timezone: str


@dataclass(frozen=True, slots=True)
class OrganisationView:
    id: int
    key: str
    name: str
    locale: str
    timezone: str
    domains: tuple[str, ...] = ()
    escalation_contacts: tuple[str, ...] = ()
    sla_overrides: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    active: bool = True


@dataclass(frozen=True, slots=True)
class TechnicianView:
    id: int
    email: str
    name: str
    team: str
    manager: bool = False
    phone: str = ""


# ---------------------------------------------------------------------------------------------
# Import


class Outcome(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


@dataclass(frozen=True, slots=True)
class KindReport:
    """What an import did to one kind of entry; `not_in_file`: rows kept that the file omits."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    not_in_file: tuple[str, ...] = ()

    @classmethod
    def of(cls, outcomes: Iterable[Outcome], not_in_file: Iterable[str] = ()) -> KindReport:
        tally = list(outcomes)
        return cls(
            created=tally.count(Outcome.CREATED),
            updated=tally.count(Outcome.UPDATED),
            unchanged=tally.count(Outcome.UNCHANGED),
            not_in_file=tuple(sorted(not_in_file)),
        )


@dataclass(frozen=True, slots=True)
class ImportReport:
    products: KindReport = KindReport()
    technicians: KindReport = KindReport()
    organisations: KindReport = KindReport()
    contacts: KindReport = KindReport()

    @property
    def changed(self) -> bool:
        return any(kind.created or kind.updated for kind in self._kinds().values())

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """Plain JSON-able counts per kind, for `--json`."""
        return {
            name: {
                "created": kind.created,
                "updated": kind.updated,
                "unchanged": kind.unchanged,
                "not_in_file": list(kind.not_in_file),
            }
            for name, kind in self._kinds().items()
        }

    def lines(self) -> list[str]:
        """One human line per kind, e.g. `contacts: 1 created, 2 updated, 4 unchanged`."""
        out = []
        for name, kind in self._kinds().items():
            line = (
                f"{name}: {kind.created} created, {kind.updated} updated,"
                f" {kind.unchanged} unchanged"
            )
            if kind.not_in_file:
                line += f"; kept, not in file: {', '.join(kind.not_in_file)}"
            out.append(line)
        return out

    def _kinds(self) -> dict[str, KindReport]:
        return {
            "products": self.products,
            "technicians": self.technicians,
            "organisations": self.organisations,
            "contacts": self.contacts,
        }


def import_directory(directory: Directory, *, session: Session) -> ImportReport:
    """Upsert the directory by product name, technician email, organisation `id` and contact email.

    Fields, contact roles and organisation products are made to match the file; a contact
    listed under another organisation moves there. Nothing missing from the file is deleted
    or changed; it is reported in `not_in_file`. Importing the same file twice reports
    everything unchanged the second time. Flushes, never commits.
    """
    product_ids, products = _import_products(directory.products, session=session)
    technicians = _import_technicians(directory.technicians, session=session)
    organisation_ids, organisations = _import_organisations(
        directory.organisations, product_ids, session=session
    )
    contacts = _import_contacts(directory.organisations, organisation_ids, session=session)
    return ImportReport(
        products=products, technicians=technicians, organisations=organisations, contacts=contacts
    )


def _import_products(
    entries: Sequence[ProductEntry], *, session: Session
) -> tuple[dict[str, int], KindReport]:
    existing = {row.name: row for row in session.exec(select(Product)).all()}
    outcomes = []
    rows = {}
    for entry in entries:
        row = existing.get(entry.name)
        outcomes.append(Outcome.CREATED if row is None else Outcome.UNCHANGED)
        if row is None:
            row = Product(name=entry.name)
            session.add(row)
        rows[entry.name] = row
    session.flush()
    ids = {name: _id(row.id) for name, row in rows.items()}
    return ids, KindReport.of(outcomes, set(existing) - set(rows))


def _import_technicians(entries: Sequence[TechnicianEntry], *, session: Session) -> KindReport:
    existing = {row.email: row for row in session.exec(select(Technician)).all()}
    outcomes = []
    for entry in entries:
        row = existing.get(entry.email)
        if row is None:
            row = Technician(email=entry.email, team=entry.team)
            session.add(row)
        changed = _assign(row, _technician_fields(entry, row))
        outcomes.append(_outcome(entry.email in existing, changed))
    session.flush()
    return KindReport.of(outcomes, set(existing) - {entry.email for entry in entries})


def _technician_fields(entry: TechnicianEntry, row: Technician) -> dict[str, Any]:
    return {
        "name": entry.name,
        "team": entry.team,
        "active": entry.active,
        "extra": {**row.extra, "phone": entry.phone, "manager": entry.manager},
    }


def _import_organisations(
    entries: Sequence[OrganisationEntry], product_ids: Mapping[str, int], *, session: Session
) -> tuple[dict[str, int], KindReport]:
    existing = {row.key: row for row in session.exec(select(Organisation)).all()}
    rows: dict[str, Organisation] = {}
    changes: dict[str, bool] = {}
    for entry in entries:
        row = existing.get(entry.key) or Organisation(key=entry.key, name=entry.name)
        session.add(row)
        changes[entry.key] = _assign(row, _organisation_fields(entry, row))
        rows[entry.key] = row
    session.flush()
    ids = {key: _id(row.id) for key, row in rows.items()}
    current = _products_by_organisation(ids.values(), session=session)
    outcomes = []
    for entry in entries:
        wanted = {product_ids[name] for name in entry.products}
        organisation_id = ids[entry.key]
        relinked = _sync_products(organisation_id, current[organisation_id], wanted, session=session)
        outcomes.append(_outcome(entry.key in existing, changes[entry.key] or relinked))
    session.flush()
    return ids, KindReport.of(outcomes, set(existing) - set(rows))


def _organisation_fields(entry: OrganisationEntry, row: Organisation) -> dict[str, Any]:
    return {
        "name": entry.name,
        "locale": entry.locale,
        "timezone": entry.timezone,
        "domains": list(entry.domains),
        "sla_overrides": {target: dict(fields) for target, fields in entry.sla.items()},
        "escalation_contacts": list(entry.escalation),
        "extra": {**row.extra, "notes": entry.notes},
        "active": entry.active,
    }


def _products_by_organisation(organisation_ids: Iterable[int], *, session: Session) -> dict[int, set[int]]:
    return _links_by_owner(
        col(OrganisationProduct.organisation_id), col(OrganisationProduct.product_id), list(organisation_ids),
        session=session,
    )


def _sync_products(organisation_id: int, current: set[int], wanted: set[int], *, session: Session) -> bool:
    """Make the organisation's products exactly `wanted`; True when anything changed."""
    return _sync_links(
        OrganisationProduct, ("organisation_id", organisation_id), "product_id", current, wanted, session=session
    )


def _import_contacts(
    organisations: Sequence[OrganisationEntry],
    organisation_ids: Mapping[str, int],
    *,
    session: Session,
) -> KindReport:
    existing = {row.email: row for row in session.exec(select(Contact)).all()}
    listed = [(organisation_ids[org.key], entry) for org in organisations for entry in org.contacts]
    rows: dict[str, Contact] = {}
    changes: dict[str, bool] = {}
    for organisation_id, entry in listed:
        row = existing.get(entry.email) or Contact(
            email=entry.email, organisation_id=organisation_id
        )
        session.add(row)
        changes[entry.email] = _assign(row, _contact_fields(entry, organisation_id, row))
        rows[entry.email] = row
    session.flush()
    current = _roles_by_contact([_id(row.id) for row in rows.values()], session=session)
    outcomes = []
    for _organisation_id, entry in listed:
        contact_id = _id(rows[entry.email].id)
        roles_changed = _sync_roles(contact_id, current[contact_id], entry.roles, session=session)
        outcomes.append(_outcome(entry.email in existing, changes[entry.email] or roles_changed))
    session.flush()
    return KindReport.of(outcomes, set(existing) - set(rows))


def _contact_fields(entry: ContactEntry, organisation_id: int, row: Contact) -> dict[str, Any]:
    return {
        "organisation_id": organisation_id,
        "name": entry.name,
        "title": entry.title,
        "phone": entry.phone,
        "active": entry.active,
        "extra": {**row.extra, "notes": entry.notes},
    }


def _roles_by_contact(contact_ids: Sequence[int], *, session: Session) -> dict[int, set[str]]:
    return _links_by_owner(col(ContactRole.contact_id), col(ContactRole.role), contact_ids, session=session)


def _sync_roles(contact_id: int, current: set[str], roles: frozenset[Role], *, session: Session) -> bool:
    """Make the contact's roles exactly `roles`; True when anything changed."""
    wanted = {role.value for role in roles}
    return _sync_links(ContactRole, ("contact_id", contact_id), "role", current, wanted, session=session)


def _links_by_owner(
    owner: Mapped[int], item: Mapped[_Item], owner_ids: Sequence[int], *, session: Session
) -> dict[int, set[_Item]]:
    """The items linked to each owner by an association table (an organisation's products, a
    contact's roles), in one query."""
    found: dict[int, set[_Item]] = defaultdict(set)
    if owner_ids:
        for owner_id, linked in session.exec(select(owner, item).where(owner.in_(owner_ids))):
            found[owner_id].add(linked)
    return found


def _sync_links(
    link: type[SQLModel], owner: tuple[str, int], column: str, current: set[_Item], wanted: set[_Item], *,
    session: Session,
) -> bool:
    """Make the items linked to one owner exactly `wanted` (rows of `link`, keyed by the owner's
    id and the item); True when anything changed."""
    owner_column, owner_id = owner
    for item in current - wanted:
        row = session.get(link, (owner_id, item))
        if row is not None:
            session.delete(row)
    for item in wanted - current:
        session.add(link(**{owner_column: owner_id, column: item}))
    return current != wanted


def _assign(row: Any, values: Mapping[str, Any]) -> bool:
    """Set the attributes that differ (JSON columns get new objects, so the change is seen)."""
    changed = False
    for name, value in values.items():
        if getattr(row, name) != value:
            setattr(row, name, value)
            changed = True
    return changed


def _outcome(existed: bool, changed: bool) -> Outcome:
    if not existed:
        return Outcome.CREATED
    return Outcome.UPDATED if changed else Outcome.UNCHANGED


def _id(value: int | None) -> int:
    assert value is not None, "flushed rows have ids"
    return value


# ---------------------------------------------------------------------------------------------
# Lookups


def sender_view(address: str, *, session: Session) -> SenderView:
    """What the rules know about a sender: contact, organisation, roles, and whether they are staff.

    Roles apply only to an active contact of an active organisation (an inactive one keeps its
    contact and organisation ids but no roles). `is_technician` is true for active technicians.
    An address the directory does not list gets an empty view (no organisation: lookups by
    domain are `organisation_for_address`'s job).
    """
    address = _normalise(address)
    is_technician = _is_active_technician(address, session=session)
    found = session.exec(
        select(Contact, Organisation.active)
        .join(Organisation, col(Contact.organisation_id) == col(Organisation.id))
        .where(Contact.email == address)
    ).first()
    if found is None:
        return SenderView(address=address, is_technician=is_technician)
    contact, organisation_active = found
    roles: frozenset[Role] = frozenset()
    if contact.active and organisation_active:
        roles = _roles_of(_id(contact.id), session=session)
    return SenderView(
        address=address,
        contact_id=contact.id,
        organisation_id=contact.organisation_id,
        roles=roles,
        is_technician=is_technician,
    )


@dataclass(frozen=True, slots=True)
class ContactOrganisation:
    """The fields of a contact's organisation that a case's notices show (name, language, zone),
    and its SLA overrides (a new case's deadlines need them)."""

    id: int
    name: str
    locale: str
    timezone: str
    sla_overrides: Mapping[str, Mapping[str, int]] = field(default_factory=dict)


def sender_view_and_name(
    address: str, *, session: Session
) -> tuple[SenderView, str | None, ContactOrganisation | None]:
    """`sender_view`, the contact's name and their organisation's notice fields and SLA overrides
    (None, None for an address the directory does not list), in one query for a listed contact:
    the ingest pipeline's write transaction runs this for every message, and five statements cost
    it more than one."""
    address = _normalise(address)
    rows = _sender_query.run(session, {"address": address}).all()
    if not rows:
        return SenderView(address=address, is_technician=_is_active_technician(address, session=session)), None, None
    contact_id, organisation_id, contact_active, name, organisation_active, is_technician = rows[0][:6]
    organisation = ContactOrganisation(
        id=organisation_id, name=rows[0][7], locale=rows[0][8], timezone=rows[0][9],
        sla_overrides=_overrides(rows[0][10]),
    )
    roles: frozenset[Role] = frozenset()
    if contact_active and organisation_active:
        known = {role.value for role in Role}
        roles = frozenset(Role(row[6]) for row in rows if row[0] == contact_id and row[6] in known)
    view = SenderView(
        address=address,
        contact_id=contact_id,
        organisation_id=organisation_id,
        roles=roles,
        is_technician=bool(is_technician),
    )
    return view, name, organisation


@prepared
def _sender_query(dialect: str) -> Any:
    """Prepared once (the address is a parameter): ingest runs it for every message."""
    address: sa.BindParameter[str] = sa.bindparam("address")
    technician = (
        sa.exists().where(col(Technician.email) == address, col(Technician.active) == sa.true()).label("is_technician")
    )
    return (
        sa.select(
            col(Contact.id), col(Contact.organisation_id), col(Contact.active), col(Contact.name),
            col(Organisation.active), technician, col(ContactRole.role),
            col(Organisation.name), col(Organisation.locale), col(Organisation.timezone), col(Organisation.sla_overrides),
        )
        .join(Organisation, col(Contact.organisation_id) == col(Organisation.id))
        .outerjoin(ContactRole, col(ContactRole.contact_id) == col(Contact.id))
        .where(col(Contact.email) == address)
    )


def _is_active_technician(address: str, *, session: Session) -> bool:
    query = select(Technician.id).where(Technician.email == address, Technician.active == sa.true())
    return session.exec(query).first() is not None


def _roles_of(contact_id: int, *, session: Session) -> frozenset[Role]:
    names = session.exec(select(ContactRole.role).where(ContactRole.contact_id == contact_id)).all()
    known = {role.value for role in Role}
    return frozenset(Role(name) for name in names if name in known)


def organisation_by_key(key: str, *, session: Session) -> OrganisationView | None:
    """The organisation whose directory `id` is `key`, or None."""
    row = session.exec(select(Organisation).where(Organisation.key == key)).first()
    return _organisation_view(row) if row else None


def sla_overrides_of(organisation_id: int, *, session: Session) -> dict[str, dict[str, int]]:
    """The organisation's SLA overrides ({} when it has none or does not exist): one prepared
    SELECT of that column, since every new case asks."""
    row = _sla_overrides_query.run(session, {"organisation_id": organisation_id}).first()
    return _overrides(row[0]) if row else {}


def _overrides(stored: Mapping[str, Mapping[str, int]] | None) -> dict[str, dict[str, int]]:
    """The `sla_overrides` column as the planner takes it ({} when NULL)."""
    return {target: dict(fields) for target, fields in (stored or {}).items()}


@prepared
def _sla_overrides_query(dialect: str) -> Any:
    return sa.select(col(Organisation.sla_overrides)).where(col(Organisation.id) == sa.bindparam("organisation_id"))


def organisation_by_id(organisation_id: int, *, session: Session) -> OrganisationView | None:
    row = session.get(Organisation, organisation_id)
    return _organisation_view(row) if row else None


def organisation_for_address(address: str, *, session: Session) -> OrganisationView | None:
    """The organisation an address belongs to: its contact's, else the one whose domain matches.

    A domain matches the address's domain or any parent of it (`mail.acme.example` matches
    `acme.example`); the most specific domain wins, active organisations before inactive ones.
    Two organisations claiming the same domain equally is ambiguous: None. The caller checks
    `active`.
    """
    address = _normalise(address)
    query = select(Contact.organisation_id).where(Contact.email == address)
    organisation_id = session.exec(query).first()
    if organisation_id is not None:
        return organisation_by_id(organisation_id, session=session)
    _local, at, domain = address.rpartition("@")
    return _organisation_for_domain(domain, session=session) if at else None


def _organisation_for_domain(domain: str, *, session: Session) -> OrganisationView | None:
    labels = domain.split(".")
    suffixes = [".".join(labels[i:]) for i in range(len(labels) - 1)]
    if not suffixes:
        return None
    # Domains live in a JSON array: a LIKE on its text narrows the rows cheaply on both
    # databases, then the exact match is made here.
    text = sa.cast(col(Organisation.domains), sa.Text)
    prefilter = [text.contains(f'"{suffix}"', autoescape=True) for suffix in suffixes]
    query = select(Organisation).where(sa.or_(*prefilter))
    ranked = sorted(
        ((_specificity(row, suffixes), row.active, row) for row in session.exec(query).all()),
        key=lambda item: (item[0], item[1]),
        reverse=True,
    )
    ranked = [item for item in ranked if item[0] > 0]
    if not ranked or (len(ranked) > 1 and ranked[0][:2] == ranked[1][:2]):
        return None
    return _organisation_view(ranked[0][2])


def _specificity(row: Organisation, suffixes: Sequence[str]) -> int:
    """Labels of the longest of the organisation's domains the address falls under; 0 if none."""
    matched = [s.count(".") + 1 for s in suffixes if s in row.domains]
    return max(matched, default=0)


def _organisation_view(row: Organisation) -> OrganisationView:
    return OrganisationView(
        id=_id(row.id),
        key=row.key,
        name=row.name,
        locale=row.locale,
        timezone=row.timezone,
        domains=tuple(row.domains),
        escalation_contacts=tuple(row.escalation_contacts),
        sla_overrides={target: dict(fields) for target, fields in row.sla_overrides.items()},
        active=row.active,
    )


def contacts_with_role(
    organisation_ids: Iterable[int], role: Role, *, session: Session
) -> list[Recipient]:
    """Active contacts holding `role` in these active organisations, by organisation, address."""
    ids = list(organisation_ids)
    if not ids:
        return []
    query = _recipients_query(role).where(col(Organisation.id).in_(ids))
    return [Recipient(*row) for row in session.exec(query).all()]


def maintenance_contacts_for_products(
    product_names: Iterable[str], *, session: Session
) -> list[Recipient]:
    """Maintenance contacts of active organisations using any of these products, each once."""
    names = list(product_names)
    if not names:
        return []
    uses = (
        select(OrganisationProduct.organisation_id)
        .join(Product, col(Product.id) == col(OrganisationProduct.product_id))
        .where(col(Product.name).in_(names))
    )
    query = _recipients_query(Role.MAINTENANCE).where(col(Organisation.id).in_(uses))
    return [Recipient(*row) for row in session.exec(query).all()]


def _recipients_query(role: Role) -> Any:
    """(email, organisation id, locale, timezone) of active `role` holders, active organisations."""
    return (
        select(Contact.email, Contact.organisation_id, Organisation.locale, Organisation.timezone)
        .join(Organisation, col(Organisation.id) == col(Contact.organisation_id))
        .join(ContactRole, col(ContactRole.contact_id) == col(Contact.id))
        .where(
            ContactRole.role == role.value,
            Contact.active == sa.true(),
            Organisation.active == sa.true(),
        )
        .order_by(col(Contact.organisation_id), col(Contact.email))
    )


def active_technicians(team: str, *, session: Session) -> list[TechnicianView]:
    """A team's active technicians in a stable order (by id), for round-robin assignment."""
    query = (
        select(Technician)
        .where(active_in_team(team))
        .order_by(col(Technician.id))
    )
    return [_technician_view(row) for row in session.exec(query).all()]


def _technician_view(row: Technician) -> TechnicianView:
    return TechnicianView(
        id=_id(row.id),
        email=row.email,
        name=row.name,
        team=row.team,
        manager=bool(row.extra.get("manager", False)),
        phone=str(row.extra.get("phone", "")),
    )


def _normalise(address: str) -> str:
    return address.strip().lower()


def directory_listing(*, session: Session, organisation_key: str | None = None) -> list[dict[str, Any]]:
    """Organisations with their domains, products and contacts (each with its roles and whether
    it is an MPOC), for `mailcase directory list/show`; ordered by organisation id and email."""
    from mailcase.store.models import OrganisationProduct, Product

    statement = select(Organisation).order_by(col(Organisation.key))
    if organisation_key is not None:
        statement = statement.where(Organisation.key == organisation_key)
    organisations = list(session.exec(statement))
    ids = [o.id for o in organisations if o.id is not None]
    if not ids:
        return []
    contacts = list(
        session.exec(select(Contact).where(col(Contact.organisation_id).in_(ids)).order_by(col(Contact.email)))
    )
    roles = _roles_by_contact([c.id for c in contacts if c.id is not None], session=session)
    products: dict[int, list[str]] = {}
    for organisation_id, name in session.exec(
        select(OrganisationProduct.organisation_id, Product.name)
        .join(Product, col(Product.id) == col(OrganisationProduct.product_id))
        .where(col(OrganisationProduct.organisation_id).in_(ids))
        .order_by(col(Product.name))
    ):
        products.setdefault(organisation_id, []).append(name)
    mpoc_roles = {"primary", "secondary"}
    result = []
    for organisation in organisations:
        people = [
            {
                "email": c.email,
                "name": c.name,
                "roles": sorted(roles.get(c.id or 0, set())),
                "mpoc": bool(roles.get(c.id or 0, set()) & mpoc_roles),
                "active": c.active,
            }
            for c in contacts
            if c.organisation_id == organisation.id
        ]
        result.append(
            {
                "id": organisation.key,
                "name": organisation.name,
                "locale": organisation.locale,
                "timezone": organisation.timezone,
                "domains": list(organisation.domains),
                "products": products.get(organisation.id or 0, []),
                "contacts": people,
            }
        )
    return result


def products_of_organisations(organisation_ids: Iterable[int], *, session: Session) -> dict[int, set[str]]:
    """The product names each of these organisations uses."""
    ids = list(organisation_ids)
    found: dict[int, set[str]] = defaultdict(set)
    if not ids:
        return found
    query = (
        select(OrganisationProduct.organisation_id, Product.name)
        .join(Product, col(Product.id) == col(OrganisationProduct.product_id))
        .where(col(OrganisationProduct.organisation_id).in_(ids))
    )
    for organisation_id, name in session.exec(query):
        found[organisation_id].add(name)
    return found


def technician_by_email(address: str, *, session: Session) -> TechnicianView | None:
    """The technician with this address, active or not (an author named on the command line)."""
    row = session.exec(select(Technician).where(Technician.email == address)).first()
    return _technician_view(row) if row is not None else None


def organisation_keys(organisation_ids: Iterable[int], *, session: Session) -> dict[int, str]:
    """The directory key of each of these organisations, by id (one query)."""
    ids = set(organisation_ids)
    if not ids:
        return {}
    return {o.id: o.key for o in session.exec(select(Organisation).where(col(Organisation.id).in_(ids))) if o.id is not None}


def product_names(*, session: Session) -> list[str]:
    """Every product's name, alphabetically."""
    return list(session.exec(select(Product.name).order_by(col(Product.name))))
