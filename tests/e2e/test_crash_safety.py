"""Nothing lost, nothing twice (SPEC.md §3): `mailcase serve` killed mid-burst, and the database unavailable during delivery.

A 250 is a promise: the message, its case and its acknowledgement are committed. These tests
break the daemon or its database at the worst moment and check the promise from the sender's side.
"""

from __future__ import annotations

import email.policy
import smtplib
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path

import pytest
import sqlalchemy as sa

from mailcase.store.engine import make_engine
from support.cli import MailcaseCli
from support.daemon import MailcaseDaemon

SUPPORT = "support@support.example.com"
SENDERS = ("pat@acme.example", "sam@acme.example", "joao@brisa.example.com.br")  # MPOCs
BURST = 500
CLIENTS = 8
KILL_AFTER = BURST // 3  # 250 replies seen before the kill: well inside the burst
BUSY_TIMEOUT = 5.0  # seconds SQLite waits for a lock (mailcase/db.py); not configurable


def burst_message(number: int, run: str) -> tuple[str, bytes]:
    sender = SENDERS[number % len(SENDERS)]
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = SUPPORT
    mail["Subject"] = f"Burst {run} message {number}: extension {1000 + number} has no dial tone"
    mail["Message-ID"] = f"<burst-{run}-{number}@acme.example>"
    mail.set_content(f"Extension {1000 + number} has no dial tone since the storm.\n")
    return mail["Message-ID"], mail.as_bytes(policy=email.policy.SMTP)


def deliver(daemon: MailcaseDaemon, sender: str, data: bytes) -> int:
    """One message on its own connection; the final reply code, or 0 when the connection failed."""
    return deliver_with_reply(daemon, sender, data)[0]


def deliver_with_reply(daemon: MailcaseDaemon, sender: str, data: bytes) -> tuple[int, bytes]:
    try:
        with smtplib.SMTP(daemon.host, daemon.port, local_hostname="client.acme.example", timeout=30) as client:
            client.ehlo()
            if client.mail(sender)[0] != 250 or client.rcpt(SUPPORT)[0] != 250:
                return 0, b""
            return client.data(data)
    except (OSError, smtplib.SMTPException):
        return 0, b""


def send_burst(
    daemon: MailcaseDaemon,
    messages: list[tuple[str, bytes]],
    *,
    on_accepted: Iterable[threading.Event] = (),
    accepted_before_signal: int = 0,
) -> dict[str, int]:
    """Every message from CLIENTS threads, one per connection; Message-ID -> final reply code.

    When `accepted_before_signal` is set, the events are set once that many 250s came back.
    """
    replies: dict[str, int] = {}
    lock = threading.Lock()
    queue = list(enumerate(messages))
    events = list(on_accepted)

    def worker() -> None:
        while True:
            with lock:
                if not queue:
                    return
                number, (message_id, data) = queue.pop(0)
            code = deliver(daemon, SENDERS[number % len(SENDERS)], data)
            with lock:
                replies[message_id] = code
                accepted = sum(1 for c in replies.values() if c == 250)
            if accepted_before_signal and accepted >= accepted_before_signal:
                for event in events:
                    event.set()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return replies


def stored(database_url: str, query: str, **params: object) -> list[tuple]:
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(sa.text(query), params)]
    finally:
        engine.dispose()


def customer_mail(subject: str, message_id: str) -> bytes:
    mail = EmailMessage()
    mail["From"] = "pat@acme.example"
    mail["To"] = SUPPORT
    mail["Subject"] = subject
    mail["Message-ID"] = message_id
    mail.set_content("The IVR does not answer since 9:00.\n")
    return mail.as_bytes(policy=email.policy.SMTP)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[MailcaseDaemon]:
    with MailcaseDaemon(tmp_path) as running:
        running.prepare()
        running.start()
        yield running


# ---------------------------------------------------------------------------------------------
# kill -9 in the middle of a burst


def test_kill_9_mid_burst_loses_no_accepted_message_and_a_resend_duplicates_no_case(daemon: MailcaseDaemon) -> None:
    messages = [burst_message(n, "k9") for n in range(BURST)]
    kill_now = threading.Event()
    killer = threading.Thread(target=lambda: (kill_now.wait(120), daemon.kill()), daemon=True)
    killer.start()

    replies = send_burst(daemon, messages, on_accepted=[kill_now], accepted_before_signal=KILL_AFTER)
    kill_now.set()  # a burst that never got that far still ends with the kill (and fails below)
    killer.join(30)

    accepted = {mid for mid, code in replies.items() if code == 250}
    assert KILL_AFTER <= len(accepted) < BURST, "the kill must land inside the burst"
    assert not daemon.running
    daemon.start()  # restart on the same database
    rows = stored(
        daemon.database_url,
        "SELECT r.message_id_header, c.number FROM raw_message r LEFT JOIN support_case c ON c.id = r.case_id",
    )
    cases_by_message = {mid: number for mid, number in rows}
    assert accepted <= set(cases_by_message), "a message answered 250 is missing after the crash"
    assert all(cases_by_message[mid] is not None for mid in accepted)

    again = send_burst(daemon, messages)

    assert sorted(set(again.values())) == [250]
    rows = stored(daemon.database_url, "SELECT message_id_header, case_id FROM raw_message")
    assert len(rows) == BURST  # one stored copy per message, whatever got through before the crash
    assert {mid for mid, _case in rows} == {mid for mid, _data in messages}
    (cases,) = stored(daemon.database_url, "SELECT count(*) FROM support_case")[0]
    assert cases == BURST
    assert daemon.stop() == 0


# ---------------------------------------------------------------------------------------------
# The database unavailable during delivery


@contextmanager
def sqlite_write_lock(database_url: str) -> Iterator[sqlite3.Connection]:
    """Another process's long write transaction: BEGIN EXCLUSIVE on the daemon's SQLite file."""
    path = database_url.removeprefix("sqlite:///")
    connection = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT)
    try:
        connection.execute("BEGIN EXCLUSIVE")
        yield connection
    finally:
        connection.rollback()
        connection.close()


def test_locked_sqlite_database_gets_451_or_exit_75_writes_nothing_and_the_retry_succeeds(
    daemon: MailcaseDaemon, tmp_path: Path
) -> None:
    data = customer_mail("IVR does not answer", "<ivr-down-1@acme.example>")
    piped = tmp_path / "piped.eml"
    piped.write_bytes(customer_mail("Fax line dead", "<fax-dead-1@acme.example>"))
    pipe = MailcaseCli(daemon.database_url)  # `mailcase ingest` as an MTA pipe transport runs it

    with sqlite_write_lock(daemon.database_url) as lock:
        # Both wait out the busy timeout (5 s) behind our lock, side by side, then give up.
        piping = ThreadPoolExecutor(max_workers=1).submit(pipe.process, "ingest", str(piped))
        code, reply = deliver_with_reply(daemon, "pat@acme.example", data)
        exit_status = piping.result(60)

        assert code == 451 and reply.startswith(b"4.3.0")
        assert exit_status.status == 75, exit_status.stderr  # EX_TEMPFAIL: the MTA keeps it and retries
        assert "temporary failure" in exit_status.stderr
        # Read inside the lock holder's own transaction: nothing of either message was written.
        for table in ("raw_message", "support_case", "message", "outbox", "held_message"):
            assert lock.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table

    assert deliver(daemon, "pat@acme.example", data) == 250
    assert pipe.process("ingest", str(piped)).status == 0
    rows = stored(daemon.database_url, "SELECT r.message_id_header, c.number FROM raw_message r "
                                       "JOIN support_case c ON c.id = r.case_id ORDER BY c.number")
    assert rows == [("<ivr-down-1@acme.example>", 1), ("<fax-dead-1@acme.example>", 2)]
    assert "reply=451" in daemon.log()


def test_unreachable_postgresql_gets_451_writes_nothing_and_the_retry_succeeds(
    tmp_path: Path, fresh_pg_url: str, pg_admin_url: str
) -> None:
    name = fresh_pg_url.rsplit("/", 1)[1]
    admin = sa.create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    data = customer_mail("Trunk 3 down", "<trunk-3-down@acme.example>")
    try:
        with MailcaseDaemon(tmp_path, database_url=fresh_pg_url) as daemon:
            daemon.prepare()
            daemon.start()
            assert deliver(daemon, "pat@acme.example", customer_mail("Warm-up", "<warm@acme.example>")) == 250
            with admin.connect() as connection:  # the database goes away under the running daemon
                connection.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
                connection.execute(
                    sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name}
                )

            code, reply = deliver_with_reply(daemon, "pat@acme.example", data)
            assert code == 451 and reply.startswith(b"4.3.0")

            with admin.connect() as connection:
                connection.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
            assert stored(fresh_pg_url, "SELECT count(*) FROM raw_message") == [(1,)]  # only the warm-up
            assert deliver(daemon, "pat@acme.example", data) == 250
            rows = stored(fresh_pg_url, "SELECT message_id_header, decision FROM raw_message ORDER BY id")
            assert rows == [("<warm@acme.example>", "open_case"), ("<trunk-3-down@acme.example>", "open_case")]
            assert daemon.stop() == 0
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        admin.dispose()
