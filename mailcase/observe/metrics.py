"""The /metrics page: the counters of mailcase.telemetry (summed over every SMTP worker process in
multiprocess mode), the database's gauges read at scrape time (cached for DB_CACHE_SECONDS, so a
scrape every few seconds costs a few indexed counts now and then), and each part's last checked state;
it renders text and never writes anything.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy.engine import Engine

from mailcase.observe.readiness import State
from mailcase.store.health import DeskGauges, desk_gauges

log = logging.getLogger(__name__)

DB_CACHE_SECONDS = 10.0
"""How long the database's gauges are reused between scrapes (several Prometheus servers, or a
scrape interval of a second, cost no more than one read in this long)."""
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class DeskCollector(Collector):
    """Held messages, unsent and failed notices, the oldest due notice's age, open cases: from the
    database (store/health.py), and each part's state from the daemon's last health check."""

    def __init__(
        self,
        reader: Engine,
        *,
        clock: Callable[[], datetime],
        timeout: float,
        states: Callable[[], dict[str, State]],
    ) -> None:
        self.reader = reader
        self.clock = clock
        self.timeout = timeout
        self.states = states
        self._lock = threading.Lock()
        self._cached: tuple[float, DeskGauges] | None = None

    def collect(self) -> Iterator[Metric]:
        now = self.clock()
        gauges = self._gauges(now)
        if gauges is not None:
            yield from _desk_metrics(gauges, now)
        parts = GaugeMetricFamily(
            "mailcase_health_state",
            "Each part's state at the daemon's last health check: 0 ok, 1 warning, 2 critical.",
            labels=["part"],
        )
        for part, state in sorted(self.states().items()):
            parts.add_metric([part], int(state))
        yield parts

    def _gauges(self, now: datetime) -> DeskGauges | None:
        with self._lock:
            cached = self._cached
            if cached is not None and time.monotonic() - cached[0] < DB_CACHE_SECONDS:
                return cached[1]
            try:
                gauges = desk_gauges(self.reader, now=now, timeout=self.timeout)
            except Exception as error:  # a scrape must still show the process's own counters
                log.warning("metrics: the database's gauges could not be read: %s", type(error).__name__)
                return None
            self._cached = (time.monotonic(), gauges)
            return gauges


def _desk_metrics(gauges: DeskGauges, now: datetime) -> Iterator[Metric]:
    held = GaugeMetricFamily("mailcase_held_messages", "Messages held for an agent's review.")
    held.add_metric([], gauges.held)
    yield held
    notices = GaugeMetricFamily(
        "mailcase_outbox_notices", "Notices queued, being sent, or failed, by kind.", labels=["state", "kind"]
    )
    for (state, kind), count in sorted(gauges.notices.items()):
        notices.add_metric([state, kind], count)
    yield notices
    oldest = GaugeMetricFamily(
        "mailcase_outbox_oldest_due_age_seconds", "How long the longest-waiting due notice has waited (0: none)."
    )
    waited = (now - gauges.oldest_due_at).total_seconds() if gauges.oldest_due_at is not None else 0.0
    oldest.add_metric([], max(0.0, waited))
    yield oldest
    cases = GaugeMetricFamily(
        "mailcase_open_cases", "Cases not closed, by status and priority.", labels=["status", "priority"]
    )
    for (status, priority), count in sorted(gauges.open_cases.items()):
        cases.add_metric([status, priority], count)
    yield cases


def build_registry(desk: DeskCollector) -> CollectorRegistry:
    """In multiprocess mode (PROMETHEUS_MULTIPROC_DIR set), a registry that adds up every process's
    files; else the process's default registry (its metrics plus process and GC figures)."""
    import mailcase.telemetry  # noqa: F401  (defines the counters, so a scrape shows them from the start)

    registry = CollectorRegistry()
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    else:
        registry.register(_ThisProcess())
    registry.register(desk)
    return registry


class _ThisProcess(Collector):
    """The default registry's metrics (ours, and the process and GC figures of prometheus-client)."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
