"""`mailcase ingest` as an MTA's pipe runs it (issue 17): the exit status decides bounce or retry, and stderr
goes into the notice, so it must be one line naming the problem: never a traceback, never a secret.

0: taken (case, update, held, ignored). 75 (EX_TEMPFAIL): everything else, none of it the message's
fault: the database locked, unreachable or without schema, a file we may not open, our bug, and the
configuration (not 78, EX_CONFIG: Postfix's pipe bounces on it, see tests/e2e/test_postfix.py).
Also: a relative SQLite URL is relative to the config file, and two `init` at once are safe.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.cli import REPO, SAMPLE_CONFIG, MailcaseCli, run_mailcase, run_mailcase_process
from support.unprivileged import (
    PIPE_USER,
    mailcase_argv,
    shared_directory,
    unprivileged_environment,
    unprivileged_python,
)

MESSAGE = (
    b"From: Pat Doe <pat@acme.example>\r\n"
    b"To: support@support.example.com\r\n"
    b"Subject: Phones drop calls after 30 seconds\r\n"
    b"Message-ID: <exit-status-1@acme.example>\r\n"
    b"Date: Wed, 25 Nov 2026 22:00:00 +0000\r\n"
    b"\r\n"
    b"Since this morning, every call drops. Marker-7f3c9e-in-the-body.\r\n"
)
MARKER = "Marker-7f3c9e"
HEX_SECRET = re.compile(r"\b[0-9a-f]{64}\b")


def _config(directory: Path, extra: str = "", *, log: bool = True) -> Path:
    """The sample config with a log file next to it (and `extra` appended)."""
    text = SAMPLE_CONFIG.read_text()
    if log:
        text = text.replace('[logging]\n', '[logging]\nfile = "mailcase.log"\n', 1).replace('\nfile = ""\n', "\n", 1)
    path = directory / "config.toml"
    path.write_text(text + extra)
    return path


def _prepare(url: str | None, config: Path) -> None:
    """`mailcase init` and the example directory (pat@acme.example is a designated contact there)."""
    for argv in (["init"], ["directory", "import", str(REPO / "examples" / "directory.toml")]):
        result = run_mailcase(argv, database_url=url, config=config)
        assert result.status == 0, result.stderr


def _ingest(tmp_path: Path, message: Path, database_url: str | None, config: Path, *more: str):  # type: ignore[no-untyped-def]
    return run_mailcase(
        ["ingest", "--sender", "pat@acme.example", "--recipient", "support@support.example.com", *more, str(message)],
        database_url=database_url,
        config=config,
    )


@pytest.fixture
def message(tmp_path: Path) -> Path:
    path = tmp_path / "message.eml"
    path.write_bytes(MESSAGE)
    return path


def test_ingest_exits_0_when_the_message_is_taken_and_the_case_is_listed(tmp_path: Path, message: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mailcase.db'}"
    config = _config(tmp_path)
    _prepare(url, config)

    result = _ingest(tmp_path, message, url, config)

    assert result.status == 0, result.stderr
    assert result.stderr == ""
    assert "open_case" in result.stdout
    again = _ingest(tmp_path, message, url, config)  # a retry of the same message: taken, nothing new
    assert again.status == 0
    assert len(MailcaseCli(url, config=config)("cases", "list", "--json").json()) == 1


def test_a_config_typo_exits_75_with_one_line_naming_the_key(tmp_path: Path, message: Path) -> None:
    config = _config(tmp_path, "\n[lmtp_typo]\nport = 24\n")

    result = _ingest(tmp_path, message, None, config)

    assert result.status == 75
    assert result.stderr_lines == ["mailcase: config error: lmtp_typo: unknown key"]


def test_recipients_expanded_into_one_argument_list_exit_75_not_1(tmp_path: Path, message: Path) -> None:
    # What Postfix's ${recipient} gives for two recipients without `_destination_recipient_limit = 1`.
    result = run_mailcase(
        ["ingest", "--recipient", "support@support.example.com", "macd@support.example.com", str(message)],
        config=_config(tmp_path),
    )

    # The second address reads as a message file: the pipe's command line is wrong, so defer (75).
    assert result.status == 75
    assert result.stderr_lines == ["mailcase: cannot read macd@support.example.com: No such file or directory"]


def test_an_unknown_option_exits_75_with_one_line(tmp_path: Path) -> None:
    result = run_mailcase(["ingest", "--recipients", "support@support.example.com"], config=_config(tmp_path))

    assert result.status == 75
    assert result.stderr_lines == ["mailcase: usage error: unrecognized arguments: --recipients"]


def test_sqlite_without_init_exits_75_and_says_run_init(tmp_path: Path, message: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mailcase.db'}"
    config = _config(tmp_path)

    result = _ingest(tmp_path, message, url, config)

    assert result.status == 75
    assert result.stderr_lines == ["mailcase: the database has no mailcase schema: run `mailcase init`"]
    for argv in (["cases", "list"], ["outbox", "list"], ["held", "list"], ["trace", "<x@y>"]):
        other = run_mailcase(argv, database_url=url, config=config)
        assert other.status == 75, argv
        assert other.stderr_lines == ["mailcase: the database has no mailcase schema: run `mailcase init`"], argv


def test_postgresql_without_init_defers_without_leaking_a_secret_or_a_traceback(
    tmp_path: Path, message: Path, fresh_pg_url: str
) -> None:
    config = _config(tmp_path)

    result = _ingest(tmp_path, message, fresh_pg_url, config)

    assert result.status == 75
    assert result.stderr_lines == ["mailcase: the database has no mailcase schema: run `mailcase init`"]
    log = (tmp_path / "mailcase.log").read_text()
    # The cause is in the log at error level, with its traceback, but without the bound values.
    assert " ERROR mailcase.cli: ingest: " in log or " ERROR mailcase.cli: ingest failed: " in log
    assert "Traceback" in log and "UndefinedTable" in log
    assert not HEX_SECRET.search(log) and not HEX_SECRET.search(result.stderr)
    assert MARKER not in log


def test_postgresql_without_init_with_a_configured_secret_keeps_the_message_text_out(
    tmp_path: Path, message: Path, fresh_pg_url: str
) -> None:
    config = _config(tmp_path, "")
    result = run_mailcase(
        ["ingest", str(message)],
        database_url=fresh_pg_url,
        config=config,
        env={"MAILCASE_SECURITY__SECRET": "a-configured-reply-token-key"},
    )

    assert result.status == 75
    assert result.stderr_lines == ["mailcase: the database has no mailcase schema: run `mailcase init`"]
    log = (tmp_path / "mailcase.log").read_text()
    assert "UndefinedTable" in log
    assert MARKER not in log and "a-configured-reply-token-key" not in log


def test_an_unreachable_database_exits_75(tmp_path: Path, message: Path) -> None:
    from support.relay import free_port

    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/mailcase?connect_timeout=2"

    result = _ingest(tmp_path, message, url, _config(tmp_path))

    assert result.status == 75
    assert len(result.stderr_lines) == 1
    assert result.stderr_lines[0].startswith("mailcase: temporary failure, try again: database unavailable:")


def test_the_writer_lock_file_is_created_with_the_database_files_mode(tmp_path: Path, message: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mailcase.db'}"
    config = _config(tmp_path)
    assert run_mailcase(["init"], database_url=url, config=config).status == 0
    os.chmod(tmp_path / "mailcase.db", 0o660)  # a group the MTA's pipe user is in may write it
    if os.geteuid() == 0:  # root running a command must not leave root's files behind
        os.chown(tmp_path / "mailcase.db", 65534, 65534)

    assert _ingest(tmp_path, message, url, config).status == 0

    writer = (tmp_path / "mailcase.db-writer").stat()
    assert stat.S_IMODE(writer.st_mode) == 0o660
    if os.geteuid() == 0:
        assert (writer.st_uid, writer.st_gid) == (65534, 65534)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    with shared_directory("mailcase-perm-") as path:
        yield path


PYTHON = unprivileged_python()


@pytest.mark.skipif(PYTHON is None, reason="needs root and a Python that user nobody can run")
def test_a_root_owned_writer_file_defers_with_one_line_naming_it_then_delivery_works(shared_dir: Path) -> None:
    assert PYTHON is not None
    database = shared_dir / "mailcase.db"
    config = _config(shared_dir, log=False)
    config.chmod(0o644)
    url = f"sqlite:///{database}"
    _prepare(url, config)
    for name in ("mailcase.db", "mailcase.db-wal", "mailcase.db-shm"):
        if (shared_dir / name).exists():
            os.chmod(shared_dir / name, 0o666)
    writer = shared_dir / "mailcase.db-writer"
    writer.touch(mode=0o600)  # what `mailcase init` as root left behind before this fix
    writer.chmod(0o600)

    def ingest_as_nobody() -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            mailcase_argv(PYTHON, "--config", str(config), "ingest"),
            input=MESSAGE, capture_output=True, cwd="/", user=PIPE_USER, group="nogroup", extra_groups=[],
            timeout=60, check=False, env=unprivileged_environment(MAILCASE_DATABASE__URL=url),
        )

    refused = ingest_as_nobody()
    assert refused.returncode == 75
    assert refused.stderr.decode().splitlines() == [
        f"mailcase: temporary failure, try again: cannot open {writer}: Permission denied"
    ]
    writer.chmod(0o644)  # still root's, but readable: enough for the advisory lock (flock)
    taken = ingest_as_nobody()
    assert taken.returncode == 0, taken.stderr.decode()
    assert "open_case" in taken.stdout.decode()


def test_a_relative_sqlite_url_is_relative_to_the_config_file_not_the_working_directory(tmp_path: Path) -> None:
    etc, elsewhere = tmp_path / "etc", tmp_path / "elsewhere"
    etc.mkdir()
    elsewhere.mkdir()
    config = _config(etc)  # url = "sqlite:///./mailcase.db", as in the sample
    (elsewhere / "message.eml").write_bytes(MESSAGE)

    init = run_mailcase_process(["init"], config=config, cwd=elsewhere)
    run_mailcase_process(["directory", "import", str(REPO / "examples" / "directory.toml")], config=config, cwd=elsewhere)
    taken = run_mailcase_process(["ingest", "message.eml"], config=config, cwd=elsewhere)
    listed = run_mailcase_process(["cases", "list", "--json"], config=config, cwd=tmp_path)

    assert init.status == 0 and taken.status == 0, init.stderr + taken.stderr
    assert (etc / "mailcase.db").exists()
    assert not (elsewhere / "mailcase.db").exists() and not (tmp_path / "mailcase.db").exists()
    assert [case["subject"] for case in listed.json()] == ["Phones drop calls after 30 seconds"]


def test_two_inits_at_once_on_a_fresh_postgresql_database_both_succeed(tmp_path: Path, fresh_pg_url: str) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MAILCASE_")}
    environ["MAILCASE_DATABASE__URL"] = fresh_pg_url
    argv = [sys.executable, "-m", "mailcase", "--config", str(SAMPLE_CONFIG), "init"]
    runs = [
        subprocess.Popen(argv, env=environ, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=120) for run in runs]

    assert [run.returncode for run in runs] == [0, 0], [err.decode() for _out, err in outputs]
    said = sorted(out.decode().strip().split(" revision ")[0] for out, _err in outputs)
    assert said == ["schema is up to date at", "schema upgraded from empty to"]
