"""The `mailcase` command line: parses arguments, builds the app once, runs one command, maps errors to exit codes.

Exit status: 0 success, 1 a refused request (unknown case, illegal transition), 2 a configuration or
usage error, 75 (EX_TEMPFAIL) a transient failure worth retrying. With `--json`, stdout carries JSON only.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mailcase.app import App, build_app
from mailcase.clock import Clock, FixedClock, SystemClock, parse_instant
from mailcase.config import load_config
from mailcase.errors import ConfigError, MailcaseError, TransientError, UsageError
from mailcase.logs import configure_logging

log = logging.getLogger(__name__)

EX_OK = 0
EX_REFUSED = 1
EX_USAGE = 2
EX_TEMPFAIL = 75

Handler = Callable[[App, argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return EX_USAGE
    try:
        clock: Clock = FixedClock(parse_instant(args.now)) if args.now else SystemClock()
    except ValueError as exc:
        print(f"mailcase: --now: {exc}", file=sys.stderr)
        return EX_USAGE
    config_path = args.config or os.environ.get("MAILCASE_CONFIG") or "config.toml"
    try:
        settings = load_config(_config_file(config_path), os.environ)
    except ConfigError as exc:
        print(f"mailcase: {exc}", file=sys.stderr)
        return EX_USAGE
    configure_logging(settings.logging.level)
    app = build_app(settings, clock)
    try:
        return int(args.handler(app, args))
    except UsageError as exc:
        print(f"mailcase: {exc}", file=sys.stderr)
        return EX_REFUSED
    except TransientError as exc:
        print(f"mailcase: temporary failure, try again: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    except ConfigError as exc:
        print(f"mailcase: {exc}", file=sys.stderr)
        return EX_USAGE
    except MailcaseError as exc:
        print(f"mailcase: {exc}", file=sys.stderr)
        return EX_REFUSED
    finally:
        app.close()


def _config_file(path: str) -> Path | None:
    """The default ./config.toml may be absent (built-in defaults); an explicit path must exist."""
    file = Path(path)
    if not file.exists() and path == "config.toml":
        return None
    return file


def emit_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, ensure_ascii=False, default=str)
    sys.stdout.write("\n")


def build_parser() -> argparse.ArgumentParser:
    from mailcase import commands

    parser = argparse.ArgumentParser(prog="mailcase", description="Email-to-case daemon for a 24x7 support desk.")
    parser.add_argument("--config", help="config file (default ./config.toml or $MAILCASE_CONFIG)")
    parser.add_argument(
        "--now",
        help="evaluate time-dependent rules as of this ISO 8601 instant (with offset), for replays and dry runs",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.register(sub)
    return parser
