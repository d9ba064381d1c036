"""The `mailcase` command line: parses arguments, builds the app once, runs one command, maps errors to exit codes.

Exit status: 0 success, 1 a refused request (unknown case, illegal transition), 2 a configuration or
usage error, 75 (EX_TEMPFAIL) a transient failure worth retrying. With `--json`, stdout carries JSON only.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from importlib import metadata
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

EXIT_STATUS_HELP = """exit status:
  0   done (for `ingest`: every message taken - a case, an update, held or ignored)
  1   refused: an unknown case, an illegal transition, a request that cannot be done
  2   usage or configuration error (a wrong option, an unknown or mistyped config key)
  75  temporary failure (EX_TEMPFAIL): the database is busy or unreachable; try again
"""


def package_version() -> str:
    """The installed distribution's version (`mailcase --version`)."""
    try:
        return metadata.version("mailcase")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"

Handler = Callable[[App, argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    try:
        status = _run(argv)
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        # The reader went away (`mailcase cases list | head`): not an error worth a traceback.
        # Point stdout at /dev/null so the interpreter's final flush cannot raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EX_OK


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return EX_USAGE
    if getattr(args, "standalone", None):
        # Commands that need neither a config nor a database (`config sample`).
        return int(args.standalone(args))
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

    parser = argparse.ArgumentParser(
        prog="mailcase",
        description="Email-to-case daemon for a 24x7 support desk.",
        epilog=EXIT_STATUS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mailcase {package_version()}")
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="config file (default: $MAILCASE_CONFIG, else ./config.toml, else built-in defaults); "
        "relative paths inside it count from its directory",
    )
    parser.add_argument(
        "--now",
        metavar="ISO8601",
        help="evaluate time-dependent rules as of this instant (with offset), for replays and backfills; "
        "it changes what is due, not what is done: `tick --now` really sends and closes",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.register(sub)
    _describe_json_options(parser)
    return parser


JSON_HELP = 'print machine-readable JSON only on stdout (fields: README, "JSON output")'


def _describe_json_options(parser: argparse.ArgumentParser) -> None:
    """Every `--json` flag means the same thing, so it is described once, here."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _describe_json_options(child)
        elif "--json" in action.option_strings and not action.help:
            action.help = JSON_HELP
