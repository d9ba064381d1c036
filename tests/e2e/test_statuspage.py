"""The static status page as a customer sees it: built into a directory, parsed as feeds, and
rendered by headless Chromium (screenshot kept in test-artifacts/statuspage.png)."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import icalendar
import pytest

from mailcase.notify.statuspage import MasterInfo, WindowInfo, build_status_site

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "templates" / "status"
ARTIFACTS = REPO / "test-artifacts"
IN_CI = os.environ.get("CI", "").lower() == "true"
ATOM = "{http://www.w3.org/2005/Atom}"

NOW = datetime(2026, 12, 18, 22, 30, tzinfo=UTC)  # 15:30 MST, Friday 18 Dec 2026

WINDOWS = (
    WindowInfo(
        id=1,
        kind="connect",
        start=NOW - timedelta(minutes=30),
        end=NOW + timedelta(hours=1, minutes=30),
        products=("Cisco Webex",),
        description="Connect platform update to release 24.3.",
        justification="Vendor security fixes.",
        uid="mw-1@support.example.com",
    ),
    WindowInfo(
        id=2,
        kind="scheduled",
        start=datetime(2026, 12, 19, 5, 0, tzinfo=UTC),  # 22:00 MST on the third Friday
        end=datetime(2026, 12, 19, 11, 0, tzinfo=UTC),
        products=("Microsoft Teams", "Cisco Webex"),
        description="Monthly patching of voice gateways & session border controllers.",
        justification="Keeps the platform on supported firmware.",
        uid="mw-2@support.example.com",
        sequence=1,
    ),
    WindowInfo(
        id=3,
        kind="unscheduled",
        start=datetime(2026, 12, 22, 3, 0, tzinfo=UTC),
        end=datetime(2026, 12, 22, 4, 0, tzinfo=UTC),
        products=("Microsoft Teams",),
        description="Replace a failing power supply <PSU-2> in the Denver core.",
        justification="",
        status="cancelled",
        uid="mw-3@support.example.com",
        sequence=2,
    ),
    WindowInfo(
        id=4,
        kind="scheduled",
        start=datetime(2026, 11, 21, 5, 0, tzinfo=UTC),  # a month ago: not on the page
        end=datetime(2026, 11, 21, 11, 0, tzinfo=UTC),
        products=("Microsoft Teams",),
        description="November patching.",
        justification="",
        uid="mw-4@support.example.com",
    ),
)

MASTERS = (
    MasterInfo(
        number=1042,
        subject="Teams calls dropping after 30 seconds",
        platform="Microsoft Teams",
        status="in_progress",
        latest_update_text=(
            "Carrier has identified a faulty trunk; reroute in progress. Next update 16:30 MST."
        ),
        latest_update_at=NOW - timedelta(minutes=10),
        opened_at=NOW - timedelta(hours=2),
    ),
    MasterInfo(
        number=1037,
        subject="Voicemail transcription delayed",
        platform="Cisco Webex",
        status="closed",
        latest_update_text="Resolved: the transcription queue is drained.",
        latest_update_at=NOW - timedelta(days=1),
    ),
)


@pytest.fixture()
def site(tmp_path: Path) -> Path:
    out = tmp_path / "site"
    build_status_site(
        out,
        title="Example Telecom status",
        generated_at=NOW,
        windows=WINDOWS,
        masters=MASTERS,
        templates_dir=TEMPLATES,
        base_url="https://status.example.com",
        products=("Zoom Phone",),
    )
    return out


def test_site_has_page_stylesheet_atom_feed_and_one_calendar_per_product(site: Path) -> None:
    names = sorted(p.name for p in site.iterdir())
    assert names == [
        "feed.atom",
        "index.html",
        "maintenance-cisco-webex.ics",
        "maintenance-microsoft-teams.ics",
        "maintenance-zoom-phone.ics",
        "style.css",
    ]


def test_rebuilding_replaces_files_without_leaving_temporary_files(site: Path) -> None:
    written = build_status_site(
        site,
        title="Example Telecom status",
        generated_at=NOW + timedelta(hours=1),
        windows=WINDOWS,
        masters=(),
        templates_dir=TEMPLATES,
    )
    assert {p.name for p in written} <= {p.name for p in site.iterdir()}
    assert not [p for p in site.iterdir() if p.name.startswith(".")]
    assert "All systems operational" not in (site / "index.html").read_text()  # Connect still on
    assert "Maintenance in progress" in (site / "index.html").read_text()


def test_page_lists_incident_with_latest_update_and_windows_in_mountain_time(site: Path) -> None:
    html = (site / "index.html").read_text()
    assert "Service disruption" in html
    assert "Case #00001042" in html
    assert "reroute in progress" in html
    assert "Fri 18 Dec 2026, 22:00 – Sat 19 Dec 2026, 04:00 MST" in html
    assert "Microsoft Teams" in html
    assert "No service impact expected" in html
    assert "November patching" not in html  # completed more than a week ago


def test_page_escapes_operator_text(site: Path) -> None:
    html = (site / "index.html").read_text()
    assert "&lt;PSU-2&gt;" in html
    assert "<PSU-2>" not in html
    assert "voice gateways &amp; session" in html


def test_atom_feed_is_atom_1_0_with_an_entry_per_window_and_master_case(site: Path) -> None:
    root = ET.parse(site / "feed.atom").getroot()
    assert root.tag == f"{ATOM}feed"
    for required in ("id", "title", "updated", "author"):
        assert root.find(f"{ATOM}{required}") is not None, required
    self_link = root.find(f"{ATOM}link[@rel='self']")
    assert self_link is not None and self_link.get("href") == "https://status.example.com/feed.atom"
    entries = root.findall(f"{ATOM}entry")
    assert len(entries) == len(WINDOWS) + len(MASTERS)
    ids = [e.findtext(f"{ATOM}id") for e in entries]
    assert len(set(ids)) == len(ids)
    assert all(i and i.startswith("urn:uuid:") for i in ids)
    for entry in entries:
        for required in ("title", "updated", "summary"):
            assert entry.findtext(f"{ATOM}{required}"), required
        link = entry.find(f"{ATOM}link")
        assert link is not None and link.get("href", "").startswith("https://status.example.com/")
        datetime.fromisoformat(entry.findtext(f"{ATOM}updated", "").replace("Z", "+00:00"))
    titles = [e.findtext(f"{ATOM}title", "") for e in entries]
    assert any("Case #00001042" in t for t in titles)
    assert any("Scheduled maintenance" in t and "22:00" in t for t in titles)


def test_atom_ids_are_stable_across_rebuilds(site: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    build_status_site(
        again,
        title="Example Telecom status",
        generated_at=NOW + timedelta(minutes=5),
        windows=WINDOWS,
        masters=MASTERS,
        templates_dir=TEMPLATES,
        base_url="https://status.example.com",
    )

    def ids(path: Path) -> set[str | None]:
        return {e.findtext(f"{ATOM}id") for e in ET.parse(path).getroot().iter(f"{ATOM}entry")}

    assert ids(site / "feed.atom") == ids(again / "feed.atom")


def test_product_calendar_holds_only_that_products_windows(site: Path) -> None:
    calendar = icalendar.Calendar.from_ical((site / "maintenance-microsoft-teams.ics").read_bytes())
    assert "METHOD" not in calendar
    events = {str(e["UID"]): e for e in calendar.walk("VEVENT")}
    assert set(events) == {
        "mw-2@support.example.com",
        "mw-3@support.example.com",
        "mw-4@support.example.com",
    }
    assert str(events["mw-3@support.example.com"]["STATUS"]) == "CANCELLED"
    assert events["mw-2@support.example.com"].decoded("DTSTART") == WINDOWS[1].start


# --- Rendered by a real browser ---------------------------------------------------------------


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if IN_CI:
            pytest.fail("Debian's chromium is required in CI (CI=true) but is not installed")
        pytest.skip("chromium is not installed (apt-get install chromium to run the page tests)")
    return path


def _run_chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    command = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, timeout=60, check=False)


def _png_pixels(data: bytes) -> tuple[int, int, set[bytes]]:
    """Width, height and the set of distinct pixels of an 8-bit RGB/RGBA PNG (stdlib only)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    offset, idat = 8, b""
    width = height = depth = colour = 0
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
        elif kind == b"IDAT":
            idat += body
        offset += 12 + length
    assert depth == 8 and colour in (2, 6), f"unexpected PNG format depth={depth} colour={colour}"
    channels = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * channels
    previous = bytearray(stride)
    distinct: set[bytes] = set()
    position = 0
    for _ in range(height):
        kind, line = raw[position], bytearray(raw[position + 1 : position + 1 + stride])
        position += 1 + stride
        for i in range(stride):  # undo the PNG row filters (PNG spec §9)
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                predictor = left if pa <= pb and pa <= pc else (up if pb <= pc else corner)
                line[i] = (line[i] + predictor) & 0xFF
        for x in range(0, stride, channels * 8):  # every 8th pixel is plenty to see colours
            distinct.add(bytes(line[x : x + 3]))
        previous = line
    return width, height, distinct


@pytest.mark.chromium
def test_page_renders_in_chromium_with_incident_and_windows(site: Path, tmp_path: Path) -> None:
    binary = _chromium()
    page = (site / "index.html").as_uri()
    shot = tmp_path / "statuspage.png"

    result = _run_chromium(
        binary, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1280,900", page
    )
    assert shot.exists(), result.stderr.decode(errors="replace")[-2000:]
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(shot, ARTIFACTS / "statuspage.png")
    data = shot.read_bytes()
    width, height, colours = _png_pixels(data)
    assert (width, height) == (1280, 900)
    assert len(data) > 10_000
    assert len(colours) > 20, "the screenshot is (nearly) one colour: the page did not render"

    dom = _run_chromium(binary, tmp_path / "profile-dom", "--dump-dom", page)
    text = dom.stdout.decode()
    assert "Teams calls dropping after 30 seconds" in text
    assert "Carrier has identified a faulty trunk" in text
    assert "Monthly patching of voice gateways" in text
    assert "Fri 18 Dec 2026, 22:00 – Sat 19 Dec 2026, 04:00 MST" in text
    assert "Connect platform update to release 24.3." in text
    assert 'class="overall overall--incident"' in text
