"""`mailcase backup` while `serve` takes a burst of SMTP mail, then `mailcase restore` into an empty
database, on SQLite and PostgreSQL: every message that got its 250 before the backup started is in
the restored database exactly once."""

from __future__ import annotations

import smtplib
import threading
import time
import uuid
from pathlib import Path
from typing import Self

import pytest
import sqlalchemy as sa

from support.cli import run_mailcase
from support.daemon import MailcaseDaemon, wait_until
from support.desk_mail import message


def stored_message_ids(url: str) -> dict[str, int]:
    """Message-ID -> how many raw messages carry it."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text("SELECT message_id_header, count(*) FROM raw_message GROUP BY message_id_header")
            )
            return {header: int(count) for header, count in rows}
    finally:
        engine.dispose()


class Burst:
    """Sends mail to the daemon as fast as it answers, on one connection, remembering when each 250 came."""

    def __init__(self, daemon: MailcaseDaemon) -> None:
        self.daemon = daemon
        self.acknowledged: list[tuple[str, float]] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="burst")

    def _run(self) -> None:
        try:
            with self.daemon.smtp() as client:
                while not self.stop.is_set():
                    message_id = f"{uuid.uuid4().hex}@acme.example"
                    data = message(("Pat Doe", "pat@acme.example"), f"Burst {message_id[:8]}", "Trunk flapping.",
                                   message_id=message_id)
                    client.sendmail("pat@acme.example", ["support@support.example.com"], data)  # raises unless 250
                    self.acknowledged.append((f"<{message_id}>", time.monotonic()))
        except (OSError, smtplib.SMTPException) as exc:  # reported by the test, not lost in the thread
            self.error = exc

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(60)


@pytest.fixture
def restored_url(database_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """An empty database of the same kind to restore into."""
    if database_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'restored.db'}"
    return str(request.getfixturevalue("fresh_pg_url"))


def test_a_backup_taken_during_a_burst_restores_every_acknowledged_message_exactly_once(
    database_url: str, restored_url: str, tmp_path: Path
) -> None:
    backup = tmp_path / "mailcase.backup"
    with MailcaseDaemon(tmp_path / "serve", database_url=database_url) as daemon:
        daemon.prepare()
        daemon.start()
        with Burst(daemon) as burst:
            wait_until(lambda: len(burst.acknowledged) >= 20 or burst.error, timeout=60, what="20 messages accepted")
            started = time.monotonic()
            taken = daemon.cli("backup", str(backup), "--json")
            after = len(burst.acknowledged)
            # The burst goes on past the backup's end, so the backup really overlapped it.
            wait_until(lambda: len(burst.acknowledged) >= after + 5 or burst.error, timeout=60, what="mail after the backup")
        assert burst.error is None, burst.error
        assert taken.status == 0, taken.stderr
        assert daemon.stop() == 0
    before = [message_id for message_id, at in burst.acknowledged if at < started]
    assert len(before) >= 20

    restored = run_mailcase(["restore", str(backup), "--json"], database_url=restored_url)
    assert restored.status == 0, restored.stderr
    counts = stored_message_ids(restored_url)
    assert {message_id: counts.get(message_id, 0) for message_id in before} == {m: 1 for m in before}
    assert set(counts.values()) == {1}  # nothing twice, whatever arrived during the backup

    # Restoring over a database with cases needs --force (it replaces them all).
    again = run_mailcase(["restore", str(backup)], database_url=restored_url)
    assert again.status == 1 and "--force" in again.stderr
    forced = run_mailcase(["restore", str(backup), "--force"], database_url=restored_url)
    assert forced.status == 0, forced.stderr
    assert stored_message_ids(restored_url) == counts
    cases = run_mailcase(["cases", "list", "--json", "--limit", "0"], database_url=restored_url)
    assert cases.status == 0 and len(cases.json()) == len(counts)


def test_backup_never_overwrites_a_file(database_url: str, tmp_path: Path) -> None:
    assert run_mailcase(["init"], database_url=database_url).status == 0
    existing = tmp_path / "taken.backup"
    existing.write_bytes(b"yesterday's backup")
    result = run_mailcase(["backup", str(existing)], database_url=database_url)
    assert result.status == 1 and "never overwrites" in result.stderr
    assert existing.read_bytes() == b"yesterday's backup"
