"""Whether each part of the daemon is ready, from what was observed and the thresholds: plain values in, a
`Readiness` out; no I/O, no clock (the caller passes `now`), no logging.

The rules, per part (the first that applies decides):

* `smtp`: the listener did not answer EHLO → critical; else ok.
* `imap:<name>`: the server refused our sign-in (the board says red) → critical; no completed poll and
  no IDLE response for `mailbox_silent_seconds` (counted from the start when it never answered) →
  critical; the last round failed → warning; else ok.
* `scheduler`: a sweep running for longer than `sweep_stall_seconds`, or none ended within
  `sweep_stall_seconds` + the sweep interval → critical; the last sweep failed → warning; else ok.
* `outbox`: the relay refusing, unreachable (delivery paused) or refusing our OAuth sign-in for
  `relay_down_seconds` or more, or a
  due notice unsent for longer than `outbox_stall_seconds` → critical; the relay refusing for less → warning;
  the queue could not be read → warning; else ok.
* `database`: the probe failed (down, or the write lock not had in time) → critical; else ok.
* any other component on the health board (OAuth grants): red → critical, amber → warning, else ok.

Ready means no part is critical (/readyz answers 503 otherwise); the overall state is the worst part's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum

from mailcase.config import HealthSettings
from mailcase.oauth.health import AMBER, GREEN, RED, ComponentHealth, Pulse


class State(IntEnum):
    """A part's state; the values are Nagios plugin exit codes, and a larger one is worse."""

    OK = 0
    WARNING = 1
    CRITICAL = 2

    @property
    def word(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Part:
    name: str
    state: State
    detail: str
    age_seconds: float | None = None
    """Seconds since the part last showed it works (a poll, a sweep end, the relay's last 250); None: not tracked."""

    def line(self) -> str:
        age = "-" if self.age_seconds is None else f"{self.age_seconds:.0f}s"
        return f"{self.name} {self.state.word} age={age} {self.detail}"


@dataclass(frozen=True, slots=True)
class Readiness:
    checked_at: datetime
    parts: tuple[Part, ...]

    @property
    def state(self) -> State:
        return max((part.state for part in self.parts), default=State.OK)

    @property
    def ready(self) -> bool:
        return self.state is not State.CRITICAL

    def failing(self, at_least: State = State.CRITICAL) -> list[Part]:
        return [part for part in self.parts if part.state >= at_least]

    def summary(self) -> str:
        """One line: "ready: 5 parts ok" or "not ready: scheduler, outbox"."""
        critical, warning = self.failing(State.CRITICAL), self.failing(State.WARNING)
        if critical:
            return "not ready: " + ", ".join(part.name for part in critical)
        if warning:
            return "ready, with warnings: " + ", ".join(part.name for part in warning)
        return f"ready: {len(self.parts)} parts ok"

    def text(self) -> str:
        return "\n".join([self.summary(), *(part.line() for part in self.parts)]) + "\n"

    def as_json(self) -> dict[str, object]:
        return {
            "status": self.state.word,
            "ready": self.ready,
            "summary": self.summary(),
            "checked_at": self.checked_at.isoformat(),
            "parts": [
                {"part": p.name, "state": p.state.word, "age_seconds": p.age_seconds, "detail": p.detail}
                for p in self.parts
            ],
        }


@dataclass(frozen=True, slots=True)
class Observations:
    """What the probes saw, as plain values (see observe/probes.py)."""

    started_at: datetime
    """When the daemon started: the age of a part that never yet showed life."""
    smtp: str | None = None
    """None: no listener; "" answered EHLO; else why not."""
    mailboxes: Sequence[str] = ()
    sweep_interval_seconds: float = 30.0
    outbound_enabled: bool = True
    oldest_due_at: datetime | None = None
    queue_error: str = ""
    relay_paused: str = ""
    """Why delivery is paused (the relay unreachable, recorded in the database); "" when it is not."""
    relay_paused_since: datetime | None = None
    database_error: str = ""
    database_seconds: float = 0.0
    board: Sequence[ComponentHealth] = ()
    pulses: dict[str, Pulse] = field(default_factory=dict)


def evaluate(seen: Observations, limits: HealthSettings, *, now: datetime) -> Readiness:
    """Each part's state by the rules of the module docstring."""
    board = {health.component: health for health in seen.board}
    parts: list[Part] = []
    if seen.smtp is not None:
        parts.append(_smtp(seen.smtp))
    parts += [_mailbox(name, board, seen, limits, now) for name in seen.mailboxes]
    parts.append(_scheduler(seen, limits, now))
    if seen.outbound_enabled:
        parts.append(_outbox(board, seen, limits, now))
    parts.append(_database(seen))
    covered = {f"imap:{name}" for name in seen.mailboxes} | {"relay", "outbound"}
    parts += [_component(health) for name, health in sorted(board.items()) if name not in covered]
    return Readiness(checked_at=now, parts=tuple(parts))


def _smtp(error: str) -> Part:
    if error:
        return Part("smtp", State.CRITICAL, f"the listener does not answer EHLO: {error}")
    return Part("smtp", State.OK, "EHLO answered")


def _mailbox(
    name: str, board: dict[str, ComponentHealth], seen: Observations, limits: HealthSettings, now: datetime
) -> Part:
    part = f"imap:{name}"
    pulse = seen.pulses.get(part) or Pulse(part)
    age = _seconds(now, pulse.last_ok or seen.started_at)
    signed_in = board.get(part)
    failures = f"{pulse.failures} failed round(s), last: {pulse.last_error}" if pulse.failures else "no failures"
    if signed_in is not None and signed_in.state == RED:
        return Part(part, State.CRITICAL, f"sign-in refused since {_at(signed_in.since)}: {signed_in.reason}", age)
    if age > limits.mailbox_silent_seconds:
        return Part(part, State.CRITICAL, f"silent for {age:.0f}s (no poll, no IDLE response); {failures}", age)
    if pulse.failures:
        return Part(part, State.WARNING, failures, age)
    return Part(part, State.OK, "polled or heard within the limit", age)


def _scheduler(seen: Observations, limits: HealthSettings, now: datetime) -> Part:
    pulse = seen.pulses.get("scheduler") or Pulse("scheduler")
    age = _seconds(now, pulse.last_ok or seen.started_at)
    if pulse.running_since is not None:
        running = _seconds(now, pulse.running_since)
        if running > limits.sweep_stall_seconds:
            return Part("scheduler", State.CRITICAL, f"a sweep has been running for {running:.0f}s", age)
    if age > limits.sweep_stall_seconds + seen.sweep_interval_seconds:
        error = f"; last failure: {pulse.last_error}" if pulse.last_error else ""
        return Part("scheduler", State.CRITICAL, f"no sweep ended for {age:.0f}s{error}", age)
    if pulse.failures:
        return Part("scheduler", State.WARNING, f"the last sweep failed: {pulse.last_error}", age)
    return Part("scheduler", State.OK, "sweeps end on time", age)


def _outbox(board: dict[str, ComponentHealth], seen: Observations, limits: HealthSettings, now: datetime) -> Part:
    relay = [
        (h.since, h.reason) for h in (board.get("relay"), board.get("outbound")) if h is not None and h.state == RED
    ]
    if seen.relay_paused and seen.relay_paused_since is not None:
        relay.append((seen.relay_paused_since, seen.relay_paused))
    down = max((_seconds(now, since) for since, _reason in relay), default=0.0)
    waiting = _seconds(now, seen.oldest_due_at) if seen.oldest_due_at is not None else 0.0
    queue = f"oldest due notice waits {waiting:.0f}s" if seen.oldest_due_at is not None else "nothing due waits"
    age = waiting if seen.oldest_due_at is not None else None
    if relay:
        reason = "; ".join(dict.fromkeys(reason for _since, reason in relay))
        text = f"relay refusing for {down:.0f}s ({reason}); {queue}"
        if down >= limits.relay_down_seconds:
            return Part("outbox", State.CRITICAL, text, age)
        if waiting > limits.outbox_stall_seconds:
            return Part("outbox", State.CRITICAL, text, age)
        return Part("outbox", State.WARNING, text, age)
    if waiting > limits.outbox_stall_seconds:
        return Part("outbox", State.CRITICAL, f"delivery stalled: {queue}", age)
    if seen.queue_error:
        return Part("outbox", State.WARNING, f"the queue could not be read: {seen.queue_error}", age)
    return Part("outbox", State.OK, f"relay reachable; {queue}", age)


def _database(seen: Observations) -> Part:
    if seen.database_error:
        return Part("database", State.CRITICAL, f"no write lock or no answer: {seen.database_error}")
    return Part("database", State.OK, f"round trip with the write lock in {seen.database_seconds * 1000:.0f} ms")


def _component(health: ComponentHealth) -> Part:
    state = {RED: State.CRITICAL, AMBER: State.WARNING, GREEN: State.OK}.get(health.state, State.WARNING)
    detail = health.reason or health.state
    return Part(health.component, state, f"{detail} (since {_at(health.since)})")


def _seconds(now: datetime, then: datetime) -> float:
    return max(0.0, (now - then).total_seconds())


def _at(instant: datetime) -> str:
    return instant.isoformat(timespec="seconds")
