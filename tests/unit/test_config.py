"""Configuration: the sample loads, every mistake names its dotted key, environment overrides and secret files work."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest

from mailcase.config import (
    ImapSettings,
    OAuthGrantSettings,
    Settings,
    load_config,
)
from mailcase.errors import ConfigError
from mailcase.rules.sla import DEFAULT_TARGETS, Target
from support.cli import REPO, run_mailcase_process

SAMPLE = REPO / "config.toml"


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(path: Path | None, environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ or {})
    return caught.value


IMAP_BOX = '[[imap]]\nhost = "127.0.0.1"\nuser = "desk@support.example.com"\n'


# ---------------------------------------------------------------------------------------------
# The sample config.toml


def test_sample_config_loads_with_the_laptop_defaults() -> None:
    settings = load_config(SAMPLE, {})

    # Relative to the config file's directory (issue 17), not to the working directory.
    assert settings.database.url == f"sqlite:///{SAMPLE.parent.absolute()}/mailcase.db"
    assert (settings.smtp.host, settings.smtp.port) == ("127.0.0.1", 2525)
    assert (settings.outbound.host, settings.outbound.port) == ("127.0.0.1", 1025)
    assert settings.business.timezone == "America/Denver"
    assert settings.imap == ()
    assert settings.sla == DEFAULT_TARGETS
    assert settings.escalation.teams["support"].manager == "support-manager@support.example.com"


def _section_fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def test_sample_config_names_every_setting() -> None:
    """Every key the loader knows is present in the sample, so operators see all of them."""
    data = tomllib.loads(SAMPLE.read_text(encoding="utf-8"))
    hints = {f.name: f for f in dataclasses.fields(Settings)}
    for section in data:
        assert section in hints, section
    for name in hints:
        if name in ("imap", "sla"):
            continue
        assert name in data, f"[{name}] missing from config.toml"
        settings_cls = type(getattr(Settings(), name))
        expected = _section_fields(settings_cls) - {"teams", "grants"}
        assert set(data[name]) - {"teams"} == expected, name
    assert set(data["sla"]) == set(DEFAULT_TARGETS)
    for key, table in data["sla"].items():
        assert set(table) <= _section_fields(Target), key
    # [[imap]] is commented out (no mailbox by default) but documented key by key.
    commented = re.findall(r"^# (\w+) += ", SAMPLE.read_text(encoding="utf-8"), flags=re.MULTILINE)
    assert _section_fields(ImapSettings) - {"password"} <= set(commented)
    assert _section_fields(OAuthGrantSettings) - {"client_secret"} <= set(commented)


def test_every_key_in_the_sample_config_is_commented() -> None:
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()
    key_line = re.compile(r"^\w+ *= ")
    for number, line in enumerate(lines):
        if not key_line.match(line) or "#" in line:
            continue
        above = number - 1
        while above >= 0 and key_line.match(lines[above]):
            above -= 1
        previous = lines[above]
        documented = previous.startswith("#") or re.match(r"^\[(sla|escalation\.teams)\.", previous)
        assert documented, f"config.toml line {number + 1} ({line!r}) has no comment above it"


def test_no_config_file_gives_the_built_in_defaults() -> None:
    assert load_config(None, {}) == Settings()


# ---------------------------------------------------------------------------------------------
# Mistakes stop the program with exit status 2 and one line naming the key


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[smtp]\nprot = 1\n", "smtp.prot"),
        ('[smtp]\nport = "abc"\n', "smtp.port"),
    ],
    ids=["misspelt-key", "port-not-a-number"],
)
def test_a_broken_config_exits_2_with_one_line_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    config = write(tmp_path, text)

    result = run_mailcase_process(["cases", "list", "--json"], config=config, cwd=tmp_path)

    assert result.status == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert key in result.stderr
    assert not (tmp_path / "mailcase.db").exists(), "nothing may run before the config is valid"


def test_a_broken_environment_override_exits_2_naming_the_key(tmp_path: Path) -> None:
    result = run_mailcase_process(
        ["cases", "list"], config=write(tmp_path, ""), env={"MAILCASE_SMTP__PORT": "abc"}, cwd=tmp_path
    )

    assert result.status == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "smtp.port" in result.stderr and "'abc'" in result.stderr


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("[smtp]\nprot = 1\n", "smtp.prot", "unknown key"),
        ("[smpt]\nport = 1\n", "smpt", "unknown key"),
        ('[smtp]\nport = "abc"\n', "smtp.port", "expected an integer"),
        ("[smtp]\nport = 2525.5\n", "smtp.port", "expected an integer"),
        ("[smtp]\nport = true\n", "smtp.port", "expected an integer"),
        ("[smtp]\nport = 70000\n", "smtp.port", "out of range"),
        ('[database]\necho = "yes"\n', "database.echo", "expected true or false"),
        ('[smtp]\ndomains = "support.example.com"\n', "smtp.domains", "expected a list"),
        ("[smtp]\ndomains = [1]\n", "smtp.domains[0]", "expected a string"),
        ("smtp = 1\n", "smtp", "expected a table"),
        ("[sla.P1]\nresponse_minutez = 5\n", "sla.P1.response_minutez", "unknown key"),
        ("[sla.P5]\nresponse_minutes = 5\n", "sla.P5", "unknown key"),
        ("[escalation.teams.support]\nmanagr = \"m@x\"\n", "escalation.teams.support.managr", "unknown key"),
        ('[business]\ntimezone = "America/Denvr"\n', "business.timezone", "unknown time zone"),
        ('[business]\nextra_holidays = ["2026-13-01"]\n', "business.extra_holidays[0]", "not a date"),
        ('[business]\nextended_hours = "7-19"\n', "business.extended_hours", "HH:MM-HH:MM"),
        ('[database]\nurl = "mysql://x"\n', "database.url", "sqlite"),
        ('[smtp]\nsupport_address = "support"\n', "smtp.support_address", "not an email address"),
        ('[logging]\nlevel = "LOUD"\n', "logging.level", "DEBUG"),
        ('[logging]\nformat = "xml"\n', "logging.format", "text or json"),
        ("[retention]\nraw_days = 3\n", "retention.raw_days", "at least 8 days"),
        ("[retention]\nheld_dayz = 30\n", "retention.held_dayz", "unknown key"),
        ('[maintenance]\nconnect_anchor = "soon"\n', "maintenance.connect_anchor", "not a date"),
        ('[[imap]]\nhost = "127.0.0.1"\n', "imap[0].user", "missing required value"),
        (IMAP_BOX + 'tls = "ssl"\n', "imap[0].tls", "implicit, starttls or none"),
        (IMAP_BOX + "port = 0\n", "imap[0].port", "out of range"),
        (IMAP_BOX + "prot = 143\n", "imap[0].prot", "unknown key"),
        ("[smtp\nport = 1\n", "config.toml", "not valid TOML"),
    ],
)
def test_each_config_mistake_names_its_dotted_key(tmp_path: Path, text: str, key: str, problem: str) -> None:
    error = config_error(write(tmp_path, text))

    if key == "config.toml":
        assert error.key.endswith("config.toml")
    else:
        assert error.key == key
    assert problem in error.problem
    assert "\n" not in str(error)
    assert str(error).startswith(f"config error: {error.key}: ")


def test_an_explicit_config_file_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    error = config_error(tmp_path / "nope.toml")

    assert "not found" in error.problem


def test_plain_text_imap_to_a_remote_host_is_refused_unless_allowed(tmp_path: Path) -> None:
    remote = '[[imap]]\nhost = "imap.example.com"\nuser = "u"\ntls = "none"\nport = 143\n'

    error = config_error(write(tmp_path, remote))
    assert error.key == "imap[0].tls"
    assert "loopback" in error.problem

    allowed = load_config(write(tmp_path, remote + "allow_insecure = true\n"), {})
    assert allowed.imap[0].tls == "none"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_plain_text_imap_to_loopback_is_allowed(tmp_path: Path, host: str) -> None:
    settings = load_config(
        write(tmp_path, f'[[imap]]\nhost = "{host}"\nuser = "u"\ntls = "none"\nport = 143\n'), {}
    )

    assert settings.imap[0].host == host


# ---------------------------------------------------------------------------------------------
# Environment overrides: MAILCASE_<SECTION>__<KEY>


def test_environment_overrides_convert_to_each_setting_type() -> None:
    settings = load_config(
        SAMPLE,
        {
            "MAILCASE_SMTP__PORT": "2526",
            "MAILCASE_OUTBOUND__STARTTLS": "true",
            "MAILCASE_SMTP__ENABLED": "no",
            "MAILCASE_SMTP__DOMAINS": "support.example.com, help.example.org",
            "MAILCASE_DATABASE__URL": "postgresql+psycopg://postgres@127.0.0.1:5432/mailcase",
            "MAILCASE_BUSINESS__EXTRA_HOLIDAYS": "2026-12-24,2026-12-31",
        },
    )

    assert settings.smtp.port == 2526
    assert settings.outbound.starttls is True
    assert settings.smtp.enabled is False
    assert settings.smtp.domains == ("support.example.com", "help.example.org")
    assert settings.database.url == "postgresql+psycopg://postgres@127.0.0.1:5432/mailcase"
    assert settings.business.extra_holidays == ("2026-12-24", "2026-12-31")


def test_environment_overrides_win_over_the_file(tmp_path: Path) -> None:
    config = write(tmp_path, "[smtp]\nport = 2600\nmax_recipients = 10\n")

    settings = load_config(config, {"MAILCASE_SMTP__PORT": "2700"})

    assert settings.smtp.port == 2700
    assert settings.smtp.max_recipients == 10


def test_an_sla_override_changes_one_target_and_keeps_the_rest() -> None:
    settings = load_config(SAMPLE, {"MAILCASE_SLA__P1__RESPONSE_MINUTES": "10"})

    assert settings.sla["P1"] == dataclasses.replace(DEFAULT_TARGETS["P1"], response_minutes=10)
    assert settings.sla["P2"] == DEFAULT_TARGETS["P2"]


def test_an_sla_override_without_a_config_file_keeps_the_default_update_target() -> None:
    settings = load_config(None, {"MAILCASE_SLA__P1__RESPONSE_MINUTES": "10"})

    assert settings.sla["P1"].response_minutes == 10
    assert settings.sla["P1"].update_minutes == DEFAULT_TARGETS["P1"].update_minutes
    assert settings.sla["P1"].reminder_lead_minutes == DEFAULT_TARGETS["P1"].reminder_lead_minutes


def test_a_partial_sla_table_replaces_only_the_spans_it_names(tmp_path: Path) -> None:
    """`update_minutes = 480` on P3 means 8 hours, not 8 hours plus the default business day."""
    settings = load_config(write(tmp_path, "[sla.P3]\nupdate_minutes = 480\n"), {})

    p3 = settings.sla["P3"]
    assert (p3.update_minutes, p3.update_business_days) == (480, 0)
    assert p3.response_minutes == DEFAULT_TARGETS["P3"].response_minutes
    assert p3.reminder_lead_minutes == DEFAULT_TARGETS["P3"].reminder_lead_minutes


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ("[sla.P3]\nupdate_minutes = -5\n", "sla.P3"),
        ("[sla.P3]\nupdate_hours = 5\n", "sla.P3.update_hours"),
        ("[sla.P3]\nupdate_minutes = \"soon\"\n", "sla.P3.update_minutes"),
        ("[sla.P9]\nupdate_minutes = 5\n", "sla.P9"),
    ],
)
def test_a_wrong_sla_target_is_a_config_error_naming_its_key(tmp_path: Path, table: str, key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, table), {})

    assert raised.value.key == key


def test_macd_sla_keys_can_be_overridden_from_the_environment() -> None:
    settings = load_config(SAMPLE, {"MAILCASE_SLA__MACD_EXPEDITED__RESPONSE_MINUTES": "120"})

    assert settings.sla["macd_expedited"].response_minutes == 120
    assert settings.sla["macd_expedited"].resolution_business_days == 1


def test_environment_override_by_imap_list_index(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        '[[imap]]\nname = "desk"\nhost = "127.0.0.1"\nuser = "a"\n'
        '[[imap]]\nname = "macd"\nhost = "127.0.0.1"\nuser = "b"\n',
    )

    settings = load_config(config, {"MAILCASE_IMAP__1__PASSWORD": "s3cret", "MAILCASE_IMAP__1__PORT": "1993"})

    assert settings.imap[0].password == ""
    assert settings.imap[1].password == "s3cret"
    assert settings.imap[1].port == 1993
    assert settings.imap[1].name == "macd"


def test_environment_alone_can_declare_an_imap_mailbox() -> None:
    settings = load_config(
        None,
        {"MAILCASE_IMAP__0__HOST": "127.0.0.1", "MAILCASE_IMAP__0__USER": "desk", "MAILCASE_IMAP__0__IDLE": "0"},
    )

    assert len(settings.imap) == 1
    assert (settings.imap[0].host, settings.imap[0].user, settings.imap[0].idle) == ("127.0.0.1", "desk", False)


@pytest.mark.parametrize(
    ("environ", "key"),
    [
        ({"MAILCASE_SMTP__PROT": "1"}, "smtp.prot"),
        ({"MAILCASE_SMTP__PORT": "abc"}, "smtp.port"),
        ({"MAILCASE_OUTBOUND__STARTTLS": "maybe"}, "outbound.starttls"),
        ({"MAILCASE_SLA__P1__RESPONSE_MINUTES": "soon"}, "sla.P1.response_minutes"),
        ({"MAILCASE_IMAP__X__HOST": "h"}, "imap"),
    ],
)
def test_a_bad_environment_override_names_the_key(environ: dict[str, str], key: str) -> None:
    assert config_error(SAMPLE, environ).key == key


def test_unrelated_and_undelimited_variables_are_ignored() -> None:
    settings = load_config(SAMPLE, {"MAILCASE_CONFIG": "elsewhere.toml", "HOME": "/root", "SMTP__PORT": "1"})

    assert settings == load_config(SAMPLE, {})


# ---------------------------------------------------------------------------------------------
# Secrets from *_file keys


def test_secret_files_are_read_relative_to_the_config_file(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "hmac").write_text("reply-token-key\n", encoding="utf-8")
    (secrets / "relay").write_text("relay-password\n", encoding="utf-8")
    (secrets / "imap").write_text("imap-password", encoding="utf-8")
    (secrets / "db").write_text("postgresql+psycopg://app:pw@127.0.0.1:5432/mailcase\n", encoding="utf-8")
    config = write(
        tmp_path,
        '[database]\nurl_file = "secrets/db"\n'
        '[outbound]\nuser = "relay"\npassword_file = "secrets/relay"\n'
        '[security]\nsecret_file = "secrets/hmac"\n'
        '[[imap]]\nhost = "127.0.0.1"\nuser = "desk"\npassword_file = "secrets/imap"\n',
    )

    settings = load_config(config, {})

    assert settings.security.secret == "reply-token-key"
    assert settings.reply_token_secret == b"reply-token-key"
    assert settings.outbound.password == "relay-password"
    assert settings.imap[0].password == "imap-password"
    assert settings.database.url == "postgresql+psycopg://app:pw@127.0.0.1:5432/mailcase"


def test_a_secret_file_path_can_come_from_the_environment(tmp_path: Path) -> None:
    secret = tmp_path / "hmac"
    secret.write_text("from-env\n", encoding="utf-8")

    settings = load_config(SAMPLE, {"MAILCASE_SECURITY__SECRET_FILE": str(secret)})

    assert settings.security.secret == "from-env"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[security]\nsecret_file = "missing"\n', "security.secret_file"),
        ('[outbound]\npassword_file = "missing"\n', "outbound.password_file"),
        ('[database]\nurl_file = "missing"\n', "database.url_file"),
        ('[[imap]]\nhost = "127.0.0.1"\nuser = "u"\npassword_file = "missing"\n', "imap[0].password_file"),
    ],
)
def test_a_missing_secret_file_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    error = config_error(write(tmp_path, text))

    assert error.key == key
    assert "cannot read secret file" in error.problem


def test_secrets_never_appear_in_the_settings_repr(tmp_path: Path) -> None:
    settings = load_config(
        SAMPLE,
        {
            "MAILCASE_SECURITY__SECRET": "hmac-key-1234",
            "MAILCASE_OUTBOUND__PASSWORD": "relay-pass-5678",
            "MAILCASE_IMAP__0__HOST": "127.0.0.1",
            "MAILCASE_IMAP__0__USER": "desk",
            "MAILCASE_IMAP__0__PASSWORD": "imap-pass-9012",
        },
    )

    text = repr(settings)
    for secret in ("hmac-key-1234", "relay-pass-5678", "imap-pass-9012"):
        assert secret not in text
    assert settings.security.secret == "hmac-key-1234"


def test_settings_are_frozen() -> None:
    settings = load_config(SAMPLE, {})

    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.smtp.port = 1  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# OAuth2 grants

M365 = '[oauth.m365]\nprovider = "microsoft"\ntenant = "contoso.onmicrosoft.com"\nclient_id = "app"\n'


def test_oauth_grants_sit_beside_the_oauth_keys_and_secrets_come_from_files(tmp_path: Path) -> None:
    (tmp_path / "m365-secret").write_text("s3cret-value\n")
    path = write(
        tmp_path,
        "[oauth]\nwarn_days = 10\n" + M365 + 'client_secret_file = "m365-secret"\nclient_secret_expires = "2027-06-30"\n'
        + IMAP_BOX + 'auth = "oauth2"\noauth = "m365"\n'
        + '[outbound]\nauth = "oauth2"\noauth = "m365"\nuser = "desk@support.example.com"\nstarttls = true\n',
    )

    settings = load_config(path, {})

    grant = settings.oauth.grants["m365"]
    assert grant.client_secret == "s3cret-value"
    assert grant.effective_flow() == "client_credentials"
    assert settings.oauth.warn_days == 10
    assert settings.oauth.token_file == str(tmp_path / "oauth-tokens.json")
    assert (settings.imap[0].auth, settings.imap[0].oauth) == ("oauth2", "m365")
    assert "s3cret-value" not in repr(settings)


def test_an_oauth_grant_can_come_from_the_environment(tmp_path: Path) -> None:
    settings = load_config(
        None,
        {
            "MAILCASE_OAUTH__GWS__PROVIDER": "google",
            "MAILCASE_OAUTH__GWS__CLIENT_ID": "1234.apps.googleusercontent.com",
            "MAILCASE_OAUTH__GWS__SCOPES": "https://mail.google.com/",
        },
    )
    grant = settings.oauth.grants["gws"]
    assert (grant.provider, grant.effective_flow(), grant.scopes) == ("google", "device_code", ("https://mail.google.com/",))


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (IMAP_BOX + 'auth = "kerberos"\n', "imap[0].auth"),
        (IMAP_BOX + 'auth = "oauth2"\noauth = "nope"\n', "imap[0].oauth"),
        ('[outbound]\nauth = "oauth2"\noauth = "m365"\n' + M365, "outbound.user"),
        ('[oauth.x]\nprovider = "yahoo"\nclient_id = "a"\n', "oauth.x.provider"),
        ('[oauth.x]\nprovider = "generic"\nclient_id = "a"\n', "oauth.x.token_endpoint"),
        ('[oauth.x]\nprovider = "microsoft"\nclient_id = "a"\n', "oauth.x.tenant"),
        ('[oauth.x]\nprovider = "google"\nflow = "service_account"\n', "oauth.x.service_account_file"),
        ('[oauth.x]\nprovider = "microsoft"\ntenant = "t"\nclient_id = "a"\nflow = "client_credentials"\n', "oauth.x.client_secret_file"),
        (M365 + 'client_secret_expires = "soon"\nclient_secret = "x"\n', "oauth.m365.client_secret_expires"),
        (M365 + "colour = 3\n", "oauth.m365.colour"),
        ("[oauth]\nwarn_days = -1\n", "oauth.warn_days"),
        (IMAP_BOX + "safety_search_seconds = 0\n", "imap[0].safety_search_seconds"),
    ],
)
def test_each_oauth_mistake_names_its_dotted_key(tmp_path: Path, text: str, key: str) -> None:
    assert config_error(write(tmp_path, text)).key == key
