"""Mailbox cursors on SQLite and PostgreSQL: absent, saved, forward-only within a UIDVALIDITY, race-free upserts."""

from __future__ import annotations

import threading

from sqlalchemy.engine import Engine

from mailcase.clock import FixedClock
from mailcase.store.engine import transaction
from mailcase.store.mailboxes import load_cursor, save_cursor
from mailcase.store.models import MailboxCursor

BOX = "desk@imap.example.com:993/INBOX"


def _save(engine: Engine, clock: FixedClock, uidvalidity: int, last_uid: int, mailbox: str = BOX) -> None:
    with transaction(engine) as session:
        save_cursor(session=session, mailbox=mailbox, uidvalidity=uidvalidity, last_uid=last_uid, now=clock.now())


def _load(engine: Engine, mailbox: str = BOX) -> tuple[int, int]:
    with transaction(engine) as session:
        return load_cursor(session=session, mailbox=mailbox)


def test_mailbox_never_polled_has_no_cursor(engine: Engine) -> None:
    assert _load(engine) == (0, 0)


def test_saved_cursor_is_loaded_back_per_mailbox(engine: Engine, clock: FixedClock) -> None:
    _save(engine, clock, 7, 42)
    _save(engine, clock, 9, 3, mailbox="other@imap.example.com:993/INBOX")

    assert _load(engine) == (7, 42)
    assert _load(engine, "other@imap.example.com:993/INBOX") == (9, 3)


def test_cursor_moves_forward_and_records_when(engine: Engine, clock: FixedClock) -> None:
    _save(engine, clock, 7, 42)
    later = clock.advance(minutes=5)
    _save(engine, clock, 7, 50)

    assert _load(engine) == (7, 50)
    with transaction(engine) as session:
        row = session.get(MailboxCursor, BOX)
        assert row is not None
        assert row.updated_at == later


def test_late_write_with_lower_uid_cannot_rewind_the_cursor(engine: Engine, clock: FixedClock) -> None:
    _save(engine, clock, 7, 50)
    _save(engine, clock, 7, 42)

    assert _load(engine) == (7, 50)


def test_new_uidvalidity_replaces_the_cursor_even_with_a_lower_uid(engine: Engine, clock: FixedClock) -> None:
    _save(engine, clock, 7, 50)
    _save(engine, clock, 8, 0)  # a rescan starts from nothing

    assert _load(engine) == (8, 0)


def test_nothing_is_saved_until_the_caller_commits(engine: Engine, clock: FixedClock) -> None:
    with transaction(engine) as session:
        save_cursor(session=session, mailbox=BOX, uidvalidity=7, last_uid=1, now=clock.now())
        session.rollback()

    assert _load(engine) == (0, 0)


def test_concurrent_first_saves_of_one_mailbox_do_not_conflict(engine: Engine, clock: FixedClock) -> None:
    writers = 4
    barrier = threading.Barrier(writers)
    errors: list[BaseException] = []

    def write(uid: int) -> None:
        try:
            barrier.wait(timeout=10)
            _save(engine, clock, 7, uid)
        except BaseException as error:  # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(uid,)) for uid in range(1, writers + 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert _load(engine) == (7, writers)
