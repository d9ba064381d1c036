"""A real (private) Debian Postfix in front of mailcase, as the README's recipes set it up (issue 17): SMTP relay,
the pipe transport and LMTP. Each proves delivery, deferral while mailcase cannot take the message (stopped,
database locked, config broken, schema missing) and delivery after a retry, and that no bounce is ever made:
Postfix's log has no `status=bounced`, its queue is empty at the end, and the capture relay that would carry
a bounce (Postfix's relayhost) received nothing.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.cli import REPO, SAMPLE_CONFIG, run_mailcase
from support.daemon import MailcaseDaemon, wait_until
from support.postfix import DOMAIN, PrivatePostfix, postfix_available
from support.relay import CaptureRelay, free_port
from support.unprivileged import (
    PIPE_USER,
    shared_directory,
    unprivileged_environment,
    unprivileged_python,
)

PYTHON = unprivileged_python()
UNAVAILABLE = postfix_available() or ("" if PYTHON else "needs a Python that user nobody can run")


@pytest.fixture(autouse=True)
def _postfix_required() -> None:
    """Skipped where Postfix cannot run; with CI=true (`.ci/run` installs it) that is a failure."""
    if UNAVAILABLE:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"the Postfix tests must run in CI: {UNAVAILABLE}")
        pytest.skip(UNAVAILABLE)

SUPPORT = f"support@{DOMAIN}"
MACD = f"macd@{DOMAIN}"
CUSTOMER = "pat@acme.example"


def _message(number: int, subject: str, to: str = SUPPORT) -> bytes:
    return (
        f"From: Pat Doe <{CUSTOMER}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <postfix-{number}@acme.example>\r\nDate: Wed, 25 Nov 2026 22:00:00 +0000\r\n\r\n"
        f"Every call drops after 30 seconds (report {number}).\r\n"
    ).encode()


class Desk:
    """mailcase as installed on the MX host: a config directory (relative SQLite URL), a wrapper command the
    pipe runs as `nobody`, and `serve` on demand."""

    def __init__(self, root: Path, outbound: CaptureRelay, *, lmtp_socket: bool = False) -> None:
        self.dir = root / "mailcase"
        self.dir.mkdir()
        self.dir.chmod(0o777)
        self.smtp_port = free_port()
        self.lmtp_socket = self.dir / "lmtp.sock"
        sample = SAMPLE_CONFIG.read_text()
        self.good_config = (
            sample.replace('[logging]\n', '[logging]\nfile = "mailcase.log"\n', 1).replace('\nfile = ""\n', "\n", 1)
        )
        self.config = self.dir / "config.toml"
        self.write_config(self.good_config)
        (self.dir / "mailcase.log").touch(mode=0o666)
        (self.dir / "mailcase.log").chmod(0o666)
        self.command = root / "mailcase-command"  # what /opt/mailcase/.venv/bin/mailcase is in an installation
        env = " ".join(f"{k}={v}" for k, v in unprivileged_environment().items())
        self.command.write_text(f'#!/bin/sh\nexec env -i {env} {PYTHON} -m mailcase "$@"\n')
        self.command.chmod(0o755)
        self.daemon = MailcaseDaemon(
            self.dir, relay=outbound, config=self.config, outbox_interval_seconds=1,
            env={"MAILCASE_SMTP__PORT": str(self.smtp_port), **(
                # The socket relative to the config file; Postfix's lmtp client runs as user postfix.
                {"MAILCASE_LMTP__ENABLED": "true", "MAILCASE_LMTP__SOCKET": "lmtp.sock",
                 "MAILCASE_LMTP__SOCKET_MODE": "0666"} if lmtp_socket else {}
            )},
        )
        self.daemon.port = self.smtp_port

    def write_config(self, text: str) -> None:
        self.config.write_text(text)
        self.config.chmod(0o644)

    def cli(self, *argv: str):  # type: ignore[no-untyped-def]
        return run_mailcase(argv, config=self.config, env={"MAILCASE_SMTP__PORT": str(self.smtp_port)})

    def prepare(self) -> None:
        for argv in (("init",), ("directory", "import", str(REPO / "examples" / "directory.toml"))):
            result = self.cli(*argv)
            assert result.status == 0, result.stderr
        for name in ("mailcase.db", "mailcase.db-wal", "mailcase.db-shm"):  # the pipe's user writes it too
            if (self.dir / name).exists():
                (self.dir / name).chmod(0o666)

    def subjects(self) -> list[str]:
        return sorted(case["subject"] for case in self.cli("cases", "list", "--json").json())

    def pipe_service(self) -> str:
        return (
            "mailcase  unix  -  n  n  -  4  pipe\n"
            f"  flags=Rq user={PIPE_USER} argv={self.command} --config {self.config} ingest"
            " --sender ${sender} --recipient ${original_recipient}\n"
        )


@pytest.fixture
def world() -> Iterator[tuple[Path, CaptureRelay, CaptureRelay]]:
    """A shared directory, the relay Postfix would send a bounce to, and mailcase's outbound relay."""
    with shared_directory("mailcase-postfix-") as root, CaptureRelay() as bounces, CaptureRelay() as outbound:
        yield root, bounces, outbound


def _assert_no_bounce(mx: PrivatePostfix, bounces: CaptureRelay) -> None:
    assert mx.bounces() == []
    assert bounces.messages == []
    assert "Mail queue is empty" in mx.queue()


def _acknowledged(outbound: CaptureRelay, number: int) -> bool:
    return any(f"<postfix-{number}@acme.example>" in m.message.get("In-Reply-To", "") for m in outbound.messages)


def test_relay_over_smtp_defers_while_mailcase_is_stopped_or_locked_and_delivers_after(world) -> None:  # type: ignore[no-untyped-def]
    root, bounces, outbound = world
    desk = Desk(root, outbound)
    desk.prepare()
    with desk.daemon, PrivatePostfix(
        root / "postfix", transport=f"smtp:[127.0.0.1]:{desk.smtp_port}", relayhost=f"[127.0.0.1]:{bounces.port}"
    ) as mx:
        stopped = mx.send(_message(1, "Calls drop (sent while mailcase was stopped)"), CUSTOMER, [SUPPORT])
        assert "Connection refused" in mx.wait_for(stopped, "deferred")[0]

        desk.daemon.start()
        mx.flush()
        mx.wait_for(stopped, "sent")

        with sqlite3.connect(desk.dir / "mailcase.db", isolation_level=None) as lock:
            lock.execute("BEGIN IMMEDIATE")  # another writer holds the database
            locked = mx.send(_message(2, "Calls drop (sent while the database was locked)"), CUSTOMER, [SUPPORT])
            assert "451 4.3.0" in mx.wait_for(locked, "deferred")[0]
            lock.execute("ROLLBACK")
        mx.flush()
        mx.wait_for(locked, "sent")

        assert desk.subjects() == [
            "Calls drop (sent while mailcase was stopped)", "Calls drop (sent while the database was locked)"
        ]
        wait_until(lambda: _acknowledged(outbound, 1) and _acknowledged(outbound, 2), timeout=30,
                   what="the customer's acknowledgements")
        _assert_no_bounce(mx, bounces)
        assert desk.daemon.stop() == 0


def test_pipe_transport_defers_on_missing_schema_broken_config_and_lock_then_delivers(world) -> None:  # type: ignore[no-untyped-def]
    root, bounces, outbound = world
    desk = Desk(root, outbound)
    with PrivatePostfix(
        root / "postfix", transport="mailcase:", relayhost=f"[127.0.0.1]:{bounces.port}",
        master_extra=desk.pipe_service(), main_extra="mailcase_destination_recipient_limit = 1",
    ) as mx:
        # Before `mailcase init`: deferred, and the reason Postfix keeps is our one line.
        first = mx.send(_message(1, "Calls drop (before init)"), CUSTOMER, [SUPPORT])
        reason = mx.wait_for(first, "deferred")[0]
        assert "run `mailcase init`" in reason and "Traceback" not in reason

        desk.prepare()
        desk.write_config(desk.good_config + "\n[smtp_typo]\nport = 1\n")  # an admin's typo
        mx.flush()
        reason = mx.wait_for(first, "deferred", count=2)[-1]
        assert "config error: smtp_typo: unknown key" in reason

        desk.write_config(desk.good_config)
        mx.flush()
        mx.wait_for(first, "sent")
        writer = desk.dir / "mailcase.db-writer"
        assert stat.S_IMODE(writer.stat().st_mode) == 0o666  # created like the database file it guards

        with sqlite3.connect(desk.dir / "mailcase.db", isolation_level=None) as lock:
            lock.execute("BEGIN IMMEDIATE")
            locked = mx.send(_message(2, "Calls drop (database locked)"), CUSTOMER, [SUPPORT])
            reason = mx.wait_for(locked, "deferred")[0]
            assert "database is locked" in reason and "Traceback" not in reason
            lock.execute("ROLLBACK")
        mx.flush()
        mx.wait_for(locked, "sent")

        # One message to both desks: with the recipient limit, one pipe run per recipient, none bounced.
        both = mx.send(_message(3, "Calls drop (to support and macd)", to=f"{SUPPORT}, {MACD}"), CUSTOMER,
                       [SUPPORT, MACD])
        assert len(mx.wait_for(both, "sent", count=2)) == 2

        assert "Calls drop (before init)" in desk.subjects() and "Calls drop (database locked)" in desk.subjects()
        log = (desk.dir / "mailcase.log").read_text()
        assert " ERROR mailcase.cli: ingest: " in log  # the causes, for the admin
        _assert_no_bounce(mx, bounces)


def test_lmtp_defers_while_mailcase_is_stopped_and_answers_per_recipient_after(world) -> None:  # type: ignore[no-untyped-def]
    root, bounces, outbound = world
    desk = Desk(root, outbound, lmtp_socket=True)
    desk.prepare()
    with desk.daemon, PrivatePostfix(
        root / "postfix", transport=f"lmtp:unix:{desk.lmtp_socket}", relayhost=f"[127.0.0.1]:{bounces.port}"
    ) as mx:
        queued = mx.send(_message(1, "Calls drop (over LMTP)", to=f"{SUPPORT}, {MACD}"), CUSTOMER, [SUPPORT, MACD])
        assert len(mx.wait_for(queued, "deferred", count=2)) == 2  # no listener yet: both recipients wait

        desk.daemon.start()
        wait_until(lambda: desk.lmtp_socket.exists(), timeout=30, what="the LMTP socket")
        mx.flush()
        sent = mx.wait_for(queued, "sent", count=2)

        assert {line.split("to=<")[1].split(">")[0] for line in sent} == {SUPPORT, MACD}
        assert all("250 2.0.0 Ok: queued as" in line for line in sent)
        assert len(desk.cli("cases", "list", "--json").json()) == 1  # one message, stored once
        _assert_no_bounce(mx, bounces)
        assert desk.daemon.stop() == 0
        assert not desk.lmtp_socket.exists()
