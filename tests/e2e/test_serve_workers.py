"""`mailcase serve` with `[smtp] workers = 2`: two processes share the SMTP port (SO_REUSEPORT); every message still
becomes a case exactly once, a dead worker is restarted, and SIGTERM stops them all with exit status 0."""

from __future__ import annotations

import os
import signal
import smtplib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa

from mailcase.store.engine import make_engine
from support.daemon import MailcaseDaemon, deliver, wait_until

MESSAGES = 40
CONNECTIONS = 8
WAIT = 30.0  # seconds: an upper bound on a worker process starting, never a timing assertion


def rows(database_url: str, query: str) -> list[tuple[object, ...]]:
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(sa.text(query))]
    finally:
        engine.dispose()


def children(pid: int) -> set[int]:
    """Live child processes of `pid`, from /proc (Linux)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


def worker_pids(daemon: MailcaseDaemon) -> set[int]:
    """The SMTP workers the daemon logged as started and that are still its children."""
    started = {
        int(line.rsplit("pid=", 1)[1]) for line in daemon.log().splitlines() if "SMTP worker" in line and "started pid=" in line
    }
    return started & children(daemon.pid)


def serving_workers(daemon: MailcaseDaemon) -> int:
    return daemon.log().count("] mailcase.daemon: SMTP worker")


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[MailcaseDaemon]:
    with MailcaseDaemon(tmp_path, env={"MAILCASE_SMTP__WORKERS": "2"}) as running:
        running.prepare()
        running.start()
        wait_until(lambda: serving_workers(running) >= 1, timeout=WAIT, what="the second SMTP process")
        yield running


def test_two_workers_turn_messages_over_many_connections_into_one_case_each(daemon: MailcaseDaemon) -> None:
    with ThreadPoolExecutor(max_workers=CONNECTIONS) as pool:
        codes = list(pool.map(lambda n: deliver(daemon, n), range(MESSAGES)))
    with ThreadPoolExecutor(max_workers=CONNECTIONS) as pool:  # every message again: a sender's retry
        again = list(pool.map(lambda n: deliver(daemon, n), range(MESSAGES)))

    assert codes == [250] * MESSAGES
    assert again == [250] * MESSAGES
    stored = rows(daemon.database_url, "SELECT r.message_id_header, c.number FROM raw_message r "
                                       "JOIN support_case c ON c.id = r.case_id")
    assert sorted(mid for mid, _number in stored) == sorted(f"<trunk-{n}@acme.example>" for n in range(MESSAGES))
    assert len({number for _mid, number in stored}) == MESSAGES
    assert rows(daemon.database_url, "SELECT count(*) FROM support_case") == [(MESSAGES,)]
    # Both processes took mail: each logs one line per ingested message.
    log = daemon.log()
    assert "[smtp-worker 1] mailcase.ingest.pipeline: ingest" in log
    assert any(" INFO mailcase.ingest.pipeline: ingest" in line for line in log.splitlines())


def test_sigterm_stops_the_daemon_and_its_workers_with_exit_0(daemon: MailcaseDaemon) -> None:
    workers = worker_pids(daemon)
    assert len(workers) == 1
    assert deliver(daemon, 1) == 250

    assert daemon.stop() == 0

    assert not any(alive(pid) for pid in workers)
    assert "stopped with errors" not in daemon.log()


def test_a_worker_that_dies_is_restarted_and_mail_is_still_accepted(daemon: MailcaseDaemon) -> None:
    (first,) = worker_pids(daemon)

    os.kill(first, signal.SIGKILL)

    second = wait_until(lambda: worker_pids(daemon) - {first}, timeout=WAIT, what="a restarted SMTP worker")
    assert f"SMTP worker 1 (pid {first}) exited with status -9 (killed by SIGKILL); restarting it" in daemon.log()
    wait_until(lambda: serving_workers(daemon) >= 2, timeout=WAIT, what="the restarted worker listening")
    assert [deliver(daemon, n) for n in range(10)] == [250] * 10
    assert daemon.stop() == 0
    assert not any(alive(pid) for pid in second)


def test_kill_9_of_the_daemon_takes_its_workers_down_with_it(daemon: MailcaseDaemon) -> None:
    workers = worker_pids(daemon)

    daemon.kill()

    wait_until(lambda: not any(alive(pid) for pid in workers), timeout=WAIT, what="the orphaned worker to die")
    with pytest.raises((OSError, smtplib.SMTPException)):
        deliver(daemon, 1)  # nobody listens on the port any more
