"""The one clock: system time or a fixed instant (`--now`); nothing else in mailcase reads the time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """An aware UTC instant."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock:
    """A clock that always says the same instant, unless a test moves it."""

    def __init__(self, instant: datetime) -> None:
        self._instant = as_utc(instant)

    def now(self) -> datetime:
        return self._instant

    def set(self, instant: datetime) -> None:
        self._instant = as_utc(instant)

    def advance(self, **delta: float) -> datetime:
        from datetime import timedelta

        self._instant = self._instant + timedelta(**delta)
        return self._instant


def as_utc(instant: datetime) -> datetime:
    """Aware UTC; a naive value is refused because its meaning is ambiguous."""
    if instant.tzinfo is None:
        raise ValueError(f"naive datetime {instant.isoformat()} has no time zone")
    return instant.astimezone(UTC)


def parse_instant(text: str) -> datetime:
    """Parse an ISO 8601 instant with an offset (`2026-12-04T16:00-07:00`, `...Z`)."""
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset; write e.g. 2026-12-04T16:00:00-07:00")
    return value.astimezone(UTC)
