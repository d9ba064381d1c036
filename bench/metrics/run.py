"""Benchmark (not a test) of what observing `mailcase serve` costs ingest (issue 15, "Speed": scraping /metrics
every 5 s while ingesting at full speed changes the ingest rate by less than 2 %). It never talks to anything
but 127.0.0.1.

    .venv/bin/python bench/metrics/run.py            # 3 rounds of each variant, ~4 minutes on 2 cores
    .venv/bin/python bench/metrics/run.py --quick    # 1 round of each, smaller, for a first look

Three variants, side by side in one run and interleaved round by round (the order rotates every round,
so a neighbour's load on the shared machine falls on every variant alike):

* `off`     — the HTTP endpoint off: the daemon as before issue 15 (the counters are still counted);
* `on`      — the endpoint on, nobody asking it (its health check runs every 30 s, the default);
* `scraped` — the endpoint on and /metrics fetched every 5 s for the whole round, as Prometheus would.

Each round is a fresh daemon on a fresh SQLite database, driven by bench/ingest/drive.py at full speed
(8 connections, one 4 KB message per connection, every message from an MPOC so each opens a case and
queues its acknowledgement; delivery off). Reported: msg/s per round, the median per variant, the
ratios scraped/on and on/off per round and their medians, and the scrape durations.

On a shared 2-core machine the rounds' rates swing by more than the 2 % to be shown, so the run also
measures what a scrape costs the daemon in CPU (the `cost` figure), which load does not blur much: after
a round, 200 scrapes back to back against the daemon (its CPU from /proc), plus the database read a
scrape makes once per cache period (store/health.desk_gauges, timed in this process against the same
database). Its share of the daemon's CPU while ingesting at full speed bounds the loss of ingest rate
from above (it counts every CPU millisecond of scraping as taken from ingest).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ingest"))

from run import HOST, REPO, Serve, drive, free_port, machine

sys.path.insert(0, str(REPO))

VARIANTS = ("off", "on", "scraped")
SCRAPE_SECONDS = 5.0


@contextlib.contextmanager
def daemon(root: Path, name: str, *, endpoint: bool) -> Iterator[tuple[Serve, int]]:
    serve = Serve(root / name)
    http_port = free_port()
    if endpoint:
        serve.env |= {"MAILCASE_HTTP__ENABLED": "true", "MAILCASE_HTTP__PORT": str(http_port)}
    serve.start()
    try:
        yield serve, http_port
    finally:
        serve.stop()


class Scraper(threading.Thread):
    """GET /metrics every SCRAPE_SECONDS until stopped; keeps each scrape's duration and size."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.url = f"http://{HOST}:{port}/metrics"
        self.stopped = threading.Event()
        self.seconds: list[float] = []
        self.bytes = 0

    def run(self) -> None:
        while not self.stopped.is_set():
            started = time.monotonic()
            with urllib.request.urlopen(self.url, timeout=30) as response:
                self.bytes = len(response.read())
            self.seconds.append(time.monotonic() - started)
            self.stopped.wait(max(0.0, SCRAPE_SECONDS - (time.monotonic() - started)))


def one_round(root: Path, variant: str, round_no: int, messages: int) -> dict[str, Any]:
    with daemon(root, f"{variant}-{round_no}", endpoint=variant != "off") as (serve, http_port):
        scraper = Scraper(http_port) if variant == "scraped" else None
        if scraper is not None:
            scraper.start()
        cpu = serve.cpu_seconds()
        result = drive(serve.port, "--messages", str(messages), "--concurrency", "8")
        cpu = serve.cpu_seconds() - cpu
        if scraper is not None:
            scraper.stopped.set()
            scraper.join()
        cases = serve.cases()
    timings = scraper.seconds if scraper is not None else []
    return {
        "variant": variant,
        "round": round_no,
        "messages_per_s": result["messages_per_s"],
        "ok": result["ok"],
        "cases": cases,
        "p99_ms": result["latency_ms"]["p99"],
        "daemon_cpu_s": round(cpu, 2),
        "scrapes": len(scraper.seconds) if scraper else 0,
        "scrape_ms_median": round(statistics.median(timings) * 1000, 1) if timings else None,
        "scrape_ms_max": round(max(timings) * 1000, 1) if timings else None,
        "scrape_bytes": scraper.bytes if scraper else 0,
    }


def get_metrics(port: int) -> int:
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=30) as response:
        return len(response.read())


def scrape_cost(root: Path, messages: int, scrapes: int = 200) -> dict[str, Any]:
    """CPU a scrape costs the daemon, against its share of the daemon's CPU while ingesting at full speed."""
    from datetime import UTC, datetime

    from mailcase.observe.metrics import DB_CACHE_SECONDS
    from mailcase.store.engine import make_engine
    from mailcase.store.health import desk_gauges, reader

    with daemon(root, "cost", endpoint=True) as (serve, http_port):
        cpu, started = serve.cpu_seconds(), time.monotonic()
        result = drive(serve.port, "--messages", str(messages), "--concurrency", "8")
        ingest_cpu, elapsed = serve.cpu_seconds() - cpu, time.monotonic() - started
        get_metrics(http_port)  # warm: the first scrape reads the database
        cpu = serve.cpu_seconds()
        for _ in range(scrapes):
            get_metrics(http_port)
        per_scrape = (serve.cpu_seconds() - cpu) / scrapes
        engine = reader(make_engine(serve.env["MAILCASE_DATABASE__URL"]), timeout=2.0)
        reads = 20
        clock = time.process_time()
        for _ in range(reads):
            gauges = desk_gauges(engine, now=datetime.now(UTC), timeout=2.0)
        per_read = (time.process_time() - clock) / reads
        engine.dispose()
    daemon_cpu_per_s = ingest_cpu / elapsed
    every_5s = per_scrape + per_read * SCRAPE_SECONDS / DB_CACHE_SECONDS
    return {
        "messages": messages,
        "cases_in_database": sum(gauges.open_cases.values()),
        "ingest_messages_per_s": result["messages_per_s"],
        "daemon_cpu_per_s_ingesting": round(daemon_cpu_per_s, 3),
        "cpu_ms_per_scrape_cached": round(per_scrape * 1000, 2),
        "cpu_ms_per_database_read": round(per_read * 1000, 2),
        "cpu_ms_per_5s_of_scraping": round(every_5s * 1000, 2),
        "share_of_daemon_cpu": round(every_5s / SCRAPE_SECONDS / daemon_cpu_per_s, 5),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round of each variant, 2,000 messages")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--messages", type=int, default=6000, help="messages per round (default 6,000)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--cost-only", action="store_true", help="only the CPU cost of a scrape")
    args = parser.parse_args(argv)
    rounds, messages = (1, 2000) if args.quick else (args.rounds, args.messages)
    about = machine()
    rows: list[dict[str, Any]] = []
    with TemporaryDirectory(prefix="mailcase-bench-metrics-") as tmp:
        cost = scrape_cost(Path(tmp), messages)
        print(json.dumps({"cost": cost}), file=sys.stderr)
        if args.cost_only:
            print(json.dumps({"machine": about, "cost": cost}, indent=2))
            return 0
        for round_no in range(rounds):
            order = VARIANTS[round_no % 3 :] + VARIANTS[: round_no % 3]
            for variant in order:
                row = one_round(Path(tmp), variant, round_no, messages)
                rows.append(row)
                print(json.dumps(row), file=sys.stderr)
    rate = {v: [r["messages_per_s"] for r in rows if r["variant"] == v] for v in VARIANTS}
    by_round = {(r["variant"], r["round"]): r["messages_per_s"] for r in rows}
    scraped_vs_on = [by_round[("scraped", n)] / by_round[("on", n)] for n in range(rounds)]
    on_vs_off = [by_round[("on", n)] / by_round[("off", n)] for n in range(rounds)]
    summary = {
        "machine": about,
        "messages_per_round": messages,
        "rounds": rows,
        "median_messages_per_s": {v: round(statistics.median(rate[v]), 1) for v in VARIANTS},
        "ratio_scraped_to_on": [round(x, 3) for x in scraped_vs_on],
        "ratio_on_to_off": [round(x, 3) for x in on_vs_off],
        "median_ratio_scraped_to_on": round(statistics.median(scraped_vs_on), 3),
        "median_ratio_on_to_off": round(statistics.median(on_vs_off), 3),
        "cost": cost,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"machine: {about}")
    print(f"{messages} messages per round, 8 connections, one 4 KB message per connection; /metrics every 5 s")
    print(f"{'round':>5} {'variant':>8} {'msg/s':>8} {'p99 ms':>8} {'cpu s':>7} {'scrapes':>8} {'scrape ms':>10}")
    for row in rows:
        scrape = "" if row["scrape_ms_median"] is None else f"{row['scrape_ms_median']}/{row['scrape_ms_max']}"
        print(f"{row['round']:>5} {row['variant']:>8} {row['messages_per_s']:>8} {row['p99_ms']:>8} "
              f"{row['daemon_cpu_s']:>7} {row['scrapes']:>8} {scrape:>10}")  # fmt: skip
    print("median msg/s: " + ", ".join(f"{v} {r}" for v, r in summary["median_messages_per_s"].items()))
    print(f"scraped/on per round {summary['ratio_scraped_to_on']} median {summary['median_ratio_scraped_to_on']}")
    print(f"on/off per round {summary['ratio_on_to_off']} median {summary['median_ratio_on_to_off']}")
    print(f"cost of scraping every 5 s: {cost['cpu_ms_per_5s_of_scraping']} ms CPU "
          f"({cost['cpu_ms_per_scrape_cached']} ms a scrape, {cost['cpu_ms_per_database_read']} ms a database read "
          f"every 10 s over {cost['cases_in_database']} open cases) = {cost['share_of_daemon_cpu'] * 100:.2f} % "
          f"of the daemon's CPU while ingesting ({cost['daemon_cpu_per_s_ingesting']} CPU s/s)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
