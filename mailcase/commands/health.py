"""`mailcase health [--json]`: the running daemon's readiness as a Nagios plugin reports it (one status
line, then one line per part; exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN), for cron and classic monitoring."""

from __future__ import annotations

import argparse
from typing import Any

from mailcase.app import App

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATUS = {"ok": OK, "warning": WARNING, "critical": CRITICAL}


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "health",
        help="ask the running daemon (its [http] endpoint) whether every part works; Nagios exit codes",
        description="Exit status: 0 OK, 1 WARNING, 2 CRITICAL (a part stalled, or the daemon not reachable), "
        "3 UNKNOWN (the endpoint is off in the config, or refused the token).",
    )
    p.add_argument("--json", action="store_true", help="print the daemon's readiness report as JSON")
    p.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for the daemon (default 15)")
    p.set_defaults(handler=run_health)


def run_health(app: App, args: argparse.Namespace) -> int:
    from mailcase.commands.output import emit_json
    from mailcase.observe.client import EndpointUnusable, ask_readiness

    http = app.settings.http
    if not http.enabled:
        off = ("[http] is not enabled in the config: `mailcase health` asks the daemon's endpoint; "
               "set [http] enabled = true and restart `mailcase serve`")  # fmt: skip
        return _trouble(args, UNKNOWN, off, reachable=False)
    try:
        answer = ask_readiness(http, timeout=args.timeout)
    except EndpointUnusable as error:
        if error.reachable:
            return _trouble(args, UNKNOWN, str(error), reachable=True)
        return _trouble(args, CRITICAL, f"{error} (is `mailcase serve` running?)", reachable=False)
    report = answer.report
    status = STATUS.get(str(report.get("status")), UNKNOWN)
    if args.json:
        emit_json({**report, "reachable": True})
        return status
    print(f"MAILCASE {_word(status)} - {report.get('summary', '')}")
    for part in report.get("parts", []):
        age = part.get("age_seconds")
        shown = "-" if age is None else f"{age:.0f}s"
        print(f"{part.get('part')} {part.get('state')} age={shown} {part.get('detail')}")
    return status


def _trouble(args: argparse.Namespace, status: int, message: str, *, reachable: bool) -> int:
    from mailcase.commands.output import emit_json

    if args.json:
        emit_json({"status": _word(status).lower(), "ready": False, "reachable": reachable, "summary": message,
                   "parts": []})  # fmt: skip
    else:
        print(f"MAILCASE {_word(status)} - {message}")
    return status


def _word(status: int) -> str:
    return {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL"}.get(status, "UNKNOWN")
