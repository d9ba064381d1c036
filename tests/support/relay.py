"""A capture SMTP relay for tests: an aiosmtpd server on a free 127.0.0.1 port that keeps every message and can be told to fail.

Use it wherever mailcase must hand mail to a relay::

    with CaptureRelay() as relay:
        settings = dataclasses.replace(settings, outbound=relay.outbound_settings())
        ...
        assert relay.messages[0].message["Message-ID"] == stored_id

Failure modes, each for a number of upcoming messages or for one recipient:
`fail_next(n, "451 4.3.0 …")` answers DATA with that reply; `fail_recipient(addr, "550 5.1.1 …")`
refuses RCPT for that address; `fail_sender(n, "550 …")` refuses MAIL FROM of the next n messages;
`drop_after(n)` closes the connection right after accepting the next n messages (a relay
restarting or timing out an idle client).
Messages are recorded before the relay answers 250, so a test can assert on them as soon as the
client call returns: no waiting.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import email
import email.policy
import json
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from mailcase.config import OutboundSettings

HOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class CapturedMessage:
    """One accepted message: the SMTP envelope, the raw bytes and the parsed message."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    message: EmailMessage
    peer: tuple[str, int]
    authenticated_as: str = ""


@dataclass
class _Failures:
    next_replies: list[str] = field(default_factory=list)
    recipients: dict[str, str] = field(default_factory=dict)
    drop_after: int | None = None
    sender_replies: list[str] = field(default_factory=list)


class _Handler:
    def __init__(self, relay: CaptureRelay) -> None:
        self.relay = relay

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        with self.relay._lock:
            if self.relay._failures.sender_replies:
                return self.relay._failures.sender_replies.pop(0)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        with self.relay._lock:
            reply = self.relay._failures.recipients.get(address.lower())
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.relay.delay_seconds:
            # A slow relay: it takes this long over every message before it answers.
            await asyncio.sleep(self.relay.delay_seconds)
        if self.relay.on_message is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.relay.on_message)
        with self.relay._lock:
            failures = self.relay._failures
            if failures.next_replies:
                return failures.next_replies.pop(0)
            data = envelope.original_content or b""
            parsed = email.message_from_bytes(data, policy=email.policy.default)
            assert isinstance(parsed, EmailMessage)
            peer: Any = session.peer
            host, port = (peer[0], peer[1]) if isinstance(peer, tuple) else (peer, 0)
            self.relay._messages.append(
                CapturedMessage(
                    mail_from=envelope.mail_from or "",
                    rcpt_tos=tuple(envelope.rcpt_tos),
                    data=data,
                    message=parsed,
                    peer=(str(host), int(port)),
                    authenticated_as=str(session.auth_data or ""),
                )
            )
            drop = False
            if failures.drop_after is not None:
                failures.drop_after -= 1
                if failures.drop_after <= 0:
                    failures.drop_after = None
                    drop = True
        if drop and server.transport is not None:
            # Close once the 250 below has been written: the client sees a clean accept, then
            # a dead connection on its next command.
            asyncio.get_running_loop().call_soon(server.transport.close)
        return "250 2.0.0 Message accepted for delivery"


class _PipeliningHandler(_Handler):
    """Also offers PIPELINING (RFC 2920), as Postfix, Exchange Online and Gmail do; aiosmtpd reads
    commands one line at a time, so a client's pipelined group is simply answered in order."""

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]


class _BearerHandler(_Handler):
    """Also takes AUTH XOAUTH2 (the mechanism of Microsoft 365 and Gmail SMTP), checking the
    bearer token with the relay's `bearer(user, token)`; a refusal first sends the 334 JSON error
    challenge those servers send, then 535 once the client answers it."""

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        if len(args) < 2:
            return AuthResult(success=False, handled=False)
        fields = dict(
            part.split("=", 1) for part in base64.b64decode(args[1]).decode().split("\x01") if "=" in part
        )
        user, token = fields.get("user", ""), fields.get("auth", "").removeprefix("Bearer ")
        assert self.relay._bearer is not None
        if self.relay._bearer(user, token):
            return AuthResult(success=True, auth_data=user)
        error = json.dumps({"status": "401", "schemes": "bearer", "scope": "https://mail.google.com/"})
        await server.challenge_auth(error)
        return AuthResult(success=False, handled=False)  # aiosmtpd then answers 535


class CaptureRelay:
    """A thread-based aiosmtpd relay on a free loopback port; a context manager.

    `bearer`: require AUTH XOAUTH2 and accept the (user, token) pairs for which it returns True.
    `pipelining`: offer PIPELINING in the EHLO reply (RFC 2920), as production relays do.
    """

    def __init__(
        self,
        *,
        auth: tuple[str, str] | None = None,
        tls_context: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
        bearer: Callable[[str, str], bool] | None = None,
        port: int | None = None,
        delay_seconds: float = 0.0,
        pipelining: bool = False,
    ) -> None:
        self.host = HOST
        self.port = port or free_port()
        self.delay_seconds = delay_seconds
        """Seconds the relay spends on each message before it answers (a slow relay)."""
        self.on_message: Callable[[], None] | None = None
        """Called (in a worker thread) for each message after its DATA and before the relay
        records it and answers: where a test injects a fault at the worst moment."""
        self._lock = threading.Lock()
        self._messages: list[CapturedMessage] = []
        self._failures = _Failures()
        self._auth = auth
        self._bearer = bearer
        kwargs: dict[str, Any] = {"enable_SMTPUTF8": True}
        if bearer is not None:
            kwargs.update(
                authenticator=self._authenticate,
                auth_required=True,
                auth_require_tls=tls_context is not None,
                auth_exclude_mechanism=["LOGIN", "PLAIN"],
            )
        if auth is not None:
            kwargs.update(
                authenticator=self._authenticate,
                auth_required=True,
                auth_require_tls=tls_context is not None,
            )
        if tls_context is not None and implicit_tls:
            kwargs["ssl_context"] = tls_context
        elif tls_context is not None:
            kwargs.update(tls_context=tls_context, require_starttls=True)
        handler = (
            _BearerHandler(self) if bearer is not None else _PipeliningHandler(self) if pipelining else _Handler(self)
        )
        self._controller = Controller(handler, hostname=self.host, port=self.port, **kwargs)

    def __enter__(self) -> CaptureRelay:
        self._controller.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._controller.stop()

    # -- what was received ---------------------------------------------------------------------

    @property
    def messages(self) -> list[CapturedMessage]:
        with self._lock:
            return list(self._messages)

    @property
    def connections(self) -> int:
        """How many distinct client connections delivered messages."""
        return len({captured.peer for captured in self.messages})

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()

    # -- failure injection ---------------------------------------------------------------------

    def fail_next(self, count: int = 1, reply: str = "451 4.3.0 Try again later") -> None:
        """Answer DATA of the next `count` messages with `reply` (4xx temporary, 5xx permanent)."""
        with self._lock:
            self._failures.next_replies.extend([reply] * count)

    def fail_recipient(self, address: str, reply: str = "550 5.1.1 No such user") -> None:
        """Refuse RCPT TO for `address` with `reply` until `clear_failures()`."""
        with self._lock:
            self._failures.recipients[address.lower()] = reply

    def fail_sender(self, count: int = 1, reply: str = "550 5.7.1 Sender rejected") -> None:
        """Answer MAIL FROM of the next `count` messages with `reply`."""
        with self._lock:
            self._failures.sender_replies.extend([reply] * count)

    def drop_after(self, count: int = 1) -> None:
        """Close the connection right after accepting the next `count` messages."""
        with self._lock:
            self._failures.drop_after = count

    def clear_failures(self) -> None:
        with self._lock:
            self._failures = _Failures()

    # -- wiring --------------------------------------------------------------------------------

    def outbound_settings(
        self, base: OutboundSettings | None = None, **overrides: Any
    ) -> OutboundSettings:
        """`[outbound]` settings aimed at this relay (short timeout, no TLS unless overridden)."""
        values: dict[str, Any] = {"host": self.host, "port": self.port, "timeout_seconds": 5}
        if self._auth is not None:
            values.update(user=self._auth[0], password=self._auth[1])
        values.update(overrides)
        return dataclasses.replace(base or OutboundSettings(), **values)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert self._auth is not None
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user, password = self._auth
        ok = auth_data.login.decode() == user and auth_data.password.decode() == password
        return AuthResult(success=ok, handled=False, auth_data=user if ok else None)


def free_port() -> int:
    """A port the kernel just handed out on loopback; the relay binds it right after."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])
