"""Run IMAP pollers in threads as `serve` does, for the IMAP tests; no tests here."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from mailcase.ingest.imap import MailboxPoller

STOP_SECONDS = 30.0
"""How long a stopped poller may take to leave `run()`; longer is a bug (it ignores its stop event)."""


@pytest.fixture
def running() -> Iterator[Callable[[MailboxPoller], threading.Thread]]:
    """Start `poller.run()` in a thread, as `serve` does; every started poller is stopped and
    joined afterwards, and one that does not stop fails the test."""
    started: list[tuple[MailboxPoller, threading.Thread]] = []

    def start(poller: MailboxPoller) -> threading.Thread:
        thread = threading.Thread(target=poller.run, name=f"imap-{poller.settings.name}", daemon=True)
        thread.start()
        started.append((poller, thread))
        return thread

    yield start
    for poller, thread in started:
        poller.stop()
        thread.join(timeout=STOP_SECONDS)
        assert not thread.is_alive(), "poller did not stop"
