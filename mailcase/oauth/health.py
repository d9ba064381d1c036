"""An in-process board of what is healthy (green) or not (red), per component ("imap:<name>", "oauth:<name>", "outbound"); it never logs, never mails, never touches the database.

Each daemon process holds one (`App.health`), written by the IMAP pollers, the outbound transport
and the grant manager, read by `oauth status` and by the health endpoint (issue 15): a mailbox
that cannot sign in is red there while SMTP ingest and everything else go on. `set()` says
whether the state changed, so the caller logs (and alerts) once per change, not once per retry.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime

GREEN = "green"
RED = "red"
AMBER = "amber"  # working, but needs attention soon (a grant or a secret nearing expiry)


@dataclass(frozen=True, slots=True)
class ComponentHealth:
    component: str
    state: str
    reason: str
    since: datetime


class HealthBoard:
    """Thread-safe: pollers and delivery run in their own threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, ComponentHealth] = {}

    def set(self, component: str, state: str, reason: str, *, now: datetime) -> bool:
        """Record `component`'s state; True when it differs from the last one recorded (or is new and not green)."""
        with self._lock:
            previous = self._states.get(component)
            if previous is not None and previous.state == state:
                if previous.reason != reason:
                    self._states[component] = ComponentHealth(component, state, reason, previous.since)
                return False
            self._states[component] = ComponentHealth(component, state, reason, now)
            return previous is not None or state != GREEN

    def get(self, component: str) -> ComponentHealth | None:
        with self._lock:
            return self._states.get(component)

    def snapshot(self) -> list[ComponentHealth]:
        with self._lock:
            return sorted(self._states.values(), key=lambda health: health.component)

    def healthy(self) -> bool:
        """No component is red (amber is a warning, not an outage)."""
        with self._lock:
            return all(health.state != RED for health in self._states.values())
