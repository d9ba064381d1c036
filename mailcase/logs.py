"""Logging set-up for commands and the daemon: one format, to stderr, level from config; never logs secrets."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Library chatter at INFO is noise in a daemon's log (every SMTP command, every SQL pool event).
    for noisy in ("mail.log", "mail.debug", "apscheduler", "alembic", "imapclient"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # mail-parser warns about every MIME part it does not render itself; we handle those parts.
    logging.getLogger("mailparser").setLevel(logging.ERROR)
