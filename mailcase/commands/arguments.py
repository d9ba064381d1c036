"""argparse types shared by the command groups: a case number and an instant, each refused with
argparse's own one-line usage error; nothing else lives here."""

from __future__ import annotations

import argparse
from datetime import datetime

from mailcase.clock import parse_instant
from mailcase.domain import parse_case_number


def case_number(text: str) -> int:
    """`00001042` or `1042` -> 1042."""
    try:
        return parse_case_number(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def instant(text: str) -> datetime:
    """An ISO 8601 instant with its offset (`2026-11-26T09:30:00-07:00`)."""
    try:
        return parse_instant(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
