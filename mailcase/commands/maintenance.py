"""`mailcase maintenance add|list|cancel|reschedule|plan`: maintenance windows and the notices they cause.

Handlers only parse, open one transaction and print; what is due and who is told lives in
`desk.maintenance` and `rules.maintenance`.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from mailcase.app import App
from mailcase.commands.acting import add_by, audit
from mailcase.commands.arguments import instant as _instant
from mailcase.commands.output import emit_json, emit_rows
from mailcase.desk import maintenance as windows
from mailcase.domain import MaintenanceKind, MaintenanceStatus
from mailcase.store.engine import transaction
from mailcase.store.maintenance import get_window, list_windows, window_products
from mailcase.store.models import MaintenanceWindow


def _kind(text: str) -> MaintenanceKind:
    try:
        return MaintenanceKind(text.strip().lower())
    except ValueError:
        allowed = ", ".join(k.value for k in MaintenanceKind)
        raise argparse.ArgumentTypeError(f"{text!r} is not one of: {allowed}") from None


def _products(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser("maintenance", help="maintenance windows and their notices")
    group = parser.add_subparsers(dest="maintenance_command", metavar="ACTION", required=True)

    p = group.add_parser("add", help="add a window (an unscheduled one is announced at once)")
    p.add_argument("--start", type=_instant, required=True, help="ISO 8601 with offset")
    p.add_argument("--end", type=_instant, required=True, help="ISO 8601 with offset")
    p.add_argument("--products", type=_products, required=True, help='affected products, comma-separated: "A,B"')
    p.add_argument("--description", required=True, help="a short description of the work")
    p.add_argument("--justification", required=True, help="why the work is needed")
    p.add_argument(
        "--kind", type=_kind, default=MaintenanceKind.SCHEDULED, help="scheduled (default), unscheduled or connect"
    )
    add_by(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_add)

    p = group.add_parser("list", help="list windows by start time")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_list)

    p = group.add_parser("cancel", help="cancel a window; whoever was told gets a cancellation (METHOD:CANCEL)")
    p.add_argument("id", type=int, help="the window's id (from `maintenance list`)")
    add_by(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_cancel)

    p = group.add_parser("reschedule", help="move a window; whoever was told gets an update (SEQUENCE+1)")
    p.add_argument("id", type=int, help="the window's id (from `maintenance list`)")
    p.add_argument("--start", type=_instant, required=True, help="the new start, ISO 8601 with offset")
    p.add_argument("--end", type=_instant, required=True, help="the new end, ISO 8601 with offset")
    add_by(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_reschedule)

    p = group.add_parser(
        "plan", help="create the monthly third-Friday windows and the Connect updates for N months (idempotent)"
    )
    p.add_argument("--months", type=int, required=True, help="how many months ahead, from --now")
    p.add_argument("--products", type=_products, help="products of the monthly windows (default: every product)")
    p.add_argument(
        "--connect-products", type=_products, help="products of the Connect updates (default: as --products)"
    )
    add_by(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_plan)


def window_json(window: MaintenanceWindow, products: list[str]) -> dict[str, Any]:
    """SPEC.md §2: `id`, `kind`, `start`, `end`, `products`, `description`, `justification`, `status`
    (plus the calendar identity `uid` and `sequence`)."""
    return {
        "id": window.id,
        "kind": str(window.kind),
        "start": window.start.isoformat(),
        "end": window.end.isoformat(),
        "products": products,
        "description": window.description,
        "justification": window.justification,
        "status": str(window.status),
        "uid": window.uid,
        "sequence": window.sequence,
    }


def window_line(data: dict[str, Any], timezone: str) -> str:
    zone = ZoneInfo(timezone)
    start = datetime.fromisoformat(data["start"]).astimezone(zone)
    end = datetime.fromisoformat(data["end"]).astimezone(zone)
    status = "CANCELLED " if data["status"] == MaintenanceStatus.CANCELLED.value else ""
    return (
        f"{data['id']:>5}  {status}{data['kind']:<11} {start:%Y-%m-%d %H:%M %Z} – {end:%Y-%m-%d %H:%M %Z}  "
        f"[{', '.join(data['products'])}]  {data['description']}"
    )


def _one(app: App, window_id: int) -> dict[str, Any]:
    with transaction(app.engine) as session:
        window = get_window(session=session, window_id=window_id)
        return window_json(window, window_products(session=session, window_ids=[window_id]).get(window_id, []))


def _report(app: App, args: argparse.Namespace, data: dict[str, Any], queued: int, what: str) -> int:
    if args.json:
        emit_json(data | {"notices_queued": queued})
    else:
        print(window_line(data, app.settings.business.timezone))
        print(f"{what}: {queued} notice{'s' if queued != 1 else ''} queued")
    return 0


def run_add(app: App, args: argparse.Namespace) -> int:
    now = app.clock.now()
    with transaction(app.engine) as session:
        window = windows.add_window(
            session, app.desk(), kind=args.kind, start=args.start, end=args.end, products=args.products,
            description=args.description, justification=args.justification, now=now,
        )
        window_id = window.id
        audit(app, session, args, "maintenance add", target=f"window {window_id}",
              summary=f"{args.kind} {args.start.isoformat()} - {args.end.isoformat()}")
    assert window_id is not None
    # An unscheduled window is announced "as soon as the window is entered" (SPEC.md §1).
    queued = windows.sweep_window(app.engine, app.desk(), window_id, now)
    return _report(app, args, _one(app, window_id), queued, f"window {window_id} added")


def run_list(app: App, args: argparse.Namespace) -> int:
    with transaction(app.engine) as session:
        windows = list_windows(session=session)
        names = window_products(session=session, window_ids=[w.id for w in windows if w.id])
        rows = [window_json(w, names.get(w.id or 0, [])) for w in windows]
    zone = app.settings.business.timezone
    return emit_rows(rows, as_json=args.json, line=lambda row: window_line(row, zone), empty="no maintenance windows")


def run_cancel(app: App, args: argparse.Namespace) -> int:
    now = app.clock.now()
    with transaction(app.engine) as session:
        queued = windows.cancel_window(session, app.desk(), args.id, now=now)
        audit(app, session, args, "maintenance cancel", target=f"window {args.id}")
    return _report(app, args, _one(app, args.id), queued, f"window {args.id} cancelled")


def run_reschedule(app: App, args: argparse.Namespace) -> int:
    now = app.clock.now()
    with transaction(app.engine) as session:
        queued = windows.reschedule_window(session, app.desk(), args.id, start=args.start, end=args.end, now=now)
        audit(app, session, args, "maintenance reschedule", target=f"window {args.id}",
              summary=f"{args.start.isoformat()} - {args.end.isoformat()}")
    # The new times may make a notice due at once (e.g. the window now starts within a week).
    queued += windows.sweep_window(app.engine, app.desk(), args.id, now)
    return _report(app, args, _one(app, args.id), queued, f"window {args.id} rescheduled")


def run_plan(app: App, args: argparse.Namespace) -> int:
    now = app.clock.now()
    with transaction(app.engine) as session:
        report = windows.plan_windows(
            session, app.desk(), months=args.months, now=now, products=args.products, connect_products=args.connect_products
        )
        names = window_products(session=session, window_ids=report.created)
        audit(app, session, args, "maintenance plan", summary=f"{len(report.created)} window(s) created for {args.months} month(s)")
        created = [window_json(get_window(session=session, window_id=i), names.get(i, [])) for i in report.created]
    if args.json:
        emit_json({"created": created, "already_planned": report.existing})
    else:
        for row in created:
            print(window_line(row, app.settings.business.timezone))
        plural = "s" if len(created) != 1 else ""
        print(
            f"planned {report.from_date} to {report.until_date}: {len(created)} window{plural} created,"
            f" {report.existing} already planned"
        )
    return 0
