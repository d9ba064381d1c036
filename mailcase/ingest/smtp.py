"""The SMTP edge: accepts mail for the support desk over SMTP and hands each message to the ingest pipeline; it must not parse, decide or store anything itself.

The edge is thin on purpose (STYLE.md rule 5). It refuses early and precisely what it can judge
from the envelope alone (unknown recipients, too many recipients, oversized messages), runs the
shared pipeline off the event loop, and always ends a transaction with an explicit reply:
`250` only after the pipeline returned (the message, its case change and its acknowledgement are
committed by then), `451` when the pipeline could not commit, so that the sending MTA keeps the
message and retries (SPEC.md §3, "Nothing lost"). Retries are harmless because the pipeline
deduplicates.

Public parts, wired by the composition root:
* `SupportHandler` — the aiosmtpd handler (recipient policy, DATA → pipeline → reply).
* `start_smtp_server` / `stop_smtp_server` — a plain `loop.create_server` in the daemon's own
  loop, and a graceful stop that lets in-flight transactions finish.
* `SmtpListener` — the two above behind `start()` / `stop()`.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import logging
import socket
import ssl
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, AnyStr, ClassVar, Protocol

from aiosmtpd.smtp import SMTP, Envelope, Session, TLSSetupException

from mailcase import telemetry
from mailcase.clock import Clock
from mailcase.config import SmtpSettings
from mailcase.domain import Channel, RawMessage
from mailcase.errors import ConfigError, TransientError

log = logging.getLogger(__name__)

# Replies. Enhanced status codes are RFC 3463's; the basic codes RFC 5321 §4.2.
REPLY_QUEUED = "250 2.0.0 Ok: queued"
REPLY_RECIPIENT_OK = "250 2.1.5 Ok"
REPLY_TRANSIENT = "451 4.3.0 Temporary failure, please retry"
REPLY_TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
# RFC 1870 §6.1 gives the text; RFC 3463 5.3.4 is "message too big for system".
REPLY_TOO_BIG = "552 5.3.4 Message size exceeds fixed maximum message size"
REPLY_SHUTTING_DOWN = "421 4.3.2 Service shutting down, please retry later"
REPLY_REJECTED = "554 5.6.0 Message rejected"
# RFC 3463 4.7.0 "other or undefined security status": a cap on what one client may hold.
REPLY_TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections, try again later"
REPLY_TOO_MANY_FROM_CLIENT = "421 4.7.0 Too many connections from your address, try again later"
REPLY_TOO_MANY_COMMANDS = "421 4.7.0 Too many commands without a message, closing connection"
REPLY_IDLE_TIMEOUT = "421 4.4.2 Idle timeout, closing connection"

DESCRIPTOR_RESERVE = 64
"""File descriptors kept free beside client connections (database, log, relay, IMAP, workers)."""

DECISION_REJECTED = "rejected"
"""The `IngestOutcome.decision` that makes the edge answer 554 (permanent) instead of 250."""

IDENT = "ESMTP mailcase"
"""Greeting text after our host name (RFC 5321 §4.2: `220 <domain> ESMTP ...`); no version."""

DEFAULT_GRACE_SECONDS = 30.0
"""How long a graceful stop waits for in-flight DATA transactions before closing them."""

_REPLY_TEXT_LIMIT = 200
"""Characters of a free-text reply fragment we echo (RFC 5321 §4.5.3.1.5 caps a reply line at 512)."""

_LIBRARY_LOGGER = "mail.log"
"""aiosmtpd's logger: at INFO it prints every recipient, and ours carry reply tokens (STYLE.md rule 7)."""


class IngestOutcome(Protocol):
    """What the shared ingest pipeline reports about one committed message.

    The SMTP edge needs only these four read-only attributes, for its reply and its log line:
    * `decision` — the decision's name, e.g. `open_case`, `append_update`, `hold`, `ignore`,
      `duplicate`; `DECISION_REJECTED` ("rejected") means the message is refused permanently
      and the edge answers 554 instead of 250.
    * `reason` — a short human-readable why (no message body, no reply tokens).
    * `case_number` — the zero-padded number of the case opened or updated, or None.
    * `message_id` — the message's Message-ID with its angle brackets, "" when it had none.
    """

    @property
    def decision(self) -> str: ...

    @property
    def reason(self) -> str: ...

    @property
    def case_number(self) -> str | None: ...

    @property
    def message_id(self) -> str: ...


class Ingest(Protocol):
    """The shared pipeline as the SMTP edge calls it, in a worker thread.

    It stores everything in one transaction and commits before returning. It raises
    `TransientError` when committing failed for a reason that may pass (a locked or unreachable
    database); any other exception is a bug on our side.
    """

    def __call__(self, raw: RawMessage, /) -> IngestOutcome: ...


class GroupIngest(Ingest, Protocol):
    """A pipeline that can also commit several messages in one transaction (group commit).

    `ingest_group(raws)` returns one entry per message, in order: its committed outcome, or the
    exception that kept it (and only it) from being committed.
    """

    def ingest_group(self, raws: Sequence[RawMessage], /) -> list[IngestOutcome | Exception]: ...


class Mailbox(StrEnum):
    """Which of our mailboxes a recipient address names."""

    SUPPORT = "support"
    MACD = "macd"
    POSTMASTER = "postmaster"


@dataclass(frozen=True, slots=True)
class RecipientPolicy:
    """The addresses this edge accepts mail for, read from `[smtp]`; everything else is refused."""

    domains: frozenset[str]
    local_parts: Mapping[str, Mailbox]
    addresses: Mapping[str, Mailbox]

    @classmethod
    def from_settings(cls, settings: SmtpSettings) -> RecipientPolicy:
        configured = (
            (settings.support_address, Mailbox.SUPPORT),
            (settings.macd_address, Mailbox.MACD),
            (settings.postmaster_address, Mailbox.POSTMASTER),
        )
        local_parts: dict[str, Mailbox] = {"postmaster": Mailbox.POSTMASTER}
        addresses: dict[str, Mailbox] = {}
        for address, mailbox in configured:
            if not address:
                continue
            local, _, domain = address.rpartition("@")
            local_parts[local.lower()] = mailbox
            addresses[f"{local.lower()}@{_normal_domain(domain)}"] = mailbox
        return cls(
            domains=frozenset(_normal_domain(d) for d in settings.domains),
            local_parts=local_parts,
            addresses=addresses,
        )

    def mailbox_for(self, address: str) -> Mailbox | None:
        """The mailbox `address` reaches, or None when it is not ours.

        Rules, in order:
        1. `Postmaster` without a domain is the postmaster (RFC 5321 §4.1.1.3, §4.5.1).
        2. The domain is compared case-insensitively (RFC 5321 §2.4), a trailing root dot
           ignored; the local part case-insensitively too (real servers fold it).
        3. The support and MACD local parts may carry a `+detail` (RFC 5233 subaddress: reply
           tokens ride there); postmaster may not.
        4. A configured address (support, MACD, postmaster) is accepted whatever its domain:
           reply tokens are minted on the support address's own domain.
        5. Otherwise the domain must be one of `smtp.domains`, and the local part `postmaster`
           or the support or MACD local part.
        """
        local, at, domain = address.rpartition("@")
        if not at:
            return Mailbox.POSTMASTER if address.lower() == "postmaster" else None
        base, plus, _detail = local.lower().partition("+")
        domain = _normal_domain(domain)
        configured = self.addresses.get(f"{base}@{domain}")
        if configured is not None and not (plus and configured is Mailbox.POSTMASTER):
            return configured
        if domain not in self.domains:
            return None
        mailbox = self.local_parts.get(base)
        if mailbox is Mailbox.POSTMASTER and plus:
            return None
        return mailbox


def _without_detail(address: str) -> str:
    """The address with any `+detail` elided, so that no reply token reaches a log line."""
    local, at, domain = address.rpartition("@")
    base, plus, _detail = local.partition("+")
    return f"{base}{'+…' if plus else ''}{at}{domain}" if at else address


def _normal_domain(domain: str) -> str:
    return domain.strip().rstrip(".").lower()


def envelope_sender(mail_from: str | None) -> str:
    """The reverse path as RawMessage keeps it: "" for the null sender `<>` (bounces, RFC 5321 §4.5.5)."""
    if not mail_from or mail_from == "<>":
        return ""
    return mail_from


def reply_for(outcome: IngestOutcome) -> str:
    """The final DATA reply for a message the pipeline has committed."""
    if outcome.decision == DECISION_REJECTED:
        reason = _reply_text(outcome.reason)
        return f"{REPLY_REJECTED}: {reason}" if reason else REPLY_REJECTED
    reference = _reply_text(outcome.case_number or outcome.message_id)
    return f"{REPLY_QUEUED} as {reference}" if reference else REPLY_QUEUED


def _reply_text(text: str | None) -> str:
    """Printable ASCII only: a reply is one ASCII line (RFC 5321 §4.2) whatever the input holds."""
    if not text:
        return ""
    cleaned = "".join(ch if " " <= ch <= "~" else "?" for ch in text)
    return cleaned[:_REPLY_TEXT_LIMIT]


class _HooksOnlyDir:
    """`dir()` of the object lists only aiosmtpd's hook and command methods.

    aiosmtpd's protocol looks its commands, AUTH mechanisms and handler hooks up anew for every
    connection, with `dir()` and `inspect.getmembers()` over the protocol object and the handler
    (which fetches every attribute): ~0.2 ms of CPU per connection, as much as the rest of a 4 KB
    message's SMTP dialogue, and MTAs often open one connection per message (bench/ingest/dataread.py).
    Those are the only names it looks for, so only they are listed (once per class)."""

    _listed: ClassVar[dict[type, list[str]]] = {}

    def __dir__(self) -> list[str]:
        names = _HooksOnlyDir._listed.get(type(self))
        if names is None:
            names = [name for name in object.__dir__(self) if name.startswith(("smtp_", "auth_", "handle_"))]
            _HooksOnlyDir._listed[type(self)] = names
        return names


class SupportHandler(_HooksOnlyDir):
    """The aiosmtpd handler: recipient policy at RCPT, the ingest pipeline at the end of DATA.

    One handler serves one listener: it also keeps the listener's open connections and its
    in-flight transactions, so that a graceful stop can wait for them.
    """

    def __init__(
        self,
        settings: SmtpSettings,
        ingest: Ingest,
        clock: Clock,
        executor: Executor,
    ) -> None:
        self._settings = settings
        self._ingest = ingest
        self._clock = clock
        self._executor = executor
        self._recipients = RecipientPolicy.from_settings(settings)
        self._stopping = False
        self._connections: set[_SupportSMTP] = set()
        self._per_ip: dict[str, int] = {}
        self._connection_cap = max(1, min(settings.max_connections, _descriptor_room()))
        self._at_cap = False
        self._at_descriptor_limit = False
        self._transactions: set[asyncio.Future[None]] = set()
        self._ingests: set[asyncio.Task[str]] = set()
        grouped = getattr(ingest, "ingest_group", None)
        self._turns = _GroupTurns(
            getattr(executor, "_max_workers", 1) or 1, GROUP_COMMIT_MOST if grouped else 1, self._ingest_in_thread
        )

    @property
    def settings(self) -> SmtpSettings:
        return self._settings

    @property
    def open_connections(self) -> int:
        """Client connections open right now (for metrics and the stop log)."""
        return len(self._connections)

    @property
    def waiting_for_pipeline(self) -> int:
        """Messages whose DATA has arrived and that wait for a turn at the pipeline (a metric)."""
        return self._turns.waiting

    @property
    def stopping(self) -> bool:
        """True once a stop began: no new transaction starts (MAIL and DATA get 421)."""
        return self._stopping

    # aiosmtpd hooks -------------------------------------------------------------------------

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        # With this hook present aiosmtpd leaves recording the client's name to us.
        session.host_name = hostname
        # We are a mail exchanger, not a submission server: AUTH (RFC 4954) would only be
        # offered after STARTTLS and always fail, so it is not advertised at all.
        return [line for line in responses if not line.startswith("250-AUTH")]

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if self._recipients.mailbox_for(address) is None:
            # The sender's fault: info, not error (STYLE.md rule 6).
            log.info(
                "recipient refused address=%s peer=%s reply=550",
                _without_detail(address), _peer(session),
            )
            return f"550 5.1.1 <{_reply_text(address)}>: recipient not accepted here"
        lowered = address.lower()
        if any(existing.lower() == lowered for existing in envelope.rcpt_tos):
            return REPLY_RECIPIENT_OK
        if len(envelope.rcpt_tos) >= self._settings.max_recipients:
            # RFC 5321 §4.5.3.1.10: a temporary reply; the client sends the rest later.
            return REPLY_TOO_MANY_RECIPIENTS
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return REPLY_RECIPIENT_OK

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = RawMessage(
            data=envelope.original_content or b"",
            channel=Channel.SMTP,
            received_at=self._clock.now(),
            envelope_from=envelope_sender(envelope.mail_from),
            envelope_to=tuple(envelope.rcpt_tos),
            source=f"smtp:{_peer(session)} helo={_reply_text(session.host_name)}",
        )
        peer = session.peer
        client = str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)
        task = asyncio.get_running_loop().create_task(self._ingest_and_reply(raw, client))
        self._ingests.add(task)
        task.add_done_callback(self._ingests.discard)
        # Shielded: a client that hangs up or times out while we commit cancels this hook, but
        # the commit and its log line still complete; the client retries and dedupe absorbs it.
        return await asyncio.shield(task)

    async def handle_exception(self, error: Exception) -> str:
        """aiosmtpd's fallback would answer `500 Error: (<class>) <text>`: a permanent code for our bug."""
        if isinstance(error, TLSSetupException):
            # aiosmtpd closes the connection itself; the client failed the handshake.
            log.info("STARTTLS handshake failed: %s", error.__cause__)
            return "421 4.7.0 TLS negotiation failed"
        log.error("SMTP session error (a bug on our side)", exc_info=error)
        return REPLY_TRANSIENT

    # The pipeline ---------------------------------------------------------------------------

    async def _ingest_and_reply(self, raw: RawMessage, client: str) -> str:
        data_ended = time.monotonic()
        try:
            # Turns at the pipeline go round the clients: one sending many (or costly) messages
            # waits behind its own, not in front of everyone else's. A turn may carry several
            # messages in one transaction (group commit); each still has its own outcome.
            outcome = await self._turns.submit(client, raw)
            reply = reply_for(outcome)
            telemetry.observe_ingest(raw.channel.value, time.monotonic() - data_ended)
        except TransientError as exc:
            log.warning(
                "message deferred channel=%s bytes=%d reply=451 reason=%s",
                raw.channel, len(raw.data), exc,
            )
            return REPLY_TRANSIENT
        except Exception:
            # Our bug, never the sender's: 451 keeps the message at the sender until fixed.
            log.exception(
                "ingest failed channel=%s bytes=%d reply=451", raw.channel, len(raw.data)
            )
            return REPLY_TRANSIENT
        # The pipeline logs the one INFO line per message for every channel; this adds the reply.
        log.debug(
            "message_id=%s channel=%s decision=%s reason=%s case=%s reply=%s",
            outcome.message_id or "-", raw.channel, outcome.decision, outcome.reason,
            outcome.case_number or "-", reply[:3],
        )
        return reply

    async def _ingest_in_thread(self, raws: list[RawMessage]) -> list[IngestOutcome | Exception]:
        loop = asyncio.get_running_loop()
        grouped = getattr(self._ingest, "ingest_group", None)
        if grouped is not None:
            return list(await loop.run_in_executor(self._executor, grouped, raws))
        (raw,) = raws
        return [await loop.run_in_executor(self._executor, self._ingest, raw)]

    # Connections and graceful stop ----------------------------------------------------------

    @property
    def connection_cap(self) -> int:
        """`max_connections`, lowered to what the descriptor limit leaves room for."""
        return self._connection_cap

    def _opened(self, connection: _SupportSMTP, ip: str) -> str | None:
        """Admit a new connection, or return the 421 it gets (over a cap); logs once per change
        of state (at a cap, below it again), never once per refused client."""
        self.descriptor_limit(reached=False)
        if len(self._connections) >= self._connection_cap:
            if not self._at_cap:
                self._at_cap = True
                log.warning(
                    "SMTP at its connection cap (%d): new clients get 421 until some close",
                    self._connection_cap,
                )
            return REPLY_TOO_MANY_CONNECTIONS
        if self._per_ip.get(ip, 0) >= self._settings.max_connections_per_ip:
            log.info("SMTP connection refused peer=%s reply=421 reason=per-address cap", ip)
            return REPLY_TOO_MANY_FROM_CLIENT
        if self._at_cap:
            self._at_cap = False
            log.warning("SMTP below its connection cap again: accepting clients")
        self._connections.add(connection)
        self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        return None

    def _closed(self, connection: _SupportSMTP, ip: str) -> None:
        if connection not in self._connections:
            return
        self._connections.discard(connection)
        left = self._per_ip.get(ip, 1) - 1
        if left > 0:
            self._per_ip[ip] = left
        else:
            self._per_ip.pop(ip, None)

    def descriptor_limit(self, *, reached: bool) -> None:
        """The process ran out of file descriptors (accept failed), or accepted again: logged
        once per change, where asyncio would log every failed accept."""
        if reached == self._at_descriptor_limit:
            return
        self._at_descriptor_limit = reached
        if reached:
            log.error(
                "SMTP cannot accept: out of file descriptors (ulimit -n); clients wait until some close"
            )
        else:
            log.warning("SMTP accepting connections again after running out of file descriptors")

    def _transaction_started(self) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._transactions.add(done)
        return done

    def _transaction_ended(self, done: asyncio.Future[None]) -> None:
        if not done.done():
            done.set_result(None)
        self._transactions.discard(done)

    async def shut_down(self, grace_seconds: float = DEFAULT_GRACE_SECONDS) -> bool:
        """Refuse new transactions, let those in DATA finish, then close every connection.

        Returns True when every in-flight transaction finished within `grace_seconds`. A
        transaction still unfinished after that is cut: its sender had no 250 and retries.
        A pipeline call already running keeps running in its worker thread and commits or
        rolls back whole; the owner of the executor waits for it when shutting that down.
        """
        self._stopping = True
        for connection in list(self._connections):
            if not connection.in_data:
                connection.close_for_shutdown()
        pending: set[asyncio.Future[None] | asyncio.Task[str]] = set(self._transactions) | set(self._ingests)
        unfinished: set[asyncio.Future[None] | asyncio.Task[str]] = set()
        if pending:
            log.info("SMTP stop: waiting for %d in-flight transaction(s)", len(pending))
            _done, unfinished = await asyncio.wait(pending, timeout=grace_seconds)
        for connection in list(self._connections):
            connection.close_for_shutdown()
        if unfinished:
            log.warning(
                "SMTP stop: %d transaction(s) unfinished after %.0f s; senders will retry",
                len(unfinished), grace_seconds,
            )
        return not unfinished


GROUP_COMMIT_MOST = 32
"""Most messages one group commit carries (one transaction): bounds the work a failed commit redoes."""


class _GroupTurns:
    """Turns at the ingest executor's `slots` threads, each turn a group commit (issue 16).

    When a thread is free, the messages waiting for one go to it together, up to `most`, as one
    transaction (`Pipeline.ingest_group`): under load, concurrent sessions share a commit, which on
    SQLite is one writer turn instead of several, and on PostgreSQL one WAL flush. With nothing
    waiting, a message goes alone and at once: grouping never adds a wait. Each message still gets
    its own outcome (250 only after the commit that holds it), or its own error (451).

    The waiting messages are taken round-robin over client addresses (per-client fairness): one
    per client per round, so a client sending many waits behind its own, not in front of others.
    """

    def __init__(self, slots: int, most: int, run: Any) -> None:
        self._slots = max(1, slots)
        self._most = max(1, most)
        self._run = run
        self._busy = 0
        self._waiting: collections.OrderedDict[
            str, collections.deque[tuple[RawMessage, asyncio.Future[IngestOutcome]]]
        ] = collections.OrderedDict()
        self._groups: set[asyncio.Task[None]] = set()

    @property
    def waiting(self) -> int:
        return sum(len(queue) for queue in self._waiting.values())

    async def submit(self, client: str, raw: RawMessage) -> IngestOutcome:
        """The committed outcome of `raw`, or the error that kept it from being committed."""
        future: asyncio.Future[IngestOutcome] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(client, collections.deque()).append((raw, future))
        self._start()
        return await future

    def _start(self) -> None:
        while self._busy < self._slots and self._waiting:
            group = self._take()
            self._busy += 1
            task = asyncio.get_running_loop().create_task(self._commit(group))
            self._groups.add(task)
            task.add_done_callback(self._groups.discard)

    def _take(self) -> list[tuple[RawMessage, asyncio.Future[IngestOutcome]]]:
        group: list[tuple[RawMessage, asyncio.Future[IngestOutcome]]] = []
        while self._waiting and len(group) < self._most:
            client, queue = next(iter(self._waiting.items()))
            item = queue.popleft()
            if queue:
                self._waiting.move_to_end(client)
            else:
                del self._waiting[client]
            if not item[1].done():
                group.append(item)
        return group

    async def _commit(self, group: list[tuple[RawMessage, asyncio.Future[IngestOutcome]]]) -> None:
        try:
            try:
                results = await self._run([raw for raw, _future in group])
            except Exception as error:
                results = [error] * len(group)
            for (_raw, future), result in zip(group, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)
        finally:
            self._busy -= 1
            self._start()


def _peer(session: Session) -> str:
    peer = session.peer
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


class _SupportSMTP(_HooksOnlyDir, SMTP):
    """aiosmtpd's protocol with the few changes our edge needs; one instance per connection."""

    # The stream reader's buffer: a command line longer than this is refused (500, RFC 5321
    # §4.5.3.1.4 lets a server refuse over-long commands), and a DATA line longer than this is
    # read in pieces of this size (_LongLineReader) rather than buffered whole.
    line_length_limit = 65_536

    def __init__(self, handler: SupportHandler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._support = handler
        self._refusal: str | None = None
        self._ip = ""
        self._commands = 0
        # RFC 5321 §4.5.3.1.6 limits a text line to 1000 octets, but mail that breaks the rule
        # still reaches a support desk from broken gateways, and Postfix accepts it (it breaks
        # such lines at line_length_limit and goes on). So do we: aiosmtpd refused any DATA line
        # longer than its reader's buffer with a permanent 500, which bounced a customer's
        # report. The only bound left on DATA is the message size (552 5.3.4).
        self._stream_reader.__class__ = _LongLineReader  # type: ignore[attr-defined]
        self._transaction: asyncio.Future[None] | None = None
        self._continued: list[bytes] = []

    @property
    def in_data(self) -> bool:
        return self._transaction is not None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None
        super().connection_made(transport)
        if first:  # not again after STARTTLS
            peer = transport.get_extra_info("peername")
            self._ip = str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)
            self._refusal = self._support._opened(self, self._ip)

    def connection_lost(self, error: Exception | None) -> None:
        self._support._closed(self, self._ip)
        super().connection_lost(error)

    async def _handle_client(self) -> None:
        if self._refusal is not None:
            # Over a cap: say why instead of the greeting, and close (RFC 5321 §3.1 allows 421).
            await self.push(self._refusal)
            if self.transport is not None:
                self.transport.close()
            return
        await super()._handle_client()

    def _timeout_cb(self) -> None:
        # RFC 5321 §4.5.3.2: the server may close an idle connection; say so first.
        transport = self.transport
        if transport is not None and not transport.is_closing():
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(f"{REPLY_IDLE_TIMEOUT}\r\n".encode("ascii"))
        super()._timeout_cb()  # type: ignore[no-untyped-call]  # aiosmtpd leaves this hook unannotated

    async def _counted(self) -> bool:
        """Count a command outside a completed transaction; False (421 sent, closing) over the cap."""
        self._commands += 1
        if self._commands <= self._support.settings.max_commands_without_transaction:
            return True
        log.info("SMTP connection closed peer=%s reply=421 reason=commands without a message", self._ip)
        await self.push(REPLY_TOO_MANY_COMMANDS)
        if self.transport is not None:
            self.transport.close()
        return False

    async def smtp_NOOP(self, arg: str) -> None:
        if await self._counted():
            await super().smtp_NOOP(arg)

    async def smtp_RSET(self, arg: str) -> None:
        if await self._counted():
            await super().smtp_RSET(arg)

    async def smtp_HELO(self, hostname: str) -> None:
        if await self._counted():
            await super().smtp_HELO(hostname)

    async def smtp_EHLO(self, hostname: str) -> None:
        if await self._counted():
            await super().smtp_EHLO(hostname)

    async def smtp_VRFY(self, arg: str) -> None:
        if await self._counted():
            await super().smtp_VRFY(arg)

    async def smtp_EXPN(self, arg: str) -> None:
        if await self._counted():
            await super().smtp_EXPN(arg)

    async def smtp_HELP(self, arg: str) -> None:
        if await self._counted():
            await super().smtp_HELP(arg)

    async def smtp_RCPT(self, arg: str | None) -> None:
        if await self._counted():
            await super().smtp_RCPT(arg)

    async def push(self, status: AnyStr) -> None:
        # aiosmtpd enforces SIZE itself but answers "552 Error: ..." without the enhanced
        # status code; every 552 it sends is about size, so give it RFC 3463's 5.3.4.
        if isinstance(status, str) and status.startswith("552 ") and "5.3.4" not in status:
            status = REPLY_TOO_BIG
        line = status.encode("utf-8" if self.enable_SMTPUTF8 else "ascii") if isinstance(status, str) else status
        if line[3:4] == b"-":
            # A multi-line reply (EHLO's) goes out in one write when its last line comes, instead
            # of one send() per line: one reply, one segment for the client to read.
            self._continued.append(line)
            return
        if self._continued:
            line = b"\r\n".join([*self._continued, line])
            self._continued.clear()
        await super().push(line)

    async def smtp_MAIL(self, arg: str | None) -> None:
        if self._support.stopping:
            await self._refuse_for_shutdown()
            return
        if await self._counted():
            await super().smtp_MAIL(arg)

    async def smtp_DATA(self, arg: str) -> None:
        if self._support.stopping:
            await self._refuse_for_shutdown()
            return
        transaction = self._transaction = self._support._transaction_started()
        # The whole DATA transfer gets data_timeout_seconds; between commands, idle_timeout.
        self._reset_timeout(self._support.settings.data_timeout_seconds)
        try:
            await super().smtp_DATA(arg)
        finally:
            self._support._transaction_ended(transaction)
            self._transaction = None
            self._commands = 0  # a message was sent: the client is doing real work
        if self._support.stopping:
            # The reply to this transaction is written; now say goodbye (RFC 5321 §3.8).
            self.close_for_shutdown()

    async def _refuse_for_shutdown(self) -> None:
        await self.push(REPLY_SHUTTING_DOWN)
        if self.transport is not None:
            self.transport.close()

    def close_for_shutdown(self) -> None:
        """RFC 5321 §3.8: a server going down should send 421 before closing the connection."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(f"{REPLY_SHUTTING_DOWN}\r\n".encode("ascii"))
        transport.close()


class _LongLineReader(asyncio.StreamReader):
    """A stream reader that folds over-long DATA lines as Postfix does, instead of refusing them.

    aiosmtpd's DATA loop reads CRLF-terminated lines; a line longer than the buffer made it
    answer a permanent 500. Here such a line comes back in pieces of the buffer's size, each but
    the last ended with CRLF and the next begun with a space: Postfix's folding (smtp_line_length_
    limit inserts <CR><LF><SPACE>), a valid header continuation, whitespace in base64, and never
    a line starting with "." (so dot-unstuffing and the end-of-data line are not fooled). The
    command loop reads with the default separator and still gets LimitOverrunError (500).
    """

    _folding = False

    async def readuntil(self, separator: bytes = b"\n") -> bytes:  # type: ignore[override]
        if separator != b"\r\n":
            return await super().readuntil(separator)
        prefix = b" " if self._folding else b""
        try:
            line = await super().readuntil(separator)
        except asyncio.LimitOverrunError as error:
            self._folding = True
            # Two bytes short of the buffer, so that aiosmtpd's own per-line check passes.
            piece = await self.read(max(min(error.consumed, self._limit - 3), 1))  # type: ignore[attr-defined]
            return prefix + piece + b"\r\n"
        self._folding = False
        return prefix + line


def _descriptor_room() -> int:
    """Client connections the process's file-descriptor limit leaves room for (one each)."""
    try:
        import resource

        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return 2**31
    if soft == resource.RLIM_INFINITY:
        return 2**31
    return max(1, soft - DESCRIPTOR_RESERVE)


_OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def _watch_descriptor_limit(loop: asyncio.AbstractEventLoop, handler: SupportHandler) -> None:
    """asyncio logs every failed accept() at the descriptor limit (thousands of lines a minute);
    report the state change once through the handler instead, and pass everything else on."""
    previous = loop.get_exception_handler()

    def exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        if (
            isinstance(error, OSError)
            and error.errno in _OUT_OF_DESCRIPTORS
            and "accept" in str(context.get("message", ""))
        ):
            handler.descriptor_limit(reached=True)
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(exception_handler)


def build_tls_context(settings: SmtpSettings) -> ssl.SSLContext | None:
    """The STARTTLS context when `tls_cert_file` and `tls_key_file` are both set, else None."""
    cert, key = settings.tls_cert_file, settings.tls_key_file
    if not cert and not key:
        return None
    if not cert:
        raise ConfigError("smtp.tls_cert_file", "required when smtp.tls_key_file is set")
    if not key:
        raise ConfigError("smtp.tls_key_file", "required when smtp.tls_cert_file is set")
    # Server side: we do not ask clients for certificates (opportunistic TLS, RFC 3207).
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("smtp.tls_cert_file", f"cannot load certificate and key: {exc}") from None
    return context


async def start_smtp_server(
    settings: SmtpSettings,
    handler: SupportHandler,
    *,
    reuse_port: bool = False,
) -> asyncio.Server:
    """Listen on `settings.host:settings.port` in the running loop (port 0: any free port).

    SIZE is advertised and enforced at `max_message_size` (552 5.3.4), STARTTLS offered when a
    certificate is configured (never required: other MTAs may not speak it, RFC 3207 §4),
    the greeting names `hostname`; a client may stay silent `idle_timeout_seconds` between
    commands and gets `data_timeout_seconds` for the whole DATA transfer (421 4.4.2 then). Over
    `max_connections` (lowered to what `ulimit -n` leaves room for), `max_connections_per_ip` or
    `max_commands_without_transaction` a client gets 421 4.7.0 and is disconnected; reaching
    a cap, or the descriptor limit, is logged once per change of state. `reuse_port` lets
    several processes share the port (SO_REUSEPORT).
    """
    tls_context = build_tls_context(settings)
    library_log = logging.getLogger(_LIBRARY_LOGGER)
    if library_log.level == logging.NOTSET:
        library_log.setLevel(logging.WARNING)
    loop = asyncio.get_running_loop()

    def connection() -> SMTP:
        return _SupportSMTP(
            handler,
            data_size_limit=settings.max_message_size,
            # RFC 6531: internationalised addresses (e.g. Portuguese names) must not bounce.
            enable_SMTPUTF8=True,
            hostname=settings.hostname,
            ident=IDENT,
            tls_context=tls_context,
            require_starttls=False,
            timeout=settings.idle_timeout_seconds,
            loop=loop,
        )

    _watch_descriptor_limit(loop, handler)
    if handler.connection_cap < settings.max_connections:
        log.warning(
            "SMTP connection cap lowered from %d to %d: the file-descriptor limit leaves no more room",
            settings.max_connections, handler.connection_cap,
        )  # fmt: skip

    server = await loop.create_server(
        connection,
        host=settings.host,
        port=settings.port,
        reuse_address=True,
        reuse_port=reuse_port or None,
    )
    log.info("SMTP listening on %s", ", ".join(_socket_name(s) for s in server.sockets))
    return server


async def stop_smtp_server(
    server: asyncio.Server,
    handler: SupportHandler,
    *,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
) -> bool:
    """Stop accepting, let in-flight DATA transactions finish (bounded), close the rest.

    Returns True when nothing in flight had to be cut. See `SupportHandler.shut_down`.
    """
    server.close()
    finished = await handler.shut_down(grace_seconds)
    await server.wait_closed()
    log.info("SMTP listener stopped")
    return finished


def _socket_name(sock: socket.socket) -> str:
    name = sock.getsockname()
    return f"{name[0]}:{name[1]}"


class SmtpListener:
    """The SMTP listener as the daemon runs it: `await start()`, then `await stop()` on SIGTERM."""

    def __init__(
        self,
        settings: SmtpSettings,
        handler: SupportHandler,
        *,
        grace_seconds: float = DEFAULT_GRACE_SECONDS,
        reuse_port: bool = False,
    ) -> None:
        self._settings = settings
        self._handler = handler
        self._grace_seconds = grace_seconds
        self._reuse_port = reuse_port
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The bound host and port (the real port when the settings said 0)."""
        if self._server is None:
            raise RuntimeError("the SMTP listener is not started")
        name = self._server.sockets[0].getsockname()
        return str(name[0]), int(name[1])

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("the SMTP listener is already started")
        self._server = await start_smtp_server(
            self._settings, self._handler, reuse_port=self._reuse_port
        )

    async def stop(self) -> bool:
        """Graceful stop; True when no in-flight transaction had to be cut. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return True
        return await stop_smtp_server(server, self._handler, grace_seconds=self._grace_seconds)
