"""`mailcase serve` and `mailcase tick` polling a real Dovecot: mail becomes cases once, survives kill -9 and restarts, and a bad mailbox never stops the daemon.

Each test runs the product the way an operator does: a deployment directory with a config file
(the sample config plus one `[[imap]]` table with `tls = "none"` on loopback and a
`password_file`), a SQLite database set up with `mailcase init` and `directory import
examples/directory.toml`, and `mailcase serve` as a child process whose log goes to a file. What
the tests look at is what a user sees: `cases list --json`, `outbox list --json`, the folders of
the mailbox and serve's log. The protocol-level behaviour of the poller (batches, UID EXPUNGE,
IDLE renewal, the PostgreSQL lock) is tested in test_imap.py.
"""

from __future__ import annotations

import os
import re
import signal
import smtplib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from support.cli import REPO, SAMPLE_CONFIG, CliResult, run_mailcase
from support.dovecot import DovecotServer, dovecot, dovecot_without_move  # noqa: F401 (fixtures)

pytestmark = pytest.mark.dovecot

WAIT_SECONDS = 20.0
DIRECTORY = REPO / "examples" / "directory.toml"
SERVING = re.compile(r"mailcase serving: smtp=(?P<host>[\d.]+):(?P<port>\d+)")
INGESTED = "decision=open_case"


def message(number: int, *, tag: str = "m") -> bytes:
    return (
        f"From: Pat Doe <pat@acme.example>\r\n"
        f"To: support@support.example.com\r\n"
        f"Subject: Router {tag}{number} is down\r\n"
        f"Date: Wed, 25 Nov 2026 16:{number % 60:02d}:00 -0700\r\n"
        f"Message-ID: <{tag}{number}.serve-imap@acme.example>\r\n"
        f"\r\n"
        f"Site {number} lost its uplink at 16:00.\r\n"
    ).encode()


def subject(number: int, *, tag: str = "m") -> str:
    return f"Router {tag}{number} is down"


def wait_until(condition: Callable[[], bool], timeout: float = WAIT_SECONDS, interval: float = 0.1) -> bool:
    """Poll `condition` until it holds or `timeout` passes (a bound, not a sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


class Deployment:
    """One operator's set-up: config file, password file, SQLite database, and `mailcase serve` runs."""

    def __init__(
        self, root: Path, server: DovecotServer, *, password: str | None = None, **imap: Any
    ) -> None:
        self.root = root
        self.server = server
        self.db_path = root / "mailcase.db"
        self.url = f"sqlite:///{self.db_path}"
        self.config = root / "config.toml"
        self.log_path = root / "serve.log"
        self.env: dict[str, str] = {"MAILCASE_SMTP__PORT": "0", "MAILCASE_OUTBOUND__ENABLED": "false"}
        self.process: subprocess.Popen[bytes] | None = None
        (root / "imap-password").write_text((server.password if password is None else password) + "\n")
        table = {
            "name": "desk",
            "host": server.host,
            "port": server.port,
            "tls": "none",
            "user": server.user,
            "password_file": "imap-password",  # relative to the config file
            "folder": "INBOX",
            "processed_folder": "Processed",
            "poll_interval_seconds": 1,
        } | imap
        lines = ["", "[[imap]]"] + [f"{key} = {_toml(value)}" for key, value in table.items()]
        self.config.write_text(SAMPLE_CONFIG.read_text() + "\n".join(lines) + "\n")
        assert self.cli("init").status == 0
        imported = self.cli("directory", "import", str(DIRECTORY))
        assert imported.status == 0, imported.stderr

    # -- the command line --------------------------------------------------------------------

    def cli(self, *argv: str, now: str | None = None) -> CliResult:
        return run_mailcase(argv, database_url=self.url, config=self.config, env=self.env, now=now)

    def cases(self) -> list[dict[str, Any]]:
        result = self.cli("cases", "list", "--json")
        assert result.status == 0, result.stderr
        cases: list[dict[str, Any]] = result.json()
        return cases

    def subjects(self) -> list[str]:
        return sorted(case["subject"] for case in self.cases())

    def notices(self, kind: str) -> list[str]:
        """The case number of every outbox row of `kind` (e.g. staff.new_case, customer.ack)."""
        result = self.cli("outbox", "list", "--limit", "100000", "--json")
        assert result.status == 0, result.stderr
        return sorted(row["case"] for row in result.json() if row["kind"] == kind)

    def assert_each_case_notified_once(self, total: int) -> None:
        """One new-case notice to the team per case, and no acknowledgement twice (pat gets at
        most [autoreply] max_per_hour of them: loop protection)."""
        # One notice per technician of the team (each carries that technician's own reply token).
        result = self.cli("outbox", "list", "--limit", "100000", "--json")
        assert result.status == 0, result.stderr
        new_case = [(row["case"], tuple(row["recipients"])) for row in result.json() if row["kind"] == "staff.new_case"]
        assert len(new_case) == len(set(new_case)) and len({case for case, _ in new_case}) == total
        acknowledged = self.notices("customer.ack")
        assert 0 < len(acknowledged) == len(set(acknowledged))

    def case_count(self) -> int:
        """Cheap enough to poll while serve is busy (`cases list` is for the assertions)."""
        engine = sa.create_engine(self.url)
        try:
            with engine.connect() as connection:
                return int(connection.execute(sa.text("SELECT count(*) FROM support_case")).scalar_one())
        finally:
            engine.dispose()

    # -- serve -------------------------------------------------------------------------------

    def start(self, **env: str) -> None:
        """Start `mailcase serve`; return once it says it is serving."""
        assert self.process is None or self.process.poll() is not None, "serve is already running"
        environment = {k: v for k, v in os.environ.items() if not k.startswith("MAILCASE_")}
        environment |= self.env | {"MAILCASE_DATABASE__URL": self.url} | env
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mailcase", "--config", str(self.config), "serve"],
                cwd=self.root,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        assert wait_until(lambda: SERVING.search(self.log()) is not None or not self.running), self.log()
        assert self.running, f"serve exited at start:\n{self.log()}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        """What the current (or last) serve process has logged."""
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            return log.read().decode(errors="replace")

    def smtp_port(self) -> int:
        found = SERVING.search(self.log())
        assert found is not None
        return int(found["port"])

    def stop(self) -> None:
        """SIGTERM, as an init system stops it; serve must exit cleanly."""
        process = self.process
        assert process is not None
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, self.log()

    def kill(self) -> None:
        """SIGKILL: no clean-up, no flush, nothing."""
        process = self.process
        assert process is not None
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def close(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


@pytest.fixture
def deploy(tmp_path: Path) -> Iterator[Callable[..., Deployment]]:
    made: list[Deployment] = []

    def make(server: DovecotServer, *, password: str | None = None, **imap: Any) -> Deployment:
        root = tmp_path / f"deployment{len(made)}"
        root.mkdir()
        deployment = Deployment(root, server, password=password, **imap)
        made.append(deployment)
        return deployment

    yield make
    for deployment in made:
        deployment.close()


# -- the tests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("server_kind", ["dovecot", "dovecot_without_move"])
def test_twenty_appended_messages_become_twenty_cases_and_are_moved_to_processed(
    server_kind: str, request: pytest.FixtureRequest, deploy: Callable[..., Deployment]
) -> None:
    server: DovecotServer = request.getfixturevalue(server_kind)
    assert (b"MOVE" in server.capabilities()) is (server_kind == "dovecot")
    desk = deploy(server)
    server.append([message(i) for i in range(1, 21)])

    desk.start()

    assert wait_until(lambda: server.uids("INBOX") == []), desk.log()
    assert desk.subjects() == sorted(subject(i) for i in range(1, 21))
    assert {case["requester"] for case in desk.cases()} == {"pat@acme.example"}
    assert len(server.uids("Processed")) == 20
    assert sorted(server.messages("Processed")) == sorted(message(i) for i in range(1, 21))
    desk.assert_each_case_notified_once(20)
    desk.stop()


def test_restarted_serve_makes_no_case_twice_and_picks_up_new_mail(
    dovecot: DovecotServer, deploy: Callable[..., Deployment]
) -> None:
    desk = deploy(dovecot)
    dovecot.append([message(i) for i in range(1, 21)])
    desk.start()
    assert wait_until(lambda: dovecot.uids("INBOX") == []), desk.log()
    assert len(desk.cases()) == 20
    desk.stop()

    desk.start()
    assert wait_until(lambda: "connected" in desk.log()), desk.log()
    assert len(desk.cases()) == 20
    dovecot.append([message(21)])

    assert wait_until(lambda: desk.case_count() == 21), desk.log()
    assert wait_until(lambda: dovecot.uids("INBOX") == [])
    assert desk.subjects() == sorted(subject(i) for i in range(1, 22))
    desk.assert_each_case_notified_once(21)
    desk.stop()


def test_kill_9_in_the_middle_of_a_batch_then_restart_loses_nothing_and_duplicates_nothing(
    dovecot: DovecotServer, deploy: Callable[..., Deployment]
) -> None:
    total = 300
    # One batch for the whole folder: nothing is moved before the last message is committed, so
    # a kill after the first commit always leaves committed messages in the INBOX.
    desk = deploy(dovecot, batch_size=1000)
    sent = [message(i) for i in range(1, total + 1)]
    dovecot.append(sent)
    desk.start()

    assert wait_until(lambda: INGESTED in desk.log(), interval=0.005), desk.log()
    desk.kill()

    at_kill = desk.case_count()
    assert 0 < at_kill < total, f"the kill was not mid-batch ({at_kill} of {total} cases)"
    assert len(dovecot.uids("INBOX")) == total  # committed, not yet moved: the dangerous window

    desk.start()

    assert wait_until(lambda: dovecot.uids("INBOX") == []), desk.log()
    assert desk.subjects() == sorted(subject(i) for i in range(1, total + 1))
    desk.assert_each_case_notified_once(total)
    assert sorted(dovecot.messages("Processed")) == sorted(sent)
    assert "decision=duplicate" in desk.log()  # the re-fetched messages went through dedupe
    desk.stop()


def test_uidvalidity_reset_rescans_the_folder_without_duplicate_cases(
    dovecot: DovecotServer, deploy: Callable[..., Deployment]
) -> None:
    desk = deploy(dovecot)
    first = [message(i) for i in range(1, 6)]
    dovecot.append(first)
    desk.start()
    assert wait_until(lambda: dovecot.uids("INBOX") == []), desk.log()
    desk.stop()
    # A restore from backup: two stored messages come back with three new ones, under a new
    # UIDVALIDITY and UIDs from 1 again (below the stored cursor).
    dovecot.append([first[0], first[1], *(message(i) for i in range(6, 9))])
    dovecot.reset_uidvalidity()

    desk.start()

    assert wait_until(lambda: dovecot.uids("INBOX") == []), desk.log()
    assert "UIDVALIDITY changed" in desk.log()
    assert desk.subjects() == sorted(subject(i) for i in range(1, 9))
    desk.assert_each_case_notified_once(8)
    desk.stop()


def test_wrong_password_is_a_clear_error_in_the_log_and_smtp_keeps_working(
    dovecot: DovecotServer, deploy: Callable[..., Deployment], tmp_path: Path
) -> None:
    wrong = "Tr0ub4dor&3-not-the-password"
    (tmp_path / "wrong-password").write_text(wrong + "\n")
    desk = deploy(dovecot)
    dovecot.append([message(1)])

    # The operator's environment override points the mailbox at the wrong secret.
    desk.start(MAILCASE_IMAP__0__PASSWORD_FILE=str(tmp_path / "wrong-password"))

    assert wait_until(lambda: " ERROR " in desk.log()), desk.log()
    errors = [line for line in desk.log().splitlines() if " ERROR " in line]
    assert "mailbox desk" in errors[0] and f"{dovecot.host}:{dovecot.port}" in errors[0]
    assert "login refused" in errors[0]
    assert wrong not in desk.log()
    assert "Traceback" not in desk.log()

    with smtplib.SMTP("127.0.0.1", desk.smtp_port(), timeout=10) as client:
        refused = client.sendmail("sam@acme.example", ["support@support.example.com"], message(2, tag="smtp"))
        code, _reply = client.noop()
    assert refused == {} and code == 250
    assert desk.subjects() == [subject(2, tag="smtp")]
    assert desk.running
    assert dovecot.uids("INBOX") == [1]  # untouched
    desk.stop()


def test_message_appended_while_serve_idles_becomes_a_case_within_seconds(
    dovecot: DovecotServer, deploy: Callable[..., Deployment]
) -> None:
    assert b"IDLE" in dovecot.capabilities()
    # Polling every 10 minutes: only IDLE (RFC 2177) can bring the message in quickly.
    desk = deploy(dovecot, poll_interval_seconds=600)
    dovecot.append([message(1)])
    desk.start()
    assert wait_until(lambda: dovecot.uids("INBOX") == []), desk.log()

    dovecot.append([message(2)])

    assert wait_until(lambda: len(desk.cases()) == 2, timeout=10), "not picked up while idling"
    assert desk.subjects() == [subject(1), subject(2)]
    desk.stop()


def test_tick_polls_each_mailbox_once_for_cron_style_deployments(
    dovecot: DovecotServer, deploy: Callable[..., Deployment]
) -> None:
    desk = deploy(dovecot)
    dovecot.append([message(i) for i in range(1, 4)])

    first = desk.cli("tick", "--no-deliver")

    assert first.status == 0, first.stderr
    assert "imap desk: 3 message(s) stored" in first.stdout
    assert desk.subjects() == [subject(i) for i in range(1, 4)]
    assert dovecot.uids("INBOX") == []
    assert len(dovecot.uids("Processed")) == 3

    again = desk.cli("tick", "--no-deliver")
    assert "imap desk: 0 message(s) stored" in again.stdout
    assert len(desk.cases()) == 3


def test_tick_with_a_refused_login_still_runs_the_sweeps_and_says_why(
    dovecot: DovecotServer, deploy: Callable[..., Deployment]
) -> None:
    desk = deploy(dovecot, password="not-the-password")
    dovecot.append([message(1)])

    result = desk.cli("tick", "--no-deliver")

    assert result.status == 0
    assert "imap desk: login refused" in result.stdout
    assert "deadlines:" in result.stdout
    assert any(" ERROR " in line and "mailbox desk" in line for line in result.stderr_lines)
    assert "not-the-password" not in result.stderr
    assert dovecot.uids("INBOX") == [1]
    assert desk.cases() == []
