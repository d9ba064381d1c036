"""The CLI's command groups; each module registers its sub-commands and keeps its handlers thin.

Layer: just below `cli` (which never is imported back), above everything else: a handler gets
the `App` from `cli`, opens the transaction and calls the desk, the store's readers, `present`
or `trace` for what it prints (`output` prints it).
"""

from __future__ import annotations

import argparse
from typing import Any

from mailcase.commands import (
    attachments,
    audit,
    backup,
    cases,
    config,
    daemon,
    directory,
    health,
    mail,
    maintenance,
    oauth,
    retention,
    schema,
    status,
    subscriptions,
)


def register(sub: argparse._SubParsersAction[Any]) -> None:
    for module in (
        schema, config, directory, cases, attachments, mail, daemon, maintenance, subscriptions, status, oauth,
        retention, audit, backup, health,
    ):
        module.register(sub)
