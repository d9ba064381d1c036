"""Logging set-up for commands and the daemon: one format, to stderr or a file, level from config; never logs secrets."""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys

from mailcase.errors import ConfigError

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
SYSLOG_SOCKET = "/dev/log"


def configure_logging(level: str, *, file: str = "", stderr: bool = True) -> None:
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
    prefix = "mailcase: " if isinstance(handler, logging.handlers.SysLogHandler) else "%(asctime)s "
    handler.setFormatter(logging.Formatter(prefix + FORMAT.removeprefix("%(asctime)s ")))
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
