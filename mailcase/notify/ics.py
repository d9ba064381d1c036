"""iCalendar (RFC 5545, iTIP RFC 5546) documents of maintenance windows: the `.ics` attached to
each notice and the per-product feed of the status page; builds bytes only, never reads the clock
or sends.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Literal, Protocol

from icalendar import Calendar, Event, vCalAddress, vText

PRODID = "-//mailcase//Maintenance windows//EN"

Method = Literal["REQUEST", "CANCEL"]


class FeedWindow(Protocol):
    """What a feed needs of a window (`notify.statuspage.WindowInfo` has it)."""

    @property
    def id(self) -> int: ...
    @property
    def uid(self) -> str: ...
    @property
    def sequence(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def start(self) -> datetime: ...
    @property
    def end(self) -> datetime: ...
    @property
    def products(self) -> Sequence[str]: ...
    @property
    def description(self) -> str: ...
    @property
    def justification(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def updated_at(self) -> datetime | None: ...


KIND_SUMMARIES = {
    "scheduled": "Scheduled maintenance",
    "unscheduled": "Unscheduled maintenance",
    "connect": "Connect update",
}


def _utc(name: str, value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"{name} {value.isoformat()} is naive; pass an aware UTC instant")
    return value.astimezone(UTC)


def _mailto(address: str) -> str:
    return address if address.lower().startswith("mailto:") else f"mailto:{address}"


def _calendar(*, method: str | None = None, name: str = "") -> Calendar:
    calendar = Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    if method:
        calendar.add("method", method)
    if name:
        # Not in RFC 5545, but Outlook, Google and Apple calendars show it as the feed's name.
        calendar.add("x-wr-calname", name)
    return calendar


def _event(
    *,
    uid: str,
    sequence: int,
    start: datetime,
    end: datetime,
    summary: str,
    description: str,
    cancelled: bool,
    dtstamp: datetime,
) -> Event:
    start, end = _utc("start", start), _utc("end", end)
    if end <= start:
        raise ValueError(f"window end {end.isoformat()} is not after its start {start.isoformat()}")
    event = Event()
    event.add("uid", uid)
    event.add("sequence", sequence)
    event.add("dtstamp", _utc("dtstamp", dtstamp))
    # UTC date-times need no VTIMEZONE (RFC 5545 §3.3.5, form #2); clients show them locally.
    event.add("dtstart", start)
    event.add("dtend", end)
    event.add("summary", summary)
    if description:
        event.add("description", description)
    event.add("status", "CANCELLED" if cancelled else "CONFIRMED")
    # A maintenance window does not make the reader busy (RFC 5545 §3.8.2.7).
    event.add("transp", "TRANSPARENT")
    return event


def window_calendar(
    uid: str,
    sequence: int,
    start: datetime,
    end: datetime,
    summary: str,
    description: str,
    method: Method,
    organizer: str,
    dtstamp: datetime,
    *,
    attendees: Sequence[str] = (),
) -> bytes:
    """The `.ics` attached to a maintenance notice.

    METHOD:REQUEST announces or updates the window, METHOD:CANCEL withdraws it (RFC 5546 §3.2.2,
    §3.2.5). The UID stays the same for the window's whole life and SEQUENCE goes up with every
    change, so a calendar replaces its copy instead of adding a second one (RFC 5546 §2.1.4).
    RFC 5546 wants at least one ATTENDEE on REQUEST and CANCEL; pass the recipients in
    `attendees` (common clients accept the event without them too).
    """
    if method not in ("REQUEST", "CANCEL"):
        raise ValueError(f"iCalendar method must be REQUEST or CANCEL, not {method!r}")
    calendar = _calendar(method=method)
    event = _event(
        uid=uid,
        sequence=sequence,
        start=start,
        end=end,
        summary=summary,
        description=description,
        cancelled=method == "CANCEL",
        dtstamp=dtstamp,
    )
    organizer_address = vCalAddress(_mailto(organizer))
    event.add("organizer", organizer_address)
    for attendee in attendees:
        address = vCalAddress(_mailto(attendee))
        address.params["ROLE"] = vText("NON-PARTICIPANT")  # told, not invited to take part
        address.params["RSVP"] = vText("FALSE")
        event.add("attendee", address, encode=0)
    calendar.add_component(event)
    return calendar.to_ical()


def feed_uid(window: FeedWindow) -> str:
    """The window's UID, or a stable one derived from its id when the row carries none."""
    if window.uid:
        return window.uid
    return f"{uuid.uuid5(uuid.NAMESPACE_URL, f'mailcase:maintenance:{window.id}')}@mailcase"


def feed_description(window: FeedWindow) -> str:
    parts = [window.description.strip()]
    if window.justification.strip():
        parts.append(f"Why: {window.justification.strip()}")
    if window.products:
        parts.append("Affected products: " + ", ".join(window.products))
    if str(window.kind) == "connect":
        parts.append("No service impact is expected.")
    return "\n\n".join(p for p in parts if p)


def product_feed(
    windows: Iterable[FeedWindow], product: str, *, dtstamp: datetime | None = None
) -> bytes:
    """A calendar of every window that affects `product`, for subscription (no METHOD: not iTIP).

    Cancelled windows stay in the feed as STATUS:CANCELLED, so subscribed calendars drop them.
    DTSTAMP is the window's `updated_at`, else `dtstamp`, else its start: never the clock.
    """
    calendar = _calendar(name=f"{product} maintenance")
    chosen = sorted((w for w in windows if product in w.products), key=lambda w: w.start)
    for window in chosen:
        stamp = window.updated_at or dtstamp or window.start
        summary = f"{KIND_SUMMARIES.get(str(window.kind), 'Maintenance')}: {product}"
        calendar.add_component(
            _event(
                uid=feed_uid(window),
                sequence=window.sequence,
                start=window.start,
                end=window.end,
                summary=summary,
                description=feed_description(window),
                cancelled=str(window.status) == "cancelled",
                dtstamp=stamp,
            )
        )
    return calendar.to_ical()
