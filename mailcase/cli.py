"""The `mailcase` command line: parses arguments, builds the app once, runs one command, maps errors to exit codes.

Exit status: 0 success, 1 a refused request (unknown case, illegal transition), 2 a configuration or
usage error, 75 (EX_TEMPFAIL) a transient failure worth retrying: a database that is locked,
unreachable or has no schema, a file we may not open, our own bug; and for `ingest`, which an MTA
runs, also a configuration or usage error (see EX_TEMPFAIL). stderr
is one line naming the problem; tracebacks go to the log only. With `--json`, stdout carries JSON only.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import NoReturn

from mailcase import commands
from mailcase.app import App, build_app
from mailcase.clock import Clock, FixedClock, SystemClock, parse_instant
from mailcase.config import load_config
from mailcase.errors import ConfigError, MailcaseError, TransientError, UsageError
from mailcase.logs import configure_logging
from mailcase.store.engine import current_revision

log = logging.getLogger(__name__)

EX_OK = 0
EX_REFUSED = 1
EX_USAGE = 2
EX_TEMPFAIL = 75
"""Also `mailcase ingest`'s status for a configuration or usage error (the other commands say 2): an MTA
must keep the message until the admin fixes the config. Not 78 (EX_CONFIG): Postfix's pipe maps that
to 5.3.5 and bounces (tests/e2e/test_postfix.py showed it on Debian's Postfix 3.7); 75 defers on
Postfix and Exim alike. The one stderr line still says `config error: <key>: …`."""

MTA_COMMANDS = frozenset({"ingest"})
"""Commands an MTA runs: their stderr goes into a bounce or deferral notice, so it carries one line
and never a log record, and every failure that is not the message's fault is temporary."""

NO_SCHEMA = "the database has no mailcase schema: run `mailcase init`"

EXIT_STATUS_HELP = """exit status:
  0   done (for `ingest`: every message taken - a case, an update, held or ignored)
  1   refused: an unknown case, an illegal transition, a request that cannot be done
  2   usage or configuration error (a wrong option, an unknown or mistyped config key);
      `ingest` says 75 instead, so that an MTA keeps the message until the admin fixes it
  75  temporary failure (EX_TEMPFAIL): the database is busy, unreachable or has no schema
      (run `mailcase init`); try again
"""


def package_version() -> str:
    """The installed distribution's version (`mailcase --version`)."""
    try:
        return metadata.version("mailcase")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"

Handler = Callable[[App, argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors can be what an MTA's pipe needs for `ingest` (see `terse`)."""

    terse = False

    def error(self, message: str) -> NoReturn:
        if not self.terse:
            super().error(message)
        print(f"mailcase: usage error: {message}", file=sys.stderr)
        raise SystemExit(EX_TEMPFAIL)


class _TerseParser(_Parser):
    """Usage errors are one stderr line and exit status 75 (EX_TEMPFAIL): the MTA retries."""

    terse = True


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
    argv = list(sys.argv[1:] if argv is None else argv)
    mta = _command_in(argv) in MTA_COMMANDS
    parser = build_parser(terse=mta)
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return EX_USAGE
    if getattr(args, "standalone", None):
        # Commands that need neither a config nor a database (`config sample`).
        return int(args.standalone(args))
    config_status = EX_TEMPFAIL if mta else EX_USAGE
    try:
        clock: Clock = FixedClock(parse_instant(args.now)) if args.now else SystemClock()
    except ValueError as exc:
        print(f"mailcase: --now: {exc}", file=sys.stderr)
        return config_status
    config_path = args.config or os.environ.get("MAILCASE_CONFIG") or "config.toml"
    try:
        settings = load_config(_config_file(config_path), os.environ)
        configure_logging(
            settings.logging.level, file=settings.logging.file, stderr=not mta, format=settings.logging.format
        )
    except ConfigError as exc:
        print(f"mailcase: {exc}", file=sys.stderr)
        return config_status
    try:
        app = build_app(settings, clock)
    except Exception as exc:  # SQLAlchemy refuses the URL, or its driver is not installed
        print(f"mailcase: config error: database.url: {_describe(exc)}", file=sys.stderr)
        return config_status
    try:
        return int(args.handler(app, args))
    except UsageError as exc:
        print(f"mailcase: {exc}", file=sys.stderr)
        # For `ingest` the command line is the MTA's configuration (master.cf): defer, never bounce.
        return config_status if mta else EX_REFUSED
    except ConfigError as exc:
        print(f"mailcase: {exc}", file=sys.stderr)
        return config_status
    except TransientError as exc:
        problem = NO_SCHEMA if _schema_missing(app, args, exc) else f"temporary failure, try again: {exc}"
        if mta or settings.logging.file:  # else the log is stderr, and the line below says it
            # The cause for the admin, in the log; the one line is what the MTA or the shell shows.
            log.error("%s: %s", args.command, problem, exc_info=exc.__cause__ or exc)
        print(f"mailcase: {problem}", file=sys.stderr)
        return EX_TEMPFAIL
    except MailcaseError as exc:
        print(f"mailcase: {exc}", file=sys.stderr)
        return EX_REFUSED
    except Exception as exc:
        # Not the message's fault and not the caller's: a database without the schema, or our bug.
        # Temporary, so an MTA keeps the message; the traceback goes to the log, never to stderr.
        problem = (
            NO_SCHEMA
            if _schema_missing(app, args, exc)
            else f"internal error ({_describe(exc)}); the traceback is in the log"
        )
        if problem != NO_SCHEMA or mta or settings.logging.file:
            log.error("%s failed: %s", args.command, problem, exc_info=exc)
        print(f"mailcase: {problem}", file=sys.stderr)
        return EX_TEMPFAIL
    finally:
        app.close()


def _command_in(argv: Sequence[str]) -> str | None:
    """The sub-command named in `argv` (the first word that is not a global option or its value)."""
    words = iter(argv)
    for word in words:
        if word in ("--config", "--now"):
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def _schema_missing(app: App, args: argparse.Namespace, error: BaseException) -> bool:
    """After a database error naming a missing table: is it because `mailcase init` never ran here?

    Only then is the schema probed (a probe of a locked SQLite database would wait out its busy timeout).
    """
    import sqlalchemy as sa

    if args.command == "init" or not _caused_by(error, sa.exc.DBAPIError, _MISSING_TABLE):
        return False
    try:
        return current_revision(app.engine) is None
    except Exception:
        return False


_MISSING_TABLE = ("no such table", "UndefinedTable", "does not exist")
"""How SQLite ("no such table: x") and PostgreSQL (UndefinedTable, 'relation "x" does not exist') say it."""


def _caused_by(error: BaseException, kind: type[BaseException], texts: tuple[str, ...]) -> bool:
    """Whether `error` or one of its causes is a `kind` whose driver error mentions one of `texts`."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, kind):
            orig = getattr(seen, "orig", None)
            said = f"{type(orig).__name__}: {orig}"
            if any(text in said for text in texts):
                return True
        seen = seen.__cause__ or seen.__context__
    return False


def _describe(error: BaseException) -> str:
    """The exception's class and first line, never a SQL statement (engines hide bound values anyway)."""
    import sqlalchemy as sa

    if isinstance(error, sa.exc.DBAPIError):
        detail = str(error.orig).strip().splitlines()[0] if error.orig is not None else ""
        return f"database error: {type(error.orig).__name__}: {detail}"[:300]
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {first}"[:300] if first else type(error).__name__


def _config_file(path: str) -> Path | None:
    """The default ./config.toml may be absent (built-in defaults); an explicit path must exist."""
    file = Path(path)
    if not file.exists() and path == "config.toml":
        return None
    return file


def build_parser(*, terse: bool = False) -> argparse.ArgumentParser:
    """`terse`: usage errors are one stderr line and exit EX_TEMPFAIL (for `ingest`)."""
    parser_class = _TerseParser if terse else _Parser
    parser = parser_class(
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
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=parser_class
    )
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
