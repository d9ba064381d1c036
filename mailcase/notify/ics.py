"""iCalendar (RFC 5545, iTIP RFC 5546) documents of maintenance windows: the `.ics` attached to
each notice and the per-product feed of the status page; builds bytes only, never reads the clock
or sends.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from icalendar import Calendar, Event, vCalAddress, vText
from icalendar.parser import foldline

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
        event.add("attendee", address, encode=False)
    calendar.add_component(event)
    return calendar.to_ical()


def feed_uid(window: FeedWindow) -> str:
    """The window's UID, or a stable one derived from its id when the row carries none."""
    if window.uid:
        return window.uid
    return f"{uuid.uuid5(uuid.NAMESPACE_URL, f'mailcase:maintenance:{window.id}')}@mailcase"


def feed_description(window: FeedWindow) -> str:
    return describe_window(window.description, window.justification, window.products, str(window.kind))


def describe_window(description: str, justification: str, products: Sequence[str], kind: str) -> str:
    """The DESCRIPTION of a window's event: the work, why, what it affects."""
    parts = [description.strip()]
    if justification.strip():
        parts.append(f"Why: {justification.strip()}")
    if products:
        parts.append("Affected products: " + ", ".join(products))
    if kind == "connect":
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


class PersonalCalendar:
    """`window_calendar` for many recipients of one notice: built once, each copy differing only
    in its ATTENDEE line (RFC 5546 wants the recipient there), refolded at 75 octets (RFC 5545 §3.1).

    A 20,000-recipient window builds one calendar instead of 20,000; should the built text ever not
    have the expected ATTENDEE line, every copy is built in full instead.
    """

    PLACEHOLDER = "attendee.placeholder@mailcase.invalid"

    def __init__(
        self, uid: str, sequence: int, start: datetime, end: datetime, summary: str, description: str,
        method: Literal["REQUEST", "CANCEL"], organizer: str, dtstamp: datetime,
    ) -> None:
        self._args = (uid, sequence, start, end, summary, description, method, organizer, dtstamp)
        text = window_calendar(*self._args, attendees=(self.PLACEHOLDER,)).decode("utf-8")
        self._parts: tuple[str, str, str] | None = None
        begin = text.find("\r\nATTENDEE")
        if begin < 0:
            return
        begin += 2
        end_at = text.find("\r\n", begin)
        while end_at >= 0 and text[end_at + 2 : end_at + 3] in (" ", "\t"):  # a folded continuation
            end_at = text.find("\r\n", end_at + 2)
        if end_at < 0:
            return
        line = text[begin:end_at].replace("\r\n ", "").replace("\r\n\t", "")
        if line.count(f"mailto:{self.PLACEHOLDER}") == 1 and line.endswith(self.PLACEHOLDER):
            self._parts = (text[:begin], line, text[end_at:])

    def for_attendee(self, address: str) -> str:
        if self._parts is None:
            return window_calendar(*self._args, attendees=(address,)).decode("utf-8")
        head, line, tail = self._parts
        return head + foldline(line.replace(self.PLACEHOLDER, address)) + tail


@functools.lru_cache(maxsize=64)
def _personal_calendar(
    uid: str, sequence: int, start: datetime, end: datetime, summary: str, description: str,
    method: Literal["REQUEST", "CANCEL"], organizer: str, dtstamp: datetime,
) -> PersonalCalendar:
    return PersonalCalendar(uid, sequence, start, end, summary, description, method, organizer, dtstamp)


def invitation(calendar: Mapping[str, Any]) -> tuple[str, bytes]:
    """The `.ics` of one maintenance notice from the plain values queued with it: its content
    type (with the iTIP method, RFC 6047) and the calendar, with the recipient as ATTENDEE.

    Successive recipients of one notice share the built calendar (`PersonalCalendar`).
    """
    method: Literal["REQUEST", "CANCEL"] = "CANCEL" if calendar["method"] == "CANCEL" else "REQUEST"
    products = list(calendar.get("products", ()))
    summary = f"{KIND_SUMMARIES.get(str(calendar['kind']), 'Maintenance')}: {', '.join(products)}"
    description = describe_window(
        str(calendar.get("description", "")), str(calendar.get("justification", "")), products, str(calendar["kind"])
    )
    built = _personal_calendar(
        str(calendar["uid"]),
        int(calendar["sequence"]),
        datetime.fromisoformat(calendar["start"]),
        datetime.fromisoformat(calendar["end"]),
        summary,
        description,
        method,
        str(calendar["organizer"]),
        datetime.fromisoformat(calendar["dtstamp"]),
    )
    return f"text/calendar; method={method}", built.for_attendee(str(calendar["attendee"])).encode("utf-8")
