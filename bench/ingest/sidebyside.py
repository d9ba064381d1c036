"""Benchmark (not a test): `mailcase serve` with outbound delivery on, side by side with a bare aiosmtpd sink, in one run
(issue 16); it only ever talks to 127.0.0.1 and drops the PostgreSQL database it made.

    .venv/bin/python bench/ingest/sidebyside.py                 # SQLite and PostgreSQL, 2,000 per round
    .venv/bin/python bench/ingest/sidebyside.py --quick         # 500 per round, 500 at 100 msg/s
    .venv/bin/python bench/ingest/sidebyside.py --databases sqlite

For each database it starts, in their own processes: a bare aiosmtpd sink that stores nothing
(bench/ingest/sink.py), an outbound relay that accepts everything and keeps what it got (Postfix's
`smtp-sink -d`, found at /usr/sbin/smtp-sink or given with --smtp-sink; without it, sink.py
--record, which costs ~0.8 ms of CPU per notice on the same cores), and `mailcase serve` on a
fresh database (SQLite: the
default config; PostgreSQL: `[smtp] workers = 2`, a uniquely named database on 127.0.0.1:5432 as
`postgres`) whose directory is one organisation of 3,000 contacts, every one an MPOC. Then:

1. rounds A/B x 3, alternating (sink, mailcase, sink, mailcase, ...): an asyncio client, 8
   concurrent connections, one message per connection, N distinct 4 KB multipart messages from
   the organisation's MPOCs; per round the accepted msg/s, the CPU per message of every process
   (client, sink; mailcase's main process, its SMTP workers, its delivery worker; the relay; on
   PostgreSQL the database server's processes) and of each SMTP process's event loop thread (the
   rest of such a process is chiefly its ingest threads), how busy the machine's cores were (for mailcase
   until its outbox was empty, as the CPU figures), and the ceiling that CPU sets (all of them on
   the machine's cores; the busiest mailcase process on one core), the acknowledgement latency (end of the customer's DATA -> the relay accepted the acknowledgement
   answering it, matched by In-Reply-To) and the drain time (last 250 -> no outbox row queued or
   sending); then medians and the ratio mailcase / sink;
2. p99 DATA-to-250 and acknowledgement latency with 100 msg/s offered (open loop);
3. mailcase's peak RSS (VmHWM, the largest of its processes) after one 25 MB message;
4. the exactly-once check: every accepted message is exactly one case, every outbox row was sent,
   and the relay got each notice exactly once (each acknowledgement answering exactly one
   customer message).

The load average is printed with every round: on a shared 2-core machine the ratios from the
alternating rounds are what counts, not the absolute rates.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from run import free_port, stop_process
from run import machine as run_machine

REPO = Path(__file__).resolve().parents[2]
SINK = Path(__file__).resolve().parent / "sink.py"
HOST = "127.0.0.1"
CONTACTS = 3_000
DOMAIN = "bigco.example"
SUPPORT = "support@support.example.com"
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
BIG = 25 * 1024 * 1024
TARGETS = {"ratio_sqlite": 0.5, "ratio_postgresql": 0.8, "p99_ms": 50.0, "ack_p99_s": 2.0, "drain_s": 10.0, "rss_mb": 250.0}


# ---------------------------------------------------------------------------------------------
# Messages


def contact(number: int, contacts: int = CONTACTS) -> str:
    return f"noc{number % contacts}@{DOMAIN}"


def directory_toml(contacts: int = CONTACTS) -> str:
    """One organisation of `contacts` MPOCs (half primary, half secondary) and a team of two technicians."""
    parts = [
        '[[products]]\nname = "Cisco"\n',
        '[[technicians]]\nname = "Ana Lima"\nemail = "ana@support.example.com"\nteam = "support"\n',
        '[[technicians]]\nname = "Bruno Costa"\nemail = "bruno@support.example.com"\nteam = "support"\n',
        f'[[organisations]]\nid = "bigco"\nname = "Big Co"\ndomains = ["{DOMAIN}"]\nproducts = ["Cisco"]\n',
    ]
    for n in range(contacts):
        role = "primary" if n % 2 == 0 else "secondary"
        parts.append(f'[[organisations.contacts]]\nname = "NOC {n}"\nemail = "{contact(n, contacts)}"\nroles = ["{role}"]\n')
    return "\n".join(parts)


FILLER = "The trunk to the Denver POP drops calls after 30 seconds; logs attached below, line {n}.\r\n"


def message(run: str, number: int, size: int = 4096, contacts: int = CONTACTS) -> tuple[str, bytes]:
    """(Message-ID, DATA bytes ending in CRLF): a multipart/alternative message of about `size` bytes
    from one of `contacts` MPOCs."""
    mid = f"<{run}-{number}@bench.invalid>"
    head = (
        f"From: NOC {number % contacts} <{contact(number, contacts)}>\r\n"
        f"To: {SUPPORT}\r\n"
        f"Subject: Site {run}-{number} drops calls\r\n"
        f"Message-ID: {mid}\r\n"
        "Date: Wed, 25 Nov 2026 16:00:00 -0700\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/alternative; boundary="b-{run}"\r\n'
        "\r\n"
    )
    half = max(0, (size - len(head) - 300) // 2)
    lines = []
    n = 0
    while sum(map(len, lines)) < half:
        lines.append(FILLER.format(n=n))
        n += 1
    text = f"Site {run}-{number} drops calls since 16:00.\r\n" + "".join(lines)
    html = "<p>" + text.replace("\r\n", "<br>\r\n") + "</p>\r\n"
    body = (
        f"--b-{run}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n{text}"
        f"--b-{run}\r\nContent-Type: text/html; charset=us-ascii\r\n\r\n{html}"
        f"--b-{run}--\r\n"
    )
    return mid, (head + body).encode("ascii")


def big_message(run: str, size: int) -> tuple[str, bytes]:
    mid = f"<{run}-big@bench.invalid>"
    head = (
        f"From: NOC 0 <{contact(0)}>\r\nTo: {SUPPORT}\r\nSubject: Site {run} full log\r\nMessage-ID: {mid}\r\n"
        "Date: Wed, 25 Nov 2026 16:00:00 -0700\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    ).encode()
    line = b"2026-11-25T16:00:00Z trunk-7 SIP/2.0 503 Service Unavailable; retrying after 30 s\r\n"
    return mid, head + line * (size // len(line))


# ---------------------------------------------------------------------------------------------
# The client


@dataclass
class Tally:
    sent: int = 0
    latencies: list[float] = field(default_factory=list)
    ended_data: dict[str, float] = field(default_factory=dict)
    """Message-ID -> time.time() when the final `.` was written (end of the customer's DATA); wall
    clock, to compare with the relay's record of when it accepted the acknowledgement."""
    errors: Counter[str] = field(default_factory=Counter)
    first_250: float = 0.0
    last_250: float = 0.0
    max_start_lag: float = 0.0


async def _reply(reader: asyncio.StreamReader) -> tuple[int, str]:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("connection closed")
        if len(line) < 4 or line[3:4] != b"-":
            return int(line[:3]), line.decode("ascii", "replace").strip()


async def send_one(port: int, mid: str, sender: str, data: bytes, tally: Tally, timeout: float = 300.0) -> None:
    """One connection, one message, QUIT; the DATA-to-250 latency goes into `tally`."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(HOST, port, limit=1 << 20)
            try:
                for command, expected in ((None, 220), (b"EHLO bench.invalid\r\n", 250),
                                          (f"MAIL FROM:<{sender}>\r\n".encode(), 250),
                                          (f"RCPT TO:<{SUPPORT}>\r\n".encode(), 250), (b"DATA\r\n", 354)):
                    if command is not None:
                        writer.write(command)
                    code, text = await _reply(reader)
                    if code != expected:
                        tally.errors[text[:60]] += 1
                        return
                writer.write(data)
                writer.write(b".\r\n")
                ended = time.monotonic()
                code, text = await _reply(reader)
                done = time.monotonic()
                if code != 250:
                    tally.errors[text[:60]] += 1
                    return
                tally.sent += 1
                tally.latencies.append(done - ended)
                tally.ended_data[mid] = time.time() - (done - ended)
                tally.first_250 = tally.first_250 or done
                tally.last_250 = max(tally.last_250, done)
                writer.write(b"QUIT\r\n")
                with contextlib.suppress(ConnectionError, TimeoutError):
                    await _reply(reader)
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
    except (OSError, ConnectionError, TimeoutError) as error:
        tally.errors[type(error).__name__] += 1


async def closed_loop(port: int, messages: Sequence[tuple[str, str, bytes]], concurrency: int) -> tuple[Tally, float]:
    tally = Tally()
    queue = iter(messages)

    async def worker() -> None:
        for mid, sender, data in queue:
            await send_one(port, mid, sender, data, tally)

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return tally, time.monotonic() - started


async def open_loop(port: int, messages: Sequence[tuple[str, str, bytes]], rate: float) -> tuple[Tally, float]:
    tally = Tally()
    started = time.monotonic()
    tasks = []
    for n, (mid, sender, data) in enumerate(messages):
        due = started + n / rate
        wait = due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        else:
            tally.max_start_lag = max(tally.max_start_lag, -wait)
        tasks.append(asyncio.create_task(send_one(port, mid, sender, data, tally)))
    await asyncio.gather(*tasks)
    return tally, time.monotonic() - started


def batch(run: str, count: int) -> list[tuple[str, str, bytes]]:
    return [(mid, contact(n), data) for n in range(count) for mid, data in [message(run, n)]]


# ---------------------------------------------------------------------------------------------
# Processes


def cpu_seconds(pid: int, *, main_thread_only: bool = False) -> float:
    """CPU used so far by process `pid` (user and system), or by its main thread alone."""
    stat = f"/proc/{pid}/task/{pid}/stat" if main_thread_only else f"/proc/{pid}/stat"
    try:
        fields = Path(stat).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (scans /proc for parent ids)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, []))
    return found


def process_name(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    text = b" ".join(argv).decode(errors="replace")
    if "serve" in text and "mailcase" in text:
        return "mailcase main"
    if "sink.py" in text:
        return "relay" if "--record" in text else "sink"
    if "multiprocessing" in text and "resource_tracker" in text:
        return "resource tracker"
    if "multiprocessing" in text:
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            comm = "child"
        return comm if comm.startswith("mailcase") else f"mailcase child {comm}"
    return Path(argv[0].decode(errors="replace")).name


def peak_rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Child:
    """A server process we started; stopped by its PID."""

    def __init__(self, argv: list[str], *, cwd: Path, env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                            stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> int | None:
        return stop_process(self.process, 90.0)


SMTP_SINK = Path("/usr/sbin/smtp-sink")


class Relay:
    """The outbound relay: Postfix's smtp-sink dumping each message to a file (its mtime is when the
    relay accepted it), or sink.py --record writing one JSON line per message."""

    def __init__(self, workdir: Path, smtp_sink: Path | None) -> None:
        # Outside the private temporary directory: smtp-sink started as root writes as `nobody`.
        self.dump = Path(tempfile.mkdtemp(prefix="mailcase-bench-relay-"))
        self.record = workdir / "relay.jsonl"
        self.port = free_port()
        if smtp_sink is not None:
            self.dump.chmod(0o777)  # smtp-sink drops to `nobody` when started as root
            env = dict(os.environ)
            library = smtp_sink.parent.parent / "lib" / "postfix"
            if library.is_dir():  # an unpacked postfix .deb rather than an installed one
                env["LD_LIBRARY_PATH"] = str(library)
            argv = [str(smtp_sink), "-d", f"{self.dump}/%H%M%S"]
            if os.geteuid() == 0:
                argv += ["-u", "nobody"]
            self.child = Child([*argv, f"{HOST}:{self.port}", "256"], cwd=workdir, env=env, log=workdir / "relay.log")
            self.kind = "smtp-sink"
        else:
            argv = [sys.executable, str(SINK), "--port", str(self.port), "--record", str(self.record)]
            self.child = Child(argv, cwd=workdir, env=dict(os.environ), log=workdir / "relay.log")
            self.kind = "sink.py --record"
        wait_for_port(self.port, self.child)

    @property
    def pid(self) -> int:
        return self.child.pid

    def received(self) -> list[dict[str, Any]]:
        """Every message the relay accepted: {"t": wall-clock acceptance, "mid", "irt"}."""
        if self.kind != "smtp-sink":
            return relay_log(self.record)
        found = []
        for path in self.dump.iterdir():
            with contextlib.suppress(OSError):
                stat = path.stat()
                head = path.read_bytes().split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0]
                headers = {name.lower(): value.decode("ascii", "replace").strip()
                           for name, value in RELAY_HEADER.findall(head)}
                found.append({"t": stat.st_mtime_ns / 1e9, "mid": headers.get(b"message-id", ""),
                              "irt": headers.get(b"in-reply-to", "")})
        return found

    def stop(self) -> None:
        self.child.stop()
        shutil.rmtree(self.dump, ignore_errors=True)


RELAY_HEADER = re.compile(rb"^(Message-ID|In-Reply-To):[ \t]*(.*?)\r?$", re.IGNORECASE | re.MULTILINE)


def start_sink(workdir: Path, name: str, record: Path | None = None) -> tuple[Child, int]:
    port = free_port()
    argv = [sys.executable, str(SINK), "--port", str(port)] + (["--record", str(record)] if record else [])
    child = Child(argv, cwd=workdir, env=dict(os.environ), log=workdir / f"{name}.log")
    wait_for_port(port, child)
    return child, port


def wait_for_port(port: int, child: Child, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise SystemExit(f"{child.log.name}: exited at start; see {child.log}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1) as probe:
            if probe.recv(3) == b"220":
                return
        time.sleep(0.05)
    child.stop()
    raise SystemExit(f"nothing answered on port {port} within {seconds:.0f} s; see {child.log}")


# ---------------------------------------------------------------------------------------------
# mailcase and its database


class Database:
    """A fresh database: a SQLite file, or a uniquely named PostgreSQL database (dropped by `drop`)."""

    def __init__(self, kind: str, workdir: Path) -> None:
        import sqlalchemy as sa

        self.kind = kind
        self.name = ""
        if kind == "sqlite":
            self.url = f"sqlite:///{workdir / 'mailcase.db'}"
        else:
            self.name = f"mailcase_bench_{uuid.uuid4().hex[:10]}"
            admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
            with admin.connect() as connection:
                connection.execute(sa.text(f'CREATE DATABASE "{self.name}"'))
            admin.dispose()
            self.url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{self.name}"
        self._engine: Any = None

    def scalar(self, sql: str) -> Any:
        import sqlalchemy as sa

        if self._engine is None:
            self._engine = sa.create_engine(self.url)
        with self._engine.connect() as connection:
            return connection.execute(sa.text(sql)).scalar()

    def rows(self, sql: str) -> list[Any]:
        import sqlalchemy as sa

        if self._engine is None:
            self._engine = sa.create_engine(self.url)
        with self._engine.connect() as connection:
            return list(connection.execute(sa.text(sql)))

    def drop(self) -> None:
        import sqlalchemy as sa

        if self._engine is not None:
            self._engine.dispose()
        if self.name:
            admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
            with admin.connect() as connection:
                connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
            admin.dispose()


class Waits:
    """What the database's backends for `database` were doing while the block ran (PostgreSQL only):
    pg_stat_activity sampled every 20 ms from a thread, averaged per sample. Backends waiting on a
    lock mean mailcase's transactions queue behind each other; idle in transaction means the
    database waits for mailcase (its CPU, the GIL)."""

    def __init__(self, database: Database | None) -> None:
        self.database = database
        self.samples: list[tuple[int, int, int]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Waits:
        if self.database is not None and self.database.kind == "postgresql":
            self._thread = threading.Thread(target=self._sample, args=(self.database.name,), daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _sample(self, name: str) -> None:
        import sqlalchemy as sa

        engine = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        query = sa.text(
            "SELECT count(*) FILTER (WHERE state = 'active' AND wait_event_type IS DISTINCT FROM 'Lock'),"
            " count(*) FILTER (WHERE wait_event_type = 'Lock'), count(*) FILTER (WHERE state LIKE 'idle in transaction%')"
            " FROM pg_stat_activity WHERE datname = :name AND pid <> pg_backend_pid()"
        )
        with engine.connect() as connection:
            while not self._stop.wait(0.02):
                row = connection.execute(query, {"name": name}).one()
                self.samples.append((int(row[0]), int(row[1]), int(row[2])))
        engine.dispose()

    def summary(self) -> dict[str, float] | None:
        if not self.samples:
            return None
        n = len(self.samples)
        return {
            name: round(sum(sample[i] for sample in self.samples) / n, 2)
            for i, name in enumerate(("working", "waiting_on_a_lock", "idle_in_transaction"))
        }


def waits_text(waits: dict[str, float] | None) -> str:
    if not waits:
        return ""
    return (f"\n{'':>12}PostgreSQL backends on average: {waits['working']} working, {waits['waiting_on_a_lock']} "
            f"waiting on a lock, {waits['idle_in_transaction']} idle in a transaction")


class Mailcase:
    """`mailcase serve` with delivery on to `relay_port`, on `database`, with `workers` SMTP processes."""

    def __init__(self, workdir: Path, database: Database, relay_port: int, workers: int) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCASE_")} | {
            "MAILCASE_DATABASE__URL": database.url,
            "MAILCASE_SMTP__HOST": HOST,
            "MAILCASE_SMTP__PORT": str(self.port),
            "MAILCASE_SMTP__WORKERS": str(workers),
            "MAILCASE_OUTBOUND__ENABLED": "true",
            "MAILCASE_OUTBOUND__HOST": HOST,
            "MAILCASE_OUTBOUND__PORT": str(relay_port),
            # All the load comes from one loopback address, where a real desk's comes from many MTAs.
            "MAILCASE_SMTP__MAX_CONNECTIONS_PER_IP": "1000",
            # Every message must really be acknowledged: the per-address limits would withhold some.
            "MAILCASE_AUTOREPLY__MAX_PER_HOUR": "1000000000",
            "MAILCASE_AUTOREPLY__MAX_PER_DAY": "1000000000",
        }
        config = ["--config", str(REPO / "config.toml")]
        (workdir / "directory.toml").write_text(directory_toml())
        for argv in (["init"], ["directory", "import", str(workdir / "directory.toml")]):
            subprocess.run([sys.executable, "-m", "mailcase", *config, *argv], cwd=workdir, env=self.env,
                           check=True, capture_output=True)
        self.child = Child([sys.executable, "-m", "mailcase", *config, "serve"], cwd=workdir, env=self.env,
                           log=workdir / "serve.log")
        wait_for_port(self.port, self.child)
        time.sleep(2.0 if workers > 1 else 0.5)  # let the worker processes start and bind too

    def pids(self) -> list[int]:
        return descendants(self.child.pid)


def outbox_left(database: Database) -> int:
    return int(database.scalar("SELECT count(*) FROM outbox WHERE state IN ('queued', 'sending')") or 0)


def wait_drained(database: Database, since: float, timeout: float, relay: Relay) -> float | None:
    """Seconds from `since` until no outbox row is queued or sending (None: not within `timeout`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if relay.child.process.poll() is not None:
            raise SystemExit(f"the relay exited; see {relay.child.log}")
        if outbox_left(database) == 0:
            return time.monotonic() - since
        time.sleep(0.05)
    return None


def relay_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def ack_latencies(tally: Tally, relayed: list[dict[str, Any]]) -> list[float]:
    by_reply = {record["irt"]: record["t"] for record in relayed if record["irt"]}
    return sorted(by_reply[mid] - ended for mid, ended in tally.ended_data.items() if mid in by_reply)


def percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))]


def distribution(values: Sequence[float], scale: float = 1.0) -> dict[str, float]:
    return {name: round(percentile(values, q) * scale, 3) for name, q in
            (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))} | {"n": len(values)}


def cpu_snapshot(pids: Sequence[int]) -> dict[int, float]:
    return {pid: cpu_seconds(pid) for pid in pids}


def event_loop_snapshot(pids: Sequence[int]) -> dict[int, float]:
    """CPU so far of the main thread of each process that takes SMTP (`serve` and its SMTP workers):
    the event loop, which runs aiosmtpd's protocol and hands each message to the ingest threads."""
    return {pid: cpu_seconds(pid, main_thread_only=True) for pid in pids
            if process_name(pid) == "mailcase main" or process_name(pid).startswith("mailcase-smtp")}


def server_cpu_seconds() -> float:
    """CPU used so far by the PostgreSQL server's processes still alive (postmaster, backends, WAL
    writer, ...): on this machine nothing but the benchmark uses the server while it runs, so the
    difference around a round is the database's share of that round."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "postgres":
                    total += cpu_seconds(int(entry.name))
    return total


def machine_jiffies() -> tuple[int, int]:
    """(busy, all) clock ticks of every core since boot, from /proc/stat (busy: not idle, not iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields) - fields[3] - fields[4], sum(fields)


def machine_busy(before: tuple[int, int], after: tuple[int, int]) -> float:
    """How busy the machine's cores were between two readings, in percent of all of them."""
    busy, total = after[0] - before[0], after[1] - before[1]
    return round(100 * busy / total, 1) if total else 0.0


def cpu_per_message(before: dict[int, float], after: dict[int, float], messages: int) -> dict[str, float]:
    per: dict[str, float] = {}
    for pid, seconds in after.items():
        name = process_name(pid)
        if name == "resource tracker":
            continue
        used = seconds - before.get(pid, 0.0)
        label = name if name not in per else f"{name} {pid}"
        per[label] = round(used / max(1, messages) * 1000, 3)
    return per


def cpu_ceiling(cpu_ms_per_msg: dict[str, float], cores: int) -> dict[str, float]:
    """The rates the CPU alone allows: every measured process together on `cores` (on PostgreSQL
    the database server's processes too), and the busiest mailcase process on the one core its GIL
    lets it use."""
    total = sum(cpu_ms_per_msg.values())
    busiest = max((ms for name, ms in cpu_ms_per_msg.items() if name.startswith("mailcase")), default=0.0)
    return {
        "all_processes_msg_per_s": round(cores * 1000 / total, 1) if total else 0.0,
        "busiest_process_msg_per_s": round(1000 / busiest, 1) if busiest else 0.0,
    }


# ---------------------------------------------------------------------------------------------
# One database's side-by-side run


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_database(kind: str, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    workdir = root / kind
    workdir.mkdir()
    workers = args.postgresql_workers if kind == "postgresql" else args.sqlite_workers
    sink, sink_port = start_sink(workdir, "sink")
    relay = Relay(workdir, args.smtp_sink)
    database = Database(kind, workdir)
    result: dict[str, Any] = {"database": kind, "workers": workers, "relay": relay.kind, "rounds": []}
    daemon: Mailcase | None = None
    all_sent: list[str] = []
    try:
        daemon = Mailcase(workdir, database, relay.port, workers)
        result["processes"] = {str(pid): process_name(pid) for pid in daemon.pids()}
        for index in range(args.rounds):
            for side in ("sink", "mailcase"):
                run = f"{side[0]}{index}{uuid.uuid4().hex[:8]}"
                messages = batch(run, args.messages)
                port = sink_port if side == "sink" else daemon.port
                pids = [sink.pid] if side == "sink" else [*daemon.pids(), relay.pid]
                load_before = loadavg()
                before, client_before = cpu_snapshot(pids), time.process_time()
                loops_before = event_loop_snapshot(pids) if side == "mailcase" else {}
                server_before, jiffies_before = server_cpu_seconds(), machine_jiffies()
                with Waits(database if side == "mailcase" else None) as waits:
                    tally, elapsed = asyncio.run(closed_loop(port, messages, args.concurrency))
                row: dict[str, Any] = {
                    "side": side, "round": index + 1, "accepted": tally.sent, "errors": dict(tally.errors),
                    "msg_per_s": round(tally.sent / elapsed, 1), "load": load_before,
                    "data_to_250_ms": distribution(tally.latencies, 1000), "database_backends": waits.summary(),
                }
                if side == "mailcase":
                    drained = wait_drained(database, tally.last_250, args.drain_timeout, relay)
                    row["drain_s"] = round(drained, 2) if drained is not None else None
                    row["ack_latency_s"] = distribution(ack_latencies(tally, relay.received()))
                    all_sent.extend(tally.ended_data)
                after = cpu_snapshot(pids)
                row["cpu_ms_per_msg"] = cpu_per_message(before, after, tally.sent) | {
                    "client": round((time.process_time() - client_before) / max(1, tally.sent) * 1000, 3)}
                if side == "mailcase" and kind == "postgresql":
                    row["cpu_ms_per_msg"]["database server"] = round(
                        (server_cpu_seconds() - server_before) / max(1, tally.sent) * 1000, 3)
                row["machine_busy_percent"] = machine_busy(jiffies_before, machine_jiffies())
                if side == "mailcase":
                    row["event_loop_ms_per_msg"] = cpu_per_message(loops_before, event_loop_snapshot(pids), tally.sent)
                    row["cpu_ceiling"] = cpu_ceiling(row["cpu_ms_per_msg"], os.cpu_count() or 1)
                row["load_after"] = loadavg()
                result["rounds"].append(row)
                print(round_line(kind, row), flush=True)
        sink_rates = [r["msg_per_s"] for r in result["rounds"] if r["side"] == "sink"]
        ours = [r["msg_per_s"] for r in result["rounds"] if r["side"] == "mailcase"]
        result["median"] = {"sink": statistics.median(sink_rates), "mailcase": statistics.median(ours)}
        result["ratio"] = round(result["median"]["mailcase"] / result["median"]["sink"], 3)

        # 2. 100 msg/s offered
        run = f"r{uuid.uuid4().hex[:8]}"
        load_before = loadavg()
        pids = [*daemon.pids(), relay.pid]
        before = cpu_snapshot(pids)
        with Waits(database) as waits:
            tally, elapsed = asyncio.run(open_loop(daemon.port, batch(run, args.rate_messages), args.rate))
        drained = wait_drained(database, tally.last_250, args.drain_timeout, relay)
        result["rate"] = {
            "offered": args.rate, "messages": args.rate_messages, "accepted": tally.sent, "errors": dict(tally.errors),
            "data_to_250_ms": distribution(tally.latencies, 1000),
            "ack_latency_s": distribution(ack_latencies(tally, relay.received())),
            "drain_s": round(drained, 2) if drained is not None else None,
            "max_start_lag_ms": round(tally.max_start_lag * 1000, 1), "load": load_before, "load_after": loadavg(),
            "cpu_ms_per_msg": cpu_per_message(before, cpu_snapshot(pids), tally.sent),
            "database_backends": waits.summary(),
        }
        all_sent.extend(tally.ended_data)
        print(rate_line(kind, result["rate"]), flush=True)

        # 3. one 25 MB message
        if args.big_size:
            mid, data = big_message(f"g{uuid.uuid4().hex[:8]}", args.big_size)
            rss_before = max(peak_rss_mb(pid) for pid in daemon.pids())
            tally = Tally()
            asyncio.run(send_one(daemon.port, mid, contact(0), data, tally))
            rss_after = {process_name(pid): peak_rss_mb(pid) for pid in daemon.pids()}
            result["big"] = {"bytes": len(data), "accepted": tally.sent == 1, "errors": dict(tally.errors),
                             "data_to_250_ms": distribution(tally.latencies, 1000),
                             "peak_rss_mb_before": round(rss_before, 1),
                             "peak_rss_mb": {k: round(v, 1) for k, v in rss_after.items()}}
            all_sent.extend(tally.ended_data)
            wait_drained(database, time.monotonic(), args.drain_timeout, relay)
            print(big_line(kind, result["big"]), flush=True)

        # 4. exactly once
        time.sleep(0.5)
        result["exactly_once"] = exactly_once(database, all_sent, relay.received())
        print(exactly_once_line(kind, result["exactly_once"]), flush=True)
    finally:
        if daemon is not None:
            result["serve_exit"] = daemon.child.stop()
        sink.stop()
        relay.stop()
        database.drop()
    return result


def exactly_once(database: Database, sent: list[str], relayed: list[dict[str, Any]]) -> dict[str, Any]:
    ours = set(sent)
    per_message = database.rows(
        "SELECT message_id_header, count(*), count(DISTINCT case_id), min(case_id) FROM raw_message "
        "GROUP BY message_id_header"
    )
    stored = {row[0]: row for row in per_message if row[0] in ours}
    missing = len(ours - set(stored))
    not_one_case = sum(1 for row in stored.values() if row[1] != 1 or row[2] != 1 or row[3] is None)
    cases = int(database.scalar("SELECT count(*) FROM support_case") or 0)
    outbox = database.rows("SELECT message_id, state, kind, in_reply_to FROM outbox")
    states = Counter(row[1] for row in outbox)
    kinds = Counter(row[2] for row in outbox)
    got = Counter(record["mid"] for record in relayed)
    delivered_once = sum(1 for row in outbox if got.get(row[0]) == 1)
    duplicates = sum(1 for count in got.values() if count > 1)
    unknown = sum(1 for mid in got if mid not in {row[0] for row in outbox})
    acks = Counter(record["irt"] for record in relayed if record["irt"] in ours)
    acked_once = sum(1 for mid in ours if acks.get(mid) == 1)
    ok = (missing == 0 and not_one_case == 0 and cases == len(ours) and delivered_once == len(outbox)
          and duplicates == 0 and unknown == 0 and acked_once == len(ours))
    return {
        "ok": ok, "messages_accepted": len(ours), "stored": len(stored), "missing": missing,
        "not_exactly_one_case": not_one_case, "cases": cases, "outbox_rows": len(outbox),
        "outbox_states": dict(states), "outbox_kinds": dict(kinds), "relayed": sum(got.values()),
        "delivered_exactly_once": delivered_once, "relayed_more_than_once": duplicates,
        "relayed_not_in_outbox": unknown, "acknowledged_exactly_once": acked_once,
    }


# ---------------------------------------------------------------------------------------------
# Report


def round_line(kind: str, row: dict[str, Any]) -> str:
    text = (f"[{kind}] round {row['round']} {row['side']:<8} {row['msg_per_s']:>7} msg/s "
            f"({row['accepted']} accepted, {row['errors'] or 'no errors'}) "
            f"DATA-to-250 p50 {row['data_to_250_ms']['p50']} p99 {row['data_to_250_ms']['p99']} ms; load {row['load']}")
    if row["side"] == "mailcase":
        ack = row["ack_latency_s"]
        text += (f"\n{'':>12}ack latency p50 {ack['p50']} p90 {ack['p90']} p99 {ack['p99']} max {ack['max']} s "
                 f"({ack['n']} matched); drain {row['drain_s']} s")
    cpu = ", ".join(f"{name} {ms}" for name, ms in row["cpu_ms_per_msg"].items())
    span = " until the outbox was empty" if row["side"] == "mailcase" else ""
    text += f"\n{'':>12}CPU ms/msg: {cpu}; the machine's cores {row['machine_busy_percent']} % busy{span}"
    if row.get("event_loop_ms_per_msg"):
        loops = ", ".join(f"{name} {ms}" for name, ms in row["event_loop_ms_per_msg"].items())
        text += f"\n{'':>12}of which the event loop thread (the SMTP protocol; the rest is chiefly the ingest threads): {loops}"
    if "cpu_ceiling" in row:
        ceiling = row["cpu_ceiling"]
        text += (f"\n{'':>12}CPU ceiling: {ceiling['all_processes_msg_per_s']} msg/s for all these processes on "
                 f"{os.cpu_count()} cores, {ceiling['busiest_process_msg_per_s']} msg/s for the busiest mailcase "
                 f"process on one core")
    return text + waits_text(row.get("database_backends"))


def rate_line(kind: str, rate: dict[str, Any]) -> str:
    d, a = rate["data_to_250_ms"], rate["ack_latency_s"]
    cpu = ", ".join(f"{name} {ms}" for name, ms in rate["cpu_ms_per_msg"].items())
    return (f"[{kind}] {rate['offered']} msg/s offered, {rate['accepted']}/{rate['messages']} accepted: "
            f"DATA-to-250 p50 {d['p50']} p90 {d['p90']} p99 {d['p99']} max {d['max']} ms "
            f"[target p99 <= {TARGETS['p99_ms']:.0f} ms: {verdict(d['p99'] <= TARGETS['p99_ms'])}]; "
            f"ack latency p50 {a['p50']} p90 {a['p90']} p99 {a['p99']} max {a['max']} s ({a['n']} matched) "
            f"[target p99 <= {TARGETS['ack_p99_s']:.0f} s: {verdict(a['p99'] <= TARGETS['ack_p99_s'])}]; "
            f"drain {rate['drain_s']} s; worst start lag {rate['max_start_lag_ms']} ms; load {rate['load']}"
            f"{'; errors ' + str(rate['errors']) if rate['errors'] else ''}"
            f"\n{'':>12}CPU ms/msg: {cpu}" + waits_text(rate.get("database_backends")))


def big_line(kind: str, big: dict[str, Any]) -> str:
    peak = max(big["peak_rss_mb"].values())
    return (f"[{kind}] one {big['bytes'] / 1024 / 1024:.1f} MB message: {'250' if big['accepted'] else big['errors']} "
            f"after {big['data_to_250_ms']['max']} ms; peak RSS by process {big['peak_rss_mb']} "
            f"[target < {TARGETS['rss_mb']:.0f} MB: {verdict(peak < TARGETS['rss_mb'])}]")


def exactly_once_line(kind: str, check: dict[str, Any]) -> str:
    return (f"[{kind}] exactly once: {'OK' if check['ok'] else 'FAILED'}: {check['messages_accepted']} accepted, "
            f"{check['cases']} cases, {check['not_exactly_one_case']} not exactly one case, {check['missing']} missing; "
            f"{check['outbox_rows']} notices {check['outbox_states']}, {check['delivered_exactly_once']} relayed exactly "
            f"once, {check['relayed_more_than_once']} more than once, {check['relayed_not_in_outbox']} unknown; "
            f"{check['acknowledged_exactly_once']} customer messages acknowledged exactly once")


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def summary(results: list[dict[str, Any]]) -> str:
    lines = []
    for r in results:
        target = TARGETS[f"ratio_{r['database']}"]
        ours = [x for x in r["rounds"] if x["side"] == "mailcase"]
        drains = [x["drain_s"] for x in ours]
        lines.append(
            f"{r['database']:<10} workers {r['workers']}: sink median {r['median']['sink']} msg/s, mailcase median "
            f"{r['median']['mailcase']} msg/s, ratio {r['ratio']} [target >= {target}: {verdict(r['ratio'] >= target)}]; "
            f"drain after each burst {drains} s [target <= {TARGETS['drain_s']:.0f} s: "
            f"{verdict(all(d is not None and d <= TARGETS['drain_s'] for d in drains))}]; "
            f"exactly once {'OK' if r.get('exactly_once', {}).get('ok') else 'FAILED'}")
    return "\n".join(lines)


def machine() -> str:
    m = run_machine()
    commit = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%h %s"], capture_output=True, text=True,
                            check=False).stdout.strip()
    return (f"{m['date']}; nproc {m['nproc']}, {m['cpu']}, {m['ram']} RAM, Python {m['python']}, SQLite {m['sqlite']}; "
            f"load {m['load_before']}\ncode      {commit}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="mailcase serve with delivery on, side by side with a bare aiosmtpd sink.")
    parser.add_argument("--databases", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    parser.add_argument("--messages", type=int, default=2_000, help="messages per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--sqlite-workers", type=int, default=1, help="[smtp] workers on SQLite (1: the default config)")
    parser.add_argument("--postgresql-workers", type=int, default=2, help="[smtp] workers on PostgreSQL")
    parser.add_argument("--rate", type=float, default=100.0, help="offered msg/s for the latency run")
    parser.add_argument("--rate-messages", type=int, default=2_000)
    parser.add_argument("--big-size", type=int, default=BIG, help="bytes of the large message (0: skip)")
    parser.add_argument("--drain-timeout", type=float, default=600.0)
    parser.add_argument("--smtp-sink", type=Path, default=SMTP_SINK if SMTP_SINK.exists() else None,
                        help="Postfix's smtp-sink for the relay (default /usr/sbin/smtp-sink if present)")
    parser.add_argument("--quick", action="store_true", help="500 messages per round, 500 at 100 msg/s")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.rate_messages = 500, 500
    print(f"date      {machine()}", flush=True)
    print(f"relay     {args.smtp_sink or 'sink.py --record (no smtp-sink found)'}", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="mailcase-bench-sbs-") as tmp:
        for kind in args.databases.split(","):
            results.append(run_database(kind.strip(), Path(tmp), args))
    print(summary(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if all(r.get("exactly_once", {}).get("ok") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
