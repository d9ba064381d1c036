"""SMTP load driver for the inbound edge: sends N generated messages over C concurrent connections and reports throughput, latency and errors; it never talks to anything but a loopback address.

Latency is what a sending MTA waits for once it has handed over the whole message: from the
moment the final `.` of DATA is written to the socket until the server's final reply arrives,
i.e. the time our pipeline needs to commit (SPEC.md §3: 250 only after the commit).

Examples (against `mailcase serve` listening on 127.0.0.1:2525):

    python bench/ingest/drive.py --messages 5000 --concurrency 8            # closed loop, msg/s
    python bench/ingest/drive.py --messages 3000 --concurrency 8 --rate 100 # p99 at 100 msg/s
    python bench/ingest/drive.py --messages 1 --concurrency 1 --size 26214400  # one 25 MB message
    python bench/ingest/drive.py --json ...                                 # one JSON object

Every message has its own Message-ID, subject and first body line, so the server's dedupe
(SPEC.md §3, "Exactly once") treats each as new mail.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import smtplib
import socket
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

DEFAULT_SIZE = 4096
FILLER_LINE = b"The quick brown fox jumps over the lazy dog while the desk reads the logs.\r\n"


@dataclass(frozen=True, slots=True)
class Plan:
    host: str
    port: int
    messages: int
    concurrency: int
    size: int
    rate: float
    per_connection: int
    mail_from: str
    rcpt_to: str
    timeout: float


@dataclass
class Tally:
    """What the workers observed; guarded by `lock`."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    max_start_lag: float = 0.0

    def ok(self, latency: float) -> None:
        with self.lock:
            self.latencies.append(latency)
            self.sent += 1

    def error(self, kind: str, count: int = 1) -> None:
        with self.lock:
            self.errors[kind] += count

    def lag(self, seconds: float) -> None:
        with self.lock:
            self.max_start_lag = max(self.max_start_lag, seconds)


class Dispatcher:
    """Hands out message numbers; with a rate, also the instant each message is due (open loop)."""

    def __init__(self, total: int, rate: float, start: float) -> None:
        self._total = total
        self._rate = rate
        self._start = start
        self._next = 0
        self._lock = threading.Lock()

    def take(self, count: int) -> list[tuple[int, float]]:
        """Up to `count` (number, due instant) pairs; empty when every message is handed out."""
        with self._lock:
            first = self._next
            last = min(self._total, first + count)
            self._next = last
        return [(n, self._due(n)) for n in range(first, last)]

    def _due(self, number: int) -> float:
        return self._start + number / self._rate if self._rate > 0 else self._start


def loopback_host(host: str) -> str:
    """`host` as an IPv4 loopback address (127.0.0.0/8); anything else is refused."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise SystemExit(f"refusing {host!r}: give a 127.x.x.x address (loopback only)") from None
    if not (address.version == 4 and address.is_loopback):
        raise SystemExit(f"refusing {host!r}: only 127.0.0.0/8 (loopback) targets are allowed")
    return str(address)


def message_head(number: int, plan: Plan, run_id: str) -> bytes:
    """Headers and a first body line that make message `number` unique (Message-ID and content)."""
    return (
        f"From: Bench Sender <{plan.mail_from}>\r\n"
        f"To: {plan.rcpt_to}\r\n"
        f"Subject: Bench message {number} of run {run_id}\r\n"
        f"Message-ID: <bench-{run_id}-{number}@bench.invalid>\r\n"
        "Date: Wed, 25 Nov 2026 16:00:00 -0700\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
        f"Message {number} of run {run_id}.\r\n"
    ).encode("ascii")


def build_message(number: int, plan: Plan, filler: bytes, run_id: str) -> bytes:
    """A plain-text message of about `plan.size` bytes ending in CRLF."""
    return message_head(number, plan, run_id) + filler


def make_filler(size: int) -> bytes:
    """Whole CRLF lines (never starting with a dot, so no dot-stuffing is needed) of `size` bytes."""
    lines = size // len(FILLER_LINE) + 1
    body = FILLER_LINE * lines
    cut = body[:size]
    end = cut.rfind(b"\r\n")
    return cut[: end + 2] if end >= 0 else b""


def send_one(client: smtplib.SMTP, plan: Plan, data: bytes) -> tuple[int, bytes, float]:
    """One transaction on an open session; returns the final reply and its latency in seconds."""
    # Declare the size, as a real MTA does when SIZE is advertised (RFC 1870).
    options = [f"SIZE={len(data) + 3}"] if client.has_extn("size") else []
    code, reply = client.mail(plan.mail_from, options)
    if code != 250:
        return code, reply, 0.0
    code, reply = client.rcpt(plan.rcpt_to)
    if code not in (250, 251):
        client.rset()
        return code, reply, 0.0
    code, reply = client.docmd("DATA")
    if code != 354:
        return code, reply, 0.0
    client.send(data + b".\r\n")  # `data` ends in CRLF and no line starts with a dot
    handed_over = time.perf_counter()
    code, reply = client.getreply()
    return code, reply, time.perf_counter() - handed_over


def worker(plan: Plan, dispatcher: Dispatcher, tally: Tally, filler: bytes, run_id: str) -> None:
    while True:
        batch = dispatcher.take(plan.per_connection)
        if not batch:
            return
        pace(batch[0][1], tally)  # a new connection per arrival, as a sending MTA would open
        done = 0
        try:
            with smtplib.SMTP(plan.host, plan.port, local_hostname="bench.invalid",
                              timeout=plan.timeout) as client:
                client.ehlo()
                for index, (number, due) in enumerate(batch):
                    if index:
                        pace(due, tally)
                    code, reply, latency = send_one(client, plan, build_message(number, plan, filler, run_id))
                    done += 1
                    if code == 250:
                        tally.ok(latency)
                    else:
                        tally.error(f"{code} {reply.decode('ascii', 'replace')[:60]}")
        except (smtplib.SMTPException, OSError) as exc:
            if done < len(batch):
                tally.error(type(exc).__name__, len(batch) - done)


def pace(due: float, tally: Tally) -> None:
    """Open-loop pacing: wait until a message is due, or record how late it starts."""
    wait = due - time.perf_counter()
    if wait > 0:
        time.sleep(wait)
    else:
        tally.lag(-wait)


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending sequence (0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def run(plan: Plan) -> dict[str, object]:
    run_id = uuid.uuid4().hex[:12]
    filler = make_filler(max(0, plan.size - len(message_head(0, plan, run_id))))
    tally = Tally()
    cpu_before = time.process_time()
    start = time.perf_counter()
    dispatcher = Dispatcher(plan.messages, plan.rate, start)
    threads = [
        threading.Thread(target=worker, args=(plan, dispatcher, tally, filler, run_id), daemon=True)
        for _ in range(plan.concurrency)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_before
    latencies = sorted(tally.latencies)
    return {
        "target": f"{plan.host}:{plan.port}",
        "messages": plan.messages,
        "concurrency": plan.concurrency,
        "messages_per_connection": plan.per_connection,
        "message_bytes": len(build_message(0, plan, filler, run_id)),
        "offered_rate": plan.rate or None,
        "ok": tally.sent,
        "errors": sum(tally.errors.values()),
        "error_kinds": dict(tally.errors.most_common()),
        "elapsed_s": round(elapsed, 3),
        "messages_per_s": round(tally.sent / elapsed, 1) if elapsed > 0 else 0.0,
        "latency_ms": {
            "p50": round(percentile(latencies, 0.50) * 1000, 3),
            "p90": round(percentile(latencies, 0.90) * 1000, 3),
            "p99": round(percentile(latencies, 0.99) * 1000, 3),
            "max": round((latencies[-1] if latencies else 0.0) * 1000, 3),
        },
        "max_start_lag_ms": round(tally.max_start_lag * 1000, 3) if plan.rate else None,
        "driver_cpu_s": round(cpu, 3),
    }


def report(result: dict[str, object]) -> str:
    latency = result["latency_ms"]
    assert isinstance(latency, dict)
    lines = [
        f"target            {result['target']}  ({result['concurrency']} connections, "
        f"{result['messages_per_connection']} message(s) per connection, "
        f"{result['message_bytes']} bytes each)",
        f"offered load      {result['offered_rate'] or 'as fast as possible'}"
        + (f" msg/s (worst start lag {result['max_start_lag_ms']} ms)" if result["offered_rate"] else ""),
        f"delivered         {result['ok']} of {result['messages']} in {result['elapsed_s']} s",
        f"throughput        {result['messages_per_s']} msg/s",
        f"latency (ms)      p50 {latency['p50']}  p90 {latency['p90']}  p99 {latency['p99']}  "
        f"max {latency['max']}   (end of DATA -> final reply)",
        f"errors            {result['errors']}",
    ]
    error_kinds = result["error_kinds"]
    assert isinstance(error_kinds, dict)
    lines += [f"  {count:>8}  {kind}" for kind, count in error_kinds.items()]
    lines.append(f"driver CPU        {result['driver_cpu_s']} s (shares the machine with the server)")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> tuple[Plan, bool]:
    parser = argparse.ArgumentParser(
        description="Drive SMTP load at a loopback mailcase listener and report msg/s and latency."
    )
    parser.add_argument("--host", default="127.0.0.1", help="target address, 127.x.x.x only")
    parser.add_argument("--port", type=int, default=2525, help="target TCP port (default 2525)")
    parser.add_argument("-n", "--messages", type=int, default=1000, help="messages to send")
    parser.add_argument("-c", "--concurrency", type=int, default=8, help="concurrent connections")
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE,
                        help="approximate bytes per message (default 4096; 26214400 = 25 MB)")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="offered load in msg/s (open loop); 0 = as fast as possible")
    parser.add_argument("--per-connection", type=int, default=1,
                        help="messages per connection (default 1: one per connection)")
    parser.add_argument("--mail-from", default="bench@acme.example", help="envelope sender")
    parser.add_argument("--rcpt-to", default="support@support.example.com", help="envelope recipient")
    parser.add_argument("--timeout", type=float, default=120.0, help="socket timeout, seconds")
    parser.add_argument("--json", action="store_true", help="print one JSON object, nothing else")
    args = parser.parse_args(argv)
    for name in ("messages", "concurrency", "per_connection"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.rate < 0 or args.size < 0 or args.timeout <= 0:
        parser.error("--rate and --size must not be negative, --timeout must be positive")
    return Plan(
        host=loopback_host(args.host),
        port=args.port,
        messages=args.messages,
        concurrency=min(args.concurrency, args.messages),
        size=args.size,
        rate=args.rate,
        per_connection=args.per_connection,
        mail_from=args.mail_from,
        rcpt_to=args.rcpt_to,
        timeout=args.timeout,
    ), args.json


def main(argv: Sequence[str] | None = None) -> int:
    plan, as_json = parse_args(argv)
    try:
        socket.create_connection((plan.host, plan.port), timeout=plan.timeout).close()
    except OSError as exc:
        print(f"cannot connect to {plan.host}:{plan.port}: {exc}", file=sys.stderr)
        return 2
    result = run(plan)
    print(json.dumps(result, indent=2) if as_json else report(result))
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
