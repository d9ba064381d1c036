"""`mailcase serve`: one asyncio process running the SMTP listener, the IMAP pollers (threads), the scheduler
(APScheduler 3, in-memory job store) and outbox delivery; stops cleanly on SIGTERM/SIGINT.

It wires the parts together and owns their lifetimes; it decides nothing itself.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mailcase.app import App

log = logging.getLogger(__name__)

INGEST_WORKERS = 4
"""Threads running the ingest pipeline on PostgreSQL, where they overlap their network waits."""
SQLITE_INGEST_WORKERS = 1
"""On SQLite: one. SQLite has one writer at a time, and writers that find it busy sleep in its
busy handler (1 ms, 2 ms, 5 ms, … up to 100 ms per retry) rather than queueing: with 4 threads
p99 DATA-to-250 was ~1 s against ~0.2 s with 1, and throughput fell by a quarter (bench/ingest)."""


class Daemon:
    def __init__(self, app: App) -> None:
        self.app = app
        self.stop_event = asyncio.Event()
        self.poll_stop = threading.Event()
        self.smtp_address: tuple[str, int] | None = None

    async def run(self) -> int:
        app, settings = self.app, self.app.settings
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop_event.set)
        pipeline = app.pipeline()
        workers = SQLITE_INGEST_WORKERS if app.engine.dialect.name == "sqlite" else INGEST_WORKERS
        executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ingest")
        listener = None
        if settings.smtp.enabled:
            from mailcase.ingest.smtp import SmtpListener, SupportHandler

            handler = SupportHandler(settings.smtp, pipeline, app.clock, executor)
            listener = SmtpListener(settings.smtp, handler)
            await listener.start()
            self.smtp_address = listener.address
        pollers = self._start_pollers(pipeline)
        scheduler = self._start_scheduler()
        log.info(
            "mailcase serving: smtp=%s imap=%d mailbox(es) scheduler every %ss, outbox every %ss",
            "%s:%d" % self.smtp_address if self.smtp_address else "off",
            len(pollers),
            settings.scheduler.sweep_interval_seconds,
            settings.scheduler.outbox_interval_seconds,
        )
        await self.stop_event.wait()
        log.info("stopping: no new connections; finishing in-flight messages")
        if listener is not None:
            await listener.stop()
        self.poll_stop.set()
        for thread in pollers:
            await asyncio.to_thread(thread.join, 30)
        await asyncio.to_thread(scheduler.shutdown, True)
        executor.shutdown(wait=True)
        log.info("stopped")
        return 0

    def _start_pollers(self, pipeline: Any) -> list[threading.Thread]:
        from mailcase.ingest.imap import MailboxPoller

        threads = []
        for box in self.app.settings.imap:
            poller = MailboxPoller(
                box,
                ingest=pipeline,
                engine=self.app.engine,
                clock=self.app.clock,
                stop=self.poll_stop,
                logger=logging.getLogger(f"mailcase.ingest.imap.{box.name}"),
            )
            thread = threading.Thread(target=poller.run, name=f"imap-{box.name}", daemon=True)
            thread.start()
            threads.append(thread)
        return threads

    def _start_scheduler(self) -> Any:
        from apscheduler.schedulers.background import BackgroundScheduler

        from mailcase import jobs

        app, scheduling = self.app, self.app.settings.scheduler
        scheduler = BackgroundScheduler(
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": scheduling.misfire_grace_seconds},
            timezone="UTC",
        )

        def sweeps() -> None:
            _guarded("sweeps", lambda: jobs.run_due_sweeps(app, app.clock.now()))
            if app.settings.status.out_dir:
                _guarded("status page", lambda: _build_status(app))

        def delivery() -> None:
            if app.settings.outbound.enabled:
                _guarded("outbox delivery", lambda: jobs.deliver_outbox(app, app.clock.now()))

        scheduler.add_job(sweeps, "interval", seconds=scheduling.sweep_interval_seconds, id="sweeps", next_run_time=_now())
        scheduler.add_job(
            delivery, "interval", seconds=scheduling.outbox_interval_seconds, id="outbox", next_run_time=_now()
        )
        scheduler.start()
        return scheduler


def _build_status(app: App) -> None:
    from pathlib import Path

    from mailcase.status import build_status

    build_status(app, Path(app.settings.status.out_dir), now=app.clock.now())


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)  # APScheduler's own trigger time, not a business instant


def _guarded(name: str, job: Any) -> None:
    """A failing job logs and waits for its next turn; it never stops the daemon."""
    from mailcase.errors import TransientError

    try:
        job()
    except TransientError as exc:
        log.warning("%s: temporary failure, will retry: %s", name, exc)
    except Exception:
        log.exception("%s failed", name)


def serve(app: App) -> int:
    return asyncio.run(Daemon(app).run())
