"""Benchmark (not a test): one maintenance window affecting 20,000 maintenance contacts across 2,000 organisations.

Prints two figures, with the machine they were measured on:
1. queue: the sweep that builds every recipient's notice (context in their language and zone, the
   .ics with their ATTENDEE, the signed List-Unsubscribe address) and inserts its outbox row,
   on SQLite (target: at most 20 s);
2. delivery: `notify.outbox.deliver_due` rendering, composing and sending those rows to a local
   SMTP sink (an aiosmtpd server on 127.0.0.1, in its own process, that stores nothing), with
   connection reuse (target: at least 300 messages/s).

    .venv/bin/python bench/fanout/run.py [--organisations 2000] [--contacts 10] [--deliver N]
        [--batch 500] [--database-url postgresql://…/an_empty_database]

Everything lives in a temporary directory; nothing is left behind. With `--database-url` the
same run goes to that (empty) database instead of the temporary SQLite file, e.g. to measure
PostgreSQL, where each outcome's commit waits for its WAL flush; the database is left as it is.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import platform
import socket
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

HOST = "127.0.0.1"
PRODUCTS = ("Microsoft Teams", "Cisco", "Five9")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _sink(port: int, ready: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    """An SMTP server that accepts every message and keeps nothing."""
    import asyncio

    from aiosmtpd.smtp import SMTP

    class Discard:
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            return "250 2.0.0 OK"

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(Discard(), hostname="sink.localhost", data_size_limit=None), HOST, port
        )
        ready.set()
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


def _directory_toml(organisations: int, contacts: int) -> str:
    lines = [f'[[products]]\nname = "{p}"\n' for p in PRODUCTS]
    for i in range(organisations):
        pt = i % 4 == 0  # a quarter of the customers read Portuguese
        zone = "America/Sao_Paulo" if pt else ("America/Chicago", "America/New_York", "America/Denver")[i % 3]
        lines.append(
            f'[[organisations]]\nid = "org{i}"\nname = "Organisation {i}"\nlocale = "{"pt" if pt else "en"}"\n'
            f'timezone = "{zone}"\ndomains = ["org{i}.example"]\nproducts = ["{PRODUCTS[i % 3]}"]\n'
        )
        for j in range(contacts):
            lines.append(f'[[organisations.contacts]]\nemail = "noc{j}@org{i}.example"\nroles = ["maintenance"]\n')
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--organisations", type=int, default=2000)
    parser.add_argument("--contacts", type=int, default=10, help="maintenance contacts per organisation")
    parser.add_argument("--deliver", type=int, default=None, help="deliver only this many (default: all)")
    parser.add_argument("--batch", type=int, default=500, help="rows per deliver_due call (one SMTP connection each)")
    parser.add_argument("--database-url", default=None, help="an empty database to use instead of a temporary SQLite file")
    options = parser.parse_args()

    from sqlmodel import func, select

    from mailcase.app import App
    from mailcase.clock import FixedClock
    from mailcase.config import load_config
    from mailcase.desk import maintenance as desk_maintenance
    from mailcase.domain import MaintenanceKind, OutboxState
    from mailcase.notify.outbox import deliver_due
    from mailcase.notify.render import Renderer
    from mailcase.notify.transport import SmtpTransport
    from mailcase.rules.directory_format import load_directory
    from mailcase.store.directory import import_directory
    from mailcase.store.engine import make_engine, transaction, upgrade_schema
    from mailcase.store.models import Outbox

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, {platform.system()} {platform.release()}")
    with tempfile.TemporaryDirectory(prefix="mailcase-fanout-") as workdir:
        url = options.database_url or f"sqlite:///{Path(workdir) / 'bench.db'}"
        print(f"database: {url.split('://', 1)[0]}")
        engine = make_engine(url)
        upgrade_schema(engine)
        started = time.perf_counter()
        with transaction(engine) as session:
            import_directory(load_directory(_directory_toml(options.organisations, options.contacts)), session=session)
        print(f"setup: directory of {options.organisations} organisations x {options.contacts} contacts "
              f"imported in {time.perf_counter() - started:.1f} s")

        now = datetime(2026, 12, 1, 16, 0, tzinfo=UTC)
        settings = load_config(REPO / "config.toml", {"MAILCASE_DATABASE__URL": url})
        app = App(settings=settings, engine=engine, clock=FixedClock(now))
        start = datetime(2026, 12, 19, 5, 0, tzinfo=UTC)
        with transaction(engine) as session:
            desk_maintenance.add_window(
                session, app.desk(), kind=MaintenanceKind.SCHEDULED, start=start, end=start + timedelta(hours=6),
                products=list(PRODUCTS), description="Monthly patching of the voice platform.",
                justification="Keeps the platform on supported software.", now=now,
            )
        _ = app.secret  # generated once, outside the measurement
        due = start - timedelta(days=7)

        started = time.perf_counter()
        queued = desk_maintenance.sweep_maintenance(app.engine, app.desk(), due)
        elapsed = time.perf_counter() - started
        print(f"queue: {queued} notices (context, .ics, List-Unsubscribe, outbox row) in {elapsed:.2f} s "
              f"= {queued / elapsed:.0f}/s (target: all within 20 s)")
        again = desk_maintenance.sweep_maintenance(app.engine, app.desk(), due)
        print(f"queue again (idempotent): {again} new rows")

        started = time.perf_counter()
        renderer = Renderer(REPO / "templates")
        with transaction(engine) as session:
            sample = list(session.exec(select(Outbox).limit(2000)))
        for row in sample:
            renderer.render(row.template, row.locale, {k: v for k, v in row.context.items() if not k.startswith("_")})
        per_render = (time.perf_counter() - started) / max(len(sample), 1)
        print(f"render only (part of delivery): {per_render * 1000:.2f} ms per notice, "
              f"{per_render * queued:.1f} s for all {queued}")

        port = _free_port()
        context = multiprocessing.get_context("spawn")
        ready = context.Event()
        sink = context.Process(target=_sink, args=(port, ready), daemon=True)
        sink.start()
        try:
            if not ready.wait(30):
                print("delivery: the SMTP sink did not start", file=sys.stderr)
                return 1
            outbound = dataclasses.replace(settings.outbound, host=HOST, port=port, starttls=False, tls=False)
            settings = dataclasses.replace(settings, outbound=outbound)
            transport = SmtpTransport(outbound, local_hostname=settings.smtp.hostname)
            target = options.deliver or queued
            sent = failed = 0
            load_before = os.getloadavg()[0]
            cpu_started = time.process_time()
            started = time.perf_counter()
            while sent + failed < target:
                report = deliver_due(
                    engine, now=due, transport=transport, renderer=renderer, settings=settings,
                    secret=app.secret, limit=min(options.batch, target - sent - failed),
                )
                if report.sent + report.failed + report.retried == 0:
                    break
                sent += report.sent
                failed += report.failed + report.retried
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu_started
            print(f"delivery: {sent} sent, {failed} not sent, in {elapsed:.1f} s = {sent / elapsed:.0f} messages/s "
                  f"(batches of {options.batch} per connection; target: at least 300/s)")
            print(f"delivery CPU in this process (claim, render, compose, smtplib, commits; not the sink): "
                  f"{cpu * 1000 / max(sent, 1):.2f} ms per message")
            print(f"load average (1 min) before/after delivery: {load_before:.2f} / {os.getloadavg()[0]:.2f} "
                  f"on {os.cpu_count()} cores (other work on the machine slows both ends)")
            with transaction(engine) as session:
                left = session.exec(select(func.count()).select_from(Outbox).where(Outbox.state == OutboxState.QUEUED)).one()
            print(f"outbox rows still queued: {left}")
        finally:
            sink.terminate()
            sink.join(10)
        engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
