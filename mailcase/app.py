"""The composition root: builds the engine, clock, the desk context and settings-derived policies once, for a
command or the daemon.

Nothing here runs at import time; nothing below this module sees an `App`: each part receives what it
needs (the engine, the `Desk` context, settings values) from it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from threading import Event
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine

from mailcase.clock import Clock
from mailcase.config import ImapSettings, Settings
from mailcase.desk.context import Desk, InstallationSecret
from mailcase.desk.deadlines import DeadlinePlanner, sla_policy
from mailcase.domain import NotificationIntent, RawMessage
from mailcase.resources import template_search_path
from mailcase.rules.businesstime import BusinessCalendar
from mailcase.rules.escalation import EscalationPath
from mailcase.store.engine import make_engine, transaction
from mailcase.store.outbox import enqueue

if TYPE_CHECKING:
    from mailcase.ingest.authentication import DnsResolver
    from mailcase.ingest.imap import MailboxPoller
    from mailcase.ingest.pipeline import IngestOutcome, Pipeline
    from mailcase.notify.render import Renderer
    from mailcase.notify.transport import SmtpTransport
    from mailcase.oauth.grants import GrantAlert, GrantManager
    from mailcase.oauth.health import HealthBoard

log = logging.getLogger(__name__)

# The ingest, delivery, IMAP and OAuth2 parts below are imported where they are built, not at the
# top: not for a cycle (there is none), but so that the one-shot commands start without loading
# the libraries they never use (dkim, dnspython and mail-parser for ingest; jinja2 for delivery;
# imapclient; the OAuth2 providers). `mailcase ingest` runs once per message from an MTA.


@dataclass
class App:
    settings: Settings
    engine: Engine
    clock: Clock
    installation_secret: InstallationSecret = field(default_factory=InstallationSecret, repr=False)

    def __post_init__(self) -> None:
        if self.settings.security.secret and self.installation_secret.resolved is None:
            self.installation_secret = InstallationSecret(self.settings.reply_token_secret)

    @property
    def secret(self) -> bytes:
        """The reply-token HMAC key: from config (secret / secret_file), else generated at install.
        Resolved once (`InstallationSecret`), shared with the desk context."""
        known = self.installation_secret.resolved
        if known is not None:
            return known
        with transaction(self.engine) as session:
            return self.installation_secret.get(session)

    @functools.cached_property
    def calendar(self) -> BusinessCalendar:
        return BusinessCalendar(self.settings.business.calendar_spec())

    @functools.cached_property
    def planner(self) -> DeadlinePlanner:
        """The deadline planner: policy and calendar from the settings; an organisation's SLA
        overrides are read in each transaction, so `directory import` takes effect at once."""
        return DeadlinePlanner(sla_policy(self.settings), self.calendar)

    def desk(self) -> Desk:
        """What the support plan's actions need from the installation (`desk.context.Desk`), built once."""
        return self._desk

    @functools.cached_property
    def _desk(self) -> Desk:
        settings = self.settings
        escalation = settings.escalation
        return Desk(
            hostname=settings.smtp.hostname,
            support_address=settings.smtp.support_address,
            secret=self.installation_secret,
            planner=self.planner,
            timezone=settings.business.timezone,
            reopen_window_days=settings.lifecycle.reopen_window_days,
            escalation=EscalationPath(
                support_desk=escalation.support_desk,
                vp=escalation.vp,
                executive=escalation.executive,
                on_call=escalation.on_call,
                managers={team: path.manager for team, path in escalation.teams.items() if path.manager},
            ),
            maintenance=settings.maintenance,
        )

    def pipeline(self) -> Pipeline:
        """The shared ingest pipeline (SMTP, IMAP and `mailcase ingest`)."""
        from mailcase.ingest.pipeline import Pipeline  # startup: see the note at the top

        return Pipeline(
            engine=self.engine, settings=self.settings, desk=self.desk(), secret=self.secret, calendar=self.calendar,
            resolver=self.resolver(),
        )

    def resolver(self) -> DnsResolver | None:
        """DNS for our own DKIM/DMARC check (`[security] verify = "dkim"`), else None."""
        security = self.settings.security
        if security.verify != "dkim":
            return None
        from mailcase.ingest.authentication import DnsResolver  # startup: see the note at the top

        return DnsResolver(
            servers=security.dns_servers, timeout=security.dns_timeout_seconds, cache_seconds=security.dns_cache_seconds
        )

    def transport(self) -> SmtpTransport:
        from mailcase.notify.transport import SmtpTransport  # startup: see the note at the top

        tokens = self.grants if self.settings.outbound.auth == "oauth2" else None
        return SmtpTransport(
            self.settings.outbound,
            local_hostname=self.settings.smtp.hostname,
            tokens=tokens,
            health=self.health,
            clock=self.clock,
        )

    @functools.cached_property
    def health(self) -> HealthBoard:
        """This process's health board (mailboxes, grants, outbound): what the health endpoint shows."""
        from mailcase.oauth.health import HealthBoard  # startup: see the note at the top

        return HealthBoard()

    @functools.cached_property
    def grants(self) -> GrantManager:
        """The OAuth2 grants of [oauth.<name>]: access tokens for IMAP and outbound SMTP."""
        from mailcase.oauth.grants import GrantManager  # startup: see the note at the top
        from mailcase.oauth.tokens import DatabaseTokenStore

        store = None
        if self.settings.oauth.store == "database":
            store = DatabaseTokenStore(self.engine, self.secret, self.settings.oauth.grants)
        return GrantManager(
            self.settings.oauth, clock=self.clock, health=self.health, alert=self.queue_oauth_alert, store=store
        )

    def queue_oauth_alert(self, alert: GrantAlert) -> None:
        """Mail the admin about a grant's new state, once: the key names the grant, the state and
        when it began (recorded in the shared token file), so other processes queue nothing more."""
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

    def mailbox_poller(
        self, box: ImapSettings, *, ingest: Callable[[RawMessage], IngestOutcome], stop: Event, **options: Any
    ) -> MailboxPoller:
        """A poller for one [[imap]] mailbox, with the grants when it signs in with OAuth2."""
        from mailcase.ingest.imap import MailboxPoller  # startup: see the note at the top

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

    def renderer(self) -> Renderer:
        from mailcase.notify.render import Renderer  # startup: see the note at the top

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
