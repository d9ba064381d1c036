"""What every desk action needs from the installation, as one small frozen value built by `app.py`: addresses,
hostname, zone, the token secret, the deadline planner, the escalation path and the maintenance lead times.

It holds values only; it never reads settings files, opens transactions or sees the `App`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlmodel import Session

from mailcase.config import MaintenanceSettings
from mailcase.desk.deadlines import DeadlinePlanner
from mailcase.rules.escalation import EscalationPath
from mailcase.store.installation import installation_secret

DEFAULT_TIMEZONE = "America/Denver"


class InstallationSecret:
    """The HMAC key of reply tokens and unsubscribe addresses, resolved once per process: `[security]
    secret` when configured, else the key generated at install and kept in the database (read in the
    caller's transaction: a transaction of its own would wait for SQLite's single writer, ours)."""

    __slots__ = ("_value",)

    def __init__(self, configured: bytes = b"") -> None:
        self._value: bytes | None = configured or None

    @property
    def resolved(self) -> bytes | None:
        """The key once known (configured, or read before), else None."""
        return self._value

    def get(self, session: Session) -> bytes:
        if self._value is None:
            # Concurrent first calls agree: installation_secret inserts one value or ignores.
            self._value = installation_secret(session=session).encode()
        return self._value


@dataclass(frozen=True, slots=True)
class Desk:
    """The installation as the support plan's actions see it."""

    hostname: str
    support_address: str
    secret: InstallationSecret = field(default_factory=InstallationSecret)
    # Recomputes a case's deadlines and `next_due_at` after every change (None: deadlines untouched).
    planner: DeadlinePlanner | None = None
    timezone: str = DEFAULT_TIMEZONE
    reopen_window_days: int = 7
    escalation: EscalationPath = field(default_factory=EscalationPath)
    maintenance: MaintenanceSettings = field(default_factory=MaintenanceSettings)
