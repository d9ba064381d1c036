"""Helpers for broadcast tests (maintenance windows, master cases): an App on a test database with the example
directory imported, and readers for the outbox rows and their .ics attachments; no tests here."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import icalendar
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from mailcase.app import App
from mailcase.clock import FixedClock
from mailcase.config import load_config
from mailcase.notify.ics import invitation
from mailcase.rules.directory_format import load_directory
from mailcase.store.directory import import_directory
from mailcase.store.engine import transaction
from mailcase.store.models import Contact, ContactRole, Organisation, Outbox

REPO = Path(__file__).resolve().parents[2]
DIRECTORY = REPO / "examples" / "directory.toml"

# Who in examples/directory.toml gets maintenance notices, by the products their organisation uses.
ACME_MAINTENANCE = {"sam@acme.example", "ops@acme.example"}  # Microsoft Teams, Cisco
BRISA_MAINTENANCE = {"joao@brisa.example.com.br"}  # Five9, Microsoft Teams (locale pt)


def example_app(engine: Engine, now: datetime, environ: dict[str, str] | None = None) -> App:
    """An App on `engine` with the sample config (overridden by `environ`'s MAILCASE_* values), a fixed
    clock at `now` and the example directory."""
    app = App(settings=load_config(REPO / "config.toml", environ or {}), engine=engine, clock=FixedClock(now))
    with transaction(engine) as session:
        import_directory(load_directory(DIRECTORY.read_text(encoding="utf-8")), session=session)
    return app


def add_contact(engine: Engine, organisation_key: str, email: str, roles: list[str]) -> None:
    """A contact who joined the directory later (as an operator's next import would add them)."""
    with transaction(engine) as session:
        organisation = session.exec(select(Organisation).where(Organisation.key == organisation_key)).one()
        contact = Contact(email=email, name=email.split("@")[0], organisation_id=organisation.id)
        session.add(contact)
        session.flush()
        for role in roles:
            session.add(ContactRole(contact_id=contact.id, role=role))


def outbox(engine: Engine, *, template: str | None = None, maintenance_id: int | None = None) -> list[Outbox]:
    with transaction(engine) as session:
        statement = select(Outbox).order_by(col(Outbox.id))
        if template is not None:
            statement = statement.where(Outbox.template == template)
        if maintenance_id is not None:
            statement = statement.where(Outbox.maintenance_id == maintenance_id)
        return list(session.exec(statement))


def recipient(row: Outbox) -> str:
    (address,) = row.recipients
    return address


def ics_event(row: Outbox) -> tuple[str, Any]:
    """The METHOD and the VEVENT of the .ics a row's delivery attaches, parsed with `icalendar`."""
    content_type, data = invitation(row.context["_calendar"])
    assert content_type.startswith("text/calendar; method=")
    calendar = icalendar.Calendar.from_ical(data)
    (event,) = calendar.walk("VEVENT")
    return str(calendar["METHOD"]), event
