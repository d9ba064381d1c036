"""A bare aiosmtpd SMTP server for the side-by-side benchmark: the "sink" that stores nothing (the yardstick mailcase
is measured against) or, with `--record`, the outbound relay that accepts everything and writes one line per message
it accepted; it never relays, stores or looks at anything but the headers it records, and binds only loopback.

    python bench/ingest/sink.py --port 2526                          # bare sink
    python bench/ingest/sink.py --port 1025 --record relay.jsonl     # accepting relay with a log

It prints `ready <port>` on stdout once it listens (port 0 picks a free one), and stops on SIGTERM.
Each `--record` line is JSON: {"t": time.time() when the 250 was decided, "mid": Message-ID,
"irt": In-Reply-To, "to": envelope recipients}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import sys
import time
from typing import Any, TextIO

from aiosmtpd.smtp import SMTP

HEADER = re.compile(rb"^(Message-ID|In-Reply-To):[ \t]*(.*?)\r?$", re.IGNORECASE | re.MULTILINE)


class Bare:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 2.0.0 Ok"


class Recording:
    def __init__(self, log: TextIO) -> None:
        self.log = log

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data = envelope.original_content or b""
        head = data.split(b"\r\n\r\n", 1)[0]
        found = {name.lower(): value.decode("ascii", "replace").strip() for name, value in HEADER.findall(head)}
        record = {
            "t": time.time(),
            "mid": found.get(b"message-id", ""),
            "irt": found.get(b"in-reply-to", ""),
            "to": list(envelope.rcpt_tos),
        }
        self.log.write(json.dumps(record) + "\n")
        self.log.flush()
        return "250 2.0.0 Ok"


async def serve(port: int, record: str | None) -> None:
    log = open(record, "a", encoding="utf-8") if record else None  # noqa: SIM115 - open for the server's life
    handler: Any = Recording(log) if log is not None else Bare()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="sink.invalid", data_size_limit=64 * 1024 * 1024), host="127.0.0.1", port=port
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"ready {server.sockets[0].getsockname()[1]}", flush=True)
    await stop.wait()
    server.close()
    if log is not None:
        log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description="A bare or recording aiosmtpd server on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--record", help="append one JSON line per accepted message to this file")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
