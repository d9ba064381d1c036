"""Benchmark (not a test): IMAP ingestion by `mailcase serve` from a private Dovecot, on SQLite.

Prints two figures, with the machine they were measured on:
1. backlog: N messages (~4 KB each, each from one of 1,000 MPOCs, distinct subjects) appended to
   the INBOX first, then `mailcase serve` started: the time until all N are cases (and moved to
   the processed folder); target at least 200 messages/s;
2. IDLE latency: with serve idling on the empty INBOX, the time from APPEND of one message to
   its case existing in the database, repeated; target p50 under 1 s.

    .venv/bin/python bench/imap/run.py [--messages 5000] [--size 4096] [--samples 20] [--batch-size 100]

Dovecot comes from tests/support/dovecot.py (Debian's dovecot-imapd must be installed). The
database, the config, the Maildir and the logs live in a temporary directory removed at the end
(`--keep` keeps it), with the sample config.toml and a generated directory: 100 organisations
of 10 MPOCs each, and the support team's technicians. The messages go round-robin over the
1,000 MPOCs, so with 5,000 messages each sender has 5, within the sample config's 5
acknowledgements per hour: every message opens a P4 case and queues its acknowledgement and the
technicians' new-case notice in the same transaction, as mail from many customers does.
Outbound delivery is off: this measures ingestion only. Every process started here is stopped
by its PID.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))  # for support.dovecot

from support.dovecot import DovecotServer, dovecot_binary  # noqa: E402

ORGANISATIONS = 100
MPOCS_PER_ORGANISATION = 10
FILLER_LINE = "The quick brown fox jumps over the lazy dog while the desk reads the logs.\r\n"
APPEND_CHUNK = 250  # messages per MULTIAPPEND (RFC 3502) command while loading the backlog
START_TIMEOUT_SECONDS = 60.0


def sender(number: int) -> str:
    """The MPOC who sends message `number`: round-robin over every organisation's contacts."""
    organisation = number % ORGANISATIONS
    contact = (number // ORGANISATIONS) % MPOCS_PER_ORGANISATION
    return f"noc{contact}@org{organisation}.example"


def directory_toml() -> str:
    parts = [
        '[[products]]\nname = "Cisco"\n',
        '[[technicians]]\nname = "Ana Lima"\nemail = "ana@support.example.com"\nteam = "support"\n',
        '[[technicians]]\nname = "Bruno Costa"\nemail = "bruno@support.example.com"\nteam = "support"\n',
    ]
    for i in range(ORGANISATIONS):
        parts.append(
            f'[[organisations]]\nid = "org{i}"\nname = "Organisation {i}"\n'
            f'domains = ["org{i}.example"]\nproducts = ["Cisco"]\n'
        )
        for j in range(MPOCS_PER_ORGANISATION):
            role = "primary" if j == 0 else "secondary"
            parts.append(
                f'[[organisations.contacts]]\nname = "NOC {j}"\nemail = "noc{j}@org{i}.example"\n'
                f'roles = ["{role}"]\n'
            )
    return "\n".join(parts)


def message(tag: str, number: int, size: int) -> bytes:
    head = (
        f"From: NOC <{sender(number)}>\r\n"
        "To: support@support.example.com\r\n"
        f"Subject: Site {tag}-{number} lost its uplink\r\n"
        "Date: Wed, 25 Nov 2026 16:00:00 -0700\r\n"
        f"Message-ID: <{tag}-{number}.bench@acme.example>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        f"Site {tag}-{number} has been down since 16:00; calls fail with a fast busy.\r\n"
    )
    filler = FILLER_LINE * max(0, (size - len(head)) // len(FILLER_LINE))
    return (head + filler).encode()


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram = "?"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    dovecot = subprocess.run([dovecot_binary() or "dovecot", "--version"], capture_output=True, text=True)
    sqlite = sqlite3.sqlite_version
    return (
        f"{os.cpu_count()} cores ({cpu}), {ram} RAM, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, SQLite {sqlite}, Dovecot {dovecot.stdout.split()[0]}"
    )


class Serve:
    """`mailcase serve` as a child process, logging to a file; stopped by its PID."""

    def __init__(self, workdir: Path, config: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.config = config
        self.env = env
        self.log_path = workdir / "serve.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mailcase", "--config", str(self.config), "serve"],
                cwd=self.workdir, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )

    def wait_serving(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if "mailcase serving" in self.log_path.read_text(errors="replace"):
                return
            if self.process is not None and self.process.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError(f"serve did not start: {self.log_path.read_text(errors='replace')[-2000:]}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def mailcase(workdir: Path, config: Path, env: dict[str, str], *argv: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "mailcase", "--config", str(config), *argv],
        cwd=workdir, env=env, check=True, capture_output=True,
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc), whatever else the machine runs."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU time so far of each thread of a process, by thread id (Linux /proc)."""
    result: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            result[f"thread {task.name}"] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return result


def count_cases(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as connection:
        return int(connection.execute("SELECT count(*) FROM support_case").fetchone()[0])


def notices_by_kind(db: Path) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as connection:
        return dict(connection.execute("SELECT kind, count(*) FROM outbox GROUP BY kind").fetchall())


def case_exists(connection: sqlite3.Connection, subject: str) -> bool:
    row = connection.execute("SELECT 1 FROM support_case WHERE subject = ?", (subject,)).fetchone()
    return row is not None


def dovecot_cpu_seconds(dovecot: DovecotServer) -> float:
    """CPU used by our Dovecot master and its live descendants (imap, auth, log processes)."""
    if dovecot.pid is None:
        return 0.0
    found = [str(dovecot.pid)]
    for proc in sorted((p for p in Path("/proc").iterdir() if p.name.isdigit()), key=lambda p: int(p.name)):
        try:
            parent = (proc / "stat").read_text().rsplit(")", 1)[1].split()[1]
        except (OSError, IndexError):
            continue
        if parent in found:
            found.append(proc.name)
    total = 0.0
    for pid in found:
        with contextlib.suppress(OSError):
            total += cpu_seconds(int(pid))
    return total


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


@contextlib.contextmanager
def workspace(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="mailcase-imap-bench-"))
    try:
        yield path
    finally:
        if keep:
            print(f"kept: {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000, help="backlog size (default 5000)")
    parser.add_argument("--size", type=int, default=4096, help="bytes per message (default 4096)")
    parser.add_argument("--samples", type=int, default=20, help="IDLE latency samples (default 20)")
    parser.add_argument("--batch-size", type=int, default=100, help="[[imap]] batch_size (default 100)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    options = parser.parse_args()

    binary = dovecot_binary()
    if binary is None:
        print("Dovecot is not installed (apt-get install dovecot-imapd)", file=sys.stderr)
        return 1
    print(f"machine: {machine()}")
    print(f"date: {datetime.now(UTC).isoformat(timespec='seconds')}")

    with workspace(options.keep) as workdir:
        dovecot = DovecotServer(binary, workdir / "dovecot.log")
        serve: Serve | None = None
        try:
            dovecot.start()
            (workdir / "imap-password").write_text(dovecot.password + "\n")
            config = workdir / "config.toml"
            config.write_text(
                (REPO / "config.toml").read_text()
                + f"""
[[imap]]
name = "bench"
host = "{dovecot.host}"
port = {dovecot.port}
tls = "none"
user = "{dovecot.user}"
password_file = "imap-password"
folder = "INBOX"
processed_folder = "Processed"
poll_interval_seconds = 600
batch_size = {options.batch_size}
"""
            )
            db = workdir / "mailcase.db"
            env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCASE_")}
            env |= {
                "MAILCASE_DATABASE__URL": f"sqlite:///{db}",
                "MAILCASE_SMTP__PORT": "0",
                "MAILCASE_OUTBOUND__ENABLED": "false",
            }
            mailcase(workdir, config, env, "init")
            (workdir / "directory.toml").write_text(directory_toml())
            mailcase(workdir, config, env, "directory", "import", str(workdir / "directory.toml"))

            # -- 1. the backlog ------------------------------------------------------------
            backlog = [message("backlog", i, options.size) for i in range(options.messages)]
            started = time.perf_counter()
            with dovecot.client() as client:
                for at in range(0, len(backlog), APPEND_CHUNK):
                    client.multiappend("INBOX", backlog[at : at + APPEND_CHUNK])
            appended = time.perf_counter() - started
            print(
                f"setup: {len(backlog)} messages of {len(backlog[0])} bytes appended in {appended:.1f} s "
                f"(MULTIAPPEND, {APPEND_CHUNK} per command)"
            )

            serve = Serve(workdir, config, env)
            started = time.perf_counter()
            serve.start()
            serve.wait_serving()
            serving = time.perf_counter() - started
            assert serve.process is not None
            serve_cpu = cpu_seconds(serve.process.pid)
            threads_cpu = thread_cpu_seconds(serve.process.pid)
            dovecot_cpu = dovecot_cpu_seconds(dovecot)
            first_case = None
            while True:
                count = count_cases(db)
                now = time.perf_counter()
                if count and first_case is None:
                    first_case = now
                if count >= options.messages:
                    break
                if now - started > 600:
                    print(f"backlog: only {count} cases after 600 s", file=sys.stderr)
                    return 1
                time.sleep(0.1)
            done = time.perf_counter()
            serve_cpu = cpu_seconds(serve.process.pid) - serve_cpu
            threads_cpu = {
                name: seconds - threads_cpu.get(name, 0.0)
                for name, seconds in thread_cpu_seconds(serve.process.pid).items()
            }
            dovecot_cpu = dovecot_cpu_seconds(dovecot) - dovecot_cpu
            total = done - started
            steady = done - (first_case or started)
            print(
                f"backlog: {options.messages} messages -> {count} cases in {total:.1f} s from starting serve "
                f"= {options.messages / total:.0f} msg/s (process start {serving:.1f} s included); "
                f"{options.messages / steady:.0f} msg/s from the first case to the last "
                f"(batch_size {options.batch_size}; target: at least 200 msg/s)"
            )
            print(
                f"backlog: CPU per message: serve {serve_cpu / options.messages * 1000:.2f} ms "
                f"(= {options.messages / serve_cpu:.0f} msg/s on one free core), "
                f"Dovecot {dovecot_cpu / options.messages * 1000:.2f} ms; load average now "
                f"{os.getloadavg()[0]:.1f}"
            )
            busiest = max(threads_cpu.values(), default=0.0)
            print(
                f"backlog: serve's busiest thread (the mailbox poller running the pipeline) used "
                f"{busiest:.1f} s of its {serve_cpu:.1f} s of CPU"
            )
            deadline = time.monotonic() + 60
            while dovecot.uids("INBOX") and time.monotonic() < deadline:
                time.sleep(0.2)
            print(
                f"backlog: INBOX {len(dovecot.uids('INBOX'))} left, "
                f"Processed {len(dovecot.uids('Processed'))} messages; outbox: "
                + ", ".join(f"{count} {kind}" for kind, count in sorted(notices_by_kind(db).items()))
            )

            # -- 2. IDLE latency -----------------------------------------------------------
            latencies: list[float] = []
            with (
                dovecot.client() as client,
                contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as reader,
            ):
                time.sleep(1.0)  # let serve settle into IDLE after the backlog
                for i in range(options.samples):
                    data = message("idle", i, options.size)
                    subject = f"Site idle-{i} lost its uplink"
                    sent = time.perf_counter()
                    client.append("INBOX", data)
                    while not case_exists(reader, subject):
                        if time.perf_counter() - sent > 60:
                            print(f"idle: message {i} not a case after 60 s", file=sys.stderr)
                            return 1
                        time.sleep(0.002)
                    latencies.append(time.perf_counter() - sent)
                    time.sleep(0.3)  # the poller is back in IDLE before the next APPEND
            print(
                f"idle: APPEND -> case over {len(latencies)} messages: "
                f"p50 {statistics.median(latencies) * 1000:.0f} ms, "
                f"p90 {percentile(latencies, 0.9) * 1000:.0f} ms, "
                f"max {max(latencies) * 1000:.0f} ms (target: p50 under 1 s)"
            )
            log = serve.log_path.read_text(errors="replace")
            errors = len(re.findall(r" (ERROR|WARNING) ", log))
            print(f"serve log: {errors} warning/error line(s)")
        finally:
            if serve is not None:
                serve.stop()
            dovecot.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
