"""Run the `mailcase` command line from tests: in-process (fast) or as a real subprocess; no tests here.

Both runners isolate the command from the caller's environment: every inherited `MAILCASE_*`
variable is dropped, the config file is explicit (the repository's sample `config.toml` unless the
test passes its own) and the database URL, when given, arrives the way an operator would pass it,
as `MAILCASE_DATABASE__URL`.

    cli = MailcaseCli(database_url)
    result = cli("cases", "list", "--json")
    assert result.status == 0 and result.json() == []
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SAMPLE_CONFIG = REPO / "config.toml"
ENV_PREFIX = "MAILCASE_"


@dataclass(frozen=True, slots=True)
class CliResult:
    """What one `mailcase` run left behind: exit status, stdout and stderr."""

    status: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        """stdout parsed as JSON; fails the test if stdout holds anything else."""
        return json.loads(self.stdout)

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def _argv(argv: Sequence[str], config: Path | None, now: str | None) -> list[str]:
    head: list[str] = []
    if config is not None:
        head += ["--config", str(config)]
    if now is not None:
        head += ["--now", now]
    return head + [str(a) for a in argv]


def _environment(
    base: Mapping[str, str], database_url: str | None, env: Mapping[str, str] | None
) -> dict[str, str]:
    result = {k: v for k, v in base.items() if not k.startswith(ENV_PREFIX)}
    if database_url is not None:
        result["MAILCASE_DATABASE__URL"] = database_url
    result.update(env or {})
    return result


@contextlib.contextmanager
def _patched_environ(values: Mapping[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def _kept_logging() -> Iterator[None]:
    """`main` points the root logger at the (captured) stderr; put the test's logging back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def run_mailcase(
    argv: Sequence[str],
    *,
    database_url: str | None = None,
    config: Path | None = SAMPLE_CONFIG,
    env: Mapping[str, str] | None = None,
    now: str | None = None,
) -> CliResult:
    """Run `mailcase.cli.main(argv)` in this process, capturing stdout and stderr.

    `config=None` leaves the config choice to the CLI (`--config` absent). `now` becomes the global
    `--now` option. argparse's own exits (usage errors, status 2) are returned, not raised.
    """
    from mailcase.cli import main

    out, err = io.StringIO(), io.StringIO()
    with (
        _patched_environ(_environment(os.environ, database_url, env)),
        _kept_logging(),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        try:
            status = main(_argv(argv, config, now))
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return CliResult(status=int(status), stdout=out.getvalue(), stderr=err.getvalue())


def run_mailcase_process(
    argv: Sequence[str],
    *,
    database_url: str | None = None,
    config: Path | None = SAMPLE_CONFIG,
    env: Mapping[str, str] | None = None,
    now: str | None = None,
    cwd: Path | None = None,
    timeout: float = 120.0,
) -> CliResult:
    """Run `python -m mailcase …` as a child process, exactly as a user's shell would."""
    completed = subprocess.run(
        [sys.executable, "-m", "mailcase", *_argv(argv, config, now)],
        env=_environment(os.environ, database_url, env),
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return CliResult(status=completed.returncode, stdout=completed.stdout, stderr=completed.stderr)


@dataclass(frozen=True, slots=True)
class MailcaseCli:
    """`mailcase` bound to one database (and optionally a config file): `cli("cases", "list")`."""

    database_url: str
    config: Path | None = SAMPLE_CONFIG
    env: Mapping[str, str] | None = None

    def __call__(self, *argv: str, now: str | None = None) -> CliResult:
        return run_mailcase(argv, database_url=self.database_url, config=self.config, env=self.env, now=now)

    def process(self, *argv: str, now: str | None = None, cwd: Path | None = None) -> CliResult:
        return run_mailcase_process(
            argv, database_url=self.database_url, config=self.config, env=self.env, now=now, cwd=cwd
        )
