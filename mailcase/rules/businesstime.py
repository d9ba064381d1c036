"""The desk's business calendar: business days, extended hours and DST-safe local arithmetic.

Pure: it turns aware instants into aware UTC instants with `zoneinfo` and the `holidays` package;
it must not read the clock, log, or touch files or the network.

How local wall times that do not exist once are resolved (PEP 495, `fold=0`):
* a wall time in a spring-forward gap (e.g. 02:30 on a day the clocks jump from 02:00 to 03:00)
  is moved forward by the length of the gap (02:30 -> 03:30), as most calendars do;
* a wall time that happens twice (the fall-back hour) means its first occurrence.
In America/Denver (and every US zone) the clocks change on Sunday at 02:00, which is never a
business day, so neither case ever shapes a business-day deadline there.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import holidays as holidays_lib

from mailcase.domain import BusinessCalendarSpec

SATURDAY = 5  # date.weekday(): Monday is 0

EXTRA_HOLIDAY_NAME = "extra holiday (configured)"


@dataclass(frozen=True, slots=True)
class SkippedDay:
    """A weekday that did not count as a business day because it is a holiday."""

    day: date
    name: str

    def describe(self) -> str:
        return f"{self.name} ({self.day.isoformat()})"


@dataclass(frozen=True, slots=True)
class BusinessDaysResult:
    """The outcome of adding business days, with what it took to get there (for explanations).

    `counted_from` is the instant the count started: the given instant when it falls on a
    business day, else the start (00:00 local) of the next business day.
    `skipped` lists the holidays on weekdays that the count stepped over, in date order.
    """

    due_at: datetime
    counted_from: datetime
    skipped: tuple[SkippedDay, ...] = ()


class BusinessCalendar:
    """Business days (Mon-Fri minus holidays) and extended hours in one IANA time zone.

    Holidays come from `holidays.country_holidays(country)` (observed days included), computed
    lazily one year at a time and cached, plus the spec's extra ISO dates. An empty country
    means no public holidays. Every instant returned is aware UTC.
    """

    __slots__ = ("_closing", "_extra", "_opening", "_years", "spec", "zone")

    def __init__(self, spec: BusinessCalendarSpec | None = None) -> None:
        self.spec = spec if spec is not None else BusinessCalendarSpec()
        self.zone = ZoneInfo(self.spec.timezone)
        self._extra = frozenset(date.fromisoformat(day) for day in self.spec.extra_holidays)
        self._opening = time.fromisoformat(self.spec.extended_hours_start)
        self._closing = time.fromisoformat(self.spec.extended_hours_end)
        if not self._opening < self._closing:
            raise ValueError(
                f"extended hours must open before they close: "
                f"{self.spec.extended_hours_start}-{self.spec.extended_hours_end}"
            )
        if self.spec.holidays_country:
            # Fails now (NotImplementedError -> ValueError) rather than on the first lookup.
            try:
                holidays_lib.country_holidays(self.spec.holidays_country, years=())
            except NotImplementedError:
                raise ValueError(
                    f"unknown holidays country {self.spec.holidays_country!r}"
                ) from None
        self._years: dict[int, dict[date, str]] = {}

    def __repr__(self) -> str:
        return f"BusinessCalendar({self.spec!r})"

    def describe(self) -> str:
        """How business days are counted, for explanations: `business days in America/Denver`."""
        return f"business days in {self.spec.timezone}"

    # ------------------------------------------------------------------ days

    def holiday_name(self, day: date) -> str | None:
        """The holiday's name when `day` is a configured holiday (weekend or not), else None."""
        names = self._holidays_of(day.year)
        if day in names:
            return names[day]
        if day in self._extra:
            return EXTRA_HOLIDAY_NAME
        return None

    def is_business_day(self, day: date) -> bool:
        """Monday to Friday, and neither a public holiday nor an extra configured date."""
        return day.weekday() < SATURDAY and self.holiday_name(day) is None

    def next_business_day(self, day: date) -> date:
        """The first business day strictly after `day`."""
        candidate = day + timedelta(days=1)
        while not self.is_business_day(candidate):
            candidate += timedelta(days=1)
        return candidate

    def skipped_between(self, first: date, last: date) -> tuple[SkippedDay, ...]:
        """Holidays on weekdays in [first, last]: the days that cost a business day."""
        skipped: list[SkippedDay] = []
        day = first
        while day <= last:
            if day.weekday() < SATURDAY:
                name = self.holiday_name(day)
                if name is not None:
                    skipped.append(SkippedDay(day, name))
            day += timedelta(days=1)
        return tuple(skipped)

    # ------------------------------------------------------------------ instants

    def to_local(self, instant: datetime) -> datetime:
        """The instant as an aware local datetime in the calendar's zone."""
        return _aware(instant).astimezone(self.zone)

    def local_date(self, instant: datetime) -> date:
        """The calendar date of the instant in the calendar's zone."""
        return self.to_local(instant).date()

    def at_local(self, day: date, wall: time) -> datetime:
        """The UTC instant of wall time `wall` on local date `day` (gap: forward; fold: first)."""
        local = datetime.combine(day, wall.replace(tzinfo=None, fold=0), tzinfo=self.zone)
        return local.astimezone(UTC)

    def start_of_day(self, day: date) -> datetime:
        """The UTC instant the local date begins (01:00 where midnight falls in a DST gap)."""
        return self.at_local(day, time(0, 0))

    def add_minutes(self, instant: datetime, minutes: int) -> datetime:
        """Wall-clock minutes: support is 24x7, so a DST change neither adds nor removes time."""
        return _aware(instant).astimezone(UTC) + timedelta(minutes=minutes)

    def add_calendar_days(self, instant: datetime, days: int) -> datetime:
        """The same local wall time `days` calendar days later (e.g. the 7-day reopen window).

        Across a DST change the result is 23 or 25 hours per changed day away, not 24.
        """
        local = self.to_local(instant)
        return self.at_local(local.date() + timedelta(days=days), local.time())

    def add_business_days(self, instant: datetime, days: int) -> datetime:
        """`days` business days after `instant`, aware UTC (see `add_business_days_explained`)."""
        return self.add_business_days_explained(instant, days).due_at

    def add_business_days_explained(self, instant: datetime, days: int) -> BusinessDaysResult:
        """Count `days` business days from `instant` (SPEC.md §1, "Priorities and SLA targets").

        Rules, in order:
        1. An instant on a non-business day counts from the start (00:00 local) of the next
           business day; an instant on a business day counts from itself.
        2. Each business day moves to the next business day at the same local wall time, so
           "1 business day" after Friday 16:00 is Monday 16:00 (16:00 MDT even when Friday was
           MST: local time is kept, the UTC offset follows the zone).
        3. Adding 0 days returns the instant from which the count starts.
        Negative counts are refused.
        """
        if days < 0:
            raise ValueError(f"cannot add a negative number of business days ({days})")
        local = self.to_local(instant)
        start_day = local.date()
        if self.is_business_day(start_day):
            day, wall = start_day, local.time()
            counted_from = _aware(instant).astimezone(UTC)
        else:
            day, wall = self.next_business_day(start_day), time(0, 0)
            counted_from = self.start_of_day(day)
        for _ in range(days):
            day = self.next_business_day(day)
        due_at = counted_from if days == 0 else self.at_local(day, wall)
        return BusinessDaysResult(
            due_at=due_at,
            counted_from=counted_from,
            skipped=self.skipped_between(start_day, day),
        )

    # ------------------------------------------------------------------ extended hours

    def is_within_extended_hours(self, instant: datetime) -> bool:
        """On a business day, at or after the opening and before the closing local time."""
        local = self.to_local(instant)
        return (
            self.is_business_day(local.date())
            and self._opening <= local.time().replace(fold=0) < self._closing
        )

    def next_extended_opening(self, instant: datetime) -> datetime:
        """When a Standard MACD request starts counting (SPEC.md §1, "MACD requests").

        Inside extended hours: the instant itself. Before the opening on a business day: that
        day's opening. Otherwise: the next business day's opening (Friday 20:00 -> Monday 07:00).
        """
        if self.is_within_extended_hours(instant):
            return _aware(instant).astimezone(UTC)
        local = self.to_local(instant)
        day = local.date()
        if self.is_business_day(day) and local.time().replace(fold=0) < self._opening:
            return self.at_local(day, self._opening)
        return self.at_local(self.next_business_day(day), self._opening)

    # ------------------------------------------------------------------ internals

    def _holidays_of(self, year: int) -> dict[date, str]:
        cached = self._years.get(year)
        if cached is None:
            if self.spec.holidays_country:
                # A per-year calendar lists every holiday (observed days included) dated that year.
                found = holidays_lib.country_holidays(self.spec.holidays_country, years=year)
                cached = {day: str(name) for day, name in found.items() if day.year == year}
            else:
                cached = {}
            self._years[year] = cached
        return cached


def _aware(instant: datetime) -> datetime:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"naive datetime {instant.isoformat()} has no time zone")
    return instant
