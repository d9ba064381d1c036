"""IMAP ingestion against a real Dovecot: stored once, moved only after commit, nothing lost across crashes, restarts and UIDVALIDITY resets."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from mailcase.app import App
from mailcase.clock import FixedClock
from mailcase.config import Settings
from mailcase.domain import Channel, RawMessage
from mailcase.errors import TransientError
from mailcase.ingest.imap import MailboxPoller
from mailcase.rules.directory_format import load_directory
from mailcase.store.directory import import_directory
from mailcase.store.engine import make_engine, transaction, upgrade_schema
from mailcase.store.mailboxes import load_cursor
from mailcase.store.models import Case, MailboxCursor, RawMessageRecord
from support.cli import REPO, run_mailcase
from support.dovecot import DovecotServer, dovecot, dovecot_without_move  # noqa: F401 (fixtures)
from support.pollers import running  # noqa: F401 (a fixture)

pytestmark = pytest.mark.dovecot

Ingest = Callable[[RawMessage], object]
LOGGER = "mailcase.ingest.imap.test"
WAIT_SECONDS = 10.0
DIRECTORY = REPO / "examples" / "directory.toml"


# -- the real pipeline ----------------------------------------------------------------------


def deployment(url: str) -> Engine:
    """A migrated database with examples/directory.toml imported, as an operator sets one up."""
    engine = make_engine(url)
    upgrade_schema(engine)
    directory = load_directory(DIRECTORY.read_text(encoding="utf-8"))
    with transaction(engine) as session:
        import_directory(directory, session=session)
    return engine


def pipeline_on(engine: Engine, settings: Settings, clock: FixedClock) -> Ingest:
    """The shared pipeline, built by the composition root exactly as `serve` builds it."""
    return App(settings=settings, engine=engine, clock=clock).pipeline()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mailcase.db'}"


@pytest.fixture
def db(sqlite_url: str) -> Iterator[Engine]:
    engine = deployment(sqlite_url)
    yield engine
    engine.dispose()


@pytest.fixture
def ingest(db: Engine, settings: Settings, clock: FixedClock) -> Ingest:
    return pipeline_on(db, settings, clock)


def listed_cases(url: str) -> list[dict[str, Any]]:
    """`mailcase cases list --json` against the test database."""
    result = run_mailcase(["cases", "list", "--json"], database_url=url)
    assert result.status == 0, result.stderr
    cases: list[dict[str, Any]] = result.json()
    return cases


def case_count(engine: Engine) -> int:
    with Session(engine) as session:
        return len(session.exec(select(Case.id)).all())


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



# -- the tests -------------------------------------------------------------------------------


def test_twenty_messages_become_twenty_cases_and_are_moved_to_processed(
    dovecot: DovecotServer,
    make_poller: Callable[..., MailboxPoller],
    db: Engine,
    sqlite_url: str,
    clock: FixedClock,
) -> None:
    sent = [message(i) for i in range(1, 21)]
    dovecot.append(sent)
    poller = make_poller(dovecot, batch_size=7)

    assert poller.poll_once() == 20

    cases = listed_cases(sqlite_url)
    assert sorted(case["subject"] for case in cases) == sorted(f"Router m{i} is down" for i in range(1, 21))
    assert {case["requester"] for case in cases} == {"pat@acme.example"}
    assert {case["priority"] for case in cases} == {"P4"}
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


def test_polling_again_or_after_a_restart_makes_no_case_twice(
    dovecot: DovecotServer, make_poller: Callable[..., MailboxPoller], db: Engine, sqlite_url: str
) -> None:
    sent = [message(i) for i in range(1, 21)]
    dovecot.append(sent)
    first = make_poller(dovecot)
    assert first.poll_once() == 20

    assert first.poll_once() == 0
    first.close()
    restarted = make_poller(dovecot)
    assert restarted.poll_once() == 0
    # The processed mail put back in the folder (a person, or a move that never happened): the
    # restarted poller fetches it again and the pipeline's dedupe makes that a no-op.
    with dovecot.client() as client:
        client.select_folder("Processed")
        client.copy(client.search(["ALL"]), "INBOX")
    assert restarted.poll_once() == 20

    assert len(listed_cases(sqlite_url)) == 20
    assert stored_bodies(db) == sorted(sent)
    assert dovecot.uids("INBOX") == []


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

    assert case_count(db) == 9
    restarted = make_poller(dovecot, batch_size=7)
    restarted.poll_once()

    assert case_count(db) == 10
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

    assert case_count(db) == 8
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


class _FlakyDns:
    """A DNS that times out while `down`, then has no records (no DMARC policy published)."""

    def __init__(self) -> None:
        self.down = True

    def txt(self, name: str) -> list[str] | None:
        from mailcase.ingest.authentication import DnsTemporaryError

        if self.down:
            raise DnsTemporaryError(f"timeout for {name}")
        return None


def test_a_dns_timeout_of_the_sender_check_in_enforce_leaves_the_message_for_the_next_poll(
    dovecot: DovecotServer, make_poller: Callable[..., MailboxPoller], db: Engine, settings: Settings,
    clock: FixedClock,
) -> None:
    import dataclasses

    from mailcase.ingest.pipeline import Pipeline
    from mailcase.rules.authentication import PublicSuffixes

    enforce = dataclasses.replace(
        settings, security=dataclasses.replace(settings.security, sender_policy="enforce", verify="dkim")
    )
    app = App(settings=enforce, engine=db, clock=clock)
    dns = _FlakyDns()
    pipeline = Pipeline(engine=db, settings=enforce, desk=app.desk(), secret=app.secret, calendar=app.calendar,
                        resolver=dns, suffixes=PublicSuffixes())
    dovecot.append([message(1)])
    poller = make_poller(dovecot, ingest_with=pipeline)

    assert poller.poll_once() == 0  # the DMARC lookup timed out: a temporary state, not a verdict
    assert dovecot.uids("INBOX") == [1] and stored(db) == []
    dns.down = False
    assert poller.poll_once() == 1
    assert dovecot.uids("INBOX") == [] and case_count(db) == 1


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
    engine = deployment(fresh_pg_url)
    yield engine
    engine.dispose()


@pytest.mark.postgres
def test_only_one_daemon_polls_a_mailbox_and_another_takes_over_when_it_goes(
    pg: Engine,
    dovecot: DovecotServer,
    make_poller: Callable[..., MailboxPoller],
    running: Callable[[MailboxPoller], threading.Thread],
    settings: Settings,
    clock: FixedClock,
) -> None:
    by_daemon: dict[str, list[bytes]] = {"a": [], "b": []}

    def ingest_as(daemon: str) -> Ingest:
        store = pipeline_on(pg, settings, clock)  # each daemon has its own pipeline

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
    assert case_count(pg) == 5


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


def test_stop_during_a_long_backlog_ends_after_the_current_batch_and_loses_nothing(
    dovecot: DovecotServer,
    make_poller: Callable[..., MailboxPoller],
    running: Callable[[MailboxPoller], threading.Thread],
    ingest: Ingest,
    db: Engine,
) -> None:
    sent = [message(i) for i in range(1, 11)]
    dovecot.append(sent)
    holder: list[MailboxPoller] = []

    def ingest_then_stop(raw: RawMessage) -> object:
        outcome = ingest(raw)
        holder[0].stop()  # SIGTERM arrives while the first batch is being stored
        return outcome

    poller = make_poller(dovecot, ingest_with=ingest_then_stop, batch_size=3)
    holder.append(poller)
    thread = running(poller)
    thread.join(timeout=WAIT_SECONDS)

    assert not thread.is_alive()
    assert case_count(db) == 3  # the batch in hand is finished and moved, the rest waits
    assert dovecot.uids("INBOX") == [4, 5, 6, 7, 8, 9, 10]
    assert make_poller(dovecot).poll_once() == 7
    assert case_count(db) == 10


def test_mail_arriving_during_a_batch_is_stored_within_seconds_not_at_the_next_idle_event(
    dovecot: DovecotServer,
    make_poller: Callable[..., MailboxPoller],
    running: Callable[[MailboxPoller], threading.Thread],
    db: Engine,
    ingest: Ingest,
) -> None:
    # The defect: after a batch the poller went straight into IDLE, and the EXISTS responses
    # for mail appended meanwhile had already gone by, so that mail waited for the next new
    # message or the 25-minute renewal. The safety search (60 s by default) must not be what
    # saves it either: the whole test waits far less than that.
    dovecot.append([message(i) for i in range(1, 151)])
    arrived: dict[str, float] = {}
    appended = threading.Event()

    def ingest_and_append_mid_batch(raw: RawMessage) -> object:
        if not appended.is_set():
            appended.set()  # the first message of the first batch: 10 more arrive now
            late = [message(i, tag="late") for i in range(1, 11)]
            dovecot.append(late)
            now = time.monotonic()
            arrived.update({f"Router late{i} is down": now for i in range(1, 11)})
        return ingest(raw)

    poller = make_poller(dovecot, ingest_with=ingest_and_append_mid_batch, poll_interval_seconds=600)
    assert poller.settings.safety_search_seconds == 60
    running(poller)

    assert wait_until(lambda: case_count(db) >= 160, timeout=30.0), f"{case_count(db)} of 160 cases"
    done = time.monotonic()
    with Session(db) as session:
        subjects = list(session.exec(select(Case.subject)))
    assert sorted(subjects) == sorted(
        [f"Router m{i} is down" for i in range(1, 151)] + list(arrived)
    ), "every message is a case, each exactly once"
    assert done - min(arrived.values()) < 20.0
    assert wait_until(lambda: dovecot.uids("INBOX") == [])
    assert len(dovecot.uids("Processed")) == 160


def test_an_idle_poller_searches_again_every_safety_interval_and_still_gets_mail(
    dovecot: DovecotServer,
    make_poller: Callable[..., MailboxPoller],
    running: Callable[[MailboxPoller], threading.Thread],
    db: Engine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # 0.2 s stands in for the default 60 s: IDLE is left and the folder searched again even
    # though the server reported nothing, so a missed EXISTS costs one interval at most.
    poller = make_poller(dovecot, poll_interval_seconds=600, safety_search_seconds=0.2)

    def safety_searches() -> int:
        return sum("safety search" in r.getMessage() for r in caplog.records if r.name == LOGGER)

    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        running(poller)
        assert wait_until(lambda: safety_searches() >= 3)
        assert not any("renewing IDLE" in r.getMessage() for r in caplog.records)

        dovecot.append([message(1)])

        assert wait_until(lambda: len(stored(db)) == 1)
