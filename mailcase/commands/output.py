"""How a command prints what it shows: one JSON document on stdout with `--json` (README, "JSON
output"), else lines for a person; commands import it from here so that nothing below the CLI
imports `mailcase.cli`. It must not look anything up: it is given the rows it prints."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

_Row = TypeVar("_Row")


def emit_json(value: Any) -> None:
    """`value` as indented JSON (non-ASCII kept, instants and the like through `str`), one newline."""
    json.dump(value, sys.stdout, indent=2, ensure_ascii=False, default=str)
    sys.stdout.write("\n")


def emit(value: Any, *, as_json: bool, text: str) -> None:
    """One result: `value` as JSON with `--json`, else the line `text`."""
    if as_json:
        emit_json(value)
    else:
        print(text)


def emit_rows(rows: Sequence[_Row], *, as_json: bool, line: Callable[[_Row], str], empty: str) -> int:
    """A listing: the rows as one JSON array with `--json`, else one line each, or `empty` when
    there are none. Returns the exit status (0)."""
    if as_json:
        emit_json(rows)
        return 0
    for row in rows:
        print(line(row))
    if not rows:
        print(empty)
    return 0
