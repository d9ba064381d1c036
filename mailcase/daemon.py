"""`mailcase serve`: one asyncio process running the SMTP listener, the IMAP pollers (threads) and the scheduler
(APScheduler 3, in-memory job store), plus `[smtp] workers - 1` extra processes that run only the SMTP listener and
the ingest pipeline on the same port (SO_REUSEPORT) and, with `[outbound] enabled`, one delivery process that sends
the outbox; stops them all cleanly on SIGTERM/SIGINT; reloads log files and templates on SIGHUP. With
`[lmtp] enabled` it also runs the LMTP listener (RFC 2033).

It wires the parts together and owns their lifetimes (threads, executor, worker processes); it decides nothing
itself and never touches a message.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailcase import systemd
from mailcase.app import App, build_app
from mailcase.clock import Clock
from mailcase.config import Settings
from mailcase.errors import MailcaseError, TransientError
from mailcase.logs import configure_logging, reopen_log_files
from mailcase.logs import formatter as log_formatter
from mailcase.retention import purge
from mailcase.status import build_status
from mailcase.store.retention import PurgeCounts

if TYPE_CHECKING:
    from mailcase.jobs import DueSweeps, SweepReport
    from mailcase.notify.outbox import DeliveryReport

log = logging.getLogger(__name__)

# The listeners, pollers, sweeps and delivery are imported inside the functions that run them, not
# for a cycle: they create prometheus_client metrics (mailcase.telemetry), and `serve` must set up
# multiprocess metrics (observe.processes) before prometheus_client is first imported.

INGEST_WORKERS = 4
"""Threads running the ingest pipeline on PostgreSQL, where they overlap their network waits."""
SQLITE_INGEST_WORKERS = 1
"""On SQLite: one per process. SQLite has one writer at a time, and writers that find it busy sleep in its
busy handler (1 ms, 2 ms, 5 ms, … up to 100 ms per retry) rather than queueing: with 4 threads
p99 DATA-to-250 was ~1 s against ~0.2 s with 1, and throughput fell by a quarter (bench/ingest)."""

WORKER_RESTARTS = 5
WORKER_RESTART_WINDOW_SECONDS = 600.0
"""A dead SMTP worker is restarted, at most WORKER_RESTARTS times per worker in any window of this many
seconds; one more death in the window stops the daemon with exit status 1 (it cannot keep the
listener up, so a service manager or an operator must look)."""
DELIVERY_POLL_SECONDS = 0.1
"""How often the delivery process looks for a newly due notice while idle (one indexed SELECT): an
acknowledgement waits at most this long for its pass. The full pass (abandoned claims, expiry, relay
pause) still runs every `[scheduler] outbox_interval_seconds`."""
RELAY_IDLE_SECONDS = 30.0
"""The delivery process keeps its relay connection open between passes (one connection, not one per
batch) and QUITs it after this long without a message: below the usual server idle timeouts
(RFC 5321 §4.5.3.2.7 asks servers for at least 5 minutes; Postfix's smtpd_timeout is 300 s)."""
WORKER_STOP_SECONDS = 60.0
"""How long a stop waits for the workers to finish their in-flight transactions (their own grace is 30 s)."""


class Daemon:
    def __init__(self, app: App) -> None:
        self.app = app
        self.stop_event = asyncio.Event()
        self.poll_stop = threading.Event()
        self.smtp_address: tuple[str, int] | None = None
        self.failed = False

    async def run(self) -> int:
        app, settings = self.app, self.app.settings
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop_event.set)
        supervisors: list[_WorkerSupervisor] = []
        loop.add_signal_handler(signal.SIGHUP, self.reload, supervisors)
        pipeline = app.pipeline()
        executor = _ingest_executor(app)
        extra_workers = settings.smtp.workers - 1 if settings.smtp.enabled else 0
        listener = None
        if settings.smtp.enabled:
            listener = await _start_listener(app, pipeline, executor, reuse_port=extra_workers > 0)
            self.smtp_address = listener.address
        if extra_workers:
            assert self.smtp_address is not None
            # Port 0 means "any free port": the workers must bind the one this process got.
            worker_settings = dataclasses.replace(
                settings, smtp=dataclasses.replace(settings.smtp, port=self.smtp_address[1])
            )
            supervisors.extend(
                _WorkerSupervisor(index, worker_settings, app.clock, self._worker_failed)
                for index in range(1, extra_workers + 1)
            )
        if settings.outbound.enabled:
            # Delivery in its own process: rendering, composing and smtplib no longer share the
            # GIL with parsing and storing (issue 16); it is supervised like an SMTP worker.
            supervisors.append(
                _WorkerSupervisor(0, settings, app.clock, self._worker_failed, target=run_delivery_worker,
                                  label="delivery worker")
            )
        for supervisor in supervisors:
            supervisor.start()
        lmtp = None
        if settings.lmtp.enabled:
            lmtp = await _start_lmtp_listener(app, pipeline, executor)
        pollers = self._start_pollers(pipeline)
        scheduler = self._start_scheduler()
        observer = await _start_observer(app, self.smtp_address)
        log.info(
            "mailcase serving: smtp=%s (%d SMTP process(es)) lmtp=%s imap=%d mailbox(es) scheduler every %ss, "
            "outbox delivery %s",
            f"{self.smtp_address[0]}:{self.smtp_address[1]}" if self.smtp_address else "off",
            1 + extra_workers if listener is not None else 0,
            lmtp.address if lmtp is not None else "off",
            len(pollers),
            settings.scheduler.sweep_interval_seconds,
            "in its own process" if settings.outbound.enabled else "off",
        )
        # Type=notify: systemd starts dependants (and `systemctl start` returns) only now, listener bound.
        serving = f"{self.smtp_address[0]}:{self.smtp_address[1]}" if self.smtp_address else "off"
        systemd.notify(f"READY=1\nSTATUS=serving smtp={serving}")
        _start_watchdog(scheduler)
        await self.stop_event.wait()
        systemd.notify("STOPPING=1\nSTATUS=stopping: finishing in-flight messages")
        log.info("stopping: no new connections; finishing in-flight messages")
        await observer.stop()
        for supervisor in supervisors:
            supervisor.stop()  # SIGTERM: each worker finishes its own in-flight transactions
        if listener is not None:
            await listener.stop()
        if lmtp is not None:
            await lmtp.stop()
        self.poll_stop.set()
        for thread in pollers:
            await asyncio.to_thread(thread.join, 30)
        await asyncio.to_thread(scheduler.shutdown, True)
        executor.shutdown(wait=True)
        clean = all([await supervisor.wait_stopped() for supervisor in supervisors])
        if self.failed or not clean:
            log.error("stopped with errors (see above); exit status 1")
            return 1
        log.info("stopped")
        return 0

    def reload(self, supervisors: list[_WorkerSupervisor]) -> None:
        """SIGHUP: reload what can change under a running daemon, and say what was done.

        * log files are closed and reopened (after logrotate moved them), here and in the SMTP workers;
        * the templates are compiled again from disk: an edit is checked now (the delivery process
          recompiles a template whose file changed at its next use, and builds a new environment on
          SIGHUP); a broken one is logged and the daemon keeps running;
        * the customer directory needs nothing: it is read from the database for every message, so
          `mailcase directory import` takes effect at once.
        Settings (ports, database) are not reloaded: restart for those.
        """
        reopened = reopen_log_files()
        for supervisor in supervisors:
            supervisor.signal(signal.SIGHUP)
        try:
            self.app.reload()  # `[templates] dir` may have been created or filled since the start
            renderer = self.app.renderer()
            where = ", ".join(str(d) for d in renderer.template_dirs)
            templates = f"{renderer.verify()} template files checked in {where}"
        except Exception as exc:  # a broken edit must not stop the daemon
            log.error("SIGHUP: templates have an error, fix it before the next delivery: %s", exc)
            templates = "templates NOT reloaded (error above)"
        log.info(
            "SIGHUP: reloaded: %d log file(s) reopened; %s; customer directory read from the database "
            "per message (nothing cached); %d worker process(es) told",
            reopened, templates, len(supervisors),
        )

    def _worker_failed(self) -> None:
        self.failed = True
        self.stop_event.set()

    def _start_pollers(self, pipeline: Any) -> list[threading.Thread]:
        threads = []
        for box in self.app.settings.imap:
            poller = self.app.mailbox_poller(
                box,
                ingest=pipeline,
                stop=self.poll_stop,
                logger=logging.getLogger(f"mailcase.ingest.imap.{box.name}"),
            )
            thread = threading.Thread(target=poller.run, name=f"imap-{box.name}", daemon=True)
            thread.start()
            threads.append(thread)
        return threads

    def _start_scheduler(self) -> Any:
        # Loaded here, not at import: only `serve` runs a scheduler; every other command stays lighter.
        from apscheduler.schedulers.background import BackgroundScheduler

        from mailcase.observe.service import watched_sweep  # metrics: see the note at the top

        app, scheduling = self.app, self.app.settings.scheduler
        scheduler = BackgroundScheduler(
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": scheduling.misfire_grace_seconds},
            timezone="UTC",
        )

        def sweeps() -> None:
            _guarded("sweeps", lambda: watched_sweep(app, lambda: run_due_sweeps(app, app.clock.now())))
            if app.settings.status.out_dir:
                _guarded("status page", lambda: _build_status(app))

        scheduler.add_job(sweeps, "interval", seconds=scheduling.sweep_interval_seconds, id="sweeps", next_run_time=_now())
        _add_operations_jobs(scheduler, app)
        scheduler.start()
        return scheduler


PURGE_INTERVAL_HOURS = 24
PURGE_FIRST_DELAY_MINUTES = 10
"""The daily retention purge starts this long after serve does, out of the way of a restart's catch-up."""


def _add_operations_jobs(scheduler: Any, app: App) -> None:
    """The retention purge, daily."""
    scheduler.add_job(
        lambda: _guarded("retention purge", lambda: purge_now(app, actor="mailcase serve (daily purge)")),
        "interval", hours=PURGE_INTERVAL_HOURS, id="purge",
        next_run_time=_now() + timedelta(minutes=PURGE_FIRST_DELAY_MINUTES),
    )


def purge_now(app: App, *, actor: str, dry_run: bool = False) -> PurgeCounts:
    """The retention purge as of the app's clock, with this installation's `[retention]` windows
    (`serve`'s daily job, `mailcase purge`)."""
    return purge(
        app.engine, app.clock.now(), retention=app.settings.retention, digest_address=app.settings.held.digest_address,
        actor=actor, dry_run=dry_run,
    )


def _start_watchdog(scheduler: Any) -> None:
    """WATCHDOG=1 pings when the unit asks for them (WatchdogSec=), from a scheduler job, so a scheduler
    that stops running jobs gets the daemon restarted. Added only after READY=1: sd_notify(3) reads a
    ping before readiness as nothing, and the service manager should hear READY first."""
    interval = systemd.watchdog_interval()
    if interval is not None:
        scheduler.add_job(systemd.watchdog_ping, "interval", seconds=interval, id="watchdog", next_run_time=_now())


def _ingest_executor(app: App) -> ThreadPoolExecutor:
    workers = SQLITE_INGEST_WORKERS if app.engine.dialect.name == "sqlite" else INGEST_WORKERS
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ingest")


async def _start_listener(app: App, pipeline: Any, executor: ThreadPoolExecutor, *, reuse_port: bool) -> Any:
    from mailcase.ingest.smtp import (  # metrics: see the note at the top
        SmtpListener,
        SupportHandler,
    )

    handler = SupportHandler(app.settings.smtp, pipeline, app.clock, executor)
    listener = SmtpListener(app.settings.smtp, handler, reuse_port=reuse_port)
    await listener.start()
    return listener


async def _start_observer(app: App, smtp_address: tuple[str, int] | None) -> Any:
    """Health checks, alerts and the HTTP endpoint (issue 15), in this process only."""
    from mailcase.observe.service import Observer

    observer = Observer(app, smtp_address=smtp_address)
    await observer.start()
    return observer


async def _start_lmtp_listener(app: App, pipeline: Any, executor: ThreadPoolExecutor) -> Any:
    from mailcase.ingest.lmtp import LmtpHandler, LmtpListener  # metrics: see the note at the top

    handler = LmtpHandler(app.settings.smtp, pipeline, app.clock, executor)
    listener = LmtpListener(app.settings.lmtp, app.settings.smtp, handler)
    await listener.start()
    return listener


# ---------------------------------------------------------------------------------------------
# SMTP worker processes


class RestartBudget:
    """How many deaths of one worker the daemon absorbs: `limit` restarts in any `window` seconds."""

    def __init__(self, limit: int = WORKER_RESTARTS, window: float = WORKER_RESTART_WINDOW_SECONDS) -> None:
        self.limit = limit
        self.window = window
        self._restarts: collections.deque[float] = collections.deque()

    def allow(self, now: float) -> bool:
        """Record a death at `now` (monotonic seconds); True when the worker may be restarted."""
        while self._restarts and self._restarts[0] <= now - self.window:
            self._restarts.popleft()
        if len(self._restarts) >= self.limit:
            return False
        self._restarts.append(now)
        return True


class _WorkerSupervisor:
    """Runs worker `index` (an SMTP worker, or with `target=run_delivery_worker` the delivery process) in its own
    process ('spawn': a fresh interpreter, no inherited threads or connections) with the parent's exact settings;
    restarts it when it dies, within a RestartBudget."""

    def __init__(
        self, index: int, settings: Settings, clock: Clock, on_failure: Any, *, target: Any = None,
        label: str = "",
    ) -> None:
        self.index = index
        self.target = target or run_smtp_worker
        self.label = label or f"SMTP worker {index}"
        self.settings = settings
        self.clock = clock
        self.on_failure = on_failure
        self.budget = RestartBudget()
        self.process: Any = None
        self.stopping = False
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._supervise(), name=self.label)

    def _spawn(self) -> Any:
        context = multiprocessing.get_context("spawn")
        process = context.Process(
            target=self.target,
            args=(self.settings, self.clock, self.index, os.getpid()),
            name=f"mailcase-{self.label.replace(' ', '-').lower()}",
            daemon=True,
        )
        process.start()
        log.info("%s started pid=%d", self.label, process.pid)
        return process

    async def _supervise(self) -> None:
        while not self.stopping:
            self.process = self._spawn()
            await _exited(self.process)
            if self.stopping:
                return
            code = self.process.exitcode
            if not self.budget.allow(time.monotonic()):
                log.error(
                    "%s (pid %d) exited with status %s, its %d restarts in %.0f s are used up: "
                    "stopping the daemon",
                    self.label, self.process.pid, _status(code), self.budget.limit, self.budget.window,
                )
                self.on_failure()
                return
            log.error("%s (pid %d) exited with status %s; restarting it",
                      self.label, self.process.pid, _status(code))

    def signal(self, number: int) -> None:
        process = self.process
        if process is not None and process.exitcode is None and process.pid is not None:
            os.kill(process.pid, number)

    def stop(self) -> None:
        self.stopping = True
        process = self.process
        if process is not None and process.exitcode is None:
            process.terminate()  # SIGTERM: a graceful stop in the worker

    async def wait_stopped(self) -> bool:
        """After `stop()`: wait (bounded) for the worker to exit; True when it stopped cleanly."""
        if self.task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self.task), WORKER_STOP_SECONDS)
            except TimeoutError:
                process = self.process
                log.error("%s (pid %d) did not stop within %.0f s; killed",
                          self.label, process.pid, WORKER_STOP_SECONDS)
                process.kill()
                await self.task
                return False
        process = self.process
        if process is None:
            return True
        # -SIGTERM: the signal arrived before the worker had installed its handler (it had no transaction yet).
        if process.exitcode not in (0, -signal.SIGTERM):
            log.error("%s (pid %d) stopped with status %s", self.label, process.pid, _status(process.exitcode))
            return False
        return True


async def _exited(process: Any) -> None:
    """Wait, without a thread, until `process` has exited (its sentinel becomes readable)."""
    if process.exitcode is not None:
        return
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(process.sentinel, readable)
    try:
        await done
    finally:
        loop.remove_reader(process.sentinel)
    process.join()


def _status(code: int | None) -> str:
    if code is not None and code < 0:
        return f"{code} (killed by {signal.Signals(-code).name})"
    return str(code)


def run_smtp_worker(settings: Settings, clock: Clock, index: int, parent_pid: int) -> None:
    """The body of one SMTP worker process: the SMTP listener and the pipeline, nothing else."""
    # Until the loop's handler is installed, a SIGHUP (forwarded by the daemon) must not kill us.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    _die_with_parent(parent_pid)
    _name_process(f"mailcase-smtp{index}")
    configure_logging(settings.logging.level, file=settings.logging.file, format=settings.logging.format)
    for handler in logging.getLogger().handlers:  # say which process wrote each line
        handler.setFormatter(log_formatter(settings.logging.format, process=f"smtp-worker {index}"))
    app = build_app(settings, clock)
    try:
        code = asyncio.run(_SmtpWorker(app, index).run())
    finally:
        app.close()
    sys.exit(code)


def _name_process(name: str) -> None:
    """Name a worker process as `top` and `ps -o comm` show it (Linux PR_SET_NAME, at most 15 bytes)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_name = 15
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_name, name.encode()[:15], 0, 0, 0)


def _die_with_parent(parent_pid: int) -> None:
    """A worker must not outlive the daemon (a `kill -9` of it would leave it holding the port):
    Linux's PR_SET_PDEATHSIG kills it with the parent; elsewhere the worker checks its parent's pid."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(1)


class _SmtpWorker:
    def __init__(self, app: App, index: int) -> None:
        self.app = app
        self.index = index

    async def run(self) -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._reopen_logs)
        parent = os.getppid()
        # The loop holds tasks only weakly: keep a reference so the watcher is not collected.
        watcher = loop.create_task(_watch_parent(parent, stop)) if not sys.platform.startswith("linux") else None
        executor = _ingest_executor(self.app)
        listener = await _start_listener(self.app, self.app.pipeline(), executor, reuse_port=True)
        log.info("SMTP worker %d serving on %s:%d", self.index, *listener.address)
        await stop.wait()
        if watcher is not None:
            watcher.cancel()
        await listener.stop()
        executor.shutdown(wait=True)
        return 0


    def _reopen_logs(self) -> None:
        log.info("SIGHUP: SMTP worker %d reopened %d log file(s)", self.index, reopen_log_files())


# ---------------------------------------------------------------------------------------------
# The delivery process


def run_delivery_worker(settings: Settings, clock: Clock, index: int, parent_pid: int) -> None:
    """The body of the delivery process: outbox passes, nothing else (no listener, no scheduler)."""
    from mailcase.app import build_app
    from mailcase.logs import configure_logging
    from mailcase.logs import formatter as log_formatter

    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    _die_with_parent(parent_pid)
    _name_process("mailcase-deliver")
    configure_logging(settings.logging.level, file=settings.logging.file, format=settings.logging.format)
    for handler in logging.getLogger().handlers:  # say which process wrote each line
        handler.setFormatter(log_formatter(settings.logging.format, process="delivery"))
    app = build_app(settings, clock)
    try:
        code = _DeliveryWorker(app).run()
    finally:
        app.close()
    sys.exit(code)


class _DeliveryWorker:
    """Delivery passes back to back while notices are due; while idle, one cheap look every
    DELIVERY_POLL_SECONDS for a newly due one, and a full pass every `outbox_interval_seconds`.

    The guarantees are `notify.outbox.deliver_due`'s (claims with leases, each outcome committed
    before the next message): a killed delivery process is restarted by its supervisor, and the new
    one takes its predecessor's claims back at once (their holder's process is gone).
    """

    def __init__(self, app: App) -> None:
        self.app = app
        self.stop = threading.Event()
        self.reload_wanted = threading.Event()
        self.transport = app.transport()
        self.transport.keep_open = True
        # One template environment for the life of the process: compiling the templates again for
        # every pass cost more than sending (passes are small and back to back). Jinja2 checks each
        # file's mtime on use, so an edited template still takes effect at its next use; SIGHUP
        # builds a new one (a `[templates] dir` created since the start).
        self.renderer = app.renderer()
        self.last_sent = 0.0
        self.published_health: dict[str, tuple[str, Any, str]] = {}

    def run(self) -> int:
        from mailcase.store.outbox import any_due

        signal.signal(signal.SIGTERM, lambda *_: self.stop.set())
        signal.signal(signal.SIGINT, lambda *_: self.stop.set())
        signal.signal(signal.SIGHUP, lambda *_: self.reload_wanted.set())
        app = self.app
        interval = float(app.settings.scheduler.outbox_interval_seconds)
        next_full_pass = rest_until = 0.0
        while not self.stop.is_set():
            if self.reload_wanted.is_set():
                self.reload_wanted.clear()
                self._reload()
            now = time.monotonic()
            due = now >= next_full_pass
            if not due and now >= rest_until:
                looked = _guarded("outbox look-up", lambda: any_due(app.engine, app.clock.now()))
                due = bool(looked)
                if looked is None:  # the database failed: not again before the next full pass
                    rest_until = next_full_pass
            if due:
                full = time.monotonic() >= next_full_pass
                report = _guarded("outbox delivery", lambda full=full: self._pass(housekeeping=full))
                _guarded("delivery health", self._publish_health)
                if full:
                    next_full_pass = time.monotonic() + interval
                if report is None or report.paused:
                    # An error, or the relay is unreachable (paused): wait for the next full pass.
                    rest_until = next_full_pass
                elif report.sent + report.retried + report.failed:
                    self.last_sent = time.monotonic()
                    continue  # a batch went out: more may be due at once
            if self.transport.connected and time.monotonic() - self.last_sent > RELAY_IDLE_SECONDS:
                self.transport.close()
            self.stop.wait(DELIVERY_POLL_SECONDS)
        self.transport.close()
        log.info("delivery worker stopped")
        return 0

    def _pass(self, *, housekeeping: bool) -> Any:
        from mailcase.notify.outbox import deliver_due

        app = self.app
        return deliver_due(
            app.engine, now=app.clock.now(), transport=self.transport, renderer=self.renderer,
            settings=app.settings, secret=app.secret, limit=app.settings.outbound.batch_size, clock=app.clock.now,
            housekeeping=housekeeping,
        )

    def _publish_health(self) -> None:
        """The transport's view of the relay (and of the OAuth sign-in) on this process's health board,
        written to the database when it changed: /readyz runs in the main process."""
        from mailcase.store.engine import sqlite_writer_turn, transaction
        from mailcase.store.outbox import DELIVERY_HEALTH_KEYS, publish_delivery_health

        board = self.transport.health
        entries = {
            name: (health.state, health.since, health.reason)
            for name in DELIVERY_HEALTH_KEYS
            if (health := board.get(name)) is not None
        }
        if entries and entries != self.published_health:
            with sqlite_writer_turn(self.app.engine), transaction(self.app.engine) as session:
                publish_delivery_health(session.connection(), entries)
            self.published_health = entries

    def _reload(self) -> None:
        from mailcase.logs import reopen_log_files

        self.app.reload()
        self.renderer = self.app.renderer()
        log.info("SIGHUP: delivery worker reopened %d log file(s); templates are read again", reopen_log_files())


async def _watch_parent(parent: int, stop: asyncio.Event) -> None:
    while os.getppid() == parent:
        await asyncio.sleep(1.0)
    stop.set()


def _build_status(app: App) -> None:
    build_status_page(app, Path(app.settings.status.out_dir), now=app.clock.now())


def build_status_page(app: App, out_dir: Path, *, now: datetime) -> list[Path]:
    """The static status page from this installation's database, templates and zone (`serve` at
    every sweep, `mailcase status build`)."""
    return build_status(
        app.engine, out_dir, now=now, title=app.settings.status.title, template_dirs=app.template_dirs,
        desk_tz=app.settings.business.timezone,
    )


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)  # APScheduler's own trigger time, not a business instant


def _guarded(name: str, job: Any) -> Any:
    """A failing job logs and waits for its next turn (returning None); it never stops the daemon."""
    try:
        return job()
    except TransientError as exc:
        log.warning("%s: temporary failure, will retry: %s", name, exc)
    except Exception:
        log.exception("%s failed", name)
    return None


def serve(app: App) -> int:
    from mailcase.observe.processes import remove_metrics_directory, share_metrics_between_processes

    metrics_directory = share_metrics_between_processes(app.settings)  # before any metric exists
    try:
        return asyncio.run(Daemon(app).run())
    finally:
        remove_metrics_directory(metrics_directory)


# ---------------------------------------------------------------------------------------------
# One pass of everything (`mailcase tick`) and the loops' single steps


@dataclass
class TickReport:
    sla: SweepReport
    maintenance: int
    master_updates: int
    # Summed over the batches `tick` delivered: sent, retried, failed, requeued, batches.
    delivery: dict[str, int] | None
    # Per [[imap]] mailbox name: {"stored": N, "error": None}, or {"stored": 0, "error": why it
    # could not be polled}.
    imap: dict[str, dict[str, Any]] = field(default_factory=dict)

    def lines(self) -> list[str]:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.sla.by_kind.items())) or "none"
        lines = [
            f"imap {name}: " + (r["error"] or f"{r['stored']} message(s) stored")
            for name, r in self.imap.items()
        ]
        lines.append(f"deadlines: {self.sla.examined} cases due, {self.sla.queued} notices queued ({kinds})")
        lines.append(f"maintenance: {self.maintenance} notices queued")
        lines.append(f"master cases: {self.master_updates} update reminders queued")
        if self.delivery is not None:
            d = self.delivery
            lines.append(
                f"outbox: {d['sent']} sent, {d['retried']} to retry later, {d['failed']} failed"
                f" ({d['batches']} batch(es))"
            )
        return lines


def deliver_outbox(app: App, now: datetime) -> DeliveryReport:
    """One batch of due notices (at most `[outbound] batch_size`), as `serve`'s delivery loop does."""
    from mailcase.notify.outbox import deliver_due  # metrics: see the note at the top

    return deliver_due(
        app.engine,
        now=now,
        transport=app.transport(),
        renderer=app.renderer(),
        settings=app.settings,
        secret=app.secret,
        limit=app.settings.outbound.batch_size,
        clock=app.clock.now,
    )


MAX_DRAIN_BATCHES = 10_000
"""A bound on `drain_outbox`'s batches (two million notices at the default batch size), so a bug
that left rows due forever cannot turn `tick` into an endless loop."""


def drain_outbox(app: App, now: datetime) -> dict[str, int]:
    """Deliver batch after batch until nothing is due at `now` (`mailcase tick`): every claimed row
    ends sent, failed or retried later (its next attempt after `now`), so each batch shrinks what
    is due and the loop ends when a batch finds nothing. Returns the summed counts."""
    totals = {"sent": 0, "retried": 0, "failed": 0, "requeued": 0, "batches": 0}
    for _ in range(MAX_DRAIN_BATCHES):
        report = deliver_outbox(app, now)
        counts = {"sent": report.sent, "retried": report.retried, "failed": report.failed, "requeued": report.requeued}
        for name, value in counts.items():
            totals[name] += value
        if counts["sent"] + counts["retried"] + counts["failed"] == 0:
            break
        totals["batches"] += 1
    return totals


def poll_mailboxes(app: App) -> dict[str, dict[str, Any]]:
    """One pass over every `[[imap]]` mailbox, as `serve`'s pollers do continuously (for cron set-ups).

    A mailbox that cannot be polled (refused login, unreachable server, busy database) is logged
    and reported, and the others and the sweeps still run: its mail waits for the next tick.
    """
    from mailcase.ingest.imap import (  # metrics: see the note at the top
        CONNECTION_ERRORS,
        MailboxLoginFailed,
    )

    # What keeps one mailbox from being polled this tick without stopping the others.
    unpolled: tuple[type[BaseException], ...] = (MailcaseError, *CONNECTION_ERRORS)
    results: dict[str, dict[str, Any]] = {}
    if not app.settings.imap:
        return results
    pipeline = app.pipeline()
    for box in app.settings.imap:
        logger = logging.getLogger(f"mailcase.ingest.imap.{box.name}")
        poller = app.mailbox_poller(box, ingest=pipeline, stop=threading.Event(), logger=logger)
        try:
            results[box.name] = {"stored": poller.poll_once(), "error": None}
        except MailboxLoginFailed:
            # The poller has logged the ERROR line already.
            results[box.name] = {"stored": 0, "error": "login refused"}
        except unpolled as error:
            logger.error(
                "mailbox %s (%s at %s:%d): not polled this tick: %s: %s",
                box.name, box.user, box.host, box.port, type(error).__name__, error,
            )
            results[box.name] = {"stored": 0, "error": f"not polled ({type(error).__name__})"}
        finally:
            poller.close()
    return results


def tick(app: App, *, deliver: bool = True) -> TickReport:
    """`mailcase tick`: one pass over the IMAP mailboxes, every due sweep once (as of the app's clock,
    so `--now` works), then the outbox, so mail fetched by this tick is acknowledged by it."""
    now = app.clock.now()
    imap = poll_mailboxes(app)
    swept = run_due_sweeps(app, now)
    delivery = drain_outbox(app, now) if deliver and app.settings.outbound.enabled else None
    return TickReport(
        sla=swept.sla, maintenance=swept.maintenance, master_updates=swept.master_updates, delivery=delivery, imap=imap
    )


def run_due_sweeps(app: App, now: datetime) -> DueSweeps:
    """Every scheduler sweep once, as of `now` (the scheduler's job and `tick`'s)."""
    from mailcase import jobs  # metrics: see the note at the top

    return jobs.run_due_sweeps(
        app.engine, app.desk(), now, held=app.settings.held, retention_held_days=app.settings.retention.held_days
    )
