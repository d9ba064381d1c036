"""Polls one IMAP mailbox into the shared pipeline and moves each message out only after it is stored; it never parses or decides.

A `MailboxPoller` owns one mailbox (`[[imap]]` in config) and runs in its own thread (`run()`), so
IMAP's blocking calls never stall the SMTP listener's event loop. `poll_once()` does one pass, for
`mailcase tick` and tests.

What keeps "nothing lost, exactly once" (SPEC.md §3) true here:

* A message leaves the polled folder only after `ingest` returned, i.e. after the pipeline
  committed it. A crash between the commit and the move leaves it in the folder; the next pass
  fetches it again and the pipeline's dedupe makes that a no-op.
* Moving uses UID MOVE (RFC 6851) when advertised; otherwise UID COPY, `\\Deleted` and UID EXPUNGE
  (RFC 4315 UIDPLUS), which removes exactly the UIDs we copied. A plain EXPUNGE, which would also
  remove anything another client flagged `\\Deleted`, is never sent.
* The cursor (UIDVALIDITY, last UID handled) only saves work. When UIDVALIDITY changes the old
  UIDs mean nothing (RFC 3501 §2.3.1.1), so the whole folder is scanned again.
* With PostgreSQL, a session-level advisory lock held on a dedicated connection for as long as
  the poller runs lets only one daemon poll a mailbox; when that daemon dies its connection, and
  the lock, go with it and another daemon takes over.

A message whose ingest fails with anything but TransientError (a bug on our side: the pipeline
holds unparseable mail itself) is logged with a traceback and left in the folder; the cursor
skips past it so it does not block the mailbox. An operator can move it out and back in to retry.
"""

from __future__ import annotations

import contextlib
import imaplib
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol
from urllib.parse import quote

import sqlalchemy as sa
from imapclient import DELETED, IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError
from sqlalchemy.engine import Engine

from mailcase import telemetry
from mailcase.clock import Clock
from mailcase.config import ImapSettings
from mailcase.domain import Channel, RawMessage
from mailcase.errors import ConfigError, MailcaseError, OAuthError, TransientError
from mailcase.oauth.health import GREEN, RED, HealthBoard
from mailcase.store.engine import (
    is_transient,
    release_advisory_lock,
    transaction,
    try_advisory_lock,
)
from mailcase.store.mailboxes import load_cursor, save_cursor

Ingest = Callable[[RawMessage], object]

# RFC 2177 §3: servers may log out an idle client after 30 minutes, so IDLE is re-issued well
# before ("clients ... SHOULD terminate the IDLE and re-issue it at least every 29 minutes").
IDLE_RENEW_SECONDS = 25 * 60
# How long one idle_check() blocks: the stop event is looked at this often.
IDLE_CHECK_SECONDS = 1.0
# Bytes fetched in one round trip at most (besides a single larger message): a batch of 100
# messages of 35 MB each must not be held in memory at once.
MAX_FETCH_BYTES = 64 * 1024 * 1024
BODY = b"BODY[]"
SIZE = b"RFC822.SIZE"

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (OSError, IMAPClientError)


# One FETCH item's value: bytes for BODY[], an int for RFC822.SIZE, an aware datetime for
# INTERNALDATE, a tuple for FLAGS.
FetchValue = object


class ImapConnection(Protocol):
    """The part of imapclient's `IMAPClient` this module uses, typed (the library ships no types)."""

    normalise_times: bool
    _imap: imaplib.IMAP4  # imapclient's documented escape hatch, for SASL with an error challenge

    def has_capability(self, capability: str) -> bool: ...
    def starttls(self, ssl_context: ssl.SSLContext | None = None) -> bytes: ...
    def login(self, username: str, password: str) -> bytes: ...
    def logout(self) -> bytes: ...
    def shutdown(self) -> None: ...
    def noop(self) -> tuple[bytes, list[object]]: ...
    def folder_exists(self, folder: str) -> bool: ...
    def create_folder(self, folder: str) -> bytes: ...
    def subscribe_folder(self, folder: str) -> bytes: ...
    def select_folder(self, folder: str, readonly: bool = False) -> dict[bytes, object]: ...
    def search(self, criteria: list[str]) -> list[int]: ...
    def fetch(self, messages: Sequence[int], data: list[str]) -> dict[int, dict[bytes, FetchValue]]: ...
    def move(self, messages: Sequence[int], folder: str) -> object: ...
    def copy(self, messages: Sequence[int], folder: str) -> object: ...
    def add_flags(self, messages: Sequence[int], flags: list[bytes], silent: bool = False) -> object: ...
    def uid_expunge(self, messages: Sequence[int]) -> object: ...
    def idle(self) -> object: ...
    def idle_check(self, timeout: float | None = None) -> list[tuple[object, ...]]: ...
    def idle_done(self) -> object: ...


def _number(value: object) -> int:
    """An integer an IMAP response carries (imapclient returns it as int, or bytes on odd servers)."""
    if isinstance(value, int):
        return value
    if isinstance(value, bytes | str):
        return int(value)
    return 0


class MailboxLoginFailed(MailcaseError):
    """The server refused our credentials; already logged once, without the password."""


class TokenSource(Protocol):
    """Access tokens for `[[imap]] auth = "oauth2"` (mailcase.oauth.grants.GrantManager)."""

    def access_token(self, name: str, *, rejected: str = "") -> str: ...


class MailboxPoller:
    """Moves new mail from one IMAP folder into the pipeline, then into the processed folder.

    `ingest` is the shared pipeline: it commits before returning and raises TransientError when
    a retry may help. `stop` is the daemon's stop event (setting it stops `run()` within about
    `IDLE_CHECK_SECONDS`). Not thread-safe: one poller, one thread; `stop()` may be called from
    any thread.
    """

    def __init__(
        self,
        settings: ImapSettings,
        *,
        ingest: Ingest,
        engine: Engine,
        clock: Clock,
        stop: threading.Event,
        logger: logging.Logger | None = None,
        lock_retry_seconds: float | None = None,
        backoff_base_seconds: float = 1.0,
        backoff_max_seconds: float = 300.0,
        idle_renew_seconds: float = IDLE_RENEW_SECONDS,
        max_fetch_bytes: int = MAX_FETCH_BYTES,
        ssl_context: ssl.SSLContext | None = None,
        rng: random.Random | None = None,
        tokens: TokenSource | None = None,
        health: HealthBoard | None = None,
    ) -> None:
        if settings.processed_folder == settings.folder:
            raise ConfigError(f"imap.{settings.name}.processed_folder", "must differ from folder")
        self.settings = settings
        self._ingest = ingest
        self._engine = engine
        self._clock = clock
        self._stop = stop
        self._log = logger or logging.getLogger(__name__)
        if lock_retry_seconds is None:
            lock_retry_seconds = float(settings.poll_interval_seconds)
        self._lock_retry_seconds = lock_retry_seconds
        self._backoff = _Backoff(backoff_base_seconds, backoff_max_seconds, rng or random.Random())
        self._idle_renew_seconds = idle_renew_seconds
        self._max_fetch_bytes = max_fetch_bytes
        self._ssl_context = ssl_context
        self._client: ImapConnection | None = None
        self._uidvalidity = 0
        self._lock_connection: sa.Connection | None = None
        self._waiting_for_lock = False
        self._warned_no_uidplus = False
        if settings.auth == "oauth2" and tokens is None:
            raise ConfigError(f"imap.{settings.name}.auth", "oauth2 needs the [oauth] grants")
        self._tokens = tokens
        self.health = health or HealthBoard()

    # -- identity ------------------------------------------------------------------------------

    @property
    def mailbox(self) -> str:
        """The polled folder as an RFC 5092 IMAP URL: the cursor key, and the lock name after "imap:"."""
        s = self.settings
        return f"imap://{quote(s.user, safe='')}@{s.host}:{s.port}/{quote(s.folder, safe='/')}"

    @property
    def lock_name(self) -> str:
        return "imap:" + self.mailbox

    @property
    def _component(self) -> str:
        """This mailbox on the health board (and as a part of /readyz)."""
        return f"imap:{self.settings.name}"

    def _answered(self, *, poll_seconds: float | None = None) -> None:
        """The server answered: a completed poll (timed) or an IDLE response; /readyz's age and the metrics."""
        now = self._clock.now()
        self.health.beat(self._component, now=now)
        if poll_seconds is None:
            telemetry.mark_imap_heard(self.settings.name, now.timestamp())
        else:
            telemetry.observe_imap_poll(self.settings.name, poll_seconds, now.timestamp())

    def _where(self) -> str:
        s = self.settings
        return f"mailbox {s.name} ({s.user} at {s.host}:{s.port}, folder {s.folder})"

    # -- public entry points -------------------------------------------------------------------

    def poll_once(self) -> int:
        """Connect if needed, store and move what is in the folder now; return how many were stored.

        Returns 0 without touching the mailbox while another daemon holds its lock. Connection
        and login errors propagate (after the connection is dropped); a TransientError from the
        pipeline ends the pass early and leaves the rest for the next one. Call `close()` when done.
        """
        if not self._acquire_lock():
            return 0
        try:
            self._connect()
            stored, _interrupted = self._drain()
        except CONNECTION_ERRORS:
            self._disconnect()
            raise
        return stored

    def run(self) -> None:
        """Poll until the stop event is set: IDLE when offered, else every `poll_interval_seconds`.

        Never raises for mailbox, network or database trouble: each failure is logged and retried
        after an exponential, jittered, capped backoff.
        """
        self._log.info("%s: poller started", self._where())
        try:
            while not self._stop.is_set():
                self._run_one_cycle()
        finally:
            self.close()
            self._log.info("%s: poller stopped", self._where())

    def stop(self) -> None:
        """Ask `run()` to end (it sets the shared stop event); returns at once."""
        self._stop.set()

    def close(self) -> None:
        """Log out and release the mailbox lock; the poller can be used again afterwards."""
        self._disconnect()
        self._release_lock()

    # -- the loop ------------------------------------------------------------------------------

    def _run_one_cycle(self) -> None:
        try:
            if not self._acquire_lock():
                self._stop.wait(self._lock_retry_seconds)
                return
            self._connect()
            started = time.monotonic()
            _stored, interrupted = self._drain()
            self._answered(poll_seconds=time.monotonic() - started)
            if interrupted:
                self._pause()
                return
            self._backoff.reset()
            self._wait_for_mail()
        except MailboxLoginFailed:
            self._disconnect()
            self._pause()
        except TransientError as error:
            self._log.warning("%s: database unavailable (%s); retrying", self._where(), error)
            self._pause()
        except CONNECTION_ERRORS as error:
            self._log.warning(
                "%s: connection failed or lost (%s: %s); reconnecting",
                self._where(),
                type(error).__name__,
                error,
            )
            self.health.fault(self._component, f"{type(error).__name__}: {error}", now=self._clock.now())
            self._disconnect()
            self._pause()
        except Exception:
            self._log.exception("%s: unexpected error; reconnecting", self._where())
            self._disconnect()
            self._pause()

    def _pause(self) -> None:
        self._stop.wait(self._backoff.next_delay())

    @property
    def _connected(self) -> ImapConnection:
        assert self._client is not None, "used only between _connect and _disconnect"
        return self._client

    def _wait_for_mail(self) -> None:
        client = self._connected
        if self.settings.idle and client.has_capability("IDLE"):
            self._idle()
        else:
            self._stop.wait(self.settings.poll_interval_seconds)

    def _idle(self) -> None:
        """IDLE (RFC 2177) until the server reports new mail, the safety search or renewal is due,
        or the stop event is set; the caller then searches again."""
        client = self._connected
        sent = time.monotonic()
        client.idle()
        started = time.monotonic()
        telemetry.observe_imap_idle(self.settings.name, started - sent)
        silent_wakeups = 0
        try:
            while not self._stop.is_set():
                checked = time.monotonic()
                responses = client.idle_check(timeout=IDLE_CHECK_SECONDS)
                if responses:  # new mail, or the server's keep-alive ("* OK Still here")
                    self._answered()
                if any(len(r) > 1 and r[1] in (b"EXISTS", b"RECENT") for r in responses):
                    return
                if time.monotonic() - started >= self._idle_renew_seconds:
                    self._log.debug("%s: renewing IDLE", self._where())
                    return
                # The safety search: a server that misses an EXISTS (or a notification lost
                # between our last SEARCH and IDLE) costs at most this long, not a renewal.
                if time.monotonic() - started >= self.settings.safety_search_seconds:
                    self._log.debug("%s: safety search", self._where())
                    return
                # idle_check() swallows end-of-file and returns nothing at once: a closed
                # connection shows up only as a check that returns early with no response.
                if not responses and time.monotonic() - checked < IDLE_CHECK_SECONDS / 2:
                    silent_wakeups += 1
                    if silent_wakeups >= 3:
                        raise ConnectionError("the server closed the connection during IDLE")
                else:
                    silent_wakeups = 0
        finally:
            client.idle_done()

    # -- connection ----------------------------------------------------------------------------

    def _connect(self) -> None:
        if self._client is not None:
            return
        s = self.settings
        context = None
        if s.tls in ("implicit", "starttls"):
            context = self._ssl_context or ssl.create_default_context()
        # A socket timeout always: imapclient has none by default, and a silent server would
        # otherwise hang this thread forever.
        client: ImapConnection = IMAPClient(
            s.host,
            port=s.port,
            ssl=s.tls == "implicit",
            ssl_context=context if s.tls == "implicit" else None,
            timeout=float(s.timeout_seconds),
        )
        try:
            client.normalise_times = False  # aware datetimes from INTERNALDATE
            if s.tls == "starttls":
                client.starttls(context)
            if s.auth == "oauth2":
                self._oauth_login(client)
            else:
                try:
                    client.login(s.user, s.password)
                except LoginError as error:
                    # One line, naming where and who; never the password.
                    self._log.error(
                        "%s: IMAP login refused (%s); check user and password; retrying with backoff",
                        self._where(),
                        _text(error),
                    )
                    self._signed_in(False, _text(error))
                    raise MailboxLoginFailed(str(error)) from None
            self._signed_in(True, "")
            self._ensure_folder(client, s.processed_folder)
            selected = client.select_folder(s.folder)
            self._uidvalidity = _number(selected[b"UIDVALIDITY"])
        except BaseException:
            with contextlib.suppress(Exception):
                client.shutdown()
            raise
        self._client = client
        self._log.info(
            "%s: connected (UIDVALIDITY %d, %d message(s) in the folder)",
            self._where(),
            self._uidvalidity,
            _number(selected.get(b"EXISTS", 0)),
        )

    def _oauth_login(self, client: ImapConnection) -> None:
        """SASL OAUTHBEARER (RFC 7628) when advertised, else XOAUTH2; once more with a new token
        when the server refuses this one (revoked or expired early)."""
        s = self.settings
        assert self._tokens is not None
        token = ""
        for attempt in (1, 2):
            try:
                token = self._tokens.access_token(s.oauth, rejected=token)
            except OAuthError as error:
                reason = f"no access token from grant {s.oauth}: {error}"
                if self._signed_in(False, reason):
                    self._log.error("%s: cannot sign in (%s); retrying with backoff", self._where(), reason)
                raise MailboxLoginFailed(reason) from None
            try:
                _sasl_bearer(client, s.user, token)
                return
            except LoginError as error:
                if attempt == 2:
                    reason = f"server refused a fresh access token of grant {s.oauth}: {_text(error)}"
                    if self._signed_in(False, reason):
                        self._log.error("%s: cannot sign in (%s); retrying with backoff", self._where(), reason)
                    raise MailboxLoginFailed(reason) from None
                self._log.info("%s: access token refused; refreshing it", self._where())

    def _signed_in(self, ok: bool, reason: str) -> bool:
        """Record on the health board whether this mailbox can sign in; True on a change."""
        # /readyz reads the board and the pulse one at a time, and a green board beside a failure
        # count reads as a warning: so red goes up before the failure is counted, and the count is
        # cleared before green goes up (no passing warning between critical and ok, either way).
        if ok:
            self.health.beat(self._component, now=self._clock.now())  # the server answered us
            changed = self.health.set(self._component, GREEN, reason, now=self._clock.now())
        else:
            changed = self.health.set(self._component, RED, reason, now=self._clock.now())
            self.health.fault(self._component, reason, now=self._clock.now())
            telemetry.count_imap_auth_failure(self.settings.name)
        if ok and changed:
            self._log.info("%s: signed in again; polling resumes from the UID cursor", self._where())
        return changed

    def _ensure_folder(self, client: ImapConnection, folder: str) -> None:
        if client.folder_exists(folder):
            return
        try:
            client.create_folder(folder)
        except IMAPClientError:
            if not client.folder_exists(folder):  # another daemon may have just created it
                raise
        with contextlib.suppress(IMAPClientError):
            client.subscribe_folder(folder)  # so people see it in their mail client
        self._log.info("%s: created folder %s", self._where(), folder)

    def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            client.logout()
        except Exception:
            with contextlib.suppress(Exception):
                client.shutdown()

    # -- the advisory lock ---------------------------------------------------------------------

    def _acquire_lock(self) -> bool:
        """Hold this mailbox's lock (PostgreSQL); True when this poller may poll it."""
        if self._engine.dialect.name != "postgresql":
            return True  # SQLite means one process: nothing to coordinate
        if self._lock_connection is not None:
            if self._lock_alive():
                return True
            self._log.warning("%s: lost the database connection holding its lock", self._where())
            self._disconnect()
            self._drop_lock_connection()
        try:
            connection = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        except sa.exc.SQLAlchemyError as error:
            raise TransientError(f"database unreachable: {type(error).__name__}") from error
        try:
            acquired = try_advisory_lock(connection, self.lock_name)
        except sa.exc.SQLAlchemyError as error:
            connection.invalidate()
            connection.close()
            raise TransientError(f"cannot take the mailbox lock: {type(error).__name__}") from error
        if not acquired:
            connection.close()
            if not self._waiting_for_lock:
                self._log.info("%s: another daemon polls it; waiting for its lock", self._where())
                self._waiting_for_lock = True
            return False
        self._lock_connection = connection
        self._waiting_for_lock = False
        self._log.info("%s: this daemon now polls it (lock %s)", self._where(), self.lock_name)
        return True

    def _lock_alive(self) -> bool:
        assert self._lock_connection is not None
        try:
            self._lock_connection.execute(sa.text("SELECT 1"))
            return True
        except sa.exc.SQLAlchemyError:
            return False

    def _release_lock(self) -> None:
        connection = self._lock_connection
        if connection is None:
            return
        try:
            release_advisory_lock(connection, self.lock_name)
            connection.close()
            self._lock_connection = None
        except sa.exc.SQLAlchemyError:
            self._drop_lock_connection()

    def _drop_lock_connection(self) -> None:
        # Invalidating closes the DBAPI connection instead of pooling it, so a session-level
        # lock can never linger on a pooled connection.
        connection, self._lock_connection = self._lock_connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.invalidate()
                connection.close()

    # -- one pass ------------------------------------------------------------------------------

    def _drain(self) -> tuple[int, bool]:
        """Store and move every message after the cursor; return (stored, stopped early: a transient
        error, or the stop event between two batches)."""
        client = self._connected
        client.noop()  # lets the server report mail that arrived since the last command
        uidvalidity = self._uidvalidity
        with transaction(self._engine) as session:
            stored_validity, last_uid = load_cursor(session=session, mailbox=self.mailbox)
        if stored_validity != uidvalidity:
            if stored_validity:
                self._log.warning(
                    "%s: UIDVALIDITY changed from %d to %d; scanning the whole folder again",
                    self._where(),
                    stored_validity,
                    uidvalidity,
                )
            last_uid = 0
            self._save_cursor(uidvalidity, 0)
        # Search again after every batch (and so once more, finding nothing, right before IDLE):
        # mail that arrives while a batch is processed is announced by EXISTS responses to our
        # FETCH and MOVE commands, which imapclient does not keep, so IDLE would never report it.
        stored = 0
        size = max(1, self.settings.batch_size)
        while True:
            if self._stop.is_set():
                return stored, True  # shutting down: a long backlog waits for the next start
            uids = self._search_after(last_uid)
            if not uids:
                return stored, False
            batch = uids[:size]
            for chunk in self._by_size(batch):
                count, interrupted = self._process(chunk, uidvalidity)
                stored += count
                if interrupted:
                    return stored, True
            last_uid = batch[-1]

    def _search_after(self, last_uid: int) -> list[int]:
        """The UIDs above `last_uid` now in the folder and not flagged \\Deleted, ascending.

        A message someone flagged \\Deleted is on its way out by its owner's decision (RFC 3501
        §2.3.2); it is neither stored nor moved (and on a server without MOVE or UIDPLUS, our own
        copied-and-flagged messages are not fetched again).
        """
        # "n:*" always matches the highest UID, even when it is below n (RFC 3501 §6.4.8 and
        # §9 seq-range), so filter.
        found = self._connected.search(["UID", f"{last_uid + 1}:*", "NOT", "DELETED"])
        return sorted(uid for uid in found if uid > last_uid)

    def _by_size(self, batch: Sequence[int]) -> Iterator[list[int]]:
        """Split a batch so one FETCH brings at most `max_fetch_bytes` (one message at least)."""
        sizes = self._connected.fetch(batch, ["RFC822.SIZE"])
        chunk: list[int] = []
        total = 0
        for uid in batch:
            size = _number(sizes.get(uid, {}).get(SIZE, 0))
            if chunk and total + size > self._max_fetch_bytes:
                yield chunk
                chunk, total = [], 0
            chunk.append(uid)
            total += size
        if chunk:
            yield chunk

    def _process(self, uids: list[int], uidvalidity: int) -> tuple[int, bool]:
        client = self._connected
        # BODY.PEEK[] rather than RFC822: same bytes, but does not set \Seen (RFC 3501 §6.4.5),
        # so a message left behind still looks unread to the people who look at the mailbox.
        fetched = client.fetch(uids, ["BODY.PEEK[]", "INTERNALDATE"])
        ingested: list[int] = []
        handled = 0
        interrupted = False
        for uid in uids:
            data = fetched.get(uid, {})
            body = data.get(BODY)
            if not isinstance(body, bytes):
                handled = uid  # expunged by someone else since the search: nothing to store
                continue
            raw = RawMessage(
                data=body,
                channel=Channel.IMAP,
                received_at=self._clock.now(),
                source=f"imap:{self.settings.name} uidvalidity={uidvalidity} uid={uid}",
            )
            try:
                self._ingest(raw)
            except Exception as error:
                if is_transient(error):
                    self._log.warning(
                        "%s: UID %d not stored yet, will retry: %s", self._where(), uid, error
                    )
                    interrupted = True
                    break
                self._log.exception(
                    "%s: UID %d could not be stored; left in %s and skipped",
                    self._where(),
                    uid,
                    self.settings.folder,
                )
                handled = uid
                continue
            ingested.append(uid)
            handled = uid
            self._log.debug(
                "%s: UID %d stored (server received it %s)",
                self._where(),
                uid,
                data.get(b"INTERNALDATE"),
            )
        if ingested:
            self._move(ingested)
            self._log.info(
                "%s: stored %d message(s), moved to %s",
                self._where(),
                len(ingested),
                self.settings.processed_folder,
            )
        if handled:
            try:
                self._save_cursor(uidvalidity, handled)
            except TransientError as error:
                # Only costs a re-fetch that dedupe absorbs; the messages themselves are safe.
                self._log.warning("%s: cursor not saved (%s)", self._where(), error)
                interrupted = True
        return len(ingested), interrupted

    def _move(self, uids: list[int]) -> None:
        client = self._connected
        target = self.settings.processed_folder
        if client.has_capability("MOVE"):
            client.move(uids, target)
            return
        client.copy(uids, target)
        client.add_flags(uids, [DELETED], silent=True)
        if client.has_capability("UIDPLUS"):
            client.uid_expunge(uids)  # UID EXPUNGE: only these UIDs (RFC 4315 §2.1)
        elif not self._warned_no_uidplus:
            self._warned_no_uidplus = True
            self._log.warning(
                "%s: the server offers neither MOVE nor UIDPLUS; stored messages are copied to %s "
                "and flagged \\Deleted but not expunged (a plain EXPUNGE could remove other mail)",
                self._where(),
                target,
            )

    def _save_cursor(self, uidvalidity: int, last_uid: int) -> None:
        with transaction(self._engine) as session:
            save_cursor(
                session=session,
                mailbox=self.mailbox,
                uidvalidity=uidvalidity,
                last_uid=last_uid,
                now=self._clock.now(),
            )


def _sasl_bearer(client: ImapConnection, user: str, token: str) -> None:
    """AUTHENTICATE OAUTHBEARER (RFC 7628) when advertised, else XOAUTH2, answering an error
    challenge with the dummy response both require (RFC 7628 §3.2.3).

    imapclient's own `oauth2_login`/`oauthbearer_login` send the credentials again in answer to
    the error challenge, which leaves the server waiting for the protocol's dummy reply: the
    failure then shows only as a socket timeout instead of a clear NO.
    """
    if client.has_capability("AUTH=OAUTHBEARER"):
        mechanism = "OAUTHBEARER"
        identity = user.replace("=", "=3D").replace(",", "=2C")
        initial = f"n,a={identity},\x01auth=Bearer {token}\x01\x01"
    else:
        mechanism = "XOAUTH2"
        initial = f"user={user}\x01auth=Bearer {token}\x01\x01"
    sent: list[bool] = []

    def respond(_challenge: bytes) -> bytes:
        if sent:
            return b"\x01"
        sent.append(True)
        return initial.encode()

    try:
        # imaplib's authenticate through imapclient's documented escape hatch (`_imap`):
        # imapclient has no way to supply a challenge-aware SASL callback.
        typ, data = client._imap.authenticate(mechanism, respond)
    except IMAPClientError as error:
        raise LoginError(_text(error)) from None
    except client._imap.error as error:
        raise LoginError(_text(error)) from None
    if typ != "OK":
        raise LoginError(_text(data[0] if data else typ))


class _Backoff:
    """Exponential delays with jitter, capped: base, 2·base, 4·base … max, each scaled by 0.5–1."""

    def __init__(self, base: float, cap: float, rng: random.Random) -> None:
        self._base = base
        self._cap = cap
        self._rng = rng
        self._attempt = 0

    def next_delay(self) -> float:
        delay = min(self._cap, self._base * 2.0**self._attempt)
        self._attempt = min(self._attempt + 1, 32)
        return delay * self._rng.uniform(0.5, 1.0)

    def reset(self) -> None:
        self._attempt = 0


def _text(error: BaseException | bytes | str | None) -> str:
    """An imaplib error's (or response's) server text, decoded (it is often bytes)."""
    value = error.args[0] if isinstance(error, BaseException) and error.args else error
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)
