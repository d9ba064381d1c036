"""Logging set-up for commands and the daemon: text or JSON lines, to stderr, a file or syslog, level from
config; it formats records and never adds a message body, a password or a token to them."""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from typing import Any

from mailcase.errors import ConfigError

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
SYSLOG_SOCKET = "/dev/log"

INGEST_FIELDS = ("message_id", "channel", "decision", "reason", "case", "dmarc")
"""The structured fields of the one line per ingest decision (STYLE.md §7), as JSON keys."""


def ingest_fields(
    *, message_id: str | None, channel: str, decision: str, reason: str, case: str | None, dmarc: str
) -> dict[str, Any]:
    """The `extra=` of the ingest line: what a JSON log carries beside the message, never the body."""
    return {
        "message_id": message_id or None,
        "channel": channel,
        "decision": decision,
        "reason": reason,
        "case": case or None,
        "dmarc": dmarc,
    }


def formatter(format: str, *, syslog: bool = False, process: str = "") -> logging.Formatter:
    """`text`: one readable line; `json`: one JSON object per line with timestamp (ISO 8601, UTC),
    level, logger, message and any structured fields the record carries (`extra=`). `process`
    names the writer when it is not the main one ("smtp-worker 1"): `[…]` in text, a key in JSON."""
    if format == "json":
        from pythonjsonlogger.json import JsonFormatter

        return JsonFormatter(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp=True,  # "timestamp": the record's creation instant in UTC, ISO 8601
            json_ensure_ascii=False,
            static_fields={"process": process} if process else {},
        )
    prefix = "mailcase: " if syslog else "%(asctime)s "
    text = FORMAT.removeprefix("%(asctime)s ")
    if process:
        text = text.replace("%(name)s", f"[{process}] %(name)s")
    return logging.Formatter(prefix + text)


def configure_logging(level: str, *, file: str = "", stderr: bool = True, format: str = "text") -> None:
    """Log to `file` when set, else to stderr when `stderr`, else to syslog (facility mail) if there is one.

    `stderr=False` is for `mailcase ingest`: an MTA's pipe puts the command's output into the bounce
    or deferral notice, so a traceback must never reach it (issue 17).
    """
    handler: logging.Handler
    if file:
        try:
            # Reopened on SIGHUP (`reopen_log_files`), as logrotate's postrotate expects.
            handler = logging.FileHandler(file, encoding="utf-8")
        except OSError as exc:
            raise ConfigError("logging.file", f"cannot open {file}: {exc.strerror}") from None
    elif stderr:
        handler = logging.StreamHandler(sys.stderr)
    elif os.path.exists(SYSLOG_SOCKET):
        handler = logging.handlers.SysLogHandler(SYSLOG_SOCKET, facility=logging.handlers.SysLogHandler.LOG_MAIL)
    else:
        handler = logging.NullHandler()
    handler.setFormatter(formatter(format, syslog=isinstance(handler, logging.handlers.SysLogHandler)))
    root = logging.getLogger()
    for old in root.handlers:
        if isinstance(old, logging.FileHandler):  # ours, from an earlier call
            old.close()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Library chatter at INFO is noise in a daemon's log (every SMTP command, every SQL pool event).
    for noisy in ("mail.log", "mail.debug", "apscheduler", "alembic", "imapclient"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # mail-parser warns about every MIME part it does not render itself; we handle those parts.
    logging.getLogger("mailparser").setLevel(logging.ERROR)


def reopen_log_files() -> int:
    """Close and reopen every log file of the root logger (SIGHUP, after a rotation); returns how many."""
    reopened = 0
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.acquire()
            try:
                handler.close()
                handler.stream = handler._open()
            finally:
                handler.release()
            reopened += 1
    return reopened
