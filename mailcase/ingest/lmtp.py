"""The LMTP edge (RFC 2033): final delivery from a local MTA (Postfix's `lmtp:` transport) over a unix socket
or loopback TCP, handing each message to the ingest pipeline; it must not parse, decide or store anything itself.

It is the SMTP edge (`mailcase.ingest.smtp`) with aiosmtpd's `LMTP` protocol class: LHLO instead of
EHLO, and after DATA one reply per accepted recipient (RFC 2033 §4.2), so the MTA knows the fate of
each recipient rather than of the whole message. The pipeline stores a message once, with all its
recipients, in one transaction: every recipient gets the same reply, `250` after the commit or
`451 4.3.0` when it could not commit (the MTA keeps the message and retries; dedupe absorbs it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import AnyStr

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from mailcase.config import LmtpSettings, SmtpSettings
from mailcase.ingest.smtp import (
    DEFAULT_GRACE_SECONDS,
    IDENT,
    REPLY_TOO_BIG,
    SupportHandler,
    _SupportSMTP,
    stop_smtp_server,
)

log = logging.getLogger(__name__)


class LmtpHandler(SupportHandler):
    """The SMTP edge's handler, answering DATA once per recipient."""

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        # RFC 2033 §4.2: one reply per successful RCPT, in RCPT order; aiosmtpd writes them as one push.
        return "\r\n".join([reply] * max(1, len(envelope.rcpt_tos)))


class _SupportLMTP(LMTP, _SupportSMTP):
    """aiosmtpd's LMTP (LHLO; HELO/EHLO refused) over our edge's protocol changes."""

    async def push(self, status: AnyStr) -> None:
        # A size refusal during DATA is also owed once per recipient (RFC 2033 §4.2).
        if self.in_data and isinstance(status, str) and status.startswith("552 ") and self.envelope is not None:
            count = max(1, len(self.envelope.rcpt_tos))
            await super().push("\r\n".join([REPLY_TOO_BIG] * count))
            return
        await super().push(status)


class LmtpListener:
    """The LMTP listener as the daemon runs it: `await start()`, then `await stop()` on SIGTERM."""

    def __init__(
        self,
        settings: LmtpSettings,
        smtp_settings: SmtpSettings,
        handler: LmtpHandler,
        *,
        grace_seconds: float = DEFAULT_GRACE_SECONDS,
    ) -> None:
        self._settings = settings
        self._smtp = smtp_settings
        self._handler = handler
        self._grace_seconds = grace_seconds
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> str:
        """`unix:/path` or `host:port` (the real port when the settings said 0)."""
        if self._server is None:
            raise RuntimeError("the LMTP listener is not started")
        if self._settings.socket:
            return f"unix:{self._settings.socket}"
        name = self._server.sockets[0].getsockname()
        return f"{name[0]}:{name[1]}"

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("the LMTP listener is already started")
        loop = asyncio.get_running_loop()
        settings, handler = self._smtp, self._handler

        def connection() -> SMTP:
            return _SupportLMTP(
                handler,
                data_size_limit=settings.max_message_size,
                enable_SMTPUTF8=True,
                hostname=settings.hostname,
                ident=IDENT.replace("ESMTP", "LMTP"),
                timeout=settings.data_timeout_seconds,
                loop=loop,
            )

        if self._settings.socket:
            path = self._settings.socket
            if os.path.exists(path):  # left by a daemon that was killed; nothing listens on it now
                os.unlink(path)
            self._server = await loop.create_unix_server(connection, path=path)
            os.chmod(path, int(self._settings.socket_mode, 8))
        else:
            self._server = await loop.create_server(
                connection, host=self._settings.host, port=self._settings.port, reuse_address=True
            )
        log.info("LMTP listening on %s", self.address)

    async def stop(self) -> bool:
        """Graceful stop (in-flight transactions finish, bounded); True when none had to be cut."""
        server, self._server = self._server, None
        if server is None:
            return True
        finished = await stop_smtp_server(server, self._handler, grace_seconds=self._grace_seconds)
        if self._settings.socket:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._settings.socket)
        return finished

