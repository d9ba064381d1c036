"""Benchmark (not a test): how soon mail that arrives while the IMAP poller is busy becomes a case, during and after a 2,000-message backlog.

    .venv/bin/python bench/imap/idle_race.py [--messages 2000] [--rounds 10] [--burst 150]

The poller is mailcase's own (`App.mailbox_poller`, as `serve` builds it) running in a thread of
this process, with the real pipeline on SQLite in a temporary directory, against a private
Dovecot (tests/support/dovecot.py). Timing is taken in-process: a message's "done" instant is
when the pipeline returned for it (committed), so no polling of the database blurs the figures.

Phase 1 (backlog): 2,000 messages are in the INBOX when the poller starts; while it drains them,
one probe message is APPENDed every 0.25 s on another connection.
Phase 2 (the race): 10 times, with the poller idle, a burst of 150 messages is APPENDed, and as
soon as the first of them is stored (the first batch is running) one probe is APPENDed, then
nothing more: before the fix, that probe waited for the next new mail or the 25-minute IDLE
renewal.

For each probe it prints the APPEND -> case time, and the pickup time: from the later of its
APPEND and the moment the message before it (in UID order: the poller stores mail oldest first,
so a probe queues behind the backlog) was stored, until it was stored. Target: p99 of the pickup
under 2 s. The generated directory and messages come from bench/imap/run.py.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(HERE))

from run import APPEND_CHUNK, directory_toml, machine, message, percentile  # noqa: E402

from mailcase.app import App  # noqa: E402
from mailcase.clock import SystemClock  # noqa: E402
from mailcase.config import load_config  # noqa: E402
from mailcase.domain import RawMessage  # noqa: E402
from mailcase.rules.directory_format import load_directory  # noqa: E402
from mailcase.store.directory import import_directory  # noqa: E402
from mailcase.store.engine import make_engine, transaction, upgrade_schema  # noqa: E402
from support.dovecot import DovecotServer, dovecot_binary  # noqa: E402


class Recorder:
    """Wraps the pipeline: the monotonic instant each Message-ID was stored."""

    def __init__(self, ingest: object) -> None:
        self._ingest = ingest
        self.done: dict[str, float] = {}
        self.changed = threading.Condition()

    def __call__(self, raw: RawMessage) -> object:
        result = self._ingest(raw)  # type: ignore[operator]
        head = raw.data[:600].decode("ascii", "replace")
        message_id = head.split("Message-ID: <", 1)[1].split(">", 1)[0]
        with self.changed:
            self.done[message_id] = time.monotonic()
            self.changed.notify_all()
        return result

    def wait_for(self, message_id: str, timeout: float = 120.0) -> float:
        deadline = time.monotonic() + timeout
        with self.changed:
            while message_id not in self.done:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"{message_id} not stored after {timeout} s")
                self.changed.wait(left)
            return self.done[message_id]


def ident(tag: str, number: int) -> str:
    return f"{tag}-{number}.bench@acme.example"


def summary(name: str, values: list[float]) -> str:
    return (
        f"{name}: p50 {statistics.median(values) * 1000:.0f} ms, p99 {percentile(values, 0.99) * 1000:.0f} ms, "
        f"max {max(values) * 1000:.0f} ms over {len(values)}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000, help="backlog size (default 2000)")
    parser.add_argument("--rounds", type=int, default=10, help="race rounds after the backlog (default 10)")
    parser.add_argument("--burst", type=int, default=150, help="messages per race round (default 150)")
    parser.add_argument("--batch-size", type=int, default=100, help="[[imap]] batch_size (default 100)")
    options = parser.parse_args()
    binary = dovecot_binary()
    if binary is None:
        print("Dovecot is not installed (apt-get install dovecot-imapd)", file=sys.stderr)
        return 1
    print(f"machine: {machine()}")
    print(f"date: {datetime.now(UTC).isoformat(timespec='seconds')}")
    workdir = Path(tempfile.mkdtemp(prefix="mailcase-idle-race-"))
    dovecot = DovecotServer(binary, workdir / "dovecot.log")
    dovecot.start()
    stop = threading.Event()
    thread: threading.Thread | None = None
    try:
        config = workdir / "config.toml"
        config.write_text(
            (REPO / "config.toml").read_text()
            + f'\n[[imap]]\nname = "bench"\nhost = "{dovecot.host}"\nport = {dovecot.port}\ntls = "none"\n'
            f'user = "{dovecot.user}"\npassword = "{dovecot.password}"\npoll_interval_seconds = 600\n'
            f"batch_size = {options.batch_size}\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCASE_")}
        env["MAILCASE_DATABASE__URL"] = f"sqlite:///{workdir / 'mailcase.db'}"
        settings = load_config(config, env)
        engine = make_engine(settings.database.url)
        upgrade_schema(engine)
        with transaction(engine) as session:
            import_directory(load_directory(directory_toml()), session=session)
        app = App(settings=settings, engine=engine, clock=SystemClock())
        recorder = Recorder(app.pipeline())
        (box,) = settings.imap

        backlog = [message("backlog", i, 4096) for i in range(options.messages)]
        with dovecot.client() as client:
            for at in range(0, len(backlog), APPEND_CHUNK):
                client.multiappend("INBOX", backlog[at : at + APPEND_CHUNK])
        # Every message in UID order with its APPEND instant (the backlog's: before the start).
        order: list[tuple[str, float]] = [(ident("backlog", i), 0.0) for i in range(options.messages)]
        probes_backlog: list[str] = []
        probes_race: list[str] = []

        poller = app.mailbox_poller(box, ingest=recorder, stop=stop)
        started = time.monotonic()
        thread = threading.Thread(target=poller.run, name="imap-bench", daemon=True)
        thread.start()
        with dovecot.client() as client:
            # Phase 1: a probe every 0.25 s while the backlog drains.
            number = 0
            while ident("backlog", options.messages - 1) not in recorder.done:
                client.append("INBOX", message("probe", number, 4096))
                order.append((ident("probe", number), time.monotonic()))
                probes_backlog.append(ident("probe", number))
                number += 1
                time.sleep(0.25)
            for probe in probes_backlog:
                recorder.wait_for(probe)
            drained = recorder.done[ident("backlog", options.messages - 1)] - started
            time.sleep(1.0)
            # Phase 2: a burst, then one probe while its first batch is being stored.
            for round_ in range(options.rounds):
                burst = [message(f"burst{round_}", i, 4096) for i in range(options.burst)]
                for at in range(0, len(burst), APPEND_CHUNK):
                    client.multiappend("INBOX", burst[at : at + APPEND_CHUNK])
                order.extend((ident(f"burst{round_}", i), time.monotonic()) for i in range(options.burst))
                recorder.wait_for(ident(f"burst{round_}", 0))
                client.append("INBOX", message("race", round_, 4096))
                order.append((ident("race", round_), time.monotonic()))
                probes_race.append(ident("race", round_))
                recorder.wait_for(ident("race", round_), timeout=120.0)
                time.sleep(0.5)

        appended = dict(order)
        previous = {mid: order[i - 1][0] for i, (mid, _at) in enumerate(order) if i}

        def pickup(mid: str) -> float:
            ready = max(appended[mid], recorder.done[previous[mid]])
            return recorder.done[mid] - ready

        def raw(mid: str) -> float:
            return recorder.done[mid] - appended[mid]

        total = options.messages + len(probes_backlog)
        print(f"backlog: {options.messages} messages stored in {drained:.1f} s ({options.messages / drained:.0f} msg/s), "
              f"{len(probes_backlog)} probes appended meanwhile, {total} stored in all")  # fmt: skip
        print("backlog probes, " + summary("APPEND -> case (queued behind the backlog)", [raw(p) for p in probes_backlog]))
        print("backlog probes, " + summary("pickup", [pickup(p) for p in probes_backlog]))
        print("race probes, " + summary("APPEND -> case", [raw(p) for p in probes_race]))
        print("race probes, " + summary("pickup", [pickup(p) for p in probes_race]))
        every = [pickup(p) for p in probes_backlog + probes_race]
        print(f"all probes, {summary('pickup', every)} (target: p99 under 2 s)")
        stored = len(recorder.done)
        expected = len(order)
        print(f"cases: {stored} messages stored of {expected} appended; INBOX left: {len(dovecot.uids('INBOX'))}")
        return 0 if stored == expected else 1
    finally:
        stop.set()
        if thread is not None:
            thread.join(timeout=30)
        dovecot.close()
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
