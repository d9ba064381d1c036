"""Settings: a pure loader from TOML text and an environment mapping to frozen typed settings.

It must not read anything but the config file and the secret files it names, and never logs secrets.
"""

from __future__ import annotations

import dataclasses
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
    # Processes accepting SMTP on the port (SO_REUSEPORT), each with the pipeline; `serve` starts
    # workers - 1 besides itself. 1 by default: on SQLite one write lock serialises the pipeline's
    # transactions, and two processes measured no faster (docs/benchmarks.md, "Ingest (SMTP)").
    workers: int = 1


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
    timeout_seconds: int = 30
    batch_size: int = 200
    max_attempts: int = 10
    retry_base_seconds: int = 60
    retry_max_seconds: int = 3600


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
class SlaSettings:
    """One priority's targets. Minutes are wall-clock; business days follow [business]."""

    response_minutes: int = 0
    response_business_days: int = 0
    update_minutes: int = 0
    update_business_days: int = 0
    resolution_minutes: int = 0
    resolution_business_days: int = 0
    reminder_lead_minutes: int = 0


DEFAULT_SLA: dict[str, SlaSettings] = {
    "P1": SlaSettings(response_minutes=15, update_minutes=60, reminder_lead_minutes=5),
    "P2": SlaSettings(response_minutes=30, update_minutes=120, reminder_lead_minutes=10),
    "P3": SlaSettings(response_minutes=240, update_business_days=1, reminder_lead_minutes=60),
    "P4": SlaSettings(response_business_days=1, update_business_days=2, reminder_lead_minutes=240),
    "P1G": SlaSettings(response_minutes=15, update_minutes=60, reminder_lead_minutes=5),
    "macd_standard": SlaSettings(
        response_business_days=1, resolution_business_days=2, reminder_lead_minutes=240
    ),
    "macd_expedited": SlaSettings(
        response_minutes=240, resolution_business_days=1, reminder_lead_minutes=60
    ),
}


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
class LoggingSettings:
    level: str = "INFO"


@dataclass(frozen=True, slots=True)
class Settings:
    database: DatabaseSettings = DatabaseSettings()
    smtp: SmtpSettings = SmtpSettings()
    imap: tuple[ImapSettings, ...] = ()
    outbound: OutboundSettings = OutboundSettings()
    business: BusinessSettings = BusinessSettings()
    sla: dict[str, SlaSettings] = field(default_factory=lambda: dict(DEFAULT_SLA))
    assignment: AssignmentSettings = AssignmentSettings()
    escalation: EscalationSettings = EscalationSettings()
    autoreply: AutoReplySettings = AutoReplySettings()
    attachments: AttachmentSettings = AttachmentSettings()
    held: HeldSettings = HeldSettings()
    lifecycle: LifecycleSettings = LifecycleSettings()
    security: SecuritySettings = SecuritySettings()
    maintenance: MaintenanceSettings = MaintenanceSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    status: StatusPageSettings = StatusPageSettings()
    logging: LoggingSettings = LoggingSettings()

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
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(file), f"not valid TOML: {exc}") from None
    _apply_environment(data, environ)
    settings = _build(Settings, data, "")
    settings = _resolve_secret_files(settings, base)
    _validate(settings)
    return settings


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
    for key in data:
        if key not in names:
            raise ConfigError(_join(prefix, key), "unknown key")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            raw = data[f.name]
            if cls is Settings and f.name == "sla" and isinstance(raw, dict):
                raw = _with_sla_defaults(raw)
            values[f.name] = _convert(hints[f.name], raw, _join(prefix, f.name))
    built = cls(**values)
    if cls is Settings and "sla" in data:
        merged = dict(DEFAULT_SLA)
        merged.update(built.sla)
        built = dataclasses.replace(built, sla=merged)
    return built


def _with_sla_defaults(tables: dict[str, Any]) -> dict[str, Any]:
    """A partial `[sla.P3]` table keeps the default spans it does not mention.

    As with organisation overrides (rules.sla.Target.overridden), giving either unit of a span
    replaces that whole span; the others keep DEFAULT_SLA's values instead of becoming 0.
    """
    merged: dict[str, Any] = {}
    for key, table in tables.items():
        if key in DEFAULT_SLA and isinstance(table, dict):
            values: dict[str, Any] = dataclasses.asdict(DEFAULT_SLA[key])
            for span in ("response", "update", "resolution"):
                if f"{span}_minutes" in table or f"{span}_business_days" in table:
                    values[f"{span}_minutes"] = 0
                    values[f"{span}_business_days"] = 0
            values.update(table)
            table = values
        merged[key] = table
    return merged


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
    mailboxes = tuple(
        dataclasses.replace(
            box, password=_read_secret(base, box.password_file, f"imap[{i}].password_file")
        )
        if box.password_file
        else box
        for i, box in enumerate(settings.imap)
    )
    return dataclasses.replace(
        settings, database=database, outbound=outbound, security=security, imap=mailboxes
    )


def _validate(settings: Settings) -> None:
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
        if key not in DEFAULT_SLA:
            raise ConfigError(f"sla.{key}", "unknown key")
    if settings.assignment.strategy != "round_robin":
        raise ConfigError("assignment.strategy", "only round_robin is supported")
    if settings.lifecycle.participant_policy not in ("organisation", "any"):
        raise ConfigError("lifecycle.participant_policy", "must be organisation or any")
    if settings.logging.level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError("logging.level", "must be DEBUG, INFO, WARNING or ERROR")
    if not 1 <= settings.smtp.workers <= 64:
        raise ConfigError("smtp.workers", f"must be between 1 and 64, got {settings.smtp.workers}")
    if "@" not in settings.smtp.support_address:
        raise ConfigError("smtp.support_address", "not an email address")
    if not settings.database.url.startswith(("sqlite", "postgresql")):
        raise ConfigError("database.url", "must be a sqlite:// or postgresql+psycopg:// URL")
    try:
        date.fromisoformat(settings.maintenance.connect_anchor)
    except ValueError:
        raise ConfigError("maintenance.connect_anchor", "not a date (YYYY-MM-DD)") from None


def _hhmm(text: str) -> None:
    hour, minute = text.strip().split(":")
    if not (0 <= int(hour) <= 23 and 0 <= int(minute) <= 59):
        raise ValueError(text)


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")
