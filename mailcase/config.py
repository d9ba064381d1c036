"""Settings: a pure loader from TOML text and an environment mapping to frozen typed settings.

It must not read anything but the config file and the secret files it names, and never logs secrets.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mailcase.domain import BusinessCalendarSpec, Priority
from mailcase.errors import ConfigError
from mailcase.rules.sla import DEFAULT_TARGETS, TARGET_FIELDS, Target

ENV_PREFIX = "MAILCASE_"


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    url: str = "sqlite:///./mailcase.db"
    url_file: str = ""
    echo: bool = False


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 2525
    hostname: str = "mailcase.localhost"
    max_message_size: int = 36_700_160
    max_recipients: int = 50
    domains: tuple[str, ...] = ("support.example.com",)
    support_address: str = "support@support.example.com"
    macd_address: str = "macd@support.example.com"
    postmaster_address: str = "postmaster@support.example.com"
    tls_cert_file: str = ""
    tls_key_file: str = ""
    data_timeout_seconds: int = 300
    # Caps on what one client may hold (issue 13; over a cap: 421 4.7.0 and the connection closed).
    max_connections: int = 200
    max_connections_per_ip: int = 20
    max_commands_without_transaction: int = 100
    idle_timeout_seconds: int = 300
    # Processes accepting SMTP on the port (SO_REUSEPORT), each with the pipeline; `serve` starts
    # workers - 1 besides itself. 1 by default: on SQLite one write lock serialises the pipeline's
    # transactions, and two processes measured no faster (docs/benchmarks.md, "Ingest (SMTP)").
    workers: int = 1


@dataclass(frozen=True, slots=True)
class LmtpSettings:
    """The LMTP listener (RFC 2033) for an MTA's final delivery, with a reply per recipient."""

    enabled: bool = False
    # A unix socket path (relative to the config file's directory); empty = listen on host:port.
    socket: str = ""
    # Mode of the socket file, octal as a string (the MTA's user must be able to connect).
    socket_mode: str = "0660"
    host: str = "127.0.0.1"
    port: int = 2424


@dataclass(frozen=True, slots=True)
class ImapSettings:
    name: str = "inbox"
    host: str = "127.0.0.1"
    port: int = 993
    tls: str = "implicit"
    allow_insecure: bool = False
    user: str = ""
    password: str = field(default="", repr=False)
    password_file: str = ""
    folder: str = "INBOX"
    processed_folder: str = "Processed"
    poll_interval_seconds: int = 60
    batch_size: int = 100
    timeout_seconds: int = 30
    idle: bool = True
    # While IDLE reports nothing, search again this often anyway (a missed EXISTS costs this long).
    safety_search_seconds: float = 60.0
    # "password" (LOGIN) or "oauth2" (SASL OAUTHBEARER when advertised, else XOAUTH2) with the
    # grant `[oauth.<oauth>]`.
    auth: str = "password"
    oauth: str = ""


@dataclass(frozen=True, slots=True)
class OutboundSettings:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 1025
    starttls: bool = False
    tls: bool = False
    user: str = ""
    password: str = field(default="", repr=False)
    password_file: str = ""
    from_address: str = "support@support.example.com"
    from_name: str = "Support"
    # "password" (AUTH LOGIN/PLAIN with user/password) or "oauth2" (AUTH XOAUTH2 as `user` with
    # the grant `[oauth.<oauth>]`, after STARTTLS or over implicit TLS).
    auth: str = "password"
    oauth: str = ""
    timeout_seconds: int = 30
    batch_size: int = 200
    max_attempts: int = 10
    retry_base_seconds: int = 60
    retry_max_seconds: int = 3600
    # A claimed row's lease: its holder renews it as it sends; another daemon takes the row over
    # only after it ran out (a dead holder). At least twice timeout_seconds.
    lease_seconds: int = 120
    # A notice still undelivered this long after it fell due is given up (MTA-style queue lifetime).
    max_age_hours: int = 120


OAUTH_PROVIDERS = ("microsoft", "google", "generic")
OAUTH_FLOWS = ("client_credentials", "device_code", "service_account")


@dataclass(frozen=True, slots=True)
class OAuthGrantSettings:
    """One `[oauth.<name>]` table: where and how a grant gets its access tokens."""

    provider: str = "generic"
    # client_credentials (app-only), device_code (delegated; `mailcase oauth login NAME`),
    # service_account (google, domain-wide delegation). Empty: the provider's usual one.
    flow: str = ""
    client_id: str = ""
    client_secret: str = field(default="", repr=False)
    client_secret_file: str = ""
    client_secret_expires: str = ""
    certificate_file: str = ""
    certificate_thumbprint: str = ""
    tenant: str = ""
    authority: str = ""
    token_endpoint: str = ""
    device_authorization_endpoint: str = ""
    service_account_file: str = ""
    subject: str = ""
    scopes: tuple[str, ...] = ()
    ca_file: str = ""

    def effective_flow(self) -> str:
        if self.flow:
            return self.flow
        if self.provider == "google":
            return "service_account" if self.service_account_file else "device_code"
        return "client_credentials" if (self.client_secret or self.certificate_file) else "device_code"


@dataclass(frozen=True, slots=True)
class OAuthSettings:
    # "file" (token_file, flock) or "database" (PostgreSQL rows, encrypted, FOR UPDATE).
    store: str = "file"
    token_file: str = "oauth-tokens.json"
    warn_days: int = 14
    refresh_margin_seconds: int = 300
    admin_address: str = ""
    grants: dict[str, OAuthGrantSettings] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BusinessSettings:
    timezone: str = "America/Denver"
    holidays_country: str = "US"
    extra_holidays: tuple[str, ...] = ()
    extended_hours: str = "07:00-19:00"

    def calendar_spec(self) -> BusinessCalendarSpec:
        start, end = self.extended_hours.split("-")
        return BusinessCalendarSpec(
            timezone=self.timezone,
            holidays_country=self.holidays_country,
            extra_holidays=self.extra_holidays,
            extended_hours_start=start.strip(),
            extended_hours_end=end.strip(),
        )


@dataclass(frozen=True, slots=True)
class AssignmentSettings:
    intake_team: str = "support"
    strategy: str = "round_robin"


@dataclass(frozen=True, slots=True)
class TeamEscalation:
    manager: str = ""


@dataclass(frozen=True, slots=True)
class EscalationSettings:
    support_desk: str = "desk@support.example.com"
    vp: str = "vp-support@support.example.com"
    executive: str = "executive@support.example.com"
    on_call: str = "oncall@support.example.com"
    teams: dict[str, TeamEscalation] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AutoReplySettings:
    max_per_hour: int = 30
    max_per_day: int = 200
    max_same_subject_per_hour: int = 2
    non_mpoc_notice_hours: int = 24
    non_mpoc_max_per_hour: int = 20


@dataclass(frozen=True, slots=True)
class MimeSettings:
    """Bounds on an inbound message's MIME tree; beyond them it is held whole, never parsed."""

    max_depth: int = 50
    max_parts: int = 1000


@dataclass(frozen=True, slots=True)
class AttachmentSettings:
    notice_max_bytes: int = 10_000_000
    reply_max_bytes: int = 10_000_000


@dataclass(frozen=True, slots=True)
class HeldSettings:
    digest_address: str = ""
    digest_interval_minutes: int = 60


@dataclass(frozen=True, slots=True)
class LifecycleSettings:
    reopen_window_days: int = 7
    nudge_business_days: int = 1
    close_no_response_business_days: int = 2
    participant_policy: str = "organisation"


@dataclass(frozen=True, slots=True)
class SecuritySettings:
    secret: str = field(default="", repr=False)
    secret_file: str = ""
    # Sender authentication (README "Sender authentication"): enforce | monitor | off.
    sender_policy: str = "monitor"
    # authserv-ids (RFC 8601) of our own MTAs whose Authentication-Results are believed, and the
    # hosts that add our own Received: fields above them.
    trusted_authserv_ids: tuple[str, ...] = ()
    # "dkim": verify DKIM and DMARC in-process when no trusted header gives a verdict; "none": don't.
    verify: str = "none"
    dns_servers: tuple[str, ...] = ()  # resolvers for DKIM keys and DMARC records; empty: the system's
    dns_timeout_seconds: float = 5.0
    dns_cache_seconds: int = 300


@dataclass(frozen=True, slots=True)
class MaintenanceSettings:
    connect_anchor: str = "2026-12-01"
    scheduled_notice_days: int = 7
    connect_notice_hours: int = 24


@dataclass(frozen=True, slots=True)
class SchedulerSettings:
    sweep_interval_seconds: int = 30
    outbox_interval_seconds: int = 5
    misfire_grace_seconds: int = 60


@dataclass(frozen=True, slots=True)
class StatusPageSettings:
    out_dir: str = ""
    title: str = "Service status"


@dataclass(frozen=True, slots=True)
class TemplatesSettings:
    # A directory of the operator's own templates, laid out like the packaged ones
    # (`en/customer.ack.txt`, `status/style.css`); a file there wins over the packaged one of the
    # same name. Relative paths count from the config file's directory. Empty: packaged only.
    dir: str = ""


@dataclass(frozen=True, slots=True)
class LoggingSettings:
    level: str = "INFO"
    # A log file (relative to the config file's directory); empty = stderr, except for `ingest`.
    file: str = ""
    # "text" (one human-readable line per record) or "json" (one JSON object per line).
    format: str = "text"


@dataclass(frozen=True, slots=True)
class RetentionSettings:
    """How long raw mail is kept (`mailcase purge` and serve's daily purge)."""

    raw_days: int = 365
    held_days: int = 90


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """`serve`'s HTTP endpoint (/healthz, /readyz, /metrics); off unless enabled."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 9125
    # A file holding the bearer token every request must carry; empty = no token (loopback only).
    token_file: str = ""
    token: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class HealthSettings:
    """When a part of the daemon counts as stalled (/readyz, `mailcase health`, alerts)."""

    check_interval_seconds: float = 30.0
    sweep_stall_seconds: float = 300.0
    outbox_stall_seconds: float = 900.0
    relay_down_seconds: float = 600.0
    mailbox_silent_seconds: float = 300.0
    smtp_timeout_seconds: float = 5.0
    database_timeout_seconds: float = 2.0


@dataclass(frozen=True, slots=True)
class AlertSettings:
    """Where a part's change of health is told besides the log."""

    webhook_url: str = field(default="", repr=False)
    webhook_url_file: str = ""
    webhook_timeout_seconds: float = 10.0
    admin_address: str = ""


@dataclass(frozen=True, slots=True)
class Settings:
    database: DatabaseSettings = DatabaseSettings()
    smtp: SmtpSettings = SmtpSettings()
    lmtp: LmtpSettings = LmtpSettings()
    imap: tuple[ImapSettings, ...] = ()
    outbound: OutboundSettings = OutboundSettings()
    oauth: OAuthSettings = OAuthSettings()
    business: BusinessSettings = BusinessSettings()
    # `[sla.<key>]`: the rules' own Target, one per priority and MACD kind (rules.sla.DEFAULT_TARGETS).
    sla: dict[str, Target] = field(default_factory=lambda: dict(DEFAULT_TARGETS))
    assignment: AssignmentSettings = AssignmentSettings()
    escalation: EscalationSettings = EscalationSettings()
    autoreply: AutoReplySettings = AutoReplySettings()
    mime: MimeSettings = MimeSettings()
    attachments: AttachmentSettings = AttachmentSettings()
    held: HeldSettings = HeldSettings()
    lifecycle: LifecycleSettings = LifecycleSettings()
    security: SecuritySettings = SecuritySettings()
    maintenance: MaintenanceSettings = MaintenanceSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    status: StatusPageSettings = StatusPageSettings()
    templates: TemplatesSettings = TemplatesSettings()
    logging: LoggingSettings = LoggingSettings()
    retention: RetentionSettings = RetentionSettings()
    http: HttpSettings = HttpSettings()
    health: HealthSettings = HealthSettings()
    alerts: AlertSettings = AlertSettings()

    @property
    def reply_token_secret(self) -> bytes:
        return self.security.secret.encode("utf-8")


# ---------------------------------------------------------------------------------------------
# Loading


def load_config(path: str | Path | None, environ: Mapping[str, str]) -> Settings:
    """Read `path` (TOML) and `MAILCASE_<SECTION>__<KEY>` overrides from `environ`.

    Raises ConfigError naming the dotted key on an unknown key, a wrong type, a missing secret
    file or a value that makes no sense (an unknown time zone, a port out of range).
    """
    data: dict[str, Any] = {}
    base = Path(".")
    if path is not None:
        file = Path(path)
        base = file.parent
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(str(file), "config file not found") from None
        except OSError as exc:
            raise ConfigError(str(file), f"cannot read the config file: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(file), f"not valid TOML: {exc}") from None
    _apply_environment(data, environ)
    settings = _build(Settings, data, "")
    settings = _resolve_secret_files(settings, base)
    _validate(settings)
    # Without a config file the working directory is the only reference: paths stay as given.
    return _resolve_paths(settings, base) if path is not None else settings


def _resolve_paths(settings: Settings, base: Path) -> Settings:
    """Relative paths mean "next to the config file", whatever the working directory (an MTA's pipe
    runs in its own): a relative SQLite database, the log file and the LMTP socket."""
    database = dataclasses.replace(settings.database, url=sqlite_url_against(settings.database.url, base))
    logging_ = settings.logging
    if logging_.file:
        logging_ = dataclasses.replace(logging_, file=str(_against(base, logging_.file)))
    lmtp = settings.lmtp
    if lmtp.socket:
        lmtp = dataclasses.replace(lmtp, socket=str(_against(base, lmtp.socket)))
    return dataclasses.replace(settings, database=database, logging=logging_, lmtp=lmtp)


def _against(base: Path, path: str) -> Path:
    return (base / Path(path).expanduser()).absolute()


def sqlite_url_against(url: str, base: Path) -> str:
    """`sqlite:///./mailcase.db` with the file resolved against `base`; other URLs unchanged.

    In-memory databases and `file:` URIs are left alone; so is an absolute path.
    """
    if not url.startswith("sqlite"):
        return url
    scheme, sep, rest = url.partition(":///")
    if not sep or not rest:
        return url
    database, query_sep, query = rest.partition("?")
    if not database or database == ":memory:" or database.startswith(("/", "file:")):
        return url
    return f"{scheme}:///{_against(base, database)}{query_sep}{query}"


def _apply_environment(data: dict[str, Any], environ: Mapping[str, str]) -> None:
    """`MAILCASE_SMTP__PORT=2526` sets smtp.port; `MAILCASE_IMAP__0__PASSWORD` the first mailbox's."""
    for name, value in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        if parts[0] == "sla" and len(parts) > 1 and parts[1].upper() in Priority.__members__:
            parts[1] = parts[1].upper()
        node: Any = data
        for i, part in enumerate(parts[:-1]):
            if isinstance(node, list):
                index = _env_index(name, part)
                while len(node) <= index:
                    node.append({})
                node = node[index]
                continue
            nxt = parts[i + 1]
            default: Any = [] if part == "imap" and nxt.isdigit() else {}
            node = node.setdefault(part, default)
        if isinstance(node, list):
            raise ConfigError(".".join(parts), "environment override needs a field name")
        node[parts[-1]] = _EnvString(value)


def _env_index(name: str, part: str) -> int:
    if not part.isdigit():
        raise ConfigError(name, "expected a list index")
    return int(part)


class _EnvString(str):
    """A value from the environment: converted to the field's type rather than type-checked."""


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(prefix or "(top level)", f"expected a table, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    grants: dict[str, Any] = {}
    if cls is OAuthSettings:
        # `[oauth.<name>]` tables sit beside the section's own keys; they are the grants.
        grants = {k: v for k, v in data.items() if isinstance(v, dict) and k not in names - {"grants"}}
        data = {k: v for k, v in data.items() if k not in grants}
    for key in data:
        if key not in names:
            raise ConfigError(_join(prefix, key), "unknown key")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            raw = data[f.name]
            key = _join(prefix, f.name)
            if cls is Settings and f.name == "sla":
                values[f.name] = _sla_targets(raw, key)
                continue
            try:
                values[f.name] = _convert(hints[f.name], raw, key)
            except ConfigError as error:
                if not _is_secret(f):
                    raise
                # Never echo a secret, even a mistyped one: name the key and the expected type.
                raise ConfigError(key, _without_value(error.problem)) from None
    if grants:
        values["grants"] = {k: _build(OAuthGrantSettings, v, _join(prefix, k)) for k, v in grants.items()}
    return cls(**values)


def _is_secret(f: dataclasses.Field[Any]) -> bool:
    """A field holding a password, a key or a URL that may carry one (repr=False marks them)."""
    return not f.repr or f.name == "url"


def _without_value(problem: str) -> str:
    """"expected a string, got 12345" → "expected a string, got an integer": the type, never the value."""
    expected, got, value = problem.partition(", got ")
    if not got:
        return problem
    return f"{expected}, got {_kind(value)}"


def _kind(shown: str) -> str:
    """The TOML kind of a repr()'d value, for an error that must not show the value itself."""
    if shown in ("True", "False"):
        return "a boolean"
    if shown[:1] in "'\"":
        return "a string"
    if shown[:1] == "[":
        return "a list"
    if shown[:1] == "{":
        return "a table"
    if re.fullmatch(r"[-+]?\d+", shown):
        return "an integer"
    if re.fullmatch(r"[-+]?[\d.eE+-]+|nan|inf|-inf", shown):
        return "a number"
    return "a value of another type"


def _sla_targets(tables: object, prefix: str) -> dict[str, Target]:
    """`[sla]`: every target, each `[sla.<key>]` table applied over its default.

    A partial `[sla.P3]` table keeps the default spans it does not mention; giving either unit
    of a span replaces that whole span, exactly as an organisation's override does
    (`Target.overridden`, the one place that rule lives).
    """
    if not isinstance(tables, dict):
        raise ConfigError(prefix, f"expected a table, got {type(tables).__name__}")
    targets = dict(DEFAULT_TARGETS)
    for name, table in tables.items():
        key = _join(prefix, name)
        if name not in DEFAULT_TARGETS:
            raise ConfigError(key, "unknown key")
        changes: dict[str, int] = _convert(dict[str, int], table, key)
        for field_name in changes:
            if field_name not in TARGET_FIELDS:
                raise ConfigError(_join(key, field_name), "unknown key")
        try:
            targets[name] = DEFAULT_TARGETS[name].overridden(changes)
        except ValueError as error:
            raise ConfigError(key, str(error)) from None
    return targets


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _convert(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key)  # type: ignore[arg-type]
    if origin is tuple:
        (item_type, _ellipsis) = typing.get_args(hint)
        if isinstance(value, _EnvString):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(key, f"expected a list, got {type(value).__name__}")
        return tuple(_convert(item_type, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        _key_type, item_type = typing.get_args(hint)
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a table, got {type(value).__name__}")
        return {k: _convert(item_type, v, _join(key, k)) for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(key, "unsupported optional type")
    return _scalar(hint, value, key)


def _scalar(hint: Any, value: Any, key: str) -> Any:
    if isinstance(value, _EnvString):
        text = str(value)
        if hint is bool:
            lowered = text.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ConfigError(key, f"expected true or false, got {text!r}")
        if hint is int:
            try:
                return int(text)
            except ValueError:
                raise ConfigError(key, f"expected an integer, got {text!r}") from None
        if hint is float:
            try:
                return float(text)
            except ValueError:
                raise ConfigError(key, f"expected a number, got {text!r}") from None
        return text
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, f"expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if isinstance(value, date):
            return value.isoformat()
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {value!r}")
        return value
    raise ConfigError(key, f"unsupported type {hint!r}")


def _read_secret(base: Path, name: str, key: str) -> str:
    file = Path(name)
    if not file.is_absolute():
        file = base / file
    try:
        return file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(key, f"cannot read secret file: {exc.strerror}") from None


def _beside(base: Path, name: str) -> str:
    """A relative file name is relative to the config file's directory, as secret files are."""
    if not name or Path(name).is_absolute():
        return name
    return str(base / name)


def _resolve_secret_files(settings: Settings, base: Path) -> Settings:
    """Every `*_file` key replaces the value it names with the file's contents."""
    database = settings.database
    if database.url_file:
        database = dataclasses.replace(
            database, url=_read_secret(base, database.url_file, "database.url_file")
        )
    outbound = settings.outbound
    if outbound.password_file:
        outbound = dataclasses.replace(
            outbound,
            password=_read_secret(base, outbound.password_file, "outbound.password_file"),
        )
    security = settings.security
    if security.secret_file:
        security = dataclasses.replace(
            security, secret=_read_secret(base, security.secret_file, "security.secret_file")
        )
    oauth = settings.oauth
    grants = {}
    for name, grant in oauth.grants.items():
        if grant.client_secret_file:
            grant = dataclasses.replace(
                grant,
                client_secret=_read_secret(
                    base, grant.client_secret_file, f"oauth.{name}.client_secret_file"
                ),
            )
        grant = dataclasses.replace(
            grant,
            certificate_file=_beside(base, grant.certificate_file),
            service_account_file=_beside(base, grant.service_account_file),
            ca_file=_beside(base, grant.ca_file),
        )
        grants[name] = grant
    oauth = dataclasses.replace(oauth, grants=grants, token_file=_beside(base, oauth.token_file))
    mailboxes = tuple(
        dataclasses.replace(
            box, password=_read_secret(base, box.password_file, f"imap[{i}].password_file")
        )
        if box.password_file
        else box
        for i, box in enumerate(settings.imap)
    )
    settings = _resolve_observability_secrets(settings, base)
    templates = settings.templates
    if templates.dir and not Path(templates.dir).is_absolute():
        templates = dataclasses.replace(templates, dir=str(base / templates.dir))
    return dataclasses.replace(
        settings,
        database=database,
        outbound=outbound,
        security=security,
        imap=mailboxes,
        templates=templates,
        oauth=oauth,
    )


def _resolve_observability_secrets(settings: Settings, base: Path) -> Settings:
    """`[http] token_file` and `[alerts] webhook_url_file` (a webhook URL often carries its secret)."""
    http, alerts = settings.http, settings.alerts
    if http.token_file:
        http = dataclasses.replace(http, token=_read_secret(base, http.token_file, "http.token_file"))
    if alerts.webhook_url_file:
        alerts = dataclasses.replace(
            alerts, webhook_url=_read_secret(base, alerts.webhook_url_file, "alerts.webhook_url_file")
        )
    return dataclasses.replace(settings, http=http, alerts=alerts)


def _validate_observability(settings: Settings) -> None:
    http, health, alerts = settings.http, settings.health, settings.alerts
    if not 0 <= http.port <= 65535:
        raise ConfigError("http.port", f"port {http.port} is out of range 0-65535")
    if http.enabled and http.token_file and not http.token:
        raise ConfigError("http.token_file", "the file is empty")
    if http.enabled and not http.token and not _is_loopback(http.host):
        raise ConfigError("http.host", "listening beyond loopback needs a bearer token: set http.token_file")
    for name in ("check_interval_seconds", "smtp_timeout_seconds", "database_timeout_seconds"):
        if getattr(health, name) <= 0:
            raise ConfigError(f"health.{name}", "must be more than 0 seconds")
    for name in ("sweep_stall_seconds", "outbox_stall_seconds", "relay_down_seconds", "mailbox_silent_seconds"):
        if getattr(health, name) < 0:
            raise ConfigError(f"health.{name}", "must be 0 or more seconds")
    if alerts.webhook_url and not alerts.webhook_url.startswith(("http://", "https://")):
        raise ConfigError("alerts.webhook_url", "must be an http:// or https:// URL")
    if alerts.webhook_timeout_seconds <= 0:
        raise ConfigError("alerts.webhook_timeout_seconds", "must be more than 0 seconds")
    if alerts.admin_address and "@" not in alerts.admin_address:
        raise ConfigError("alerts.admin_address", "not an email address")


def _validate(settings: Settings) -> None:
    _validate_observability(settings)
    for key, value in (
        ("attachments.notice_max_bytes", settings.attachments.notice_max_bytes),
        ("attachments.reply_max_bytes", settings.attachments.reply_max_bytes),
        ("autoreply.max_per_hour", settings.autoreply.max_per_hour),
        ("autoreply.max_per_day", settings.autoreply.max_per_day),
        ("autoreply.max_same_subject_per_hour", settings.autoreply.max_same_subject_per_hour),
        ("held.digest_interval_minutes", settings.held.digest_interval_minutes),
    ):
        if value < 0:
            raise ConfigError(key, f"must be 0 or more, got {value}")
    for key, port in (("smtp.port", settings.smtp.port), ("outbound.port", settings.outbound.port)):
        if not 0 <= port <= 65535:
            raise ConfigError(key, f"port {port} is out of range 0-65535")
    for i, box in enumerate(settings.imap):
        if not 0 < box.port <= 65535:
            raise ConfigError(f"imap[{i}].port", f"port {box.port} is out of range 1-65535")
        if box.tls not in ("implicit", "starttls", "none"):
            raise ConfigError(f"imap[{i}].tls", "must be implicit, starttls or none")
        if box.tls == "none" and not box.allow_insecure and not _is_loopback(box.host):
            raise ConfigError(
                f"imap[{i}].tls",
                "plain-text IMAP is only allowed to a loopback host unless allow_insecure = true",
            )
        if not box.user:
            raise ConfigError(f"imap[{i}].user", "missing required value")
        _validate_auth(f"imap[{i}]", box.auth, box.oauth, settings.oauth)
        if box.safety_search_seconds <= 0:
            raise ConfigError(f"imap[{i}].safety_search_seconds", "must be more than 0 seconds")
    _validate_auth("outbound", settings.outbound.auth, settings.outbound.oauth, settings.oauth)
    if settings.outbound.auth == "oauth2" and not settings.outbound.user:
        raise ConfigError("outbound.user", "oauth2 needs the mailbox address to send as")
    _validate_oauth(settings.oauth, settings.database.url)
    try:
        ZoneInfo(settings.business.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            "business.timezone", f"unknown time zone {settings.business.timezone!r}"
        ) from None
    for i, day in enumerate(settings.business.extra_holidays):
        try:
            date.fromisoformat(day)
        except ValueError:
            raise ConfigError(
                f"business.extra_holidays[{i}]", f"not a date (YYYY-MM-DD): {day!r}"
            ) from None
    hours = settings.business.extended_hours
    try:
        start, end = hours.split("-")
        _hhmm(start)
        _hhmm(end)
    except ValueError:
        raise ConfigError("business.extended_hours", f"expected HH:MM-HH:MM, got {hours!r}") from None
    for key in settings.sla:
        if key not in DEFAULT_TARGETS:
            raise ConfigError(f"sla.{key}", "unknown key")
    if settings.assignment.strategy != "round_robin":
        raise ConfigError("assignment.strategy", "only round_robin is supported")
    if settings.lifecycle.participant_policy not in ("organisation", "any"):
        raise ConfigError("lifecycle.participant_policy", "must be organisation or any")
    if settings.logging.level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError("logging.level", "must be DEBUG, INFO, WARNING or ERROR")
    if settings.logging.format not in ("text", "json"):
        raise ConfigError("logging.format", "must be text or json")
    for key, days in (("retention.raw_days", settings.retention.raw_days), ("retention.held_days", settings.retention.held_days)):
        if days < 8:  # the held digest warns a week before a purge: a shorter window could not
            raise ConfigError(key, f"must be at least 8 days, got {days}")
    for key in ("max_connections", "max_connections_per_ip", "max_commands_without_transaction", "idle_timeout_seconds"):
        if getattr(settings.smtp, key) < 1:
            raise ConfigError(f"smtp.{key}", "must be at least 1")
    if settings.mime.max_depth < 1 or settings.mime.max_parts < 1:
        raise ConfigError("mime.max_depth" if settings.mime.max_depth < 1 else "mime.max_parts", "must be at least 1")
    if not 1 <= settings.smtp.workers <= 64:
        raise ConfigError("smtp.workers", f"must be between 1 and 64, got {settings.smtp.workers}")
    outbound = settings.outbound
    if outbound.lease_seconds < 2 * outbound.timeout_seconds:
        raise ConfigError(
            "outbound.lease_seconds",
            f"must be at least twice outbound.timeout_seconds ({2 * outbound.timeout_seconds})",
        )
    if outbound.max_age_hours < 1:
        raise ConfigError("outbound.max_age_hours", "must be at least 1")
    if "@" not in settings.smtp.support_address:
        raise ConfigError("smtp.support_address", "not an email address")
    try:
        mode = int(settings.lmtp.socket_mode, 8)
    except ValueError:
        raise ConfigError("lmtp.socket_mode", f"expected an octal mode like 0660, got {settings.lmtp.socket_mode!r}") from None
    if not 0 <= mode <= 0o777:
        raise ConfigError("lmtp.socket_mode", f"expected an octal mode like 0660, got {settings.lmtp.socket_mode!r}")
    if not 0 <= settings.lmtp.port <= 65535:
        raise ConfigError("lmtp.port", f"port {settings.lmtp.port} is out of range 0-65535")
    if not settings.database.url.startswith(("sqlite", "postgresql")):
        raise ConfigError("database.url", "must be a sqlite:// or postgresql+psycopg:// URL")
    security = settings.security
    if security.sender_policy not in ("enforce", "monitor", "off"):
        raise ConfigError("security.sender_policy", "must be enforce, monitor or off")
    if security.verify not in ("none", "dkim"):
        raise ConfigError("security.verify", "must be none or dkim")
    if not 0 < security.dns_timeout_seconds <= 60:
        raise ConfigError("security.dns_timeout_seconds", "must be more than 0 and at most 60")
    if security.dns_cache_seconds < 0:
        raise ConfigError("security.dns_cache_seconds", "must not be negative")
    for i, server in enumerate(security.dns_servers):
        text = server.strip()
        dns_host, dns_port = text.split(":") if text.count(":") == 1 else (text, "")
        if not dns_host or any(c.isspace() for c in text) or (dns_port and not dns_port.isdigit()):
            raise ConfigError(f"security.dns_servers[{i}]", f"expected an IP address, optionally :port, got {server!r}")
    for i, ident in enumerate(security.trusted_authserv_ids):
        if not ident.strip() or any(c.isspace() or c == ";" for c in ident.strip()):
            raise ConfigError(f"security.trusted_authserv_ids[{i}]", f"not an authserv-id: {ident!r}")
    try:
        date.fromisoformat(settings.maintenance.connect_anchor)
    except ValueError:
        raise ConfigError("maintenance.connect_anchor", "not a date (YYYY-MM-DD)") from None


def _validate_auth(key: str, auth: str, grant: str, oauth: OAuthSettings) -> None:
    if auth not in ("password", "oauth2"):
        raise ConfigError(f"{key}.auth", "must be password or oauth2")
    if auth == "oauth2" and grant not in oauth.grants:
        known = ", ".join(sorted(oauth.grants)) or "none configured"
        raise ConfigError(f"{key}.oauth", f"names no [oauth.<name>] grant ({known})")


def _validate_oauth(oauth: OAuthSettings, database_url: str) -> None:
    if oauth.store not in ("file", "database"):
        raise ConfigError("oauth.store", "must be file or database")
    if oauth.store == "database" and not database_url.startswith("postgresql"):
        raise ConfigError("oauth.store", "database needs PostgreSQL (on SQLite, keep the token file)")
    if oauth.warn_days < 0:
        raise ConfigError("oauth.warn_days", "must not be negative")
    for name, grant in oauth.grants.items():
        key = f"oauth.{name}"
        if grant.provider not in OAUTH_PROVIDERS:
            raise ConfigError(f"{key}.provider", "must be microsoft, google or generic")
        if grant.flow and grant.flow not in OAUTH_FLOWS:
            raise ConfigError(f"{key}.flow", "must be client_credentials, device_code or service_account")
        flow = grant.effective_flow()
        if flow == "service_account" and grant.provider != "google":
            raise ConfigError(f"{key}.flow", "service_account is for provider = google")
        if flow == "service_account":
            if not grant.service_account_file:
                raise ConfigError(f"{key}.service_account_file", "missing required value")
            if not grant.subject:
                raise ConfigError(f"{key}.subject", "the mailbox to act for (domain-wide delegation)")
        elif not grant.client_id:
            raise ConfigError(f"{key}.client_id", "missing required value")
        if grant.provider == "microsoft" and not (grant.tenant or grant.authority):
            raise ConfigError(f"{key}.tenant", "missing required value (or authority)")
        if grant.provider == "generic" and not grant.token_endpoint:
            raise ConfigError(f"{key}.token_endpoint", "missing required value")
        if flow == "client_credentials" and not (grant.client_secret or grant.certificate_file):
            raise ConfigError(f"{key}.client_secret_file", "client_credentials needs a secret or certificate")
        if grant.client_secret_expires:
            try:
                date.fromisoformat(grant.client_secret_expires)
            except ValueError:
                raise ConfigError(f"{key}.client_secret_expires", "not a date (YYYY-MM-DD)") from None


def _hhmm(text: str) -> None:
    hour, minute = text.strip().split(":")
    if not (0 <= int(hour) <= 23 and 0 <= int(minute) <= 59):
        raise ValueError(text)


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")
