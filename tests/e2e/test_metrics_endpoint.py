"""`mailcase serve`'s /metrics, parsed with prometheus_client.parser: the counters move by exactly the
number of messages sent and notices delivered, with one SMTP process and with two (prometheus-client's
multiprocess mode adds up the worker's counters), and the database's gauges show the open cases."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from support.daemon import MailcaseDaemon, deliver, wait_until
from support.observe import endpoint_env, scrape, total
from support.relay import CaptureRelay, free_port

WAIT = 60.0  # seconds: an upper bound on delivery and the gauges' cache, never asserted


@pytest.mark.parametrize("workers", [1, 2])
def test_counters_move_by_exactly_the_messages_sent_and_the_notices_delivered(tmp_path: Path, workers: int) -> None:
    messages = 12 if workers == 1 else 24
    port = free_port()
    env = endpoint_env(port) | {"MAILCASE_SMTP__WORKERS": str(workers)}
    with CaptureRelay() as relay, MailcaseDaemon(tmp_path, relay=relay, env=env, outbox_interval_seconds=1) as daemon:
        daemon.prepare()
        daemon.start()
        wait_until(lambda: scrape(port), timeout=WAIT, what="/metrics")
        if workers == 2:
            wait_until(lambda: "SMTP worker 1 serving" in daemon.log(), timeout=WAIT, what="the worker process")
        before = scrape(port)
        with ThreadPoolExecutor(max_workers=4) as pool:
            codes = list(pool.map(lambda n: deliver(daemon, n), range(messages)))
        assert codes == [250] * messages
        def settled() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
            """A scrape once every acknowledgement went out and the relay holds exactly what was counted sent
            (each new case also tells its assignee)."""
            samples, relayed = scrape(port), len(relay.messages)
            sent = total(samples, "mailcase_outbox_sent_total") - total(before, "mailcase_outbox_sent_total")
            acks = total(samples, "mailcase_outbox_sent_total", kind="customer.ack") - total(
                before, "mailcase_outbox_sent_total", kind="customer.ack"
            )
            return samples if acks == messages and sent == relayed == len(relay.messages) else None

        after = wait_until(settled, timeout=WAIT, what="every acknowledgement delivered and counted")

        def moved(name: str, **labels: str) -> float:
            return total(after, name, **labels) - total(before, name, **labels)

        assert moved("mailcase_inbound_messages_total", channel="smtp") == messages
        assert moved("mailcase_inbound_messages_total", channel="smtp", decision="open_case") == messages
        assert moved("mailcase_ingest_duration_seconds_count", channel="smtp") == messages
        relayed = moved("mailcase_outbox_sent_total")
        assert relayed >= messages  # the acknowledgements, and the assignees' notices of new cases
        assert moved("mailcase_delivery_attempts_total", result="sent", reply_class="2xx") == relayed
        assert moved("mailcase_delivery_attempts_total") == relayed
        opened = wait_until(
            lambda: (lambda s: s if total(s, "mailcase_open_cases") == messages else None)(scrape(port)),
            timeout=WAIT, what="the open-case gauge (cached up to 10 s)",
        )  # fmt: skip
        assert total(opened, "mailcase_open_cases", status="new", priority="P4") == messages
        assert total(opened, "mailcase_held_messages") == 0
        assert total(opened, "mailcase_health_state", part="database") == 0
        if workers == 2:
            # The worker process ingested some of them: without multiprocess mode they would be missing.
            assert "[smtp-worker 1] mailcase.ingest.pipeline: ingest" in daemon.log()
        assert daemon.stop() == 0
