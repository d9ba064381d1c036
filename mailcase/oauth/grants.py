"""Hands out fresh access tokens for the configured grants and keeps their health; nothing about a grant fails silently. It never talks IMAP or SMTP and never logs a token.

Rules, in order, for `access_token(name)`:
1. A stored access token valid for more than `[oauth] refresh_margin_seconds` is returned, unless
   the caller says the server just rejected that very token (a 401 / NO on AUTHENTICATE).
2. Otherwise a new one is fetched (client credentials, service account, or the refresh token),
   under the token file's lock: a second process waiting on the lock then finds the new token
   (rule 1) instead of refreshing again.
3. A failure records the grant's state in the token file ("failed": unreachable, retried later;
   "signed_out": refused, someone must act) and raises OAuthError.

Whichever process moves a grant to a new state (the file is shared, so exactly one does) logs it
(error for trouble, info for recovery) and calls `alert` once; every process marks the grant on its
own `HealthBoard` (red, amber for an expiry warning, green). Expiry warnings (a refresh token or a
client secret expiring within `[oauth] warn_days`) work the same way, once per date.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, Protocol

from mailcase.clock import Clock
from mailcase.config import OAuthGrantSettings, OAuthSettings
from mailcase.errors import OAuthError
from mailcase.oauth import providers
from mailcase.oauth.health import AMBER, GREEN, RED, HealthBoard
from mailcase.oauth.providers import DeviceFlow, Token
from mailcase.oauth.tokens import StoredGrant, TokenFile

log = logging.getLogger(__name__)

OK = "ok"
FAILED = "failed"
SIGNED_OUT = "signed_out"


@dataclass(frozen=True, slots=True)
class GrantAlert:
    """What the admin is told once: grant, what happened (failed / signed_out / expiring / ok), since when."""

    grant: str
    condition: str
    reason: str
    since: datetime


Alert = Callable[[GrantAlert], None]


class TokenStore(Protocol):
    """Where grants are kept: TokenFile (default) or DatabaseTokenStore (`[oauth] store = "database"`)."""

    def locked(self) -> contextlib.AbstractContextManager[dict[str, StoredGrant]]: ...

    def read(self) -> dict[str, StoredGrant]: ...


class GrantManager:
    def __init__(
        self,
        settings: OAuthSettings,
        *,
        clock: Clock,
        health: HealthBoard | None = None,
        alert: Alert | None = None,
        logger: logging.Logger | None = None,
        store: TokenStore | None = None,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self.health = health or HealthBoard()
        self._alert = alert
        self._log = logger or log
        self._file: TokenStore = store or TokenFile(settings.token_file)

    def grant(self, name: str) -> OAuthGrantSettings:
        try:
            return self.settings.grants[name]
        except KeyError:
            raise OAuthError(f"no grant [oauth.{name}] is configured", signed_out=True) from None

    # -- tokens -------------------------------------------------------------------------------

    def access_token(self, name: str, *, rejected: str = "") -> str:
        """A valid access token for grant `name` (rules in the module docstring); raises OAuthError."""
        settings = self.grant(name)
        now = self._clock.now()
        margin = timedelta(seconds=self.settings.refresh_margin_seconds)
        with self._file.locked() as grants:
            stored = grants.setdefault(name, StoredGrant())
            fresh = bool(stored.access_token) and stored.expires_at is not None and stored.expires_at - margin > now
            if fresh and not (rejected and stored.access_token == rejected):
                self._warn_expiry(name, settings, stored, now)
                return stored.access_token
            if rejected and stored.access_token == rejected:
                stored.access_token, stored.expires_at = "", None
            try:
                token = providers.fetch(settings, refresh_token=stored.refresh_token, now=now)
            except OAuthError as error:
                self._transition(name, stored, SIGNED_OUT if error.signed_out else FAILED, str(error), now)
                raise
            self._store(stored, token, now)
            self._transition(name, stored, OK, "", now)
            self._warn_expiry(name, settings, stored, now)
            return token.access_token

    def login(
        self,
        name: str,
        *,
        show: Callable[[DeviceFlow], None],
        sleep: Callable[[float], None] | None = None,
    ) -> StoredGrant:
        """Sign grant `name` in: the device-code flow for delegated grants (`show` tells the person
        where to go), or one token request for app-only grants (proves the credentials work)."""
        settings = self.grant(name)
        now = self._clock.now()
        if settings.effective_flow() == "device_code":
            flow = providers.start_device_flow(settings, now=now)
            show(flow)
            options: dict[str, Any] = {"clock": self._clock.now}
            if sleep is not None:
                options["sleep"] = sleep
            token = providers.finish_device_flow(settings, flow, **options)
        else:
            token = providers.fetch(settings, refresh_token="", now=now)
        now = self._clock.now()
        with self._file.locked() as grants:
            stored = grants.setdefault(name, StoredGrant())
            stored.refresh_token = ""
            self._store(stored, token, now)
            self._transition(name, stored, OK, "", now)
            self._warn_expiry(name, settings, stored, now)
            return StoredGrant.from_json(stored.to_json())

    def stored(self) -> dict[str, StoredGrant]:
        return self._file.read()

    def expiry_warning(self, settings: OAuthGrantSettings, stored: StoredGrant, now: datetime) -> str:
        """"client secret expires 2027-06-30" (the soonest within warn_days), or ""."""
        horizon = now + timedelta(days=self.settings.warn_days)
        candidates: list[tuple[datetime, str]] = []
        if settings.client_secret_expires:
            day = date.fromisoformat(settings.client_secret_expires)
            candidates.append((datetime.combine(day, time(), tzinfo=now.tzinfo), f"client secret expires {day}"))
        if stored.refresh_expires_at is not None and stored.state == OK:
            candidates.append((stored.refresh_expires_at, f"grant expires {stored.refresh_expires_at:%Y-%m-%d %H:%M} UTC"))
        due = sorted(candidate for candidate in candidates if candidate[0] <= horizon)
        return due[0][1] if due else ""

    # -- state --------------------------------------------------------------------------------

    def _store(self, stored: StoredGrant, token: Token, now: datetime) -> None:
        stored.access_token = token.access_token
        stored.expires_at = token.expires_at
        if token.refresh_token:
            stored.refresh_token = token.refresh_token
        if token.refresh_expires_at is not None or token.refresh_token:
            stored.refresh_expires_at = token.refresh_expires_at
        stored.account = token.account or stored.account
        stored.scopes = token.scopes or stored.scopes
        stored.obtained_at = now

    def _transition(self, name: str, stored: StoredGrant, state: str, reason: str, now: datetime) -> None:
        changed = stored.state != state
        if changed:
            previous = stored.state
            stored.state, stored.state_since = state, now
            recovered = state == OK and previous in (FAILED, SIGNED_OUT)
            if recovered:
                self._log.info("oauth grant %s: signed in again", name)
            elif state == FAILED:
                self._log.error("oauth grant %s: token refresh failed (%s); retrying", name, reason)
            elif state == SIGNED_OUT:
                self._log.error(
                    "oauth grant %s: signed out (%s); run `mailcase oauth login %s` or fix the app registration",
                    name,
                    reason,
                    name,
                )
            if state != OK or recovered:
                self._notify(GrantAlert(name, state, reason, now))
        stored.error = reason
        self.health.set(f"oauth:{name}", GREEN if state == OK else RED, reason, now=now)

    def _warn_expiry(self, name: str, settings: OAuthGrantSettings, stored: StoredGrant, now: datetime) -> None:
        warning = self.expiry_warning(settings, stored, now)
        # Keyed by what expires (a refresh token's expiry slides forward with every refresh), so
        # one warning per condition; it may come again once the condition has cleared.
        key = warning.split(" expires")[0] + (warning.split(" expires")[1] if warning.startswith("client secret") else "")
        if not warning:
            stored.warned = ""
        elif stored.warned != key:
            stored.warned = key
            self._log.error("oauth grant %s: %s (within %d days); renew it", name, warning, self.settings.warn_days)
            self._notify(GrantAlert(name, "expiring", warning, now))
        if stored.state == OK:
            self.health.set(f"oauth:{name}", AMBER if warning else GREEN, warning, now=now)

    def _notify(self, alert: GrantAlert) -> None:
        if self._alert is None:
            return
        try:
            self._alert(alert)
        except Exception:  # the admin mail is best effort; the log line above already says it
            self._log.exception("oauth grant %s: could not queue the admin alert", alert.grant)
