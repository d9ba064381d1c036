"""Issue 13 points 1-4 against real `mailcase serve` processes and a capture relay.

Each test reproduces one delivery defect with small counts and short leases set through config,
and asserts what the customer would notice: each notice exactly once at the relay, delivered
again within seconds of a restart, delivered at all after a long relay outage.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from support.daemon import MailcaseDaemon, wait_until
from support.faults import outbox_states, seed_notices
from support.relay import CaptureRelay, free_port

FAST = {
    "MAILCASE_OUTBOUND__TIMEOUT_SECONDS": "1",
    "MAILCASE_OUTBOUND__LEASE_SECONDS": "2",
    "MAILCASE_SCHEDULER__OUTBOX_INTERVAL_SECONDS": "1",
}


def message_ids(relay: CaptureRelay) -> collections.Counter[str]:
    return collections.Counter(str(m.message["Message-ID"]) for m in relay.messages)


@pytest.mark.postgres
def test_two_replicas_and_a_slow_relay_deliver_every_notice_exactly_once(
    tmp_path: Path, migrated_pg_url: str
) -> None:
    # A 2-second lease and a relay taking 0.15 s per message: the first replica's batch takes
    # several leases to send, so without renewal the second replica would take its rows over.
    count = 24
    with CaptureRelay(delay_seconds=0.15) as relay:
        a = MailcaseDaemon(tmp_path / "a", database_url=migrated_pg_url, relay=relay, env=FAST)
        b = MailcaseDaemon(tmp_path / "b", database_url=migrated_pg_url, relay=relay, env=FAST)
        with a, b:
            a.prepare()
            seed_notices(migrated_pg_url, count)
            a.start()
            b.start()
            wait_until(lambda: outbox_states(migrated_pg_url).get("sent") == count, timeout=60, what="every notice sent")
            assert a.running and b.running
        seen = message_ids(relay)
    assert len(seen) == count
    assert max(seen.values()) == 1, [m for m, n in seen.items() if n > 1]
    assert "queued again" not in a.log() + b.log()
    print(f"\ntwo replicas, relay 0.15 s/message, 2 s lease: {count} notices, {sum(seen.values()) - len(seen)} sent twice")


@contextlib.contextmanager
def delivering(tmp_path: Path, count: int) -> Iterator[tuple[CaptureRelay, MailcaseDaemon]]:
    """A daemon with `count` notices seeded, a slow relay and a 10-minute lease, once the first
    few notices are at the relay: only a claim's process and start time can make recovery fast."""
    env = {**FAST, "MAILCASE_OUTBOUND__LEASE_SECONDS": "600"}
    with CaptureRelay(delay_seconds=0.1) as relay, MailcaseDaemon(tmp_path, relay=relay, env=env) as daemon:
        daemon.prepare()
        seed_notices(daemon.database_url, count)
        daemon.start()
        wait_until(lambda: len(relay.messages) >= 3, timeout=30, what="delivery under way")
        yield relay, daemon


def test_a_restarted_daemon_recovers_its_killed_predecessors_claims_at_once(tmp_path: Path) -> None:
    count = 20
    with delivering(tmp_path, count) as (relay, daemon):
        daemon.kill()
        stranded = outbox_states(daemon.database_url).get("sending", 0)
        restarted = time.monotonic()
        daemon.start()
        wait_until(lambda: outbox_states(daemon.database_url).get("sent") == count, timeout=60, what="every notice sent")
        recovery = time.monotonic() - restarted
        log = daemon.log()
        seen = message_ids(relay)
    assert stranded > 0, "the kill came after the batch: nothing to recover"
    assert recovery < 30, f"{recovery:.1f} s to deliver the rest after the restart"
    assert "held by a stopped daemon are queued again" in log
    assert len(seen) == count
    # At most the one message whose 250 was in flight at the kill is sent again (README's window).
    assert sum(n - 1 for n in seen.values()) <= 1
    print(f"\nkill -9 recovery: {stranded} rows stranded, all sent {recovery:.2f} s after the restart")


def delivery_pids(daemon: MailcaseDaemon) -> list[int]:
    """The delivery processes the daemon logged as started, oldest first."""
    return [int(line.rsplit("pid=", 1)[1]) for line in daemon.log().splitlines() if "delivery worker started pid=" in line]


def test_a_killed_delivery_process_is_restarted_and_its_claims_are_sent_once(tmp_path: Path) -> None:
    count = 20
    with delivering(tmp_path, count) as (relay, daemon):
        (first,) = delivery_pids(daemon)
        os.kill(first, signal.SIGKILL)
        stranded = outbox_states(daemon.database_url).get("sending", 0)
        wait_until(lambda: outbox_states(daemon.database_url).get("sent") == count, timeout=60, what="every notice sent")
        assert daemon.running
        log = daemon.log()
        seen = message_ids(relay)
    assert stranded > 0, "the kill came after the batch: nothing to recover"
    assert f"delivery worker (pid {first}) exited with status -9 (killed by SIGKILL); restarting it" in log
    assert len(delivery_pids(daemon)) == 2
    assert "held by a stopped daemon are queued again" in log
    assert len(seen) == count
    # At most the one message whose 250 was in flight at the kill is sent again (README's window).
    assert sum(n - 1 for n in seen.values()) <= 1


def test_a_relay_down_longer_than_the_retry_schedule_loses_no_notice(tmp_path: Path) -> None:
    # Two attempts, a 1-2 s backoff: the whole schedule is spent within seconds of outage.
    port = free_port()
    env = {
        **FAST,
        "MAILCASE_OUTBOUND__HOST": "127.0.0.1",
        "MAILCASE_OUTBOUND__PORT": str(port),
        "MAILCASE_OUTBOUND__MAX_ATTEMPTS": "2",
        "MAILCASE_OUTBOUND__RETRY_BASE_SECONDS": "1",
        "MAILCASE_OUTBOUND__RETRY_MAX_SECONDS": "2",
    }
    count = 5
    with MailcaseDaemon(tmp_path, env={**env, "MAILCASE_OUTBOUND__ENABLED": "true"}) as daemon:
        daemon.prepare()
        seed_notices(daemon.database_url, count)
        daemon.start()
        wait_until(lambda: daemon.log().count("delivery paused") >= 4, timeout=60, what="four paused passes")
        assert outbox_states(daemon.database_url) == {"queued": count}
        with CaptureRelay(port=port) as relay:
            wait_until(lambda: outbox_states(daemon.database_url).get("sent") == count, timeout=30, what="delivery after the outage")
            seen = message_ids(relay)
        log = daemon.log()
    assert len(seen) == count and max(seen.values()) == 1
    # One probe per pause, not one try per notice: each pass logs one pause line and no deferral.
    assert "deferred (attempt" not in log
    assert "delivery resumes" in log
    print(f"\nrelay outage: {log.count('delivery paused')} paused passes, {count} notices, none failed, each sent once after it came back")


@pytest.mark.postgres
def test_database_connections_killed_during_delivery_resend_nothing(tmp_path: Path, migrated_pg_url: str, pg_admin_url: str) -> None:
    # Each time the relay has a message, every backend of the daemon's database is terminated
    # before the relay answers 250: the daemon must record that 250 over a new connection.
    count = 12
    database = migrated_pg_url.rsplit("/", 1)[1]
    admin = sa.create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    terminated: list[int] = []

    def terminate_backends() -> None:
        with admin.connect() as connection:
            pids = connection.execute(
                sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :db AND pid <> pg_backend_pid()"),
                {"db": database},
            ).all()
        terminated.append(len(pids))

    try:
        with CaptureRelay() as relay, MailcaseDaemon(tmp_path, database_url=migrated_pg_url, relay=relay, env=FAST) as daemon:
            daemon.prepare()
            seed_notices(migrated_pg_url, count)
            relay.on_message = terminate_backends
            daemon.start()
            wait_until(lambda: len(relay.messages) >= count, timeout=60, what="every notice at the relay")
            relay.on_message = None
            wait_until(lambda: outbox_states(migrated_pg_url).get("sent") == count, timeout=30, what="every notice recorded sent")
            seen = message_ids(relay)
    finally:
        admin.dispose()
    assert sum(terminated) >= count  # backends really were killed, once per message at least
    assert len(seen) == count
    assert max(seen.values()) == 1, [m for m, n in seen.items() if n > 1]
    print(f"\npg_terminate_backend before each 250: {sum(terminated)} backends terminated, {count} notices, 0 sent twice")
