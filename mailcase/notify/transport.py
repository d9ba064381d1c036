"""Hand composed messages to the outbound relay over one reused SMTP connection and classify each outcome; it never touches the database or decides retries.

Classification (RFC 5321 §4.2.1): a 2xx reply to DATA is `sent`; a 4xx reply, a refused
connection, a timeout or a dropped connection is `temporary` (try again later); a 5xx reply is
`permanent`, with the server's reply kept for the operator. When only some recipients are refused,
the message was still accepted for the others: it is `sent` and the refusals are reported in
`refused`, because sending it again would duplicate it for everyone who got it.
"""

from __future__ import annotations

import contextlib
import logging
import re
import smtplib
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from mailcase.clock import Clock, SystemClock
from mailcase.config import OutboundSettings
from mailcase.errors import OAuthError
from mailcase.oauth.health import GREEN, RED, HealthBoard

log = logging.getLogger(__name__)

RELAY = "relay"
"""The relay's component on the health board."""

Envelope = tuple[bytes, str, Sequence[str]]
"""(message as composed by notify/compose: the DATA bytes, envelope sender, envelope recipients)."""


class SendOutcome(StrEnum):
    SENT = "sent"
    TEMPORARY = "temporary"
    PERMANENT = "permanent"


@dataclass(frozen=True, slots=True)
class SendResult:
    """What the relay said about one message: outcome, reply code and text, refused recipients."""

    outcome: SendOutcome
    code: int | None = None
    reply: str = ""
    refused: tuple[tuple[str, int, str], ...] = ()
    unreachable: bool = False
    """The relay could not be reached or refused the session (connect, greeting, TLS, AUTH):
    nothing was said about this message, so delivery pauses as a whole and no notice is charged."""

    @property
    def about_message(self) -> bool:
        """True when the relay answered about this message itself (a reply code to it)."""
        return self.code is not None and not self.unreachable

    def describe(self) -> str:
        """One line for `outbox.last_error`: the reply, then any refused recipients."""
        parts = [f"{self.code} {self.reply}".strip() if self.code else self.reply]
        parts += [f"{address}: {code} {text}" for address, code, text in self.refused]
        return "; ".join(part for part in parts if part)


ResultCallback = Callable[[int, SendResult], None]


class Transport(Protocol):
    """Delivers a batch; `on_result(index, result)` is called as soon as each message's fate is
    known, so the caller can record it before the next one is sent."""

    def send(
        self, messages: Sequence[Envelope], *, on_result: ResultCallback | None = None
    ) -> list[SendResult]: ...


class TokenSource(Protocol):
    """Access tokens for `[outbound] auth = "oauth2"` (mailcase.oauth.grants.GrantManager)."""

    def access_token(self, name: str, *, rejected: str = "") -> str: ...


class SmtpTransport:
    """The production transport: stdlib smtplib, STARTTLS / implicit TLS / AUTH as configured.

    With `auth = "oauth2"` it authenticates with AUTH XOAUTH2 (the mechanism Microsoft 365 and
    Gmail take for SMTP) as `user`, once more with a fresh token when the relay answers 535, and
    refuses to send a token over a connection that is not encrypted. Blocking: the daemon calls
    it from a worker thread, never on the event loop.

    With `keep_open` (the delivery process), the connection outlives a `send` and the next batch
    goes over it: no connect, EHLO, TLS and AUTH per batch. A relay that closed it meanwhile is
    noticed at MAIL, before any of the message was sent, and reconnected once (as for a 421).
    `close()` ends it; so does any error in `send`.
    """

    def __init__(
        self,
        settings: OutboundSettings,
        *,
        local_hostname: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        tokens: TokenSource | None = None,
        health: HealthBoard | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self._clock = clock or SystemClock()
        self.local_hostname = local_hostname
        self._ssl_context = ssl_context
        self._tokens = tokens
        self.health = health or HealthBoard()
        self.keep_open = False
        self._client: smtplib.SMTP | None = None

    @property
    def connected(self) -> bool:
        """True while a kept-open connection to the relay exists."""
        return self._client is not None

    def close(self) -> None:
        """QUIT a kept-open connection (the delivery process does so when idle or stopping)."""
        client, self._client = self._client, None
        if client is not None:
            _quit(client)

    def send(
        self, messages: Sequence[Envelope], *, on_result: ResultCallback | None = None
    ) -> list[SendResult]:
        results: list[SendResult] = []
        client, self._client = self._client, None
        unreachable: SendResult | None = None
        finished = False
        try:
            for index, (message, sender, recipients) in enumerate(messages):
                if unreachable is not None:
                    result = unreachable
                else:
                    result, client, unreachable = self._send_one(
                        client, message, sender, recipients
                    )
                results.append(result)
                self._note_relay(result)
                if on_result is not None:
                    on_result(index, result)
            finished = True
        finally:
            if client is not None:
                if self.keep_open and finished:
                    self._client = client
                else:
                    _quit(client)
        return results

    def _send_one(
        self,
        client: smtplib.SMTP | None,
        message: bytes,
        sender: str,
        recipients: Sequence[str],
    ) -> tuple[SendResult, smtplib.SMTP | None, SendResult | None]:
        """Send one message, reconnecting once if the relay dropped the connection (an idle
        timeout, a restart, a 421). Returns the result, the live client, and a result to give every
        remaining message when the relay cannot be reached at all."""
        for attempt in (1, 2):
            if client is None:
                try:
                    client = self._connect()
                except (OSError, smtplib.SMTPException) as error:
                    result = _connection_failure(error)
                    log.warning(
                        "outbound relay %s:%s unusable: %s",
                        self.settings.host,
                        self.settings.port,
                        result.reply,
                    )
                    return result, None, result
            try:
                refused = _sendmail(client, message, sender, recipients)
            except smtplib.SMTPRecipientsRefused as error:
                return _refused_all(error.recipients), _alive(client), None
            except smtplib.SMTPResponseException as error:
                client = _alive(client)
                if error.smtp_code == 421 and attempt == 1:
                    _discard(client)
                    client = None
                    continue
                return _classify(error.smtp_code, error.smtp_error), client, None
            except (smtplib.SMTPServerDisconnected, ConnectionError) as error:
                _discard(client)
                client = None
                if attempt == 1:
                    # The relay closed the connection between messages (or mid-message: then
                    # this may re-send one message; see notify/outbox.py on that window).
                    continue
                return _temporary(f"connection lost: {error}"), None, None
            except (OSError, smtplib.SMTPException) as error:
                _discard(client)
                return _temporary(f"{type(error).__name__}: {error}"), None, None
            return (
                SendResult(
                    SendOutcome.SENT,
                    250,
                    "",
                    tuple((addr, code, _text(text)) for addr, (code, text) in refused.items()),
                ),
                client,
                None,
            )
        raise AssertionError("unreachable")  # pragma: no cover

    def _connect(self) -> smtplib.SMTP:
        settings = self.settings
        timeout = float(settings.timeout_seconds)
        client: smtplib.SMTP
        if settings.tls:
            client = smtplib.SMTP_SSL(
                settings.host,
                settings.port,
                local_hostname=self.local_hostname,
                timeout=timeout,
                context=self._context(),
            )
        else:
            client = smtplib.SMTP(
                settings.host, settings.port, local_hostname=self.local_hostname, timeout=timeout
            )
        try:
            client.ehlo()
            if settings.starttls and not settings.tls:
                client.starttls(context=self._context())
                client.ehlo()
            if settings.auth == "oauth2":
                self._oauth_login(client)
            elif settings.user:
                client.login(settings.user, settings.password)
        except BaseException:
            _discard(client)
            raise
        return client

    def _context(self) -> ssl.SSLContext:
        return self._ssl_context or ssl.create_default_context()

    def _oauth_login(self, client: smtplib.SMTP) -> None:
        settings = self.settings
        if self._tokens is None:
            raise smtplib.SMTPException("outbound auth = oauth2 but no [oauth] grants were given")
        if not (settings.tls or settings.starttls):
            raise smtplib.SMTPException("refusing to send an OAuth2 token without TLS: set outbound.starttls or tls")
        token = ""
        for attempt in (1, 2):
            try:
                token = self._tokens.access_token(settings.oauth, rejected=token)
            except OAuthError as error:
                self._mark(False, f"no access token from grant {settings.oauth}: {error}")
                raise smtplib.SMTPException(f"no access token from grant {settings.oauth}: {error}") from None
            payload = f"user={settings.user}\x01auth=Bearer {token}\x01\x01"
            try:
                # After a 334 error challenge the client sends an empty line to get the final
                # 535 (the XOAUTH2 protocol, as in RFC 7628 §3.2.3).
                client.auth("XOAUTH2", lambda challenge=None, payload=payload: payload if challenge is None else "")
            except smtplib.SMTPAuthenticationError as error:
                if attempt == 2:
                    self._mark(False, f"relay refused a fresh token of grant {settings.oauth}: {error.smtp_code}")
                    raise
                log.info("outbound relay refused the access token; refreshing it")
                continue
            self._mark(True, "")
            return

    def _note_relay(self, result: SendResult) -> None:
        """The relay on the health board ("relay", read by /readyz and the alerts): red while it cannot be
        reached or answers 4xx, green again at its next 250; a 5xx is about the message, not the relay."""
        if result.outcome is SendOutcome.SENT:
            self.health.set(RELAY, GREEN, "", now=self._clock.now())
        elif result.outcome is SendOutcome.TEMPORARY:
            self.health.set(RELAY, RED, result.describe(), now=self._clock.now())

    def _mark(self, ok: bool, reason: str) -> None:
        if self.health.set("outbound", GREEN if ok else RED, reason, now=self._clock.now()):
            if ok:
                log.info("outbound relay: signed in with OAuth2 again")
            else:
                log.error("outbound relay: cannot sign in (%s); mail waits in the outbox", reason)


def _sendmail(
    client: smtplib.SMTP, message: bytes, sender: str, recipients: Sequence[str]
) -> dict[str, tuple[int, bytes]]:
    """smtplib's `sendmail` for a composed message: the same commands, exceptions and result (the
    refused recipients), but cheaper for the one process that sends every notice:

    * the addresses go out as `<address>` as they are (bare ASCII addresses, checked by compose):
      smtplib parses each with email.utils.parseaddr first, a third of the CPU of sending;
    * when the relay offers PIPELINING (RFC 2920; Postfix, Exchange Online and Gmail do), MAIL,
      every RCPT and DATA go out in one write and their replies are read in order, so a message
      takes two round trips instead of four. The message itself still goes only after the
      relay's 354, so a relay that dropped a kept-open connection is still noticed before it.

    After a refusal the transaction is ended as smtplib ends it (QUIT-less close on 421, else RSET),
    also after a refused DATA. The bytes are final: nothing is flattened or re-parsed, only
    dot-stuffed (RFC 5321 §4.5.2).
    """
    client.ehlo_or_helo_if_needed()
    size = f" SIZE={len(message)}" if client.does_esmtp and client.has_extn("size") else ""
    commands = [f"MAIL FROM:{_path(sender)}{size}", *(f"RCPT TO:{_path(to)}" for to in recipients), "DATA"]
    pipelined = client.does_esmtp and client.has_extn("pipelining")
    if pipelined:
        client.send("".join(f"{command}\r\n" for command in commands))
    code, reply = _reply(client, commands[0], pipelined)
    if code != 250:
        _end_transaction(client, code, unread=len(commands) - 1 if pipelined else 0)
        raise smtplib.SMTPSenderRefused(code, reply, sender)
    refused: dict[str, tuple[int, bytes]] = {}
    for number, recipient in enumerate(recipients, start=1):
        code, reply = _reply(client, commands[number], pipelined)
        if code not in (250, 251):
            refused[recipient] = (code, reply)
        if code == 421:
            _end_transaction(client, code, unread=0)
            raise smtplib.SMTPRecipientsRefused(refused)
    if len(refused) == len(recipients):
        _end_transaction(client, 0, unread=1 if pipelined else 0)
        raise smtplib.SMTPRecipientsRefused(refused)
    code, reply = _reply(client, "DATA", pipelined)
    if code != 354:
        _end_transaction(client, code, unread=0)
        raise smtplib.SMTPDataError(code, reply)
    body = _LINE_STARTING_WITH_DOT.sub(b"..", message)
    client.send(body + (b".\r\n" if body.endswith(b"\r\n") else b"\r\n.\r\n"))
    code, reply = client.getreply()
    if code != 250:
        _end_transaction(client, code, unread=0)
        raise smtplib.SMTPDataError(code, reply)
    return refused


_LINE_STARTING_WITH_DOT = re.compile(rb"(?m)^\.")
_BARE_ADDRESS = re.compile(r"[!-;=?-~]+@[!-;=?-~]+")
"""Printable ASCII without space or angle brackets, with an `@`: written as it is."""


def _path(address: str) -> str:
    """`<address>` (RFC 5321 §4.1.2); anything but a bare address is quoted by smtplib. A line
    break would start another command: refused, as smtplib's putcmd refuses it."""
    if _BARE_ADDRESS.fullmatch(address):
        return f"<{address}>"
    if "\r" in address or "\n" in address:
        raise ValueError(f"an SMTP address cannot contain a line break: {address!r}")
    return smtplib.quoteaddr(address)


def _reply(client: smtplib.SMTP, command: str, pipelined: bool) -> tuple[int, bytes]:
    """The reply to `command`: sent now, or already sent in the pipelined group."""
    if not pipelined:
        client.putcmd(command)
    return client.getreply()


def _end_transaction(client: smtplib.SMTP, code: int, *, unread: int) -> None:
    """After a refusal: close on 421 (the relay is closing the connection), else read the replies
    still owed to a pipelined group and RSET. Should the relay have answered the pipelined DATA
    with 354 all the same, a lone dot first ends the empty message it waits for (RFC 2920 §3.1)."""
    if code == 421:
        client.close()
        return
    with contextlib.suppress(smtplib.SMTPServerDisconnected):
        last = 0
        for _ in range(unread):
            last = client.getreply()[0]
        if last == 354:
            client.send(b".\r\n")
            client.getreply()
        client.rset()


def _classify(code: int, reply: bytes | str) -> SendResult:
    text = _text(reply)
    if 200 <= code < 300:
        return SendResult(SendOutcome.SENT, code, text)
    if 500 <= code < 600:
        return SendResult(SendOutcome.PERMANENT, code, text)
    return SendResult(SendOutcome.TEMPORARY, code, text)


def _refused_all(recipients: dict[str, tuple[int, bytes]]) -> SendResult:
    """Every recipient refused: permanent only if every refusal was permanent."""
    refused = tuple((addr, code, _text(text)) for addr, (code, text) in recipients.items())
    codes = [code for _addr, code, _text_ in refused]
    permanent = bool(codes) and all(500 <= code < 600 for code in codes)
    worst = max(codes) if permanent else min(codes, default=0)
    return SendResult(
        SendOutcome.PERMANENT if permanent else SendOutcome.TEMPORARY,
        worst or None,
        "all recipients refused",
        refused,
    )


def _connection_failure(error: BaseException) -> SendResult:
    if isinstance(error, smtplib.SMTPResponseException):
        # e.g. 535 on AUTH: our configuration, not the message, so keep it queued.
        return SendResult(
            SendOutcome.TEMPORARY, error.smtp_code, _text(error.smtp_error), unreachable=True
        )
    return SendResult(
        SendOutcome.TEMPORARY, None, f"cannot connect: {type(error).__name__}: {error}", unreachable=True
    )


def _temporary(reason: str) -> SendResult:
    return SendResult(SendOutcome.TEMPORARY, None, reason)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _alive(client: smtplib.SMTP) -> smtplib.SMTP | None:
    """smtplib closes the socket itself after a 421; then the next message must reconnect."""
    return client if getattr(client, "sock", None) is not None else None


def _discard(client: smtplib.SMTP | None) -> None:
    if client is None:
        return
    with contextlib.suppress(OSError):
        client.close()


def _quit(client: smtplib.SMTP) -> None:
    try:
        client.quit()
    except (OSError, smtplib.SMTPException):
        _discard(client)
