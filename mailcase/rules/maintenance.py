"""Maintenance windows as the support plan defines them: when they fall, which notices they cause
and how their times read; pure (no clock reads, no I/O, no storage), every instant is passed in.

SPEC.md §1 "Maintenance windows":
* monthly scheduled: third Friday, 22:00 to 04:00 (next day) Mountain Time; notices one week
  ahead, at start, at end;
* Connect updates: Tuesdays 21:00-23:00 MT on a three-week cycle; notice 24 h ahead; no impact;
* unscheduled: notice as soon as the window is entered, then at start and at end;
* a cancelled or rescheduled window tells whoever was already notified, and nobody else.

Wall-clock times are converted with `zoneinfo`, so a window keeps its local hours across DST;
everything returned is aware UTC except the display strings.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import assert_never
from zoneinfo import ZoneInfo

from mailcase.domain import MaintenanceKind, PlannedWindow

DESK_TIMEZONE = "America/Denver"

# Monthly scheduled window: third Friday 22:00 local to 04:00 local the next day.
SCHEDULED_START = time(22, 0)
SCHEDULED_END = time(4, 0)
# Connect updates: Tuesday 21:00-23:00 local, every third week from the anchor Tuesday.
CONNECT_START = time(21, 0)
CONNECT_END = time(23, 0)
CONNECT_CYCLE = timedelta(weeks=3)

_FRIDAY = 4
_TUESDAY = 1


class NoticeStageName(StrEnum):
    """Which notice of a window this is; the values name the templates' events."""

    AHEAD = "ahead"
    ANNOUNCE = "announce"
    START = "start"
    END = "end"


class WindowChange(StrEnum):
    """What an operator did to a window that people may already have heard about."""

    CANCELLED = "cancelled"
    RESCHEDULED = "rescheduled"


@dataclass(frozen=True, slots=True)
class NoticeStage:
    """One notice of a window and the instant it is due (aware UTC)."""

    name: NoticeStageName
    at: datetime


@dataclass(frozen=True, slots=True)
class ChangeNotice:
    """A cancellation or update notice owed to someone who had already been told of the window.

    `method` is the iCalendar method of the attached .ics (RFC 5546 §3.2.5 CANCEL, §3.2.2
    REQUEST); `sequence` is the SEQUENCE the revised event carries (RFC 5545 §3.8.7.4: it goes up
    by one on every significant change, so calendar clients replace the old copy).
    """

    change: WindowChange
    method: str
    sequence: int
    reason: str


def _require_aware(name: str, value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"{name} {value.isoformat()} is naive; pass an aware UTC instant")
    return value.astimezone(UTC)


def _local_instant(day: date, wall: time, zone: ZoneInfo) -> datetime:
    """The UTC instant of a local wall time (fold=0: the first of an ambiguous pair)."""
    return datetime.combine(day, wall, tzinfo=zone).astimezone(UTC)


def third_friday(year: int, month: int) -> date:
    first = date(year, month, 1)
    first_friday = 1 + (_FRIDAY - first.weekday()) % 7
    return date(year, month, first_friday + 14)


def monthly_windows(
    from_date: date, months: int, tz: str = DESK_TIMEZONE
) -> tuple[PlannedWindow, ...]:
    """The monthly scheduled windows of `months` calendar months, starting with `from_date`'s month.

    Rules, in order:
    1. each month's window runs from the third Friday 22:00 local to Saturday 04:00 local;
    2. a window whose local start date is before `from_date` is skipped (so it may yield one
       window fewer than `months` when `from_date` is past that month's third Friday);
    3. `plan_key` is `scheduled:<YYYY-MM>`.
    """
    if months < 0:
        raise ValueError(f"months must be zero or more, not {months}")
    zone = ZoneInfo(tz)
    windows: list[PlannedWindow] = []
    year, month = from_date.year, from_date.month
    for _ in range(months):
        day = third_friday(year, month)
        if day >= from_date:
            windows.append(
                PlannedWindow(
                    kind=MaintenanceKind.SCHEDULED,
                    start=_local_instant(day, SCHEDULED_START, zone),
                    end=_local_instant(day + timedelta(days=1), SCHEDULED_END, zone),
                    plan_key=f"scheduled:{year:04d}-{month:02d}",
                )
            )
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return tuple(windows)


def connect_windows(
    anchor: date, from_date: date, until_date: date, tz: str = DESK_TIMEZONE
) -> tuple[PlannedWindow, ...]:
    """Connect updates whose local date lies in [`from_date`, `until_date`].

    Rules, in order:
    1. the anchor must be a Tuesday (ValueError naming it otherwise);
    2. updates fall on anchor + 21·k days for k >= 0 (the cycle is counted from the anchor, so
       nothing is planned before it), 21:00-23:00 local;
    3. `plan_key` is `connect:<YYYY-MM-DD>`.
    """
    if anchor.weekday() != _TUESDAY:
        raise ValueError(
            f"Connect anchor {anchor.isoformat()} is a {anchor.strftime('%A')}, not a Tuesday"
        )
    zone = ZoneInfo(tz)
    first = max(from_date, anchor)
    cycles_before = -(-(first - anchor).days // CONNECT_CYCLE.days)  # ceiling division
    day = anchor + CONNECT_CYCLE * cycles_before
    windows: list[PlannedWindow] = []
    while day <= until_date:
        windows.append(
            PlannedWindow(
                kind=MaintenanceKind.CONNECT,
                start=_local_instant(day, CONNECT_START, zone),
                end=_local_instant(day, CONNECT_END, zone),
                plan_key=f"connect:{day.isoformat()}",
            )
        )
        day += CONNECT_CYCLE
    return tuple(windows)


def notice_schedule(
    kind: MaintenanceKind,
    start: datetime,
    end: datetime,
    created_at: datetime,
    *,
    scheduled_notice_days: int = 7,
    connect_notice_hours: int = 24,
) -> tuple[NoticeStage, ...]:
    """Every notice a window causes, in time order.

    Rules, in order:
    1. scheduled: "ahead" `scheduled_notice_days` before start, or at `created_at` when that is
       already past; then "start" at start and "end" at end;
    2. connect: "ahead" `connect_notice_hours` before start (or at `created_at`) and nothing else,
       since Connect updates have no service impact;
    3. unscheduled: "announce" at `created_at` (immediately), then "start" and "end";
    4. an "ahead" notice is dropped when the window has already started at `created_at`, and an
       unscheduled window entered after its start (or its end) gets no separate "start" (or
       "end") notice, since the announcement already says so: nobody gets two mails at once
       saying the same thing.
    Stage instants are strictly increasing.
    """
    start = _require_aware("start", start)
    end = _require_aware("end", end)
    created_at = _require_aware("created_at", created_at)
    kind = MaintenanceKind(kind)  # a stored "scheduled" string works as well as the enum
    if end <= start:
        raise ValueError(f"window end {end.isoformat()} is not after its start {start.isoformat()}")

    stages: list[NoticeStage] = []
    match kind:
        case MaintenanceKind.SCHEDULED | MaintenanceKind.CONNECT:
            lead = (
                timedelta(days=scheduled_notice_days)
                if kind is MaintenanceKind.SCHEDULED
                else timedelta(hours=connect_notice_hours)
            )
            if created_at < start:
                stages.append(NoticeStage(NoticeStageName.AHEAD, max(start - lead, created_at)))
            if kind is MaintenanceKind.SCHEDULED:
                stages.append(NoticeStage(NoticeStageName.START, start))
                stages.append(NoticeStage(NoticeStageName.END, end))
        case MaintenanceKind.UNSCHEDULED:
            stages.append(NoticeStage(NoticeStageName.ANNOUNCE, created_at))
            if start > created_at:
                stages.append(NoticeStage(NoticeStageName.START, start))
            if end > created_at:
                stages.append(NoticeStage(NoticeStageName.END, end))
        case _:
            assert_never(kind)
    return tuple(stages)


def due_stages(schedule: Iterable[NoticeStage], now: datetime) -> tuple[NoticeStage, ...]:
    """The stage due at `now` that no later due stage has overtaken (empty or one stage).

    Rules, in order:
    1. a stage is due when its instant is at or before `now`;
    2. of the due stages only the latest counts: after downtime the desk sends the news that is
       still true ("the window has ended"), not a week-ahead notice for a window already over.
    On time, every stage is in turn the latest due one, so each is sent; the shell enqueues the
    result with `stage_key` as idempotency key, so calling this on every sweep sends it once.
    """
    now = _require_aware("now", now)
    due = [s for s in schedule if s.at <= now]
    if not due:
        return ()
    return (max(due, key=lambda s: s.at),)


def next_stage_at(schedule: Iterable[NoticeStage], now: datetime) -> datetime | None:
    """The first instant after `now` at which a stage falls due (the window's `next_due_at`)."""
    now = _require_aware("now", now)
    upcoming = [s.at for s in schedule if s.at > now]
    return min(upcoming) if upcoming else None


def stage_key(window_uid: str, stage: NoticeStage) -> str:
    """The outbox idempotency key of one stage of one window (a moved stage gets a new key)."""
    return f"maintenance:{window_uid}:{stage.name.value}:{stage.at.astimezone(UTC).isoformat()}"


def change_notice(
    already_notified: bool,
    change: WindowChange,
    *,
    sequence: int,
    now: datetime,
    end: datetime,
) -> ChangeNotice | None:
    """Whether one recipient gets a cancellation / update notice, and what it carries.

    Rules, in order:
    1. a recipient who was never notified gets nothing: they never heard of the window (after a
       reschedule its ordinary notices reach them at the new times);
    2. a window that had already ended at `now` tells nobody: there is nothing left to change;
    3. otherwise a cancellation goes with METHOD:CANCEL and a reschedule with METHOD:REQUEST,
       both carrying `sequence + 1` (`sequence` is the window's SEQUENCE before the change).
    """
    now = _require_aware("now", now)
    end = _require_aware("end", end)
    if not already_notified:
        return None
    if now >= end:
        return None
    method = "CANCEL" if change is WindowChange.CANCELLED else "REQUEST"
    return ChangeNotice(
        change=change,
        method=method,
        sequence=sequence + 1,
        reason=f"window {change.value} after this recipient was notified",
    )


def _zone_label(moment: datetime) -> str:
    """`MST`, `CDT`…; zones without a letter abbreviation (zoneinfo says `-03`) read `UTC-03:00`."""
    name = moment.tzname() or ""
    if name and name[0] not in "+-":
        return name
    offset = moment.utcoffset() or timedelta(0)
    total = int(offset.total_seconds()) // 60
    sign = "+" if total >= 0 else "-"
    hours, minutes = divmod(abs(total), 60)
    return f"UTC{sign}{hours:02d}:{minutes:02d}"


def _format_range(start: datetime, end: datetime) -> str:
    start_label, end_label = _zone_label(start), _zone_label(end)
    if start.date() == end.date() and start_label == end_label:
        return f"{start:%Y-%m-%d %H:%M}–{end:%H:%M} {end_label}"
    if start_label == end_label:
        return f"{start:%Y-%m-%d %H:%M} – {end:%Y-%m-%d %H:%M} {end_label}"
    return f"{start:%Y-%m-%d %H:%M} {start_label} – {end:%Y-%m-%d %H:%M} {end_label}"


def window_display(
    start: datetime, end: datetime, org_tz: str, desk_tz: str = DESK_TIMEZONE
) -> dict[str, str]:
    """Display strings of a window in the recipient organisation's zone and in Mountain Time.

    Numeric, language-neutral dates (`2026-12-18 22:00 MST`) so English and Portuguese templates
    can share them. Keys: `org_timezone`, `org_start`, `org_end`, `org_range`, `desk_timezone`,
    `desk_start`, `desk_end`, `desk_range`, `start_utc`, `end_utc` (ISO 8601), `duration`.
    """
    start = _require_aware("start", start)
    end = _require_aware("end", end)
    org_zone, desk_zone = ZoneInfo(org_tz), ZoneInfo(desk_tz)
    org_start, org_end = start.astimezone(org_zone), end.astimezone(org_zone)
    desk_start, desk_end = start.astimezone(desk_zone), end.astimezone(desk_zone)
    minutes = int((end - start).total_seconds()) // 60
    hours, rest = divmod(minutes, 60)
    duration = f"{hours} h {rest:02d} min" if rest else f"{hours} h"
    if hours == 0:
        duration = f"{rest} min"
    return {
        "org_timezone": org_tz,
        "org_start": f"{org_start:%Y-%m-%d %H:%M} {_zone_label(org_start)}",
        "org_end": f"{org_end:%Y-%m-%d %H:%M} {_zone_label(org_end)}",
        "org_range": _format_range(org_start, org_end),
        "desk_timezone": desk_tz,
        "desk_start": f"{desk_start:%Y-%m-%d %H:%M} {_zone_label(desk_start)}",
        "desk_end": f"{desk_end:%Y-%m-%d %H:%M} {_zone_label(desk_end)}",
        "desk_range": _format_range(desk_start, desk_end),
        "start_utc": start.isoformat().replace("+00:00", "Z"),
        "end_utc": end.isoformat().replace("+00:00", "Z"),
        "duration": duration,
    }
