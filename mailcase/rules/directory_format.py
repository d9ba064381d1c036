"""The directory file's format: TOML text in, validated frozen values out; no database, no files.

`load_directory` is the only entry point; the values it returns (`Directory` and its entries) are
in `domain`, so that `store.directory` imports them without importing rules. Every problem raises one `DirectoryError` naming the
dotted key (`organisations[1].contacts[0].rolez: unknown key`), so an operator can fix the file
without reading code. Addresses and domains come out lower-cased.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Callable
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mailcase.domain import (
    DEFAULT_LOCALE,
    DEFAULT_TIMEZONE,
    ContactEntry,
    Directory,
    OrganisationEntry,
    ProductEntry,
    Role,
    TechnicianEntry,
)
from mailcase.errors import DirectoryError
from mailcase.rules.sla import TARGET_KEYS, Target

LOCALES = ("en", "pt")
SLA_TARGETS = TARGET_KEYS  # P1 … P1G, macd_standard, macd_expedited
SLA_FIELDS = tuple(f.name for f in dataclasses.fields(Target))

# Column sizes of mailcase.store.models, checked here so a long value is a clear error, not a DB error.
_MAX_NAME = 300
_MAX_EMAIL = 320  # RFC 5321 §4.5.3.1: 64 (local part) + 1 + 255 (domain)
_MAX_PRODUCT = 200
_MAX_TEAM = 100
_MAX_KEY = 100
_MAX_PHONE = 64

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN_RE = re.compile(rf"^{_LABEL}(?:\.{_LABEL})+$")
# A bare addr-spec (RFC 5322 §3.4.1) without quoted local parts or display names: what people
# actually type in a directory. Specials, spaces and brackets are refused.
_LOCAL_RE = re.compile(r"^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_ORG_KEY_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")

_TOP_KEYS = ("products", "technicians", "organisations")
_PRODUCT_KEYS = ("name",)
_TECHNICIAN_KEYS = ("name", "email", "team", "active", "phone", "manager")
_ORGANISATION_KEYS = (
    "id", "name", "locale", "timezone", "domains", "products", "contacts",
    "sla", "escalation", "notes", "active",
)  # fmt: skip
_CONTACT_KEYS = ("name", "email", "roles", "phone", "title", "notes", "active")


def load_directory(text: str) -> Directory:
    """Parse and validate a directory file's TOML text.

    Rules, checked in file order; the first broken one raises DirectoryError naming the key:
    1. the text is TOML; only known keys appear, with the right types;
    2. required keys are present: products[].name, technicians[].email and .team,
       organisations[].id and .name, contacts[].email;
    3. addresses are bare addresses, domains are host names, organisation ids are slugs,
       locale is en or pt, timezone is an IANA zone, roles are known roles,
       SLA overrides name known targets (P1 … P1G, macd_*) and fields with integers >= 0;
    4. nothing is listed twice: product names (ignoring case), technician emails, organisation
       ids, contact emails (across organisations), domains (across organisations);
       a contact may not use a technician's address;
    5. every product an organisation uses is listed in [[products]].
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DirectoryError("(file)", f"not valid TOML: {exc}") from None
    _check_keys(data, _TOP_KEYS, "")
    directory = Directory(
        products=_entries(data, "products", _product),
        technicians=_entries(data, "technicians", _technician),
        organisations=_entries(data, "organisations", _organisation),
    )
    _check_unique(directory)
    _check_products_known(directory)
    return directory


# ---------------------------------------------------------------------------------------------
# Entries

_T = TypeVar("_T")


def _entries(
    table: dict[str, Any], name: str, build: Callable[[dict[str, Any], str], _T], parent: str = ""
) -> tuple[_T, ...]:
    key = _join(parent, name)
    items = table.get(name, [])
    if not isinstance(items, list):
        raise DirectoryError(key, f"expected an array of tables ([[{name}]]), got {_kind(items)}")
    built = []
    for i, item in enumerate(items):
        path = f"{key}[{i}]"
        if not isinstance(item, dict):
            raise DirectoryError(path, f"expected a table, got {_kind(item)}")
        built.append(build(item, path))
    return tuple(built)


def _product(table: dict[str, Any], path: str) -> ProductEntry:
    _check_keys(table, _PRODUCT_KEYS, path)
    return ProductEntry(name=_text(table, "name", path, required=True, max_len=_MAX_PRODUCT))


def _technician(table: dict[str, Any], path: str) -> TechnicianEntry:
    _check_keys(table, _TECHNICIAN_KEYS, path)
    return TechnicianEntry(
        email=_email(table, "email", path),
        team=_text(table, "team", path, required=True, max_len=_MAX_TEAM),
        name=_text(table, "name", path, max_len=_MAX_NAME),
        phone=_text(table, "phone", path, max_len=_MAX_PHONE),
        manager=_flag(table, "manager", path, default=False),
        active=_flag(table, "active", path, default=True),
    )


def _organisation(table: dict[str, Any], path: str) -> OrganisationEntry:
    _check_keys(table, _ORGANISATION_KEYS, path)
    return OrganisationEntry(
        key=_org_key(table, path),
        name=_text(table, "name", path, required=True, max_len=_MAX_NAME),
        locale=_locale(table, path),
        timezone=_timezone(table, path),
        domains=_values(table, "domains", path, _domain),
        products=_values(table, "products", path, _product_name),
        contacts=_entries(table, "contacts", _contact, parent=path),
        sla=_sla(table, path),
        escalation=_values(table, "escalation", path, _address),
        notes=_text(table, "notes", path),
        active=_flag(table, "active", path, default=True),
    )


def _contact(table: dict[str, Any], path: str) -> ContactEntry:
    _check_keys(table, _CONTACT_KEYS, path)
    return ContactEntry(
        email=_email(table, "email", path),
        name=_text(table, "name", path, max_len=_MAX_NAME),
        roles=frozenset(_role(value, key) for key, value in _items(table, "roles", path)),
        title=_text(table, "title", path, max_len=_MAX_NAME),
        phone=_text(table, "phone", path, max_len=_MAX_PHONE),
        notes=_text(table, "notes", path),
        active=_flag(table, "active", path, default=True),
    )


# ---------------------------------------------------------------------------------------------
# Values


def _check_keys(table: dict[str, Any], allowed: tuple[str, ...], path: str) -> None:
    for name in table:
        if name not in allowed:
            raise DirectoryError(_join(path, name), "unknown key")


def _text(
    table: dict[str, Any], name: str, path: str, *, required: bool = False, max_len: int = 0
) -> str:
    key = _join(path, name)
    if name not in table:
        if required:
            raise DirectoryError(key, "missing (required)")
        return ""
    value = table[name]
    if not isinstance(value, str):
        raise DirectoryError(key, f"expected a string, got {_kind(value)}")
    value = value.strip()
    if required and not value:
        raise DirectoryError(key, "must not be empty")
    if max_len and len(value) > max_len:
        raise DirectoryError(key, f"longer than {max_len} characters")
    return value


def _flag(table: dict[str, Any], name: str, path: str, *, default: bool) -> bool:
    value = table.get(name, default)
    if not isinstance(value, bool):
        raise DirectoryError(_join(path, name), f"expected true or false, got {_kind(value)}")
    return value


def _items(table: dict[str, Any], name: str, path: str) -> list[tuple[str, Any]]:
    """The (dotted key, value) pairs of an optional array."""
    key = _join(path, name)
    values = table.get(name, [])
    if not isinstance(values, list):
        raise DirectoryError(key, f"expected an array, got {_kind(values)}")
    return [(f"{key}[{i}]", value) for i, value in enumerate(values)]


def _string(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise DirectoryError(key, f"expected a string, got {_kind(value)}")
    return value.strip()


def _email(table: dict[str, Any], name: str, path: str) -> str:
    key = _join(path, name)
    if name not in table:
        raise DirectoryError(key, "missing (required)")
    return _address(table[name], key)


def _address(value: Any, key: str) -> str:
    # The local part is case-sensitive in theory (RFC 5321 §2.4) but no mail system we serve
    # treats it so; one lower-cased spelling is what makes lookups by sender reliable.
    address = _string(value, key).lower()
    local, at, domain = address.rpartition("@")
    if not at or not _LOCAL_RE.match(local) or not _DOMAIN_RE.match(domain):
        raise DirectoryError(key, f"not an email address: {value!r}")
    if len(address) > _MAX_EMAIL or len(local) > 64:
        raise DirectoryError(key, f"address too long: {value!r}")
    return address


def _domain(value: Any, key: str) -> str:
    domain = _string(value, key).lower().rstrip(".")
    if not _DOMAIN_RE.match(domain) or len(domain) > 253:
        raise DirectoryError(key, f"not a domain name (use the xn-- form for IDNs): {value!r}")
    return domain


def _product_name(value: Any, key: str) -> str:
    name = _string(value, key)
    if not name:
        raise DirectoryError(key, "must not be empty")
    return name


def _role(value: Any, key: str) -> Role:
    text = _string(value, key)
    try:
        return Role(text)
    except ValueError:
        known = ", ".join(role.value for role in Role)
        raise DirectoryError(key, f"unknown role {text!r} (known: {known})") from None


def _org_key(table: dict[str, Any], path: str) -> str:
    key = _text(table, "id", path, required=True, max_len=_MAX_KEY)
    if not _ORG_KEY_RE.match(key):
        raise DirectoryError(
            _join(path, "id"), f"{key!r}: use lower-case letters, digits, '-', '_' or '.'"
        )
    return key


def _locale(table: dict[str, Any], path: str) -> str:
    if "locale" not in table:
        return DEFAULT_LOCALE
    locale = _string(table["locale"], _join(path, "locale"))
    if locale not in LOCALES:
        choices = ", ".join(LOCALES)
        raise DirectoryError(_join(path, "locale"), f"{locale!r}: must be one of {choices}")
    return locale


def _timezone(table: dict[str, Any], path: str) -> str:
    if "timezone" not in table:
        return DEFAULT_TIMEZONE
    name = _string(table["timezone"], _join(path, "timezone"))
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise DirectoryError(_join(path, "timezone"), f"unknown time zone {name!r}") from None
    return name


def _sla(table: dict[str, Any], path: str) -> dict[str, dict[str, int]]:
    """`sla.P4.response_business_days = 2`: per-organisation overrides of config.toml's [sla]."""
    key = _join(path, "sla")
    overrides = table.get("sla", {})
    if not isinstance(overrides, dict):
        raise DirectoryError(key, f"expected a table, got {_kind(overrides)}")
    _check_keys(overrides, SLA_TARGETS, key)
    return {target: _sla_target(fields, _join(key, target)) for target, fields in overrides.items()}


def _sla_target(fields: Any, key: str) -> dict[str, int]:
    if not isinstance(fields, dict):
        raise DirectoryError(key, f"expected a table, got {_kind(fields)}")
    _check_keys(fields, SLA_FIELDS, key)
    for name, value in fields.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise DirectoryError(_join(key, name), f"expected a whole number >= 0, got {value!r}")
    return dict(fields)


def _values(
    table: dict[str, Any], name: str, path: str, parse: Callable[[Any, str], str]
) -> tuple[str, ...]:
    """An optional array of strings, each parsed; repeats keep the first, in file order
    (listing a product twice is harmless)."""
    return tuple(dict.fromkeys(parse(value, key) for key, value in _items(table, name, path)))


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return f"{type(value).__name__} {value!r}"


# ---------------------------------------------------------------------------------------------
# Cross-entry checks


def _check_unique(directory: Directory) -> None:
    _first_seen(
        ((f"products[{i}].name", p.name.casefold()) for i, p in enumerate(directory.products)),
        "product",
    )
    technicians = _first_seen(
        ((f"technicians[{i}].email", t.email) for i, t in enumerate(directory.technicians)),
        "technician",
    )
    _first_seen(
        ((f"organisations[{i}].id", o.key) for i, o in enumerate(directory.organisations)),
        "organisation id",
    )
    _first_seen(
        (
            (f"organisations[{i}].domains[{j}]", domain)
            for i, org in enumerate(directory.organisations)
            for j, domain in enumerate(org.domains)
        ),
        "domain",
    )
    contacts = _first_seen(
        (
            (f"organisations[{i}].contacts[{j}].email", contact.email)
            for i, org in enumerate(directory.organisations)
            for j, contact in enumerate(org.contacts)
        ),
        "contact",
    )
    for email, key in contacts.items():
        if email in technicians:
            raise DirectoryError(key, f"{email!r} is a technician's address ({technicians[email]})")


def _first_seen(pairs: Any, what: str) -> dict[str, str]:
    """value -> key of its first appearance; a second appearance is an error naming both."""
    seen: dict[str, str] = {}
    for key, value in pairs:
        if value in seen:
            raise DirectoryError(key, f"duplicate {what} {value!r} (also at {seen[value]})")
        seen[value] = key
    return seen


def _check_products_known(directory: Directory) -> None:
    known = {product.name for product in directory.products}
    for i, org in enumerate(directory.organisations):
        for j, name in enumerate(org.products):
            if name not in known:
                raise DirectoryError(
                    f"organisations[{i}].products[{j}]",
                    f"unknown product {name!r} (add it to [[products]])",
                )
