"""The command line as a script uses it: `--version`, JSON that parses, `| head` without a traceback,
`tick` draining the whole outbox, `outbox retry`, help text on every option, packaged samples."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailcase.cli import build_parser
from mailcase.config import load_config
from support.cli import REPO, MailcaseCli
from support.relay import CaptureRelay

DIRECTORY = REPO / "examples" / "directory.toml"
NOW = "2026-11-25T16:00:00-07:00"  # a Wednesday afternoon in Denver


def _message(n: int) -> bytes:
    mail = EmailMessage()
    mail["From"] = "Pat Doe <pat@acme.example>"
    mail["To"] = "support@support.example.com"
    mail["Subject"] = f"Phones drop calls at site {n}"
    mail["Message-ID"] = f"<scripting-{n}@acme.example>"
    mail["Date"] = "Wed, 25 Nov 2026 15:00:00 -0700"
    mail.set_content(f"Since this morning every call at site {n} drops after 30 seconds.")
    return bytes(mail)


@pytest.fixture
def relay() -> Iterator[CaptureRelay]:
    with CaptureRelay() as running:
        yield running


def _desk(database_url: str, relay: CaptureRelay, tmp_path: Path, **env: str) -> MailcaseCli:
    cli = MailcaseCli(
        database_url,
        env={
            "MAILCASE_OUTBOUND__HOST": relay.host,
            "MAILCASE_OUTBOUND__PORT": str(relay.port),
            **env,
        },
    )
    assert cli("init").status == 0
    assert cli("directory", "import", str(DIRECTORY)).status == 0
    for n in range(1, 6):
        path = tmp_path / f"m{n}.eml"
        path.write_bytes(_message(n))
        assert cli("ingest", str(path), now=NOW).status == 0
    return cli


def test_tick_drains_every_due_notice_in_batches_and_reports_json(
    database_url: str, relay: CaptureRelay, tmp_path: Path
) -> None:
    cli = _desk(database_url, relay, tmp_path, MAILCASE_OUTBOUND__BATCH_SIZE="2")
    queued = cli("outbox", "list", "--state", "queued", "--json").json()
    assert len(queued) >= 5  # five acknowledgements at least, plus the technicians' notices

    result = cli("tick", "--json", now=NOW)

    assert result.status == 0
    report = result.json()
    assert set(report) == {
        "now", "cases_due", "notices_queued", "by_kind", "maintenance_notices_queued", "master_update_notices_queued",
        "imap", "delivery",
    }
    assert report["delivery"]["sent"] == len(queued)
    assert report["delivery"]["failed"] == report["delivery"]["retried"] == 0
    assert report["delivery"]["batches"] >= 3  # batch_size 2: one tick kept going
    assert cli("outbox", "list", "--state", "queued", "--json").json() == []
    acknowledged = {m.message["In-Reply-To"] for m in relay.messages}
    assert {f"<scripting-{n}@acme.example>" for n in range(1, 6)} <= acknowledged


def test_outbox_retry_requeues_failed_notices_after_the_cause_is_fixed(
    database_url: str, relay: CaptureRelay, tmp_path: Path
) -> None:
    cli = _desk(database_url, relay, tmp_path)
    relay.fail_recipient("pat@acme.example", "550 5.7.1 Relaying denied")  # the relay is misconfigured
    assert cli("tick", now=NOW).status == 0
    failed = cli("outbox", "list", "--state", "failed", "--json").json()
    assert failed and all(row["recipients"] == ["pat@acme.example"] for row in failed)
    assert all(row["case_subject"].startswith("Phones drop calls") for row in failed)

    relay.clear_failures()  # the admin fixed the relay
    one = cli("outbox", "retry", str(failed[0]["id"]), "--json", now=NOW)
    assert one.status == 0 and one.json() == [failed[0]["id"]]
    rest = cli("outbox", "retry", "--failed", now=NOW)
    assert rest.status == 0 and f"requeued {len(failed) - 1} notice(s)" in rest.stdout
    assert cli("tick", now=NOW).status == 0

    assert cli("outbox", "list", "--state", "failed", "--json").json() == []
    delivered = [m for m in relay.messages if "pat@acme.example" in m.rcpt_tos]
    assert len(delivered) == len(failed)


def test_outbox_retry_of_a_notice_that_did_not_fail_is_refused(
    database_url: str, relay: CaptureRelay, tmp_path: Path
) -> None:
    cli = _desk(database_url, relay, tmp_path)
    queued = cli("outbox", "list", "--json").json()[0]["id"]
    result = cli("outbox", "retry", str(queued))
    assert result.status == 1
    assert f"#{queued}" in result.stderr and "not failed" in result.stderr


def _process(*argv: str, stdout: int | None = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCASE_")}
    return subprocess.run(
        [sys.executable, "-m", "mailcase", *argv], stdout=stdout, stderr=subprocess.PIPE,
        text=True, env=env, cwd=REPO, timeout=60, check=False,
    )  # fmt: skip


def test_a_closed_pipe_ends_the_command_quietly() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # `| head` that has already exited
    try:
        completed = _process("config", "sample", stdout=write_end)
    finally:
        os.close(write_end)
    assert completed.returncode == 0
    assert "Traceback" not in completed.stderr and "BrokenPipeError" not in completed.stderr


def test_version_names_the_installed_distribution() -> None:
    from importlib import metadata

    completed = _process("--version")
    assert completed.returncode == 0
    assert completed.stdout.strip() == f"mailcase {metadata.version('mailcase')}"


def test_the_packaged_samples_are_the_repositorys_and_work(tmp_path: Path) -> None:
    sample = _process("config", "sample")
    assert sample.returncode == 0
    assert sample.stdout == (REPO / "config.toml").read_text(encoding="utf-8")
    (tmp_path / "config.toml").write_text(sample.stdout, encoding="utf-8")
    load_config(tmp_path / "config.toml", {})  # the sample loads as it is
    example = _process("directory", "example")
    assert example.returncode == 0 and example.stdout == DIRECTORY.read_text(encoding="utf-8")


def _actions(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, argparse.Action]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _actions(child, f"{path} {name}")
        elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            yield path, action


def test_every_option_has_help_text() -> None:
    missing = [
        f"{path} {'/'.join(action.option_strings) or action.dest}"
        for path, action in _actions(build_parser(), "mailcase")
        if not action.help
    ]
    assert missing == []


def test_options_with_fixed_choices_list_them_in_help() -> None:
    for path, action in _actions(build_parser(), "mailcase"):
        if action.choices and not isinstance(action, argparse._SubParsersAction):
            parser = argparse.ArgumentParser(prog=path)
            parser._add_action(action)
            shown = parser.format_help()
            assert all(str(choice) in shown for choice in action.choices), (path, action.dest)
