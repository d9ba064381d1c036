"""Who is acting: the one `--by EMAIL` option every agent command takes, the identity it falls back to
(the OS user running the command, never a made-up name), and the audit entry each action leaves.
It decides nothing about the action itself."""

from __future__ import annotations

import argparse
import getpass
import os
import pwd

from sqlmodel import Session

from mailcase.app import App
from mailcase.store.audit import record_action

BY_HELP = "who does this, recorded in the history and `mailcase audit` (default: the OS user running the command)"


def add_by(parser: argparse.ArgumentParser, *aliases: str) -> None:
    """`--by EMAIL` (and deprecated `aliases`, e.g. `--from` on `cases reply`), stored as `args.by`."""
    parser.add_argument("--by", *aliases, dest="by", metavar="EMAIL", default="", help=BY_HELP)


def acting(args: argparse.Namespace) -> str:
    """`--by` when given, else the OS user: `SUDO_USER` (the person behind `sudo -u mailcase …`),
    else the login name of the effective user id. Lower-cased, so `audit --by` finds it either way."""
    given = str(getattr(args, "by", "") or "").strip()
    return (given or os_user()).lower()


def os_user() -> str:
    sudo = os.environ.get("SUDO_USER", "").strip()
    if sudo:
        return sudo
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:  # a uid without a passwd entry (a container): the environment's name, else the uid
        try:
            return getpass.getuser()
        except (KeyError, OSError):
            return f"uid {os.geteuid()}"


def audit(
    app: App, session: Session, args: argparse.Namespace, action: str, *, case_id: int | None = None,
    target: str = "", summary: str = "",
) -> None:
    """Record `action` by the acting identity at the app's `now`, in `session`'s transaction."""
    record_action(
        session=session, at=app.clock.now(), actor=acting(args), action=action, case_id=case_id,
        target=target, summary=summary,
    )
