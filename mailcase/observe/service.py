"""Wires observability into `serve`: the probes, the readiness rules, the alerts, the /metrics registry
and the HTTP endpoint, plus the health check that runs every `[health] check_interval_seconds` on the
daemon's loop; the daemon calls `start()`, `stop()` and `watched_sweep()` and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from mailcase import telemetry
from mailcase.observe.alerts import Alerter, Change, HttpWebhook
from mailcase.observe.metrics import CONTENT_TYPE, DeskCollector, build_registry, render
from mailcase.observe.probes import SCHEDULER, Probes
from mailcase.observe.readiness import Readiness, evaluate
from mailcase.store.health import reader

if TYPE_CHECKING:
    from mailcase.app import App
    from mailcase.observe.http import EndpointServer

log = logging.getLogger(__name__)

DELIVERY_STOP_SECONDS = 15.0
"""How long a stop waits for alerts being delivered (a webhook's timeout is [alerts] webhook_timeout_seconds)."""


class Observer:
    """One per daemon process that runs the scheduler (not the SMTP workers)."""

    def __init__(self, app: App, *, smtp_address: tuple[str, int] | None) -> None:
        settings = app.settings
        self.app = app
        self.started_at = app.clock.now()
        self.reader = reader(app.engine, timeout=settings.health.database_timeout_seconds)
        self.probes = Probes(
            settings, reader=self.reader, board=app.health, started_at=self.started_at, smtp_address=smtp_address
        )
        alerts = settings.alerts
        webhook = (
            HttpWebhook(alerts.webhook_url, timeout=alerts.webhook_timeout_seconds) if alerts.webhook_url else None
        )
        self.alerter = Alerter(webhook=webhook, admin_mail=self._queue_admin_mail if alerts.admin_address else None)
        self.server: EndpointServer | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._delivery: asyncio.Future[None] | None = None

    def check(self) -> Readiness:
        """Look at every part now, and alert on what changed (blocking: call it from a worker thread)."""
        now = self.app.clock.now()
        readiness = evaluate(self.probes.observe(now), self.app.settings.health, now=now)
        self.alerter.update(readiness)
        return readiness

    async def start(self) -> None:
        http = self.app.settings.http
        if http.enabled:
            from mailcase.observe.http import EndpointServer, endpoint_app

            desk = DeskCollector(
                self.reader, clock=self.app.clock.now, timeout=self.app.settings.health.database_timeout_seconds,
                states=self.alerter.states,
            )  # fmt: skip
            registry = build_registry(desk)
            web = endpoint_app(check=self.check, metrics=lambda: render(registry), content_type=CONTENT_TYPE,
                               token=http.token)  # fmt: skip
            self.server = EndpointServer(web, host=http.host, port=http.port)
            await self.server.start()
        self._loop_task = asyncio.get_running_loop().create_task(self._check_loop(), name="health-check")

    async def stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self._delivery is not None and not self._delivery.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._delivery), DELIVERY_STOP_SECONDS)
            except TimeoutError:
                log.warning("alerts still being delivered at stop; left undelivered")
        if self.server is not None:
            await self.server.stop()
        if self.reader is not self.app.engine:
            self.reader.dispose()

    async def _check_loop(self) -> None:
        interval = self.app.settings.health.check_interval_seconds
        while True:
            try:
                await asyncio.to_thread(self.check)
            except Exception:  # a broken check must not stop the daemon; say so and check again later
                log.exception("health check failed")
            if self._delivery is None or self._delivery.done():
                # Apart from the checks: a mail may wait on a locked database, a POST on the network.
                self._delivery = asyncio.ensure_future(asyncio.to_thread(self.alerter.deliver))
            await asyncio.sleep(interval)

    def _queue_admin_mail(self, change: Change, host: str) -> None:
        from mailcase.domain import NotificationIntent
        from mailcase.store.engine import transaction
        from mailcase.store.outbox import enqueue

        settings = self.app.settings
        part = change.part
        intent = NotificationIntent(
            kind="health_alert",
            template="staff.health_alert",
            recipients=(settings.alerts.admin_address,),
            idempotency_key=f"health:{host}:{part.name}:{part.state.word}:{change.since.isoformat()}",
            due_at=change.since,
            context={"part": part.name, "state": part.state.word, "detail": part.detail,
                     "since": change.since.isoformat(), "host": host},
            locale="en",
            auto_submitted="auto-generated",
        )  # fmt: skip
        with transaction(self.app.engine) as session:
            enqueue(intent, session=session, now=self.app.clock.now(), hostname=settings.smtp.hostname)


def watched_sweep(app: App, sweep: Callable[[], object]) -> None:
    """Run one scheduler sweep with its signs of life on the health board (started, ended or failed)
    and its duration in the metrics; re-raises what the sweep raised."""
    board, now = app.health, app.clock.now
    board.began(SCHEDULER, now=now())
    started = time.monotonic()
    try:
        sweep()
    except Exception as error:
        board.fault(SCHEDULER, f"{type(error).__name__}: {error}", now=now())
        raise
    board.beat(SCHEDULER, now=now())
    telemetry.observe_sweep(time.monotonic() - started)
