"""`mailcase serve`'s HTTP endpoint and alerts against a real daemon: each failing part (a locked database,
a relay that refuses, a mailbox whose password is wrong, a scheduler whose job is blocked) flips /readyz
and `mailcase health` to critical and back when it recovers, and the webhook hears exactly one alert
per change; the endpoint wants its bearer token; `mailcase health` says so when the daemon is not there."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from mailcase.store.engine import make_engine
from support.cli import SAMPLE_CONFIG, run_mailcase
from support.daemon import MailcaseDaemon, deliver, wait_until
from support.dovecot import DovecotServer, dovecot  # noqa: F401 (fixture)
from support.observe import TOKEN, WebhookReceiver, endpoint_env, get
from support.relay import CaptureRelay, free_port

WAIT = 60.0  # seconds: an upper bound on the daemon noticing a change (checks run every 0.5 s), never asserted
ADMIN = "ops-admin@support.example.com"


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


def health(daemon: MailcaseDaemon, *args: str) -> tuple[int, str]:
    result = daemon.cli("health", *args)
    return result.status, result.stdout


def readyz(port: int) -> tuple[int, str]:
    return get(port, "/readyz")


def health_alerts(database_url: str) -> list[tuple[str, str]]:
    """(recipients, idempotency key) of the admin's health mails in the outbox."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            query = sa.text("SELECT recipients, idempotency_key FROM outbox WHERE kind = 'health_alert'")
            return [(str(row[0]), str(row[1])) for row in connection.execute(query)]
    finally:
        engine.dispose()


def test_the_endpoint_wants_its_token_and_health_reports_every_part_ok(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    port = free_port()
    with MailcaseDaemon(tmp_path, env=endpoint_env(port, token_file=token_file)) as daemon:
        daemon.prepare()
        daemon.start()
        wait_until(lambda: get(port, "/healthz", token=TOKEN)[0] == 200, timeout=WAIT, what="/healthz")
        for path in ("/healthz", "/readyz", "/metrics"):
            assert get(port, path)[0] == 401
            assert get(port, path, token="wrong")[0] == 401
        status, body = get(port, "/readyz", token=TOKEN)
        assert status == 200, body
        assert body.splitlines()[0] == "ready: 3 parts ok"
        assert {line.split()[0]: line.split()[1] for line in body.splitlines()[1:]} == {
            "smtp": "ok", "scheduler": "ok", "database": "ok",
        }  # fmt: skip

        status, out = health(daemon)
        assert status == 0, out
        assert out.startswith("MAILCASE OK - ready: 3 parts ok")
        status, out = health(daemon, "--json")
        report = json.loads(out)
        assert status == 0 and report["status"] == "ok" and report["reachable"] is True
        assert [part["part"] for part in report["parts"]] == ["smtp", "scheduler", "database"]
        assert TOKEN not in daemon.log()
        assert daemon.stop() == 0


def test_health_says_clearly_when_the_daemon_is_not_reachable_or_the_endpoint_is_off(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    common = {"database_url": f"sqlite:///{tmp_path / 'm.db'}", "config": SAMPLE_CONFIG}
    result = run_mailcase(["health"], env=endpoint_env(port), **common)
    assert result.status == 2
    assert result.stdout.startswith(f"MAILCASE CRITICAL - the daemon is not reachable at http://127.0.0.1:{port}/readyz")
    assert "is `mailcase serve` running?" in result.stdout
    result = run_mailcase(["health", "--json"], env=endpoint_env(port), **common)
    assert result.status == 2 and json.loads(result.stdout)["reachable"] is False

    result = run_mailcase(["health"], env={}, **common)
    assert result.status == 3
    assert "[http] is not enabled" in result.stdout


def test_a_locked_database_flips_readyz_and_health_and_alerts_once_each_way(
    tmp_path: Path, hook: WebhookReceiver
) -> None:
    port = free_port()
    env = endpoint_env(port, webhook=hook.url)
    with MailcaseDaemon(tmp_path, env=env) as daemon:
        daemon.prepare()
        daemon.start()
        wait_until(lambda: readyz(port)[0] == 200, timeout=WAIT, what="ready")
        database = daemon.database_url.removeprefix("sqlite:///")
        locker = sqlite3.connect(database, isolation_level=None, timeout=10)
        try:
            locker.execute("BEGIN EXCLUSIVE")  # what a long transaction of another process does
            _status, body = wait_until(lambda: (lambda r: r if r[0] == 503 else None)(readyz(port)), timeout=WAIT,
                                      what="/readyz 503")  # fmt: skip
            assert body.splitlines()[0] == "not ready: database"
            assert "database critical" in body and "database is locked" in body
            code, out = health(daemon)
            assert code == 2 and out.startswith("MAILCASE CRITICAL - not ready: database"), out
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        wait_until(lambda: readyz(port)[0] == 200, timeout=WAIT, what="ready again")
        assert health(daemon)[0] == 0
        wait_until(lambda: len(hook.states("database")) >= 2, timeout=WAIT, what="two webhook alerts")
        assert hook.states("database") == ["critical", "ok"]
        critical = next(alert for alert in hook.alerts if alert["state"] == "critical")
        assert critical["previous"] == "ok" and "database is locked" in critical["detail"]
        assert [alert["part"] for alert in hook.alerts] == ["database", "database"]
        assert "health: database is critical (was ok)" in daemon.log()
        assert daemon.stop() == 0


def test_a_refusing_relay_flips_the_outbox_and_back_with_one_alert_each_way_and_no_mail(
    tmp_path: Path, hook: WebhookReceiver
) -> None:
    port, relay_port = free_port(), free_port()  # nothing listens on the relay's port yet: refused
    env = endpoint_env(port, webhook=hook.url, relay_down_seconds="0") | {
        "MAILCASE_OUTBOUND__HOST": "127.0.0.1",
        "MAILCASE_OUTBOUND__PORT": str(relay_port),
        "MAILCASE_OUTBOUND__RETRY_BASE_SECONDS": "1",
        "MAILCASE_OUTBOUND__RETRY_MAX_SECONDS": "2",
        "MAILCASE_SCHEDULER__OUTBOX_INTERVAL_SECONDS": "1",
        "MAILCASE_ALERTS__ADMIN_ADDRESS": ADMIN,
    }
    with MailcaseDaemon(tmp_path, env=env) as daemon:
        daemon.env.pop("MAILCASE_OUTBOUND__ENABLED")
        daemon.prepare()
        daemon.start()
        assert deliver(daemon, 1) == 250  # its acknowledgement waits for the relay
        _status, body = wait_until(lambda: (lambda r: r if r[0] == 503 else None)(readyz(port)), timeout=WAIT,
                                  what="/readyz 503")  # fmt: skip
        assert body.splitlines()[0] == "not ready: outbox"
        assert "outbox critical" in body and "relay refusing" in body and "ConnectionRefusedError" in body
        assert health(daemon)[0] == 2
        with CaptureRelay(port=relay_port) as relay:
            wait_until(lambda: relay.messages, timeout=WAIT, what="the acknowledgement delivered")
            wait_until(lambda: readyz(port)[0] == 200, timeout=WAIT, what="ready again")
            assert health(daemon)[0] == 0
            wait_until(lambda: len(hook.states("outbox")) >= 2, timeout=WAIT, what="two webhook alerts")
        assert hook.states("outbox") == ["critical", "ok"]
        assert health_alerts(daemon.database_url) == []  # the relay is what failed: no mail through it
        assert daemon.stop() == 0


def test_a_relay_answering_4xx_shows_on_readyz_although_another_process_delivers(tmp_path: Path) -> None:
    # Delivery runs in its own process: what its transport learnt of the relay reaches /readyz in
    # the main process through the database.
    port = free_port()
    env = endpoint_env(port) | {
        "MAILCASE_SCHEDULER__OUTBOX_INTERVAL_SECONDS": "1",
        "MAILCASE_OUTBOUND__RETRY_BASE_SECONDS": "1",
        "MAILCASE_OUTBOUND__RETRY_MAX_SECONDS": "2",
    }
    with CaptureRelay() as relay, MailcaseDaemon(tmp_path, relay=relay, env=env) as daemon:
        relay.fail_next(1000, "451 4.3.0 Relay busy, try again later")
        daemon.prepare()
        daemon.start()
        assert deliver(daemon, 1) == 250
        _status, body = wait_until(lambda: (lambda r: r if "relay refusing" in r[1] else None)(readyz(port)),
                                  timeout=WAIT, what="/readyz naming the refusing relay")  # fmt: skip
        assert "451 Relay busy" in body or "451 4.3.0 Relay busy" in body
        relay.clear_failures()
        wait_until(lambda: "relay reachable" in readyz(port)[1], timeout=WAIT, what="the relay reachable again")
        assert daemon.stop() == 0


def test_a_wrong_mailbox_password_flips_the_mailbox_and_back_once_fixed(
    tmp_path: Path, hook: WebhookReceiver, dovecot: DovecotServer
) -> None:
    port = free_port()
    daemon_password = "the password in our config"
    env = endpoint_env(port, webhook=hook.url) | {
        "MAILCASE_IMAP__0__NAME": "desk",
        "MAILCASE_IMAP__0__HOST": dovecot.host,
        "MAILCASE_IMAP__0__PORT": str(dovecot.port),
        "MAILCASE_IMAP__0__TLS": "none",
        "MAILCASE_IMAP__0__USER": dovecot.user,
        "MAILCASE_IMAP__0__PASSWORD": daemon_password,  # the server expects dovecot.password
        "MAILCASE_IMAP__0__POLL_INTERVAL_SECONDS": "1",
    }
    with MailcaseDaemon(tmp_path, env=env) as daemon:
        daemon.prepare()
        daemon.start()
        _status, body = wait_until(lambda: (lambda r: r if r[0] == 503 else None)(readyz(port)), timeout=WAIT,
                                  what="/readyz 503")  # fmt: skip
        assert body.splitlines()[0] == "not ready: imap:desk"
        assert "imap:desk critical" in body and "sign-in refused" in body
        assert daemon_password not in body and daemon_password not in daemon.log()
        code, out = health(daemon)
        assert code == 2 and "imap:desk critical" in out

        dovecot.set_password(daemon_password)  # the admin fixes the account on the server
        wait_until(lambda: readyz(port)[0] == 200, timeout=WAIT, what="ready again")
        assert health(daemon)[0] == 0
        wait_until(lambda: len(hook.states("imap:desk")) >= 2, timeout=WAIT, what="two webhook alerts")
        assert hook.states("imap:desk") == ["critical", "ok"]
        assert daemon.stop() == 0


@pytest.mark.postgres
def test_a_blocked_sweep_flips_the_scheduler_and_back_with_one_alert_and_one_admin_mail(
    tmp_path: Path, hook: WebhookReceiver, migrated_pg_url: str
) -> None:
    port = free_port()
    env = endpoint_env(port, webhook=hook.url, sweep_stall_seconds="3") | {
        "MAILCASE_SCHEDULER__SWEEP_INTERVAL_SECONDS": "1",
        "MAILCASE_ALERTS__ADMIN_ADDRESS": ADMIN,
    }
    with MailcaseDaemon(tmp_path, database_url=migrated_pg_url, env=env) as daemon:
        daemon.prepare()
        daemon.start()
        wait_until(lambda: readyz(port)[0] == 200, timeout=WAIT, what="ready")
        engine = make_engine(migrated_pg_url)
        try:
            with engine.connect() as locker:
                # The sweep's SELECT … FOR UPDATE SKIP LOCKED waits behind this lock (plain reads do not).
                locker.execute(sa.text("LOCK TABLE support_case IN EXCLUSIVE MODE"))
                _status, body = wait_until(lambda: (lambda r: r if r[0] == 503 else None)(readyz(port)),
                                          timeout=WAIT, what="/readyz 503")  # fmt: skip
                assert body.splitlines()[0] == "not ready: scheduler"
                assert "scheduler critical" in body and "a sweep has been running for" in body
                assert "database ok" in body
                assert health(daemon)[0] == 2
                locker.rollback()
            wait_until(lambda: readyz(port)[0] == 200, timeout=WAIT, what="ready again")
            assert health(daemon)[0] == 0
            wait_until(lambda: len(hook.states("scheduler")) >= 2, timeout=WAIT, what="two webhook alerts")
            assert hook.states("scheduler") == ["critical", "ok"]
            ((recipients, key),) = health_alerts(migrated_pg_url)
            assert ADMIN in recipients and ":scheduler:critical:" in key
        finally:
            engine.dispose()
        assert daemon.stop() == 0
