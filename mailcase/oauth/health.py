"""An in-process board of what is healthy (green) or not (red), per component ("imap:<name>", "oauth:<name>", "outbound"); it never logs, never mails, never touches the database.

Each daemon process holds one (`App.health`), written by the IMAP pollers, the outbound transport
and the grant manager, read by `oauth status` and by the health endpoint (issue 15): a mailbox
that cannot sign in is red there while SMTP ingest and everything else go on. `set()` says
whether the state changed, so the caller logs (and alerts) once per change, not once per retry.
"""

from __future__ import annotations

import dataclasses
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


@dataclass(frozen=True, slots=True)
class Pulse:
    """Signs of life of a part that works in rounds (a mailbox's polls, the scheduler's sweeps): when a
    round last succeeded, whether one is running since when, and the last failure."""

    component: str
    last_ok: datetime | None = None
    running_since: datetime | None = None
    last_error: str = ""
    last_error_at: datetime | None = None
    failures: int = 0
    """Rounds failed since the last success."""


class HealthBoard:
    """Thread-safe: pollers and delivery run in their own threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, ComponentHealth] = {}
        self._pulses: dict[str, Pulse] = {}

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

    def view(self, components: list[str]) -> tuple[list[ComponentHealth], dict[str, Pulse]]:
        """Every state and the pulses of `components`, read together under one lock: /readyz must
        never pair a state with a pulse from another moment (a mailbox that signs in again between
        the two reads looked green with its old failure count: a passing warning)."""
        with self._lock:
            states = sorted(self._states.values(), key=lambda health: health.component)
            pulses = {component: self._pulses[component] for component in components if component in self._pulses}
        return states, pulses

    def healthy(self) -> bool:
        """No component is red (amber is a warning, not an outage)."""
        with self._lock:
            return all(health.state != RED for health in self._states.values())

    # -- pulses (issue 15: /readyz ages) -----------------------------------------------------

    def began(self, component: str, *, now: datetime) -> None:
        """A round of `component` starts (a sweep)."""
        self._update(component, running_since=now)

    def beat(self, component: str, *, now: datetime) -> None:
        """A round of `component` succeeded (a poll, an IDLE response, a sweep)."""
        self._update(component, last_ok=now, running_since=None, failures=0)

    def fault(self, component: str, error: str, *, now: datetime) -> None:
        """A round of `component` failed with `error` (one line, no secrets)."""
        with self._lock:
            pulse = self._pulses.get(component) or Pulse(component)
            self._pulses[component] = dataclasses.replace(
                pulse, running_since=None, last_error=error, last_error_at=now, failures=pulse.failures + 1
            )

    def pulse(self, component: str) -> Pulse | None:
        with self._lock:
            return self._pulses.get(component)

    def _update(self, component: str, **values: object) -> None:
        with self._lock:
            pulse = self._pulses.get(component) or Pulse(component)
            self._pulses[component] = dataclasses.replace(pulse, **values)  # type: ignore[arg-type]
