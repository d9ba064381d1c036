"""Tells people when a part of the daemon changes state: one log line per change (error when it becomes
critical), a JSON POST to `[alerts] webhook_url` once per part and state, and one mail to `[alerts]
admin_address` each time a part other than the outbox becomes critical; it never decides a state
(observe/readiness.py does) and never logs the webhook URL, which may carry a secret.

Deduplication: only a change of a part's state is told, once, in the order seen (a check or a /readyz
request sees it; a part that flaps faster than that shows only what was seen). A POST that fails is
tried again at the next check, before any later change; so is a mail that could not be queued (the
database down), whose idempotency key (part, state, since) keeps it to one.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

from mailcase.observe.readiness import Part, Readiness, State

log = logging.getLogger(__name__)

UNMAILED_PARTS = frozenset({"outbox"})
"""Parts whose failure a mail cannot report: the relay is what would carry it."""


class Webhook(Protocol):
    def post(self, payload: dict[str, Any]) -> None:
        """Deliver one alert; raise on any failure (it is tried again at the next check)."""


class HttpWebhook:
    """POST application/json with `requests`, within a timeout; anything but a 2xx is a failure."""

    def __init__(self, url: str, *, timeout: float) -> None:
        self.url = url
        self.timeout = timeout

    def post(self, payload: dict[str, Any]) -> None:
        import requests

        response = requests.post(self.url, json=payload, timeout=self.timeout, allow_redirects=False)
        if not 200 <= response.status_code < 300:
            raise OSError(f"the webhook answered {response.status_code}")

    def __str__(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname}"  # never the path or query: they may be the secret


@dataclass(frozen=True, slots=True)
class Change:
    part: Part
    previous: State
    since: datetime


AdminMail = Callable[[Change, str], None]
"""Queues the admin's mail about a change (part, state since) for `host`; raises when it cannot."""


class Alerter:
    """Thread-safe: the daemon's check loop and /readyz requests both report what they saw (`update`,
    quick, logs the changes); the check loop alone delivers (`deliver`, which may wait on the network
    or the database), so an answer to /readyz never waits for a webhook or a mail."""

    def __init__(self, *, webhook: Webhook | None = None, admin_mail: AdminMail | None = None,
                 host: str | None = None) -> None:  # fmt: skip
        self.webhook = webhook
        self.admin_mail = admin_mail
        self.host = host or socket.getfqdn()
        self._lock = threading.Lock()
        self._deliver = threading.Lock()
        self._current: dict[str, Change] = {}
        self._to_post: list[Change] = []
        self._to_mail: list[Change] = []

    def states(self) -> dict[str, State]:
        """Each part's last seen state (parts never seen are ok)."""
        with self._lock:
            return {name: change.part.state for name, change in self._current.items()}

    def update(self, readiness: Readiness) -> list[Change]:
        """Note what a check saw; log and alert each change of state. Returns the changes."""
        changes: list[Change] = []
        with self._lock:
            for part in readiness.parts:
                known = self._current.get(part.name)
                previous = known.part.state if known is not None else State.OK
                if known is not None and previous == part.state:
                    self._current[part.name] = Change(part, known.previous, known.since)
                    continue
                change = Change(part, previous, readiness.checked_at)
                self._current[part.name] = change
                if known is None and part.state is State.OK:
                    continue  # first sight of a healthy part: nothing changed
                changes.append(change)
                if self.webhook is not None:
                    self._to_post.append(change)
                if self.admin_mail is not None and part.state is State.CRITICAL and part.name not in UNMAILED_PARTS:
                    self._to_mail.append(change)
        for change in changes:
            _log(change)
        return changes

    def deliver(self) -> None:
        """Send what the receivers have not been told yet: every webhook first, then the mails (one
        delivery at a time)."""
        with self._deliver:
            while (change := self._next(self._to_post)) is not None and self._post(change):
                self._done(self._to_post)
            while (change := self._next(self._to_mail)) is not None and self._mail(change):
                self._done(self._to_mail)

    def _next(self, queue: list[Change]) -> Change | None:
        with self._lock:
            return queue[0] if queue else None

    def _done(self, queue: list[Change]) -> None:
        with self._lock:
            queue.pop(0)

    def _post(self, change: Change) -> bool:
        assert self.webhook is not None
        payload = {
            "source": "mailcase",
            "host": self.host,
            "part": change.part.name,
            "state": change.part.state.word,
            "previous": change.previous.word,
            "since": change.since.isoformat(),
            "detail": change.part.detail,
        }
        try:
            self.webhook.post(payload)
        except Exception as error:
            log.warning("alert webhook %s: not delivered (%s: %s); tried again at the next check",
                        self.webhook, type(error).__name__, error)  # fmt: skip
            return False
        return True

    def _mail(self, change: Change) -> bool:
        assert self.admin_mail is not None
        try:
            self.admin_mail(change, self.host)
        except Exception as error:
            log.warning("alert mail about %s: not queued (%s); tried again at the next check", change.part.name, error)
            return False
        return True


def _log(change: Change) -> None:
    part = change.part
    if part.state is State.CRITICAL:
        log.error("health: %s is critical (was %s): %s", part.name, change.previous.word, part.detail)
    elif part.state is State.WARNING:
        log.warning("health: %s needs attention (was %s): %s", part.name, change.previous.word, part.detail)
    else:
        log.info("health: %s is ok again (was %s): %s", part.name, change.previous.word, part.detail)
