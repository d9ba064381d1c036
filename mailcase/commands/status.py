"""`mailcase status build --out DIR`: write the static status page (HTML, Atom feed, per-product .ics feeds)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mailcase.app import App
from mailcase.errors import UsageError


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser("status", help="the public status page")
    group = parser.add_subparsers(dest="status_command", metavar="ACTION", required=True)
    p = group.add_parser("build", help="write index.html, feed.atom and maintenance-<product>.ics into a directory")
    p.add_argument("--out", type=Path, help="output directory (default: [status] out_dir)")
    p.set_defaults(handler=run_build)


def run_build(app: App, args: argparse.Namespace) -> int:
    from mailcase.daemon import build_status_page  # not at the top: it loads jinja2 and icalendar

    out = args.out or (Path(app.settings.status.out_dir) if app.settings.status.out_dir else None)
    if out is None:
        raise UsageError("no output directory: give --out DIR or set [status] out_dir")
    written = build_status_page(app, out, now=app.clock.now())
    print(f"status page written to {out} ({len(written)} files)")
    return 0
