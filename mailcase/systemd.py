"""The systemd notify protocol (sd_notify(3)) for `mailcase serve`: READY=1, STOPPING=1, WATCHDOG=1 and
STATUS= as datagrams to $NOTIFY_SOCKET; a no-op when systemd did not start us. It decides nothing."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send `state` (e.g. "READY=1\\nSTATUS=serving") to the service manager; False when there is none.

    The socket is a path or, with a leading "@", an abstract-namespace name (sd_notify(3)). A
    failure is logged, never raised: the daemon serves mail whether or not systemd hears it.
    """
    environ = os.environ if environ is None else environ
    address = environ.get("NOTIFY_SOCKET", "")
    if not address or address[0] not in "/@":
        return False
    target = "\0" + address[1:] if address.startswith("@") else address
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(target)
            sock.sendall(state.encode("utf-8"))
    except OSError as exc:
        log.warning("systemd notify to %s failed: %s", address, exc)
        return False
    return True


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings: half of $WATCHDOG_USEC (the unit's WatchdogSec), as
    sd_watchdog_enabled(3) advises; None when no watchdog is asked for, or it is for another process."""
    environ = os.environ if environ is None else environ
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000


def watchdog_ping() -> None:
    """One WATCHDOG=1: called from a scheduler job, so a scheduler that stops running jobs is restarted."""
    notify("WATCHDOG=1")
