"""The README cannot drift: its "Try it" block runs as written against a daemon this test starts,
and every command its command table names exists with the options the table shows."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from mailcase.cli import build_parser
from support.cli import REPO, SAMPLE_CONFIG
from support.daemon import MailcaseDaemon, wait_until
from support.relay import CaptureRelay

README = (REPO / "README.md").read_text(encoding="utf-8")


def _try_it_block() -> str:
    """The fenced shell block right after the `<!-- try-it` marker."""
    match = re.search(r"<!-- try-it.*?-->\n```sh\n(.*?)\n```", README, re.S)
    assert match, "README.md lost its marked Try it block"
    return match.group(1)


def test_the_try_it_block_works_as_written(tmp_path: Path) -> None:
    block = _try_it_block()
    assert "2525" in block and ".venv/bin/" in block  # what the README tells a newcomer to type
    with CaptureRelay() as relay, MailcaseDaemon(tmp_path, relay=relay) as daemon:
        daemon.prepare()
        daemon.start()
        # The newcomer runs it in the checkout, with ./config.toml the sample and the venv in
        # .venv/; here the daemon's port is a free one and the venv is the one running the tests.
        shutil.copy(SAMPLE_CONFIG, tmp_path / "config.toml")
        script = block.replace(".venv/bin/", f"{Path(sys.executable).parent}/").replace(
            "2525", str(daemon.port)
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCASE_")}
        env.update(daemon.env)
        completed = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env,
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert completed.returncode == 0, completed.stderr
        out = completed.stdout
        assert "00000001" in out and "Phones drop calls after 30 seconds" in out  # cases list
        assert "decision:" in out and "notice:" in out  # trace explains and lists the notices
        ack = wait_until(
            lambda: [m for m in relay.messages if "pat@acme.example" in m.rcpt_tos],
            timeout=30, what="the acknowledgement at the relay",
        )
        assert ack[0].message["In-Reply-To"] == "<try-it-1@acme.example>"
        assert daemon.stop() == 0


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _resolve(words: list[str]) -> tuple[list[str], argparse.ArgumentParser]:
    """The longest sub-command path `words` starts with, and its parser."""
    parser, path = build_parser(), []
    for word in words:
        children = _subcommands(parser)
        if word not in children:
            break
        parser = children[word]
        path.append(word)
    return path, parser


def test_every_command_in_the_readme_table_exists_with_its_options() -> None:
    cells = re.findall(r"^\| (`mailcase [^|]*?(?:\\\|[^|]*?)*) \|", README, re.M)
    assert len(cells) > 15
    for cell in cells:
        spans = re.findall(r"`([^`]+)`", cell)
        first = spans[0].split()[1:]  # drop "mailcase"
        path, _ = _resolve(first)
        assert path, f"README names a command that does not exist: {spans[0]}"
        for span in spans:
            words = span.split()[1:] if span.startswith("mailcase ") else [*path[:-1], *span.split()]
            found, parser = _resolve(words)
            assert found, f"README names a command that does not exist: {span}"
            known = {s for a in parser._actions for s in a.option_strings}
            for option in re.findall(r"(--[a-z][a-z-]*)", span):
                assert option in known, f"`mailcase {' '.join(found)}` has no {option} (README: {span})"
