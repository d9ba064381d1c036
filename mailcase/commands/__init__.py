"""The CLI's command groups; each module registers its sub-commands and keeps its handlers thin."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: "argparse._SubParsersAction[Any]") -> None:
    from mailcase.commands import (
        attachments, cases, daemon, directory, mail, maintenance, schema, status, subscriptions,
    )

    for module in (schema, directory, cases, attachments, mail, daemon, maintenance, subscriptions, status):
        module.register(sub)
