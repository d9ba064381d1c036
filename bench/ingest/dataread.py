"""Benchmark (not a test): what mailcase's SMTP edge costs per message without the pipeline, and how much of it is
aiosmtpd reading DATA line by line (issue 16, lever e); it only listens on 127.0.0.1 and stores nothing.

    .venv/bin/python bench/ingest/dataread.py                    # 4 KB and 200 KB messages
    .venv/bin/python bench/ingest/dataread.py --sizes 4096 --messages 2000

For each message size it runs, in this process, (1) a bare aiosmtpd server and (2) mailcase's edge
(`SupportHandler` and `SmtpListener` with the default settings, and an ingest that answers at once:
no parse, no database), drives each from bench/ingest/drive.py in another process (8 connections,
one message per connection), and reports this process's CPU per message; then it runs the edge
again under cProfile and reports the share of the time spent below aiosmtpd's `smtp_DATA`, and in
the line reads (`StreamReader.readuntil`, and mailcase's `readuntil` override that folds
over-long lines).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import io
import json
import pstats
import resource
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).resolve().parent / "drive.py"
sys.path.insert(0, str(REPO))

from aiosmtpd.smtp import SMTP  # noqa: E402

from mailcase.clock import SystemClock  # noqa: E402
from mailcase.config import load_config  # noqa: E402
from mailcase.domain import RawMessage  # noqa: E402
from mailcase.ingest.smtp import SmtpListener, SupportHandler  # noqa: E402


@dataclass(frozen=True, slots=True)
class Accepted:
    decision: str = "open_case"
    reason: str = "benchmark"
    case_number: str | None = "00000001"
    message_id: str = "<bench@bench.invalid>"


def accept(raw: RawMessage) -> Accepted:
    return Accepted()


class Bare:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 2.0.0 Ok"


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def drive(port: int, messages: int, size: int) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(DRIVER), "--port", str(port), "--messages", str(messages), "--concurrency", "8",
        "--size", str(size), "--mail-from", "pat@acme.example", "--json",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    out, err = await process.communicate()
    if not out.strip():
        raise SystemExit(f"drive.py failed: {err.decode()}")
    return dict(json.loads(out))


async def measure(kind: str, messages: int, size: int, profile: cProfile.Profile | None = None) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    executor = ThreadPoolExecutor(max_workers=1)
    listener: Any = None
    if kind == "bare":
        server = await loop.create_server(lambda: SMTP(Bare(), data_size_limit=64 << 20), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
    else:
        settings = load_config(REPO / "config.toml", {})
        smtp = dataclasses.replace(settings.smtp, host="127.0.0.1", port=0, max_connections_per_ip=1000)
        listener = SmtpListener(smtp, SupportHandler(smtp, accept, SystemClock(), executor))
        await listener.start()
        port = listener.address[1]
    await drive(port, 50, size)  # warm-up
    before = cpu()
    if profile is not None:
        profile.enable()
    result = await drive(port, messages, size)
    if profile is not None:
        profile.disable()
    used = cpu() - before
    if listener is not None:
        await listener.stop()
    else:
        server.close()
    executor.shutdown()
    return {"kind": kind, "size": size, "messages": result["ok"], "msg_per_s": result["messages_per_s"],
            "cpu_ms_per_msg": round(used / max(1, result["ok"]) * 1000, 3)}


def shares(profile: cProfile.Profile) -> dict[str, float]:
    stats = pstats.Stats(profile, stream=io.StringIO())
    total = stats.total_tt  # type: ignore[attr-defined]
    found = {"smtp_DATA (cumulative)": 0.0, "readuntil (cumulative, all lines)": 0.0}
    for (filename, _line, name), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if name == "smtp_DATA" and "aiosmtpd" in filename:
            found["smtp_DATA (cumulative)"] = max(found["smtp_DATA (cumulative)"], ct)
        if name == "readuntil" and "mailcase" in filename:
            found["readuntil (cumulative, all lines)"] = max(found["readuntil (cumulative, all lines)"], ct)
    return {key: round(value / total * 100, 1) for key, value in found.items()} | {"total_s": round(total, 3)}


async def main_async(args: argparse.Namespace) -> None:
    for size in args.sizes:
        count = args.messages if size <= 16384 else max(100, args.messages // 10)
        bare = await measure("bare", count, size)
        edge = await measure("edge", count, size)
        profile = cProfile.Profile()
        await measure("edge", count, size, profile)
        lines = (size // 76) + 10
        print(f"{size:>7} B x {count}: bare aiosmtpd {bare['cpu_ms_per_msg']} ms CPU/msg ({bare['msg_per_s']} msg/s); "
              f"mailcase edge {edge['cpu_ms_per_msg']} ms CPU/msg ({edge['msg_per_s']} msg/s); ~{lines} lines/msg; "
              f"under cProfile: {shares(profile)} % of the edge's time", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description="CPU of the SMTP edge per message, and aiosmtpd's DATA reading share.")
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 204800])
    parser.add_argument("--messages", type=int, default=2000)
    asyncio.run(main_async(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
