"""The static status page: renders current incidents and maintenance windows into index.html, an
Atom feed and per-product .ics feeds in a directory; it reads no database and no clock (the caller
passes plain values and `generated_at`) and replaces each file atomically, so a web server never
serves half a page.
"""

from __future__ import annotations

import os
import re
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from mailcase.domain import CaseStatus, MaintenanceKind, MaintenanceStatus, format_case_number
from mailcase.notify.ics import product_feed

DESK_TIMEZONE = "America/Denver"
# Completed windows stay on the page this long, so a customer can check what happened last night.
RECENT_WINDOWS = timedelta(days=7)

KIND_TITLES = {
    MaintenanceKind.SCHEDULED.value: "Scheduled maintenance",
    MaintenanceKind.UNSCHEDULED.value: "Unscheduled maintenance",
    MaintenanceKind.CONNECT.value: "Connect update",
}


@dataclass(frozen=True, slots=True)
class WindowInfo:
    """A maintenance window as the page shows it (plain values, not an ORM row).

    `uid` and `sequence` are the window's iCalendar identity: pass the same ones the notices use,
    so a calendar subscribed to the feed and one holding a notice's .ics agree.
    """

    id: int
    kind: str
    start: datetime
    end: datetime
    products: tuple[str, ...]
    description: str
    justification: str
    status: str = MaintenanceStatus.PLANNED.value
    uid: str = ""
    sequence: int = 0
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class MasterInfo:
    """A P1G master case as the page shows it, with its latest public update."""

    number: int
    subject: str
    platform: str
    status: str
    latest_update_text: str
    latest_update_at: datetime | None
    opened_at: datetime | None = None


def product_slug(product: str) -> str:
    """`Microsoft Teams` -> `microsoft-teams`: the name of the product's .ics feed file."""
    slug = re.sub(r"[^a-z0-9]+", "-", product.lower()).strip("-")
    return slug or "product"


def feed_file_name(product: str) -> str:
    return f"maintenance-{product_slug(product)}.ics"


def _aware(name: str, value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"{name} {value.isoformat()} is naive; pass an aware UTC instant")
    return value.astimezone(UTC)


def _local(value: datetime, zone: ZoneInfo) -> datetime:
    return value.astimezone(zone)


def _when(value: datetime, zone: ZoneInfo) -> str:
    """`Fri 18 Dec 2026, 22:00 MST` (English: the page is English; mails are localised)."""
    local = _local(value, zone)
    return f"{local:%a} {local.day} {local:%b %Y}, {local:%H:%M} {local.tzname()}"


def _range(start: datetime, end: datetime, zone: ZoneInfo) -> str:
    ls, le = _local(start, zone), _local(end, zone)
    if ls.date() == le.date():
        return f"{ls:%a} {ls.day} {ls:%b %Y}, {ls:%H:%M}–{le:%H:%M} {le.tzname()}"
    if ls.tzname() == le.tzname():
        return (
            f"{ls:%a} {ls.day} {ls:%b %Y}, {ls:%H:%M} – "
            f"{le:%a} {le.day} {le:%b %Y}, {le:%H:%M} {le.tzname()}"
        )
    return f"{_when(start, zone)} – {_when(end, zone)}"


def _duration(start: datetime, end: datetime) -> str:
    minutes = int((end - start).total_seconds()) // 60
    hours, rest = divmod(minutes, 60)
    if hours and rest:
        return f"{hours} h {rest} min"
    return f"{hours} h" if hours else f"{rest} min"


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _window_phase(window: WindowInfo, now: datetime) -> str:
    if window.status == MaintenanceStatus.CANCELLED.value:
        return "cancelled"
    if window.end <= now:
        return "completed"
    if window.start <= now:
        return "in_progress"
    return "upcoming"


PHASE_LABELS = {
    "cancelled": "Cancelled",
    "completed": "Completed",
    "in_progress": "In progress",
    "upcoming": "Upcoming",
}


def _window_view(
    window: WindowInfo, now: datetime, zone: ZoneInfo, base_url: str
) -> dict[str, Any]:
    phase = _window_phase(window, now)
    return {
        "anchor": f"window-{window.id}",
        "link": f"{base_url}index.html#window-{window.id}",
        "atom_id": _atom_id("maintenance", window.uid or str(window.id)),
        "kind": window.kind,
        "title": KIND_TITLES.get(window.kind, "Maintenance"),
        "phase": phase,
        "phase_label": PHASE_LABELS[phase],
        "range": _range(window.start, window.end, zone),
        "start_iso": _iso(window.start),
        "end_iso": _iso(window.end),
        "duration": _duration(window.start, window.end),
        "products": list(window.products),
        "description": window.description.strip(),
        "justification": window.justification.strip(),
        "no_impact": window.kind == MaintenanceKind.CONNECT.value,
        "updated_iso": _iso(window.updated_at or window.start),
    }


def _status_label(status: str) -> str:
    try:
        return CaseStatus(status).display
    except ValueError:
        return status


def _is_open(master: MasterInfo) -> bool:
    try:
        return not CaseStatus(master.status).is_closed
    except ValueError:
        return True


def _master_view(
    master: MasterInfo, generated_at: datetime, zone: ZoneInfo, base_url: str
) -> dict[str, Any]:
    number = format_case_number(master.number)
    updated = master.latest_update_at or master.opened_at or generated_at
    return {
        "anchor": f"case-{number}",
        "link": f"{base_url}index.html#case-{number}",
        "atom_id": _atom_id("case", number),
        "number": number,
        "subject": master.subject,
        "platform": master.platform,
        "status_label": _status_label(master.status),
        "open": _is_open(master),
        "latest_update_text": master.latest_update_text.strip(),
        "latest_update_when": (
            _when(master.latest_update_at, zone) if master.latest_update_at else ""
        ),
        "latest_update_iso": _iso(master.latest_update_at) if master.latest_update_at else "",
        "opened_when": _when(master.opened_at, zone) if master.opened_at else "",
        "opened_iso": _iso(master.opened_at) if master.opened_at else "",
        "updated_iso": _iso(updated),
    }


def _atom_id(kind: str, key: str) -> str:
    """A stable, valid Atom id (RFC 4287 §4.2.6): a name-based UUID URN of what the entry is."""
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'mailcase:{kind}:{key}')}"


def _overall(incidents: list[dict[str, Any]], in_progress: list[dict[str, Any]]) -> dict[str, str]:
    if incidents:
        count = len(incidents)
        return {
            "state": "incident",
            "label": "Service disruption",
            "detail": f"{count} major incident{'s' if count != 1 else ''} under investigation.",
        }
    if in_progress:
        return {
            "state": "maintenance",
            "label": "Maintenance in progress",
            "detail": "Some services may be briefly unavailable during the window.",
        }
    return {
        "state": "operational",
        "label": "All systems operational",
        "detail": "No known incidents affect our services.",
    }


def make_environment(template_dirs: Sequence[Path]) -> Environment:
    """A Jinja2 environment over the `status` template directories, the first match winning
    (autoescape HTML and XML, StrictUndefined)."""
    return Environment(
        loader=FileSystemLoader([str(d) for d in template_dirs]),
        autoescape=select_autoescape(["html", "xml", "atom"], default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _write_atomically(path: Path, data: bytes) -> None:
    """Write beside the target, then rename over it (atomic on POSIX), so readers see old or new."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)  # mkstemp makes 0600; a web server must be able to read it
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def build_status_site(
    out_dir: Path,
    *,
    title: str,
    generated_at: datetime,
    windows: Sequence[WindowInfo],
    masters: Sequence[MasterInfo],
    templates_dir: Path | Sequence[Path],
    base_url: str = "",
    products: Sequence[str] = (),
    desk_tz: str = DESK_TIMEZONE,
) -> list[Path]:
    """Write index.html, style.css, feed.atom and maintenance-<product>.ics into `out_dir`.

    The page shows open master cases as "Current incidents" (closed ones passed in appear as
    "Resolved"), maintenance windows "In progress", "Upcoming" (cancelled ones marked so) and
    completed within the last week, all in Mountain Time. One .ics feed is written per product
    named in `products` or in any window. `templates_dir` is the `templates/status` directory, or
several searched in order (the operator's overrides first);
    `base_url` (e.g. `https://status.example.com/`) makes feed links absolute. Returns the paths
    written; index.html is written last, so it never links to a feed not yet there.
    """
    now = _aware("generated_at", generated_at)
    zone = ZoneInfo(desk_tz)
    if base_url and not base_url.endswith("/"):
        base_url += "/"
    out_dir.mkdir(parents=True, exist_ok=True)
    template_dirs = (templates_dir,) if isinstance(templates_dir, Path) else tuple(templates_dir)
    environment = make_environment(template_dirs)

    ordered = sorted(windows, key=lambda w: (w.start, w.id))
    views = [(_window_view(w, now, zone, base_url), w) for w in ordered]
    in_progress = [v for v, _ in views if v["phase"] == "in_progress"]
    upcoming = [
        v
        for v, w in views
        if v["phase"] == "upcoming" or (v["phase"] == "cancelled" and w.end > now)
    ]
    completed = [
        v for v, w in views if v["phase"] == "completed" and w.end > now - RECENT_WINDOWS
    ]
    completed.reverse()  # most recent first

    master_views = [
        _master_view(m, now, zone, base_url)
        for m in sorted(
            masters,
            key=lambda m: m.latest_update_at or m.opened_at or now,
            reverse=True,
        )
    ]
    incidents = [m for m in master_views if m["open"]]
    resolved = [m for m in master_views if not m["open"]]

    product_names = sorted({*products, *(p for w in windows for p in w.products)}, key=str.lower)
    feeds = [{"product": p, "file": feed_file_name(p)} for p in product_names]
    context: dict[str, Any] = {
        "title": title,
        "base_url": base_url,
        "generated_when": _when(now, zone),
        "generated_iso": _iso(now),
        "timezone": desk_tz,
        "overall": _overall(incidents, in_progress),
        "incidents": incidents,
        "resolved": resolved,
        "in_progress": in_progress,
        "upcoming": upcoming,
        "completed": completed,
        "feeds": feeds,
        "feed_id": _atom_id("status", base_url or title),
        # Feed entries: every window and master case passed in, newest change first.
        "entries": sorted(
            [{"type": "window", **v} for v, _ in views]
            + [{"type": "case", **m} for m in master_views],
            key=lambda e: e["updated_iso"],
            reverse=True,
        ),
    }

    written: list[Path] = []

    def emit(name: str, data: bytes) -> None:
        path = out_dir / name
        _write_atomically(path, data)
        written.append(path)

    css = next(d / "style.css" for d in template_dirs if (d / "style.css").is_file()).read_bytes()
    emit("style.css", css)
    for feed in feeds:
        emit(feed["file"], product_feed(ordered, feed["product"], dtstamp=now))
    emit("feed.atom", environment.get_template("feed.atom.xml").render(context).encode("utf-8"))
    emit("index.html", environment.get_template("page.html").render(context).encode("utf-8"))
    return written
