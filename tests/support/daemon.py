"""Run the real `mailcase serve` as a child process for end-to-end tests and benchmarks; no tests here.

The daemon gets free loopback ports, its own working directory (log file, SQLite database unless a
URL is given), the repository's sample config with every test-specific value passed the way an
operator would (`MAILCASE_*` environment variables), and optionally a `CaptureRelay` as its
outbound relay. It is stopped by PID only: SIGTERM for a graceful stop (the exit status is
returned), SIGKILL for a crash.

    with MailcaseDaemon(tmp_path, relay=relay) as daemon:
        daemon.prepare()                      # `mailcase init` + the example directory
        daemon.start()                        # returns once the SMTP port answers 220
        with daemon.smtp() as client: ...
        assert daemon.stop() == 0             # SIGTERM
"""

from __future__ import annotations

import os
import signal
import smtplib
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from support.cli import REPO, SAMPLE_CONFIG, CliResult, run_mailcase
from support.relay import HOST, CaptureRelay, free_port

EXAMPLE_DIRECTORY = REPO / "examples" / "directory.toml"
START_TIMEOUT = 30.0
"""Seconds `start()` waits for the SMTP port; a daemon that is not up by then failed to start."""
STOP_TIMEOUT = 30.0

T = TypeVar("T")
CUSTOMER = "pat@acme.example"  # acme's primary MPOC in examples/directory.toml: each message opens a case
SUPPORT = "support@support.example.com"


class DaemonError(AssertionError):
    """The daemon did not start, or did not stop, within its bound; the message carries its log."""


def wait_until(condition: Callable[[], T], *, timeout: float, interval: float = 0.05, what: str = "condition") -> T:
    """Poll `condition` until it returns something truthy (returned), or fail after `timeout` seconds.

    For effects of a process we do not control the timing of (a scheduler job, a port opening);
    it is a bounded poll, never a fixed sleep.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class MailcaseDaemon:
    """One `mailcase serve` child process bound to a working directory and a database."""

    def __init__(
        self,
        workdir: Path,
        *,
        database_url: str | None = None,
        relay: CaptureRelay | None = None,
        env: Mapping[str, str] | None = None,
        config: Path = SAMPLE_CONFIG,
        outbox_interval_seconds: int | None = None,
        nofile: int | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.database_url = database_url or f"sqlite:///{self.workdir / 'mailcase.db'}"
        self.config = config
        self.host = HOST
        self.port = free_port()
        self.log_path = self.workdir / "serve.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.nofile = nofile
        """A file-descriptor limit (soft RLIMIT_NOFILE, `ulimit -n`) for the daemon, or None."""
        values = {
            "MAILCASE_DATABASE__URL": self.database_url,
            "MAILCASE_SMTP__HOST": self.host,
            "MAILCASE_SMTP__PORT": str(self.port),
        }
        if relay is not None:
            values.update(MAILCASE_OUTBOUND__HOST=relay.host, MAILCASE_OUTBOUND__PORT=str(relay.port),
                          MAILCASE_OUTBOUND__TIMEOUT_SECONDS="5")
        else:
            # No relay: nothing to deliver to, so the daemon must not try (and log failures).
            values["MAILCASE_OUTBOUND__ENABLED"] = "false"
        if outbox_interval_seconds is not None:
            values["MAILCASE_SCHEDULER__OUTBOX_INTERVAL_SECONDS"] = str(outbox_interval_seconds)
        values.update(env or {})
        self.env = values

    # -- the database ---------------------------------------------------------------------------

    def cli(self, *argv: str, now: str | None = None, env: Mapping[str, str] | None = None) -> CliResult:
        """Run a `mailcase` command in-process against the daemon's database and config (`env` on top)."""
        return run_mailcase(
            argv, database_url=self.database_url, config=self.config, env={**self.env, **(env or {})}, now=now
        )

    def prepare(self, directory: Path = EXAMPLE_DIRECTORY) -> None:
        """`mailcase init` and `mailcase directory import` (the example directory by default)."""
        for argv in (("init",), ("directory", "import", str(directory))):
            result = self.cli(*argv)
            if result.status != 0:
                raise DaemonError(f"mailcase {' '.join(argv)} failed ({result.status}): {result.stderr}")

    # -- the process ----------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        assert self.process is not None, "the daemon is not started"
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start `mailcase serve` and return once its SMTP port greets with 220 (bounded)."""
        if self.running:
            raise DaemonError("the daemon is already running")
        environ = {k: v for k, v in os.environ.items() if not k.startswith("MAILCASE_")}
        environ.update(self.env)
        environ["PYTHONUNBUFFERED"] = "1"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mailcase", "--config", str(self.config), "serve"],
                cwd=self.workdir,
                env=environ,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=self._limit_descriptors if self.nofile else None,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DaemonError(f"mailcase serve exited with {self.process.returncode} at start:\n{self.log()}")
            if self._greets():
                return
            time.sleep(0.05)
        self.kill()
        raise DaemonError(f"mailcase serve did not open {self.host}:{self.port} within {timeout:.0f} s:\n{self.log()}")

    def _limit_descriptors(self) -> None:
        import resource

        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        assert self.nofile is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, hard))

    def _greets(self) -> bool:
        try:
            with smtplib.SMTP(self.host, self.port, timeout=2) as client:
                client.noop()
            return True
        except (OSError, smtplib.SMTPException):
            return False

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM (a graceful stop); returns the exit status. Killed, and an error, if it hangs."""
        process = self.process
        assert process is not None, "the daemon was never started"
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise DaemonError(f"mailcase serve ignored SIGTERM for {timeout:.0f} s:\n{self.log()}") from None
        return int(process.returncode)

    def kill(self) -> None:
        """SIGKILL (`kill -9`): a crash, with no chance to finish anything."""
        process = self.process
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(STOP_TIMEOUT)

    def peak_rss_kib(self) -> int:
        """The daemon's peak resident set size so far (VmHWM in /proc/<pid>/status), in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise DaemonError("no VmHWM line in /proc status")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- talking to it --------------------------------------------------------------------------

    def smtp(self, timeout: float = 30.0) -> smtplib.SMTP:
        """A connected smtplib client (a context manager)."""
        return smtplib.SMTP(self.host, self.port, local_hostname="client.acme.example", timeout=timeout)

    def __enter__(self) -> MailcaseDaemon:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.kill()


def customer_mail(n: int) -> bytes:
    """Message `n` of a customer's burst: its own Message-ID and subject, so each opens a case."""
    mail = EmailMessage()
    mail["From"] = CUSTOMER
    mail["To"] = SUPPORT
    mail["Subject"] = f"Trunk {n} is down"
    mail["Message-ID"] = f"<trunk-{n}@acme.example>"
    mail.set_content(f"Trunk {n} has been down since 9:00.\n")
    return mail.as_bytes()


def deliver(daemon: MailcaseDaemon, n: int) -> int:
    """`customer_mail(n)` over its own connection (so SO_REUSEPORT spreads them); the DATA reply code."""
    with daemon.smtp() as client:
        client.ehlo("client.acme.example")
        client.mail(CUSTOMER)
        client.rcpt(SUPPORT)
        code, _reply = client.data(customer_mail(n))
        return code
