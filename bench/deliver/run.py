"""Benchmark (not a test): the CPU the delivery process spends per notice (issue 16), measured in-process with
`time.thread_time()` and cProfile; it only talks to 127.0.0.1 (a sink relay it starts) and removes what it made.

    .venv/bin/python bench/deliver/run.py                          # SQLite, 300 customer messages
    .venv/bin/python bench/deliver/run.py --database postgresql    # a throwaway database on 127.0.0.1:5432
    .venv/bin/python bench/deliver/run.py --profile 25             # and the 25 costliest functions
    .venv/bin/python bench/deliver/run.py --code /tmp/base         # measure another checkout's mailcase
    .venv/bin/python bench/deliver/run.py --relay aiosmtpd         # bench/ingest/sink.py instead of smtp-sink
    .venv/bin/python bench/deliver/run.py --against /tmp/base --rounds 5   # alternate two checkouts, medians

It creates a database (`mailcase init`, a directory like bench/ingest/sidebyside.py's), starts an outbound
relay in its own process (Postfix's `smtp-sink`, which advertises PIPELINING as Postfix does, or the bare
aiosmtpd sink of bench/ingest/sink.py, which does not), logs as the delivery process does (`[logging]`
level INFO, to a file), ingests the customer messages
in-process (each queues 3 notices: the acknowledgement and a new-case notice to each of two technicians), then
runs the delivery process's passes in-process, the way `mailcase serve`'s delivery worker does (one renderer
and one kept-open transport for the whole run; a look with `any_due` before each pass), in two shapes:

* `trickle`: one customer message ingested, then its pass (3 notices): delivery keeping up with ingest;
* `drain`: all the messages ingested, then passes of `[outbound] batch_size` until none is due (a backlog).

Only the delivery calls are timed (thread CPU of this thread; the sink and the database server are other
processes). `--against PATH` runs this checkout and PATH (e.g. `git archive <commit> | tar -x -C PATH`)
alternately, each run in its own process, and prints the medians and their ratio: the machine is shared, so
ratios of alternating runs are what count.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import pstats
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SINK = REPO / "bench" / "ingest" / "sink.py"
sys.path.insert(0, str(SINK.parent))
import sidebyside  # noqa: E402  (the same directory and messages as the ingest benchmark)

SMTP_SINK = Path("/usr/sbin/smtp-sink")
HOST = "127.0.0.1"
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
SUPPORT = sidebyside.SUPPORT
CONTACTS = 50


def directory_toml() -> str:
    return sidebyside.directory_toml(CONTACTS)


def message(run: str, number: int) -> bytes:
    """A 4 KB multipart/alternative customer message opening a case (bench/ingest/sidebyside.py's)."""
    return sidebyside.message(run, number, contacts=CONTACTS)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=300, help="customer messages per shape (3 notices each)")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--profile", type=int, default=0, help="print the N costliest functions (a second run)")
    parser.add_argument("--shapes", default="trickle,drain")
    parser.add_argument("--code", type=Path, default=REPO, help="the checkout whose mailcase is measured")
    parser.add_argument("--relay", choices=("smtp-sink", "aiosmtpd"), default="smtp-sink" if SMTP_SINK.exists() else "aiosmtpd")
    parser.add_argument("--json", action="store_true", help="one JSON line instead of text")
    parser.add_argument("--against", type=Path, help="another checkout: alternate runs of both, print medians")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each checkout with --against")
    args = parser.parse_args()
    if args.against is not None:
        compare(args)
        return
    sys.path.insert(0, str(args.code.resolve()))
    with tempfile.TemporaryDirectory(prefix="mailcase-deliver-bench-") as tmp:
        result = run(Path(tmp), args)
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))


def compare(args: argparse.Namespace) -> None:
    """Alternate runs of this checkout and `--against`, each in a process of its own; medians, ratio."""
    codes = {"before": args.against.resolve(), "after": args.code.resolve()}
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in codes}
    passed = ["--messages", str(args.messages), "--database", args.database, "--shapes", args.shapes,
              "--relay", args.relay]  # fmt: skip
    for _ in range(args.rounds):
        for side, code in codes.items():
            argv = [sys.executable, str(Path(__file__).resolve()), "--code", str(code), "--json", *passed]
            output = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
            runs[side].append(json.loads(output.strip().splitlines()[-1]))
            print(f"{side}: {runs[side][-1]}", flush=True)
    for shape in args.shapes.split(","):
        key = f"{shape}_us_per_notice"
        before = statistics.median(run[key] for run in runs["before"])
        after = statistics.median(run[key] for run in runs["after"])
        print(f"{shape}: µs of CPU per notice, median of {args.rounds}: before {before:.0f} "
              f"{sorted(run[key] for run in runs['before'])}, after {after:.0f} "
              f"{sorted(run[key] for run in runs['after'])}, ratio {after / before:.2f}")  # fmt: skip


def run(workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    database = ""
    if args.database == "postgresql":
        import sqlalchemy as sa

        database = f"mailcase_deliver_bench_{uuid.uuid4().hex[:10]}"
        admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{database}"'))
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"
    else:
        url = f"sqlite:///{workdir / 'mailcase.db'}"
    if args.relay == "smtp-sink":
        relay_port = free_port()
        argv = [str(SMTP_SINK), *(["-u", "nobody"] if os.geteuid() == 0 else []), f"{HOST}:{relay_port}", "64"]
        sink = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        wait_for_port(relay_port)
    else:
        sink = subprocess.Popen([sys.executable, str(SINK), "--port", "0"], stdout=subprocess.PIPE, text=True)
        assert sink.stdout is not None
        relay_port = int(sink.stdout.readline().split()[1])
    try:
        return measure(workdir, url, relay_port, args)
    finally:
        sink.terminate()
        sink.wait(10)
        if database:
            import sqlalchemy as sa

            admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
            with admin.connect() as connection:
                connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1) as probe:
            if probe.recv(3) == b"220":
                return
        time.sleep(0.05)
    raise SystemExit(f"no relay on port {port}")


def measure(workdir: Path, url: str, relay_port: int, args: argparse.Namespace) -> dict[str, Any]:
    from mailcase.app import build_app
    from mailcase.clock import SystemClock
    from mailcase.config import load_config
    from mailcase.domain import Channel, RawMessage
    from mailcase.logs import configure_logging
    from mailcase.notify.outbox import deliver_due
    from mailcase.store.outbox import any_due

    environ = {
        "MAILCASE_DATABASE__URL": url,
        "MAILCASE_OUTBOUND__ENABLED": "true",
        "MAILCASE_OUTBOUND__HOST": HOST,
        "MAILCASE_OUTBOUND__PORT": str(relay_port),
        "MAILCASE_AUTOREPLY__MAX_PER_HOUR": "1000000000",
        "MAILCASE_AUTOREPLY__MAX_PER_DAY": "1000000000",
    }
    config = args.code.resolve() / "config.toml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCASE_")} | environ
    env["PYTHONPATH"] = str(args.code.resolve())
    (workdir / "directory.toml").write_text(directory_toml())
    for argv in (["init"], ["directory", "import", str(workdir / "directory.toml")]):
        subprocess.run([sys.executable, "-m", "mailcase", "--config", str(config), *argv], cwd=workdir, env=env,
                       check=True, capture_output=True)
    settings = load_config(config, environ)
    configure_logging(settings.logging.level, file=str(workdir / "mailcase.log"), format=settings.logging.format)
    app = build_app(settings, SystemClock())
    pipeline = app.pipeline()
    transport = app.transport()
    transport.keep_open = True
    renderer = app.renderer()
    batch_size = settings.outbound.batch_size

    def ingest(run: str, number: int) -> None:
        pipeline.ingest_one(RawMessage(data=message(run, number), channel=Channel.SMTP, received_at=datetime.now(UTC),
                                       envelope_from=sidebyside.contact(number, CONTACTS), envelope_to=(SUPPORT,),
                                       source="bench"))

    def one_pass(housekeeping: bool) -> int:
        if not any_due(app.engine, app.clock.now()):
            return 0
        report = deliver_due(app.engine, now=app.clock.now(), transport=transport, renderer=renderer,
                             settings=settings, secret=app.secret, limit=batch_size, clock=app.clock.now,
                             housekeeping=housekeeping)
        return report.sent + report.retried + report.failed

    def trickle(run: str, count: int, profiler: cProfile.Profile | None) -> tuple[float, int]:
        cpu, notices = 0.0, 0
        for number in range(count):
            ingest(run, number)
            started = time.thread_time()
            if profiler:
                profiler.enable()
            notices += one_pass(housekeeping=number % 50 == 0)
            if profiler:
                profiler.disable()
            cpu += time.thread_time() - started
        return cpu, notices

    def drain(run: str, count: int, profiler: cProfile.Profile | None) -> tuple[float, int]:
        for number in range(count):
            ingest(run, number)
        started = time.thread_time()
        if profiler:
            profiler.enable()
        notices, full = 0, True
        while sent := one_pass(housekeeping=full):
            notices += sent
            full = False
        if profiler:
            profiler.disable()
        return time.thread_time() - started, notices

    shapes = {"trickle": trickle, "drain": drain}
    import mailcase

    result: dict[str, Any] = {"code": str(Path(mailcase.__file__).parents[1]), "database": args.database,
                              "relay": args.relay}
    trickle(uuid.uuid4().hex[:8], 20, None)  # imports, compiled templates, the relay connection
    for name in args.shapes.split(","):
        cpu, notices = shapes[name](uuid.uuid4().hex[:8], args.messages, None)
        result[f"{name}_us_per_notice"] = round(cpu / max(notices, 1) * 1e6)
        result[f"{name}_notices"] = notices
    if args.profile:
        for name in args.shapes.split(","):
            profiler = cProfile.Profile(time.thread_time)  # CPU, not waits for the relay
            shapes[name](uuid.uuid4().hex[:8], args.messages, profiler)
            result[f"{name}_profile"] = "\n" + top_functions(profiler, args.profile)
    transport.close()
    app.close()
    return result


def top_functions(profiler: cProfile.Profile, top: int) -> str:
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


if __name__ == "__main__":
    main()
