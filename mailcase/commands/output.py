"""How a command prints machine-readable output: one JSON document on stdout (README, "JSON
output"); commands import it from here so that nothing below the CLI imports `mailcase.cli`."""

from __future__ import annotations

import json
import sys
from typing import Any


def emit_json(value: Any) -> None:
    """`value` as indented JSON (non-ASCII kept, instants and the like through `str`), one newline."""
    json.dump(value, sys.stdout, indent=2, ensure_ascii=False, default=str)
    sys.stdout.write("\n")
