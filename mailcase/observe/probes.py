"""Looks at the running daemon's parts and returns plain `Observations`: an EHLO to our own SMTP listener, a
database round trip with the write lock, the oldest due notice, and the health board; blocking, so it is
called from a worker thread, never on the event loop. It decides nothing (observe/readiness.py does).
"""

from __future__ import annotations

import smtplib
from datetime import datetime

from sqlalchemy.engine import Engine

from mailcase.config import Settings
from mailcase.notify.outbox import relay_pause
from mailcase.oauth.health import ComponentHealth, HealthBoard
from mailcase.observe.readiness import Observations
from mailcase.store.engine import database_problem
from mailcase.store.health import oldest_due_notice, probe_database
from mailcase.store.outbox import delivery_health

SCHEDULER = "scheduler"
"""The scheduler's sweeps on the health board (began/beat/fault, from the daemon's sweep job)."""


class Probes:
    def __init__(
        self,
        settings: Settings,
        *,
        reader: Engine,
        board: HealthBoard,
        started_at: datetime,
        smtp_address: tuple[str, int] | None,
    ) -> None:
        self.settings = settings
        self.reader = reader
        self.board = board
        self.started_at = started_at
        self.smtp_address = smtp_address
        self._paused_since: datetime | None = None

    def observe(self, now: datetime) -> Observations:
        limits = self.settings.health
        mailboxes = [box.name for box in self.settings.imap]
        database_error, database_seconds = "", 0.0
        try:
            database_seconds = probe_database(self.reader, timeout=limits.database_timeout_seconds)
        except Exception as error:  # the database's own words, never the SQL
            database_error = database_problem(error)
        oldest, queue_error, paused = None, "", ""
        shared: list[ComponentHealth] = []
        if self.settings.outbound.enabled:
            try:
                oldest = oldest_due_notice(self.reader, now=now, timeout=limits.database_timeout_seconds)
                pause = relay_pause(self.reader)
                shared = shared_delivery_health(self.reader)
            except Exception as error:
                queue_error = database_problem(error)
            else:
                # Delivery's pause is shared through the database by every process and daemon that
                # delivers: it says the relay is unreachable wherever the transport runs.
                if pause.until is None:
                    self._paused_since = None
                else:
                    self._paused_since = self._paused_since or now
                    paused = f"delivery paused until {pause.until.isoformat(timespec='seconds')} " \
                             f"after {pause.passes} unreachable pass(es)" + (f": {pause.reason}" if pause.reason else "")
        states, pulses = self.board.view([SCHEDULER, *(f"imap:{name}" for name in mailboxes)])
        return Observations(
            started_at=self.started_at,
            smtp=self._ehlo() if self.smtp_address is not None else None,
            mailboxes=mailboxes,
            sweep_interval_seconds=float(self.settings.scheduler.sweep_interval_seconds),
            outbound_enabled=self.settings.outbound.enabled,
            oldest_due_at=oldest,
            queue_error=queue_error,
            relay_paused=paused,
            relay_paused_since=self._paused_since if paused else None,
            database_error=database_error,
            database_seconds=database_seconds,
            board=[*states, *shared],
            pulses=pulses,
        )

    def _ehlo(self) -> str:
        """"" when our listener answers EHLO with 250, else why not (one line)."""
        assert self.smtp_address is not None
        host, port = self.smtp_address
        if host in ("0.0.0.0", "", "::"):
            host = "127.0.0.1" if host != "::" else "::1"
        try:
            with smtplib.SMTP(
                host, port, local_hostname="health-check.localhost", timeout=self.settings.health.smtp_timeout_seconds
            ) as client:
                code, reply = client.ehlo()
                if code != 250:
                    return f"EHLO answered {code} {reply.decode('utf-8', 'replace')}"
        except (OSError, smtplib.SMTPException) as error:
            return f"{type(error).__name__}: {error}"
        return ""


def shared_delivery_health(reader: Engine) -> list[ComponentHealth]:
    """The delivery process's board entries for the relay and the OAuth sign-in (it publishes them to the
    database: /readyz runs in this process, the transport in that one)."""
    with reader.connect() as connection:
        return [
            ComponentHealth(name, state, reason, since)
            for name, (state, since, reason) in delivery_health(connection).items()
        ]
