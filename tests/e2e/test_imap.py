"""IMAP ingestion against a real Dovecot: stored once, moved only after commit, nothing lost across crashes, restarts and UIDVALIDITY resets."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from mailcase.clock import FixedClock
from mailcase.db import make_engine, transaction, upgrade_schema
from mailcase.domain import Channel, RawMessage
from mailcase.errors import TransientError
from mailcase.ingest.imap import MailboxPoller
from mailcase.models import MailboxCursor, RawMessageRecord
from mailcase.store.common import insert_or_ignore
from mailcase.store.mailboxes import load_cursor
from support.dovecot import DovecotServer, dovecot, dovecot_without_move  # noqa: F401 (fixtures)

pytestmark = pytest.mark.dovecot

Ingest = Callable[[RawMessage], object]
LOGGER = "mailcase.ingest.imap.test"
WAIT_SECONDS = 10.0


# -- the pipeline stand-in -------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'mailcase.db'}")
    upgrade_schema(engine)
    yield engine
    engine.dispose()


def store_raw(engine: Engine) -> Ingest:
    """Stand-in for the shared pipeline with the same contract: commits before returning, one row
    per distinct message (insert-or-ignore on the content digest), TransientError when the
    database is busy."""

    def ingest(raw: RawMessage) -> object:
        digest = hashlib.sha256(raw.data).hexdigest()
        with transaction(engine) as session:
            insert_or_ignore(
                session,
                RawMessageRecord.__table__,  # type: ignore[arg-type]
                {
                    "channel": raw.channel,
                    "received_at": raw.received_at,
                    "source": raw.source,
                    "size": len(raw.data),
                    "sha256": digest,
                    "data": raw.data,
                    "dedupe_key": "raw:" + digest,
                },
                conflict=["dedupe_key"],
            )
        return digest

    return ingest


@pytest.fixture
def ingest(db: Engine) -> Ingest:
    # The one line to change when the shared pipeline (mailcase.ingest.pipeline.Pipeline) is wired in.
    return store_raw(db)


def stored(engine: Engine) -> list[RawMessageRecord]:
    with Session(engine) as session:
        return list(session.exec(select(RawMessageRecord).order_by(RawMessageRecord.id)))  # type: ignore[arg-type]


def cursors(engine: Engine) -> set[str]:
    """Mailboxes a poller has connected to and scanned at least once."""
    with Session(engine) as session:
        return set(session.exec(select(MailboxCursor.mailbox)))


def stored_bodies(engine: Engine) -> list[bytes]:
    return sorted(row.data for row in stored(engine))


# -- helpers ---------------------------------------------------------------------------------


def message(number: int, *, tag: str = "m") -> bytes:
    return (
        f"From: Pat Doe <pat@acme.example>\r\n"
        f"To: support@support.example.com\r\n"
        f"Subject: Router {tag}{number} is down\r\n"
        f"Date: Wed, 25 Nov 2026 16:{number % 60:02d}:00 -0700\r\n"
        f"Message-ID: <{tag}{number}.imap-test@acme.example>\r\n"
        f"\r\n"
        f"Site {number} lost its uplink at 16:00.\r\n"
    ).encode()


def wait_until(condition: Callable[[], bool], timeout: float = WAIT_SECONDS) -> bool:
    """Poll `condition` until it holds or `timeout` passes (a bound, not a sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.fixture
def make_poller(db: Engine, ingest: Ingest, clock: FixedClock) -> Iterator[Callable[..., MailboxPoller]]:
    pollers: list[MailboxPoller] = []

    def make(
        server: DovecotServer,
        *,
        ingest_with: Ingest | None = None,
        engine: Engine | None = None,
        idle_renew_seconds: float = 25 * 60,
        **settings: Any,
    ) -> MailboxPoller:
        poller = MailboxPoller(
            server.settings(**settings),
            ingest=ingest_with or ingest,
            engine=engine or db,
            clock=clock,
            stop=threading.Event(),
            logger=logging.getLogger(LOGGER),
            lock_retry_seconds=0.1,
            backoff_base_seconds=0.05,
            backoff_max_seconds=0.5,
            idle_renew_seconds=idle_renew_seconds,
        )
        pollers.append(poller)
        return poller

    yield make
    for poller in pollers:
        poller.close()


@pytest.fixture
def running() -> Iterator[Callable[[MailboxPoller], threading.Thread]]:
    """Start `poller.run()` in a thread, as `serve` does; stopped and joined afterwards."""
    started: list[tuple[MailboxPoller, threading.Thread]] = []

    def start(poller: MailboxPoller) -> threading.Thread:
        thread = threading.Thread(target=poller.run, name=f"imap-{poller.settings.name}", daemon=True)
        thread.start()
        started.append((poller, thread))
        return thread

    yield start
    for poller, thread in started:
        poller.stop()
        thread.join(timeout=WAIT_SECONDS)
        assert not thread.is_alive(), "poller did not stop"


# -- the tests -------------------------------------------------------------------------------


def test_twenty_messages_are_stored_once_and_moved_to_processed(
    dovecot: DovecotServer, make_poller: Callable[..., MailboxPoller], db: Engine, clock: FixedClock
) -> None:
    sent = [message(i) for i in range(1, 21)]
    dovecot.append(sent)
    poller = make_poller(dovecot, batch_size=7)

    assert poller.poll_once() == 20

    rows = stored(db)
    assert sorted(row.data for row in rows) == sorted(sent)
    uidvalidity = dovecot.uidvalidity()
    assert {row.source for row in rows} == {f"imap:desk uidvalidity={uidvalidity} uid={uid}" for uid in range(1, 21)}
    assert {row.channel for row in rows} == {Channel.IMAP}
    assert {row.received_at for row in rows} == {clock.now()}
    assert dovecot.uids("INBOX") == []
    assert sorted(dovecot.messages("Processed")) == sorted(sent)
    with Session(db) as session:
        assert load_cursor(session=session, mailbox=poller.mailbox) == (uidvalidity, 20)


def test_polling_again_or_after_a_restart_stores_nothing_twice(
    dovecot: DovecotServer, make_poller: Callable[..., MailboxPoller], db: Engine
) -> None:
    sent = [message(i) for i in range(1, 21)]
    dovecot.append(sent)
    first = make_poller(dovecot)
    assert first.poll_once() == 20

    assert first.poll_once() == 0
    first.close()
    assert make_poller(dovecot).poll_once() == 0

    assert stored_bodies(db) == sorted(sent)
    assert len(dovecot.uids("Processed")) == 20


def test_crash_between_commit_and_move_loses_nothing_and_duplicates_nothing(
    dovecot: DovecotServer, make_poller: Callable[..., MailboxPoller], ingest: Ingest, db: Engine
) -> None:
    sent = [message(i) for i in range(1, 11)]
    dovecot.append(sent)
    calls = 0

    def crash_after_ninth_commit(raw: RawMessage) -> object:
        nonlocal calls
        result = ingest(raw)  # committed
        calls += 1
        if calls == 9:
            raise SystemExit("killed between commit and move")
        return result

    # Batches of 7: the first batch is moved, the crash hits the second before its move.
    crashing = make_poller(dovecot, ingest_with=crash_after_ninth_commit, batch_size=7)
    with pytest.raises(SystemExit):
        crashing.poll_once()
    crashing.close()
    assert len(stored(db)) == 9
    assert dovecot.uids("INBOX") == [8, 9, 10]

    restarted = make_poller(dovecot, batch_size=7)
    restarted.poll_once()

    assert stored_bodies(db) == sorted(sent)
    assert dovecot.uids("INBOX") == []
    assert sorted(dovecot.messages("Processed")) == sorted(sent)


def test_server_without_move_gets_copy_and_uid_expunge_of_only_our_messages(
    dovecot_without_move: DovecotServer, make_poller: Callable[..., MailboxPoller], ingest: Ingest, db: Engine
) -> None:
    server = dovecot_without_move
    assert b"MOVE" not in server.capabilities()
    sent = [message(i) for i in range(1, 6)]
    server.append(sent)
    someone_elses = message(99, tag="deleted-by-a-person-")

    def ingest_while_another_client_flags_a_message(raw: RawMessage) -> object:
        if not stored(db):
            # Arrives after our SEARCH, flagged \Deleted but not expunged by its owner:
            # a plain EXPUNGE from us would destroy it.
            server.append([someone_elses], flags=(b"\\Deleted",))
        return ingest(raw)

    poller = make_poller(server, ingest_with=ingest_while_another_client_flags_a_message)

    assert poller.poll_once() == 5

    assert stored_bodies(db) == sorted(sent)
    assert sorted(server.messages("Processed")) == sorted(sent)
    assert server.messages("INBOX") == [someone_elses]


def test_uidvalidity_reset_rescans_the_folder_without_duplicates(
    dovecot: DovecotServer, make_poller: Callable[..., MailboxPoller], db: Engine
) -> None:
    first = [message(i) for i in range(1, 6)]
    dovecot.append(first)
    poller = make_poller(dovecot)
    assert poller.poll_once() == 5
    poller.close()
    # A restore from backup: two already-stored messages come back, three are new, and the
    # folder gets a new UIDVALIDITY with UIDs from 1 again, all below the old cursor (5).
    new = [message(i) for i in range(6, 9)]
    dovecot.append([first[0], first[1], *new])
    old_validity, new_validity = dovecot.reset_uidvalidity()
    assert dovecot.uids("INBOX") == [1, 2, 3, 4, 5]

    poller.poll_once()

    assert stored_bodies(db) == sorted(first + new)
    assert dovecot.uids("INBOX") == []
    with Session(db) as session:
        assert load_cursor(session=session, mailbox=poller.mailbox) == (new_validity, 5)
    assert new_validity != old_validity


def test_message_whose_ingest_fails_stays_in_the_folder_and_does_not_block_the_rest(
    dovecot: DovecotServer, make_poller: Callable[..., MailboxPoller], ingest: Ingest, db: Engine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sent = [message(i) for i in range(1, 6)]
    dovecot.append(sent)
    attempts: list[bytes] = []

    def ingest_with_a_bug_on_message_3(raw: RawMessage) -> object:
        attempts.append(raw.data)
        if raw.data == sent[2]:
            raise ValueError("bug in the pipeline")
        return ingest(raw)

    poller = make_poller(dovecot, ingest_with=ingest_with_a_bug_on_message_3)
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        assert poller.poll_once() == 4
        assert poller.poll_once() == 0

    assert stored_bodies(db) == sorted(sent[:2] + sent[3:])
    assert dovecot.messages("INBOX") == [sent[2]]
    assert attempts.count(sent[2]) == 1
    assert any("UID 3 could not be stored" in r.getMessage() and r.exc_info for r in caplog.records)


def test_transient_failure_leaves_the_message_for_the_next_pass(
    dovecot: DovecotServer, make_poller: Callable[..., MailboxPoller], ingest: Ingest, db: Engine
) -> None:
    sent = [message(i) for i in range(1, 6)]
    dovecot.append(sent)
    failures = [TransientError("database is locked")]

    def ingest_with_a_busy_database(raw: RawMessage) -> object:
        if raw.data == sent[2] and failures:
            raise failures.pop()
        return ingest(raw)

    poller = make_poller(dovecot, ingest_with=ingest_with_a_busy_database)

    assert poller.poll_once() == 2
    assert dovecot.uids("INBOX") == [3, 4, 5]
    assert poller.poll_once() == 3
    assert stored_bodies(db) == sorted(sent)
    assert dovecot.uids("INBOX") == []


def test_wrong_password_logs_a_clear_error_and_the_poller_keeps_retrying_until_stopped(
    dovecot: DovecotServer,
    make_poller: Callable[..., MailboxPoller],
    running: Callable[[MailboxPoller], threading.Thread],
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = "Tr0ub4dor&3-not-the-password"
    poller = make_poller(dovecot, password=wrong)

    def login_errors() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.ERROR]

    with caplog.at_level(logging.INFO, logger=LOGGER):
        thread = running(poller)
        assert wait_until(lambda: len(login_errors()) >= 2), "the poller did not retry the login"
        assert thread.is_alive()
        poller.stop()
        thread.join(timeout=WAIT_SECONDS)

    assert not thread.is_alive()
    for record in login_errors():
        text = record.getMessage()
        assert "desk" in text and f"{dovecot.host}:{dovecot.port}" in text and "login refused" in text
        assert wrong not in text
        assert record.exc_info is None
    assert all(wrong not in r.getMessage() for r in caplog.records)


def test_message_appended_while_idling_is_stored_within_seconds(
    dovecot: DovecotServer,
    make_poller: Callable[..., MailboxPoller],
    running: Callable[[MailboxPoller], threading.Thread],
    db: Engine,
) -> None:
    assert b"IDLE" in dovecot.capabilities()
    dovecot.append([message(1)])
    # Polling every 10 minutes: only IDLE (RFC 2177) can bring the second message in quickly.
    poller = make_poller(dovecot, poll_interval_seconds=600)
    thread = running(poller)
    assert wait_until(lambda: len(stored(db)) == 1)

    dovecot.append([message(2)])

    assert wait_until(lambda: len(stored(db)) == 2), "the message appended during IDLE was not stored"
    assert wait_until(lambda: dovecot.uids("INBOX") == [])
    poller.stop()
    thread.join(timeout=WAIT_SECONDS)
    assert not thread.is_alive()


def test_idle_is_renewed_and_still_reports_new_mail(
    dovecot: DovecotServer,
    make_poller: Callable[..., MailboxPoller],
    running: Callable[[MailboxPoller], threading.Thread],
    db: Engine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Renewal every 0.2 s stands in for every 25 minutes (RFC 2177: before the 30-minute logout).
    poller = make_poller(dovecot, poll_interval_seconds=600, idle_renew_seconds=0.2)

    def renewals() -> int:
        return sum("renewing IDLE" in r.getMessage() for r in caplog.records if r.name == LOGGER)

    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        running(poller)
        assert wait_until(lambda: renewals() >= 2)

        dovecot.append([message(1)])

        assert wait_until(lambda: len(stored(db)) == 1), "mail was not picked up across IDLE renewals"


def test_without_idle_the_poller_polls_every_interval(
    dovecot: DovecotServer,
    make_poller: Callable[..., MailboxPoller],
    running: Callable[[MailboxPoller], threading.Thread],
    db: Engine,
) -> None:
    poller = make_poller(dovecot, idle=False, poll_interval_seconds=1)
    running(poller)
    assert wait_until(lambda: poller.mailbox in cursors(db))

    dovecot.append([message(1), message(2)])

    assert wait_until(lambda: len(stored(db)) == 2), "polling did not pick the messages up"
    assert wait_until(lambda: dovecot.uids("INBOX") == [])


def test_poller_reconnects_after_the_server_restarts(
    dovecot: DovecotServer,
    make_poller: Callable[..., MailboxPoller],
    running: Callable[[MailboxPoller], threading.Thread],
    db: Engine,
) -> None:
    dovecot.append([message(1)])
    poller = make_poller(dovecot)
    running(poller)
    assert wait_until(lambda: len(stored(db)) == 1)

    dovecot.restart()
    dovecot.append([message(2)])

    assert wait_until(lambda: len(stored(db)) == 2), "the poller did not come back after the restart"
    assert wait_until(lambda: dovecot.uids("INBOX") == [])


@pytest.fixture
def pg(fresh_pg_url: str) -> Iterator[Engine]:
    engine = make_engine(fresh_pg_url)
    upgrade_schema(engine)
    yield engine
    engine.dispose()


@pytest.mark.postgres
def test_only_one_daemon_polls_a_mailbox_and_another_takes_over_when_it_goes(
    pg: Engine,
    dovecot: DovecotServer,
    make_poller: Callable[..., MailboxPoller],
    running: Callable[[MailboxPoller], threading.Thread],
) -> None:
    by_daemon: dict[str, list[bytes]] = {"a": [], "b": []}

    def ingest_as(daemon: str) -> Ingest:
        store = store_raw(pg)

        def ingest(raw: RawMessage) -> object:
            by_daemon[daemon].append(raw.data)
            return store(raw)

        return ingest

    first = [message(i) for i in range(1, 4)]
    dovecot.append(first)
    daemon_a = make_poller(dovecot, ingest_with=ingest_as("a"), engine=pg)
    daemon_b = make_poller(dovecot, ingest_with=ingest_as("b"), engine=pg)
    assert daemon_a.poll_once() == 3  # a now holds the mailbox lock

    later = [message(i) for i in range(4, 6)]
    dovecot.append(later)
    assert daemon_b.poll_once() == 0
    assert dovecot.uids("INBOX") == [4, 5]

    running(daemon_b)  # keeps trying for the lock
    daemon_a.close()  # daemon a goes away, and its lock with its database connection

    assert wait_until(lambda: len(by_daemon["b"]) == 2), "daemon b never took over"
    assert wait_until(lambda: dovecot.uids("INBOX") == [])
    assert by_daemon == {"a": first, "b": later}
    assert stored_bodies(pg) == sorted(first + later)


def test_stop_ends_an_idle_poller_promptly(
    dovecot: DovecotServer,
    make_poller: Callable[..., MailboxPoller],
    running: Callable[[MailboxPoller], threading.Thread],
    db: Engine,
) -> None:
    dovecot.append([message(1)])
    poller = make_poller(dovecot, poll_interval_seconds=600)
    thread = running(poller)
    assert wait_until(lambda: len(stored(db)) == 1)

    poller.stop()
    thread.join(timeout=3)

    assert not thread.is_alive()
