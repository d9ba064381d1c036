"""The composition root: builds the engine, clock and settings-derived policies once, for a command or the daemon.

Nothing here runs at import time; every other module receives what it needs from an `App`.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import Engine

from mailcase.clock import Clock
from mailcase.config import Settings
from mailcase.store.engine import make_engine, transaction
from mailcase.resources import template_search_path

log = logging.getLogger(__name__)


@dataclass
class App:
    settings: Settings
    engine: Engine
    clock: Clock
    _secret: bytes | None = field(default=None, repr=False)

    @property
    def secret(self) -> bytes:
        """The reply-token HMAC key: from config (secret / secret_file), else generated at install."""
        if self._secret is None:
            if self.settings.security.secret:
                self._secret = self.settings.reply_token_secret
            else:
                from mailcase.store.installation import installation_secret

                with transaction(self.engine) as session:
                    self._secret = installation_secret(session=session).encode()
        return self._secret

    @functools.cached_property
    def calendar(self):  # type: ignore[no-untyped-def]
        from mailcase.rules.businesstime import BusinessCalendar

        return BusinessCalendar(self.settings.business.calendar_spec())

    def desk(self):  # type: ignore[no-untyped-def]
        from mailcase.casework import Desk

        return Desk(
            hostname=self.settings.smtp.hostname,
            support_address=self.settings.smtp.support_address,
            replan=self.replanner(),
            timezone=self.settings.business.timezone,
            reopen_window_days=self.settings.lifecycle.reopen_window_days,
        )

    @functools.cached_property
    def planner(self):  # type: ignore[no-untyped-def]
        from mailcase.deadlines import DeadlinePlanner, sla_policy

        return DeadlinePlanner(sla_policy(self.settings), self.calendar)

    def replanner(self):  # type: ignore[no-untyped-def]
        """The function that recomputes a case's deadlines after every change."""
        return self.planner

    def pipeline(self):  # type: ignore[no-untyped-def]
        """The shared ingest pipeline (SMTP, IMAP and `mailcase ingest`)."""
        from mailcase.ingest.pipeline import Pipeline

        return Pipeline(
            engine=self.engine, settings=self.settings, desk=self.desk(), secret=self.secret, calendar=self.calendar,
            resolver=self.resolver(),
        )

    def resolver(self):  # type: ignore[no-untyped-def]
        """DNS for our own DKIM/DMARC check (`[security] verify = "dkim"`), else None."""
        security = self.settings.security
        if security.verify != "dkim":
            return None
        from mailcase.ingest.authentication import DnsResolver

        return DnsResolver(
            servers=security.dns_servers, timeout=security.dns_timeout_seconds, cache_seconds=security.dns_cache_seconds
        )

    def transport(self):  # type: ignore[no-untyped-def]
        from mailcase.notify.transport import SmtpTransport

        tokens = self.grants if self.settings.outbound.auth == "oauth2" else None
        return SmtpTransport(
            self.settings.outbound,
            local_hostname=self.settings.smtp.hostname,
            tokens=tokens,
            health=self.health,
            clock=self.clock,
        )

    @functools.cached_property
    def health(self):  # type: ignore[no-untyped-def]
        """This process's health board (mailboxes, grants, outbound): what the health endpoint shows."""
        from mailcase.oauth.health import HealthBoard

        return HealthBoard()

    @functools.cached_property
    def grants(self):  # type: ignore[no-untyped-def]
        """The OAuth2 grants of [oauth.<name>]: access tokens for IMAP and outbound SMTP."""
        from mailcase.oauth.grants import GrantManager

        store = None
        if self.settings.oauth.store == "database":
            from mailcase.oauth.tokens import DatabaseTokenStore

            store = DatabaseTokenStore(self.engine, self.secret, self.settings.oauth.grants)
        return GrantManager(
            self.settings.oauth, clock=self.clock, health=self.health, alert=self.queue_oauth_alert, store=store
        )

    def queue_oauth_alert(self, alert) -> None:  # type: ignore[no-untyped-def]
        """Mail the admin about a grant's new state, once: the key names the grant, the state and
        when it began (recorded in the shared token file), so other processes queue nothing more."""
        from mailcase.domain import NotificationIntent
        from mailcase.store.outbox import enqueue

        admin = self.settings.oauth.admin_address or self.settings.escalation.support_desk
        intent = NotificationIntent(
            kind="oauth_alert",
            template="staff.oauth_alert",
            recipients=(admin,),
            idempotency_key=f"oauth:{alert.grant}:{alert.condition}:{alert.since.isoformat()}:{alert.reason[:200]}",
            due_at=alert.since,
            context={"grant": alert.grant, "condition": alert.condition, "reason": alert.reason, "since": alert.since.isoformat()},
        )
        with transaction(self.engine) as session:
            enqueue(intent, session=session, now=self.clock.now(), hostname=self.settings.smtp.hostname)

    def mailbox_poller(self, box, *, ingest, stop, **options):  # type: ignore[no-untyped-def]
        """A poller for one [[imap]] mailbox, with the grants when it signs in with OAuth2."""
        from mailcase.ingest.imap import MailboxPoller

        return MailboxPoller(
            box,
            ingest=ingest,
            engine=self.engine,
            clock=self.clock,
            stop=stop,
            tokens=self.grants if box.auth == "oauth2" else None,
            health=self.health,
            **options,
        )

    def renderer(self):  # type: ignore[no-untyped-def]
        from mailcase.notify.render import Renderer

        return Renderer(self.template_dirs)

    @functools.cached_property
    def template_dirs(self) -> tuple[Path, ...]:
        """Where templates are found: `[templates] dir` (the operator's overrides), then the
        packaged ones."""
        return template_search_path(self.settings.templates.dir or None)

    def reload(self) -> None:
        """Forget what is cached from files that an operator may change while `serve` runs (the
        template search path); the next use reads them again."""
        self.__dict__.pop("template_dirs", None)

    def close(self) -> None:
        self.engine.dispose()


def build_app(settings: Settings, clock: Clock) -> App:
    engine = make_engine(settings.database.url, echo=settings.database.echo)
    return App(settings=settings, engine=engine, clock=clock)
