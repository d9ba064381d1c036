"""A desk for reply and lifecycle tests: an App on a test database with the example directory, a movable clock,
.eml templates from tests/fixtures/threads/ filled in and ingested through the real pipeline; no tests here.

    desk = ThreadDesk.start(engine, OPENED)
    case = desk.open_case()                      # pat@acme.example writes; the acknowledgement is queued
    desk.ingest("reply_outlook_full_headers.eml", in_reply_to=case.ack_id, subject=f"RE: {case.tag} …")

Templates use `string.Template` placeholders (`$message_id`, `${in_reply_to}`); every template gets
`message_id` (a fresh one), `date` (the clock's instant) and `from_header` (Pat, acme's primary MPOC)
unless the test passes them.
"""

from __future__ import annotations

import dataclasses
import string
import uuid
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from mailcase import daemon
from mailcase.app import App
from mailcase.clock import FixedClock
from mailcase.config import Settings, load_config
from mailcase.desk import cases as casework
from mailcase.domain import CaseStatus, Channel, RawMessage, format_case_number
from mailcase.ingest.pipeline import IngestOutcome, Pipeline
from mailcase.present import case_detail_json
from mailcase.rules.directory_format import load_directory
from mailcase.rules.tokens import reply_address, staff_reply_address
from mailcase.store.directory import import_directory
from mailcase.store.engine import transaction
from mailcase.store.models import Case, HeldMessage, Outbox

REPO = Path(__file__).resolve().parents[2]
THREADS = REPO / "tests" / "fixtures" / "threads"
DIRECTORY = REPO / "examples" / "directory.toml"
SUPPORT = "support@support.example.com"
PAT = "Pat Doe <pat@acme.example>"  # the templates' default `$from_header`: acme's primary MPOC


def sample_settings(relay: Any | None = None) -> Settings:
    """config.toml; with a CaptureRelay, `[outbound]` aimed at it."""
    settings = load_config(REPO / "config.toml", {})
    if relay is not None:
        settings = dataclasses.replace(settings, outbound=relay.outbound_settings(settings.outbound))
    return settings


def fresh_message_id(domain: str = "client.example") -> str:
    return f"<{uuid.uuid4().hex}@{domain}>"


def eml(name: str, **values: Any) -> bytes:
    """The template `tests/fixtures/threads/<name>` with `values` filled in (a missing one is an error)."""
    text = (THREADS / name).read_text(encoding="utf-8")
    return string.Template(text).substitute({k: str(v) for k, v in values.items()}).encode("utf-8")


@dataclass(frozen=True, slots=True)
class OpenedCase:
    """A case opened by ingesting a customer's first message, with the ids a reply would quote."""

    number: int
    customer_message_id: str  # the customer's first message
    ack_id: str  # our acknowledgement's Message-ID (outbox)
    token_address: str  # the acknowledgement's Reply-To

    @property
    def tag(self) -> str:
        return f"[Case #{format_case_number(self.number)}]"

    @property
    def padded(self) -> str:
        return format_case_number(self.number)


class ThreadDesk:
    """The sample config and directory on one database; the clock moves only when a test moves it."""

    def __init__(self, app: App, clock: FixedClock) -> None:
        self.app = app
        self.clock = clock
        self.pipeline: Pipeline = app.pipeline()

    @classmethod
    def start(cls, engine: Engine, now: datetime, *, settings: Settings | None = None) -> ThreadDesk:
        clock = FixedClock(now)
        app = App(settings=settings or sample_settings(), engine=engine, clock=clock)
        with transaction(engine) as session:
            import_directory(load_directory(DIRECTORY.read_text(encoding="utf-8")), session=session)
        return cls(app, clock)

    @property
    def engine(self) -> Engine:
        return self.app.engine

    def at(self, instant: datetime) -> ThreadDesk:
        self.clock.set(instant)
        return self

    # --- inbound ------------------------------------------------------------------------------

    def ingest_bytes(self, data: bytes, *, envelope_to: tuple[str, ...] = (SUPPORT,), envelope_from: str = "") -> IngestOutcome:
        raw = RawMessage(
            data=data,
            channel=Channel.PIPE,
            received_at=self.clock.now(),
            envelope_from=envelope_from,
            envelope_to=envelope_to,
            source="test",
        )
        return self.pipeline.ingest_one(raw)

    def ingest(self, template: str, *, envelope_to: tuple[str, ...] = (SUPPORT,), **values: Any) -> IngestOutcome:
        values.setdefault("message_id", fresh_message_id())
        values.setdefault("date", format_datetime(self.clock.now()))
        values.setdefault("from_header", PAT)
        return self.ingest_bytes(eml(template, **values), envelope_to=envelope_to)

    def open_case(
        self,
        template: str = "new_case_outlook.eml",
        *,
        subject: str = "Phones down at the Chicago office",
        **values: Any,
    ) -> OpenedCase:
        """Ingest a customer's first message and return the case with our acknowledgement's ids."""
        message_id = values.pop("message_id", fresh_message_id("acme.example"))
        outcome = self.ingest(template, message_id=message_id, subject=subject, **values)
        assert outcome.decision in ("open_case", "open_related_case"), outcome
        assert outcome.case_number is not None
        number = int(outcome.case_number)
        (ack,) = self.outbox(kind="customer.ack", case=number)
        return OpenedCase(
            number=number,
            customer_message_id=message_id,
            ack_id=ack.message_id,
            token_address=self.token_address(number),
        )

    def token_address(self, number: int) -> str:
        return reply_address(SUPPORT, number, self.app.secret)

    def staff_token_address(self, number: int, technician: str) -> str:
        """The Reply-To of a staff notice about case `number` to `technician` (their own token)."""
        return staff_reply_address(SUPPORT, number, technician, self.app.secret)

    # --- agent work ---------------------------------------------------------------------------

    def set_status(
        self,
        number: int,
        status: CaseStatus,
        *,
        hold_until: datetime | None = None,
        duplicate_of: int | None = None,
        author: str = "ana@support.example.com",
    ) -> None:
        with transaction(self.engine) as session:
            case = casework.find_case(session, number, lock=True)
            primary = casework.find_case(session, duplicate_of) if duplicate_of is not None else None
            casework.set_status(
                session, self.app.desk(), case, status, now=self.clock.now(), author=author,
                hold_until=hold_until, duplicate_of=primary,
            )

    def tick(self) -> None:
        """What `mailcase tick` does at the clock's instant: due sweeps, then outbox delivery."""
        daemon.tick(self.app)

    def sweep(self) -> None:
        """The scheduler's sweeps at the clock's instant, without delivering the outbox."""
        daemon.run_due_sweeps(self.app, self.clock.now())

    def close(self, number: int) -> None:
        """Close a case the way an agent does it after working it: in progress, then closed."""
        if self.case(number).status == CaseStatus.NEW:
            self.set_status(number, CaseStatus.IN_PROGRESS)
        self.set_status(number, CaseStatus.CLOSED)

    # --- reading back -------------------------------------------------------------------------

    def case(self, number: int) -> Case:
        with transaction(self.engine) as session:
            return casework.find_case(session, number)

    def show(self, number: int) -> dict[str, Any]:
        """What `mailcase cases show NUMBER --json` prints."""
        with transaction(self.engine) as session:
            return case_detail_json(session, casework.find_case(session, number))

    def outbox(self, *, kind: str | None = None, case: int | None = None) -> list[Outbox]:
        with transaction(self.engine) as session:
            statement = select(Outbox).order_by(col(Outbox.id))
            if kind is not None:
                statement = statement.where(Outbox.kind == kind)
            if case is not None:
                case_id = session.exec(select(Case.id).where(Case.number == case)).one()
                statement = statement.where(Outbox.case_id == case_id)
            return list(session.exec(statement))

    def held(self) -> list[HeldMessage]:
        with transaction(self.engine) as session:
            return list(session.exec(select(HeldMessage).order_by(col(HeldMessage.id))))

    def case_count(self) -> int:
        with transaction(self.engine) as session:
            return len(session.exec(select(Case.id)).all())
