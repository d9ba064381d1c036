"""Helpers for scheduler tests: a desk (migrated database, example directory, the CLI bound to it) driven
through `mailcase --now …` as an agent and cron would drive it, and readers for what it queued; no tests here.

    desk = SchedulerDesk.on(engine, tmp_path)
    number = desk.mail("pat@acme.example", "Phones down", at=mt(2026, 12, 4, 16))
    desk.tick(mt(2026, 12, 7, 12))
    assert desk.notices(number, "staff.sla_reminder")
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from mailcase.store.engine import transaction
from mailcase.store.models import Outbox
from support.cli import REPO, CliResult, MailcaseCli

DIRECTORY = REPO / "examples" / "directory.toml"
DENVER = ZoneInfo("America/Denver")
SUPPORT = "support@support.example.com"

# Who is who in examples/directory.toml and config.toml.
PAT = "pat@acme.example"  # acme's primary MPOC (en)
JOAO = "joao@brisa.example.com.br"  # brisa's primary MPOC (pt)
LEE = "lee@acme.example"  # an acme employee, not an MPOC
EVE = "eve@outsider.example"  # in no organisation
ANA = "ana@support.example.com"  # team support; first in the round-robin
SUPPORT_MANAGER = "support-manager@support.example.com"  # [escalation.teams.support] manager (level 2)
VP = "vp-support@support.example.com"  # [escalation] vp (level 3)
ON_CALL = "oncall@support.example.com"  # [escalation] on_call

_message_ids = itertools.count(1)


def mt(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """A wall time in Mountain Time (America/Denver), as the desk reads its clock, as aware UTC."""
    return datetime(year, month, day, hour, minute, tzinfo=DENVER).astimezone(UTC)


def utc(instant: str | None) -> datetime | None:
    """An ISO 8601 instant from JSON output, as aware UTC."""
    return None if instant is None else datetime.fromisoformat(instant).astimezone(UTC)


def engine_url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def mail_bytes(sender: str, subject: str, at: datetime, *, to: str = SUPPORT, body: str = "Please help.\n") -> bytes:
    """A plain customer message, as their mail client would send it."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(at)
    message["Message-ID"] = f"<sched.{next(_message_ids)}.{at.timestamp():.0f}@{sender.split('@')[1]}>"
    message.set_content(body)
    return message.as_bytes()


@dataclass(frozen=True)
class SchedulerDesk:
    """A migrated database with the example directory imported, and `mailcase` pointed at it."""

    engine: Engine
    cli: MailcaseCli
    workdir: Path

    @classmethod
    def on(cls, engine: Engine, workdir: Path, *, env: dict[str, str] | None = None) -> SchedulerDesk:
        cli = MailcaseCli(engine_url(engine), env=env)
        desk = cls(engine=engine, cli=cli, workdir=workdir)
        desk.run("directory", "import", str(DIRECTORY))
        return desk

    def run(self, *argv: str, at: datetime | None = None) -> CliResult:
        """`mailcase [--now AT] ARGV…`; fails the test on a non-zero exit."""
        result = self.cli(*argv, now=at.isoformat() if at is not None else None)
        assert result.status == 0, f"mailcase {' '.join(argv)} failed ({result.status}):\n{result.stderr}"
        return result

    def mail(self, sender: str, subject: str, *, at: datetime, to: str = SUPPORT, body: str = "Please help.\n") -> str:
        """`mailcase --now AT ingest FILE`; the decision line it printed."""
        path = self.workdir / f"in-{next(_message_ids)}.eml"
        path.write_bytes(mail_bytes(sender, subject, at, to=to, body=body))
        return self.run("ingest", str(path), at=at).stdout.strip()

    def open_case(self, sender: str, subject: str, *, at: datetime) -> int:
        """Ingest an MPOC's message that opens a case; its number."""
        line = self.mail(sender, subject, at=at)
        assert "open_case case " in line, line
        return int(line.split("open_case case ")[1].split(":")[0])

    def tick(self, at: datetime) -> dict[str, Any]:
        """`mailcase --now AT tick --no-deliver --json`."""
        return self.run("tick", "--no-deliver", "--json", at=at).json()  # type: ignore[no-any-return]

    def sla(self, number: int, at: datetime) -> dict[str, Any]:
        """`mailcase --now AT cases sla N --json`, deadlines keyed by name."""
        data = self.run("cases", "sla", str(number), "--json", at=at).json()
        return {row["name"]: row for row in data["deadlines"]}

    def show(self, number: int) -> dict[str, Any]:
        return self.run("cases", "show", str(number), "--json").json()  # type: ignore[no-any-return]

    def notices(self, number: int | None = None, template: str | None = None) -> list[Outbox]:
        """Outbox rows, oldest first, of one case and/or one template."""
        with transaction(self.engine) as session:
            statement = select(Outbox).order_by(col(Outbox.id))
            if number is not None:
                from mailcase.store.models import Case

                case_id = session.exec(select(Case.id).where(Case.number == number)).one()
                statement = statement.where(Outbox.case_id == case_id)
            if template is not None:
                statement = statement.where(Outbox.template == template)
            return list(session.exec(statement))

    def scheduled(self, number: int) -> list[tuple[str, tuple[str, ...]]]:
        """(template, recipients) of the case's scheduler notices (staff SLA notices, nudges, closing), in order."""
        kinds = {
            "staff.sla_reminder",
            "staff.sla_escalation",
            "staff.unassigned_alert",
            "staff.hold_expired",
            "customer.nudge",
            "customer.closed_no_response",
        }
        return [(row.template, tuple(row.recipients)) for row in self.notices(number) if row.template in kinds]
