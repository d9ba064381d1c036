"""Benchmark (not a test) of inbound SMTP: starts `mailcase serve` on SQLite in a temporary directory, drives it with
bench/ingest/drive.py, and profiles the ingest pipeline in-process. It never talks to anything but 127.0.0.1.

    .venv/bin/python bench/ingest/run.py            # every figure (about 2 minutes on 2 cores)
    .venv/bin/python bench/ingest/run.py --quick    # smaller runs, for a first look
    .venv/bin/python bench/ingest/run.py --only profile --profile-database-url postgresql://postgres@127.0.0.1/EMPTY_DB

Figures (issue "Inbound mail over SMTP", targets on the 2-core development machine):
1. throughput: messages/s accepted into cases, 8 connections, one message per connection, 10,000
   4 KB messages (target >= 250 msg/s), with p50/p99 from end of DATA to the 250;
2. latency: p99 from end of DATA to the 250 at 100 msg/s offered (target <= 50 ms);
3. memory: the daemon's peak RSS (VmHWM in /proc/<pid>/status) after one 25 MB message
   (target < 250 MB);
4. profile: where `Pipeline.ingest_one` spends its time over N 4 KB messages, by stage
   (parse / decide / store / commit), with the top functions of each stage (cProfile).

Every message comes from an MPOC (pat@acme.example), so each opens a P4 case and queues its
acknowledgement and the technicians' notice in the same transaction; the per-address
acknowledgement rate limit is raised so that all 10,000 acknowledgements are really queued, and
outbound delivery is off (nothing to deliver to), so the figures are those of ingest alone.
A fresh daemon and database serve each figure.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import platform
import pstats
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).resolve().parent / "drive.py"
HOST = "127.0.0.1"
SENDER = "pat@acme.example"  # primary MPOC of examples/directory.toml
BIG = 25 * 1024 * 1024
TARGETS = {"throughput": 250.0, "p99_at_rate_ms": 50.0, "rss_mb": 250.0}


# ---------------------------------------------------------------------------------------------
# The machine


def machine() -> dict[str, str]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return {
        "date": subprocess.run(["date"], capture_output=True, text=True, check=False).stdout.strip(),
        "nproc": subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip(),
        "cpu": model or platform.processor() or platform.machine(),
        "ram": memory,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "load_before": load,
    }


# ---------------------------------------------------------------------------------------------
# The daemon


def stop_process(process: subprocess.Popen[bytes], grace: float = 60.0) -> int:
    """SIGTERM, then SIGKILL after `grace` seconds; the exit status (a process we started, by its PID)."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)
    return process.returncode


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


class Serve:
    """`mailcase serve` on a fresh SQLite database in `workdir`; stopped by PID."""

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True)
        self.workdir = workdir
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCASE_")} | {
            "MAILCASE_DATABASE__URL": f"sqlite:///{workdir / 'mailcase.db'}",
            "MAILCASE_SMTP__HOST": HOST,
            "MAILCASE_SMTP__PORT": str(self.port),
            "MAILCASE_OUTBOUND__ENABLED": "false",
            "MAILCASE_AUTOREPLY__MAX_PER_HOUR": "1000000000",
            "MAILCASE_AUTOREPLY__MAX_PER_DAY": "1000000000",
        }
        self.process: subprocess.Popen[bytes] | None = None

    def _mailcase(self, *argv: str) -> None:
        subprocess.run(
            [sys.executable, "-m", "mailcase", "--config", str(REPO / "config.toml"), *argv],
            cwd=self.workdir, env=self.env, check=True, capture_output=True,
        )

    def start(self) -> None:
        self._mailcase("init")
        self._mailcase("directory", "import", str(REPO / "examples" / "directory.toml"))
        with (self.workdir / "serve.log").open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mailcase", "--config", str(REPO / "config.toml"), "serve"],
                cwd=self.workdir, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"mailcase serve exited at start; see {self.workdir / 'serve.log'}")
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), timeout=1) as probe:
                if probe.recv(3) == b"220":
                    return
            time.sleep(0.05)
        self.stop()
        raise SystemExit("mailcase serve did not open its SMTP port within 30 s")

    def peak_rss_mb(self) -> float:
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def cpu_seconds(self) -> float:
        """User plus system CPU the daemon has used so far (/proc/<pid>/stat), in seconds."""
        assert self.process is not None
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> int:
        assert self.process is not None
        return stop_process(self.process)

    def cases(self) -> int:
        with contextlib.closing(sqlite3.connect(self.workdir / "mailcase.db")) as connection:
            return int(connection.execute("SELECT count(*) FROM support_case").fetchone()[0])

    def queued_acks(self) -> int:
        with contextlib.closing(sqlite3.connect(self.workdir / "mailcase.db")) as connection:
            return int(connection.execute("SELECT count(*) FROM outbox WHERE kind = 'customer.ack'").fetchone()[0])


@contextlib.contextmanager
def serving(root: Path, name: str) -> Iterator[Serve]:
    daemon = Serve(root / name)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


def drive(port: int, *argv: str) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, str(DRIVER), "--port", str(port), "--mail-from", SENDER, "--json", *argv],
        capture_output=True, text=True, check=False,
    )
    if not completed.stdout.strip():
        raise SystemExit(f"drive.py failed: {completed.stderr}")
    return json.loads(completed.stdout)


# ---------------------------------------------------------------------------------------------
# The in-process profile


STAGES = ("parse", "decide", "store", "commit", "other")


class StageProfiler:
    """Attributes `ingest_one`'s time to stages by wrapping the pipeline's entry points.

    parse  = `parse_message`; decide = `Pipeline._facts` (the database lookups) and `decide`
    (the pure rules); store = the rest of `Pipeline._store` (raw insert, case, message,
    attachments, outbox rows, flushes); commit = `Session.commit`; other = the remainder of
    `ingest_one` (session set-up, logging). One cProfile per stage; the innermost stage owns
    the time, so the stages add up to the whole. Stage times are the thread's CPU time, so other
    load on the machine does not inflate them; the top functions come from a second, profiled pass.
    """

    def __init__(self, *, with_cprofile: bool) -> None:
        self.with_cprofile = with_cprofile
        self.profiles = {stage: cProfile.Profile() for stage in STAGES}
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.stack: list[tuple[str, float]] = []

    def _switch_in(self, stage: str) -> None:
        now = time.thread_time()
        if self.stack:
            outer, since = self.stack[-1]
            self.seconds[outer] += now - since
            if self.with_cprofile:
                self.profiles[outer].disable()
        self.stack.append((stage, time.thread_time()))
        if self.with_cprofile:
            self.profiles[stage].enable()

    def _switch_out(self) -> None:
        stage, since = self.stack.pop()
        if self.with_cprofile:
            self.profiles[stage].disable()
        self.seconds[stage] += time.thread_time() - since
        if self.stack:
            outer, _ = self.stack[-1]
            self.stack[-1] = (outer, time.thread_time())
            if self.with_cprofile:
                self.profiles[outer].enable()

    def wrap(self, stage: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def staged(*args: Any, **kwargs: Any) -> Any:
            self._switch_in(stage)
            try:
                return function(*args, **kwargs)
            finally:
                self._switch_out()

        return staged


@contextlib.contextmanager
def instrumented(profiler: StageProfiler) -> Iterator[None]:
    from sqlmodel import Session

    from mailcase.ingest import pipeline as module

    patches = [
        (module, "parse_message", profiler.wrap("parse", module.parse_message)),
        (module, "decide", profiler.wrap("decide", module.decide)),
        (module.Pipeline, "_facts", profiler.wrap("decide", module.Pipeline._facts)),
        (module.Pipeline, "_store", profiler.wrap("store", module.Pipeline._store)),
        (module.Pipeline, "ingest_one", profiler.wrap("other", module.Pipeline.ingest_one)),
        (Session, "commit", profiler.wrap("commit", Session.commit)),
    ]
    missing = object()
    saved = [(owner, name, vars(owner).get(name, missing)) for owner, name, _ in patches]
    for owner, name, replacement in patches:
        setattr(owner, name, replacement)
    try:
        yield
    finally:
        for owner, name, original in saved:
            if original is missing:
                delattr(owner, name)  # it was inherited: uncover the base class's again
            else:
                setattr(owner, name, original)


def profile_pipeline(root: Path, messages: int, top: int, database_url: str = "") -> dict[str, Any]:
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(DRIVER.parent))
    import drive as driver

    from mailcase.app import build_app
    from mailcase.clock import SystemClock
    from mailcase.config import load_config
    from mailcase.domain import Channel, RawMessage

    workdir = root / "profile"
    Serve(workdir)  # only for its directory; nothing is started
    environ = {"MAILCASE_DATABASE__URL": database_url or f"sqlite:///{workdir / 'mailcase.db'}",
               "MAILCASE_AUTOREPLY__MAX_PER_HOUR": "1000000000", "MAILCASE_AUTOREPLY__MAX_PER_DAY": "1000000000"}
    settings = load_config(REPO / "config.toml", environ)
    subprocess.run([sys.executable, "-m", "mailcase", "--config", str(REPO / "config.toml"), "init"],
                   env=os.environ | environ, check=True, capture_output=True, cwd=workdir)
    subprocess.run([sys.executable, "-m", "mailcase", "--config", str(REPO / "config.toml"), "directory", "import",
                    str(REPO / "examples" / "directory.toml")],
                   env=os.environ | environ, check=True, capture_output=True, cwd=workdir)
    app = build_app(settings, SystemClock())
    pipeline = app.pipeline()
    plan = driver.Plan(host=HOST, port=0, messages=messages, concurrency=1, size=driver.DEFAULT_SIZE, rate=0,
                       per_connection=1, mail_from=SENDER, rcpt_to=settings.smtp.support_address, timeout=1)
    filler = driver.make_filler(driver.DEFAULT_SIZE - len(driver.message_head(0, plan, "x" * 12)))

    def raws(run: str, count: int) -> list[RawMessage]:
        return [RawMessage(data=driver.build_message(n, plan, filler, run), channel=Channel.SMTP,
                           received_at=datetime.now(UTC), envelope_from=SENDER,
                           envelope_to=(settings.smtp.support_address,), source="bench")
                for n in range(count)]

    for raw in raws("warmupwarmup", 50):  # imports, caches, the first pages of every table
        pipeline.ingest_one(raw)
    # Wall clock per stage without the profiler's overhead, then the same with cProfile.
    timing = StageProfiler(with_cprofile=False)
    batch = raws("timingtiming", messages)
    started, cpu = time.perf_counter(), time.thread_time()
    with instrumented(timing):
        for raw in batch:
            pipeline.ingest_one(raw)
    elapsed, cpu = time.perf_counter() - started, time.thread_time() - cpu
    profiled = StageProfiler(with_cprofile=True)
    batch = raws("profileprofi", messages)
    with instrumented(profiled):
        for raw in batch:
            pipeline.ingest_one(raw)
    app.close()
    tops: dict[str, list[tuple[str, float, int]]] = {}
    for stage in STAGES:
        stats = pstats.Stats(profiled.profiles[stage], stream=io.StringIO())
        rows = []
        for (filename, line, name), (_cc, calls, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
            rows.append((f"{_short(filename)}:{line}({name})", tottime, calls))
        rows.sort(key=lambda row: row[1], reverse=True)
        tops[stage] = [(label, tottime / messages * 1e6, calls // messages or calls) for label, tottime, calls in rows[:top]]
    return {
        "messages": messages,
        "messages_per_s": round(messages / elapsed, 1),
        "messages_per_cpu_s": round(messages / cpu, 1),
        "per_message_us": {stage: round(timing.seconds[stage] / messages * 1e6) for stage in STAGES},
        "top": tops,
    }


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/lib/python3.11/", str(REPO) + "/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


# ---------------------------------------------------------------------------------------------
# Report


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def report(results: dict[str, Any]) -> str:
    lines = []
    m = results["machine"]
    lines.append(f"date      {m['date']}")
    lines.append(f"machine   nproc {m['nproc']}, {m['cpu']}, {m['ram']} RAM, Python {m['python']}, "
                 f"SQLite {m['sqlite']}, load average before {m['load_before']}")
    if "throughput" in results:
        t = results["throughput"]
        lines.append(
            f"throughput {t['messages_per_s']} msg/s ({t['ok']} of {t['messages']} accepted, {t['errors']} errors, "
            f"{t['concurrency']} connections x 1 message; {t['cases']} cases, {t['acks']} acknowledgements queued) "
            f"p50 {t['latency_ms']['p50']} ms p99 {t['latency_ms']['p99']} ms; "
            f"daemon CPU {t['daemon_cpu_ms_per_message']} ms/message, driver CPU {t['driver_cpu_s']} s "
            f"[target >= {TARGETS['throughput']:.0f} msg/s: {verdict(t['messages_per_s'] >= TARGETS['throughput'])}]"
        )
    if "rate" in results:
        r = results["rate"]
        lines.append(
            f"latency    at {r['offered_rate']} msg/s offered: p50 {r['latency_ms']['p50']} ms "
            f"p90 {r['latency_ms']['p90']} ms p99 {r['latency_ms']['p99']} ms max {r['latency_ms']['max']} ms "
            f"({r['ok']} of {r['messages']}, worst start lag {r['max_start_lag_ms']} ms) "
            f"[target p99 <= {TARGETS['p99_at_rate_ms']:.0f} ms: "
            f"{verdict(r['latency_ms']['p99'] <= TARGETS['p99_at_rate_ms'])}]"
        )
    if "big" in results:
        b = results["big"]
        lines.append(
            f"memory     one {b['message_bytes'] / 1024 / 1024:.1f} MB message: reply {'250' if b['ok'] else 'error'} "
            f"in {b['latency_ms']['max']} ms after DATA; daemon peak RSS {b['rss_before_mb']:.0f} MB at rest, "
            f"{b['rss_after_mb']:.0f} MB after [target < {TARGETS['rss_mb']:.0f} MB: "
            f"{verdict(b['rss_after_mb'] < TARGETS['rss_mb'])}]"
        )
    if "profile" in results:
        p = results["profile"]
        per = p["per_message_us"]
        total = sum(per.values())
        lines.append(f"profile    Pipeline.ingest_one in-process, {p['messages']} x 4 KB, one thread: "
                     f"{p['messages_per_s']} msg/s wall clock, {p['messages_per_cpu_s']} msg/s of CPU; "
                     f"{total} us of CPU per message by stage (thread CPU time, without the profiler):")
        for stage in STAGES:
            share = per[stage] / total * 100 if total else 0
            lines.append(f"  {stage:<7} {per[stage]:>6} us  {share:4.1f} %")
            for label, micros, calls in p["top"][stage]:
                lines.append(f"            {micros:8.1f} us  x{calls:<4} {label}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark inbound SMTP ingest against a real `mailcase serve`.")
    parser.add_argument("--messages", type=int, default=10_000, help="messages for the throughput run")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rate", type=float, default=100.0, help="offered msg/s for the latency run")
    parser.add_argument("--rate-messages", type=int, default=3_000)
    parser.add_argument("--big-size", type=int, default=BIG, help="bytes of the large message")
    parser.add_argument("--profile-messages", type=int, default=1_000)
    parser.add_argument("--top", type=int, default=6, help="functions listed per stage")
    parser.add_argument("--profile-database-url", default="",
                        help="profile on this (empty) database instead of a fresh SQLite file, e.g. a new PostgreSQL database")
    parser.add_argument("--only", choices=["throughput", "rate", "big", "profile"], action="append",
                        help="run only these parts (repeatable)")
    parser.add_argument("--quick", action="store_true", help="1,000 / 500 / 200 messages instead")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.rate_messages, args.profile_messages = 1_000, 500, 200
    parts = args.only or ["throughput", "rate", "big", "profile"]
    results: dict[str, Any] = {"machine": machine()}
    with tempfile.TemporaryDirectory(prefix="mailcase-bench-ingest-") as tmp:
        root = Path(tmp)
        if "throughput" in parts:
            with serving(root, "throughput") as daemon:
                cpu = daemon.cpu_seconds()
                result = drive(daemon.port, "--messages", str(args.messages), "--concurrency", str(args.concurrency))
                cpu = daemon.cpu_seconds() - cpu
                result |= {"cases": daemon.cases(), "acks": daemon.queued_acks(), "rss_mb": daemon.peak_rss_mb(),
                           "daemon_cpu_ms_per_message": round(cpu / max(1, result["ok"]) * 1000, 2)}
            results["throughput"] = result
        if "rate" in parts:
            with serving(root, "rate") as daemon:
                results["rate"] = drive(daemon.port, "--messages", str(args.rate_messages),
                                        "--concurrency", str(args.concurrency), "--rate", str(args.rate))
        if "big" in parts:
            with serving(root, "big") as daemon:
                before = daemon.peak_rss_mb()
                result = drive(daemon.port, "--messages", "1", "--concurrency", "1", "--size", str(args.big_size))
                result |= {"rss_before_mb": before, "rss_after_mb": daemon.peak_rss_mb(), "cases": daemon.cases()}
            results["big"] = result
        if "profile" in parts:
            results["profile"] = profile_pipeline(root, args.profile_messages, args.top, args.profile_database_url)
    print(json.dumps(results, indent=2) if args.json else report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
