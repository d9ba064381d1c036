"""`mailcase config sample`: print the commented sample config that ships with the package.

It needs no config and no database, so a fresh install can start from it:
`mailcase config sample > config.toml`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from mailcase.resources import sample_config


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser("config", help="the configuration file")
    group = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    p = group.add_parser(
        "sample", help="print the commented sample config.toml (every key, its meaning and unit)"
    )
    p.set_defaults(handler=run_sample, standalone=run_sample)


def run_sample(args: argparse.Namespace) -> int:
    sys.stdout.write(sample_config())
    return 0
