"""The SMTP protocol object lists only aiosmtpd's command, AUTH and hook methods to `dir()` (a per-connection
cost, issue 16): every command and hook aiosmtpd would have found with the full listing is still found."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path

from mailcase.config import load_config
from mailcase.ingest.smtp import SupportHandler, _SupportSMTP

REPO = Path(__file__).resolve().parents[2]


def test_every_command_auth_mechanism_and_hook_is_found_as_with_the_full_listing() -> None:
    settings = load_config(REPO / "config.toml", {}).smtp
    handler = SupportHandler(settings, lambda raw: None, None, None)  # type: ignore[arg-type]

    async def connection() -> _SupportSMTP:
        return _SupportSMTP(handler, hostname="mx.test", loop=asyncio.get_running_loop())

    protocol = asyncio.run(connection())
    every_name = object.__dir__(protocol)
    commands = {name.removeprefix("smtp_") for name in every_name if name.startswith("smtp_")}
    hooks = {name.removeprefix("handle_") for name in object.__dir__(handler) if name.startswith("handle_")}
    mechanisms = {name for name, _ in inspect.getmembers(type(protocol)) if name.startswith("auth_")}

    assert set(protocol._smtp_methods) == commands
    assert {"DATA", "EHLO", "RCPT", "MAIL", "STARTTLS", "QUIT"} <= commands
    assert set(protocol._handle_hooks) == hooks and {"DATA", "RCPT", "EHLO"} <= hooks
    assert len(protocol._auth_methods) == len(mechanisms) > 0
