"""OAuth2 grants against a local token server: msal (app-only secret and certificate, device code), google-auth (service account, device code), generic; refresh, revocation and re-login, expiry warnings, the admin mail, `mailcase oauth login/status`, and the shared token file."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from sqlmodel import Session, select

from mailcase.app import App
from mailcase.clock import FixedClock
from mailcase.config import OAuthGrantSettings, OAuthSettings, load_config
from mailcase.errors import OAuthError
from mailcase.oauth.grants import GrantAlert, GrantManager
from mailcase.oauth.health import AMBER, GREEN, RED, HealthBoard
from mailcase.store.engine import make_engine, upgrade_schema
from mailcase.store.models import Outbox
from support.cli import run_mailcase
from support.oauth import TokenServer, token_server  # noqa: F401 (fixture)

USER = "desk@support.example.com"
SECRET = "app-secret-0123456789"


def manager(tmp_path: Path, clock: FixedClock, alerts: list[GrantAlert] | None = None, warn_days: int = 14, **grant: Any) -> GrantManager:
    settings = OAuthSettings(
        token_file=str(tmp_path / "tokens.json"), warn_days=warn_days, grants={"g": OAuthGrantSettings(**grant)}
    )
    return GrantManager(settings, clock=clock, health=HealthBoard(), alert=(alerts.append if alerts is not None else None))


def active_user(server: TokenServer, token: str) -> str:
    answer = server.introspect({"token": token})
    return str(answer.get("username", "")) if answer["active"] else ""


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


# -- Microsoft (msal) -------------------------------------------------------------------------


def test_msal_app_only_with_a_client_secret_gets_a_token_for_the_mailbox(
    token_server: TokenServer, tmp_path: Path, clock: FixedClock
) -> None:
    token_server.clients["m365-app"] = (SECRET, USER)
    grants = manager(
        tmp_path, clock, provider="microsoft", tenant="contoso", authority=token_server.authority,
        client_id="m365-app", client_secret=SECRET, ca_file=str(token_server.ca_file),
    )  # fmt: skip

    token = grants.access_token("g")

    assert active_user(token_server, token) == USER
    assert grants.access_token("g") == token, "msal's answer is stored and reused"
    assert token_server.grants("client_credentials") == 1


def test_msal_app_only_with_a_certificate_signs_a_client_assertion(
    token_server: TokenServer, tmp_path: Path, clock: FixedClock
) -> None:
    key = rsa_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mailcase")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256())
    )  # fmt: skip
    key_file = tmp_path / "m365.pem"
    key_file.write_text(pem(key) + certificate.public_bytes(serialization.Encoding.PEM).decode())
    token_server.clients["m365-cert"] = ("", USER)
    grants = manager(
        tmp_path, clock, provider="microsoft", authority=token_server.authority, client_id="m365-cert",
        certificate_file=str(key_file), certificate_thumbprint=certificate.fingerprint(hashes.SHA1()).hex(),
        ca_file=str(token_server.ca_file),
    )  # fmt: skip

    assert active_user(token_server, grants.access_token("g")) == USER


def test_msal_wrong_secret_is_signed_out_with_the_endpoint_error_and_never_the_secret(
    token_server: TokenServer, tmp_path: Path, clock: FixedClock, caplog: pytest.LogCaptureFixture
) -> None:
    token_server.clients["m365-app"] = ("the-new-secret", USER)
    alerts: list[GrantAlert] = []
    grants = manager(
        tmp_path, clock, alerts, provider="microsoft", authority=token_server.authority, client_id="m365-app",
        client_secret=SECRET, ca_file=str(token_server.ca_file),
    )  # fmt: skip

    for _attempt in range(3):
        with pytest.raises(OAuthError) as raised:
            grants.access_token("g")

    assert raised.value.signed_out
    assert "AADSTS7000215" in str(raised.value)
    assert [a.condition for a in alerts] == ["signed_out"]
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1
    assert all(SECRET not in r.getMessage() for r in caplog.records)
    health = grants.health.get("oauth:g")
    assert health is not None and health.state == RED


def test_oauth_login_runs_msal_device_flow_and_status_shows_the_account(
    token_server: TokenServer, tmp_path: Path
) -> None:
    token_server.clients["m365-public"] = ("", "")
    token_server.auto_approve_as = USER
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
[oauth]
token_file = "tokens.json"
[oauth.m365]
provider = "microsoft"
flow = "device_code"
authority = "{token_server.authority}"
client_id = "m365-public"
ca_file = "{token_server.ca_file}"
[[imap]]
name = "desk"
host = "127.0.0.1"
user = "{USER}"
auth = "oauth2"
oauth = "m365"
"""
    )

    login = run_mailcase(["oauth", "login", "m365"], config=config)

    assert login.status == 0, login.stderr
    assert "enter the code" in login.stdout
    assert f"signed in as {USER}" in login.stdout
    assert stat.S_IMODE(os.stat(tmp_path / "tokens.json").st_mode) == 0o600
    status = run_mailcase(["oauth", "status", "--json"], config=config)
    assert status.status == 0, status.stderr
    (row,) = status.json()
    assert row["name"] == "m365" and row["state"] == "ok" and row["healthy"] is True
    assert row["account"] == USER
    assert row["has_refresh_token"] is True
    assert row["used_by"] == ["imap:desk"]
    assert "https://outlook.office.com/IMAP.AccessAsUser.All" in row["scopes"]
    stored = json.loads((tmp_path / "tokens.json").read_text())["grants"]["m365"]
    assert stored["access_token"] not in status.stdout + login.stdout, "tokens are never printed"
    text = run_mailcase(["oauth", "status"], config=config)
    assert text.stdout.startswith("OK   m365 (microsoft, device_code): ok")

    # A delegated grant refreshes through msal with the stored refresh token.
    settings = load_config(config, {})
    grants = GrantManager(settings.oauth, clock=FixedClock(dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)))
    assert active_user(token_server, grants.access_token("m365")) == USER
    assert token_server.grants("refresh_token") == 1


# -- Google (google-auth) ---------------------------------------------------------------------


def test_google_service_account_with_domain_wide_delegation_acts_for_the_mailbox(
    token_server: TokenServer, tmp_path: Path, clock: FixedClock
) -> None:
    account = "mailcase@desk-project.iam.gserviceaccount.com"
    token_server.service_accounts.add(account)
    key_file = tmp_path / "service-account.json"
    key_file.write_text(json.dumps({
        "type": "service_account", "project_id": "desk-project", "private_key_id": "k1",
        "private_key": pem(rsa_key()), "client_email": account, "client_id": "1234",
        "token_uri": "https://oauth2.googleapis.com/token",
    }))  # fmt: skip
    grants = manager(
        tmp_path, clock, provider="google", service_account_file=str(key_file), subject=USER,
        token_endpoint=token_server.token_endpoint, ca_file=str(token_server.ca_file),
    )  # fmt: skip

    token = grants.access_token("g")

    assert active_user(token_server, token) == USER
    assert token_server.grants("urn:ietf:params:oauth:grant-type:jwt-bearer") == 1
    (stored,) = grants.stored().values()
    assert stored.account == USER and stored.scopes == ("https://mail.google.com/",)


def test_google_installed_app_device_login_then_refresh_through_google_auth(
    token_server: TokenServer, tmp_path: Path, clock: FixedClock
) -> None:
    token_server.clients["google-app"] = (SECRET, "")
    grants = manager(
        tmp_path, clock, provider="google", flow="device_code", client_id="google-app", client_secret=SECRET,
        token_endpoint=token_server.token_endpoint, device_authorization_endpoint=token_server.device_endpoint,
        ca_file=str(token_server.ca_file),
    )  # fmt: skip
    shown: list[str] = []

    def approve(flow: Any) -> None:
        shown.append(flow.user_code)
        token_server.approve(flow.user_code, USER)

    grants.login("g", show=approve, sleep=lambda seconds: None)
    clock.advance(hours=1)
    token = grants.access_token("g")

    assert shown and active_user(token_server, token) == USER
    assert token_server.grants("refresh_token") == 1


# -- generic: refresh, revocation, re-login, warnings, several processes -----------------------


@pytest.fixture
def generic(token_server: TokenServer) -> dict[str, Any]:
    token_server.clients["keycloak-desk"] = (SECRET, "")
    return dict(
        provider="generic", flow="device_code", client_id="keycloak-desk", client_secret=SECRET,
        token_endpoint=token_server.token_endpoint, device_authorization_endpoint=token_server.device_endpoint,
        ca_file=str(token_server.ca_file),
    )  # fmt: skip


def test_revoked_grant_is_signed_out_until_login_and_then_works_again(
    token_server: TokenServer, tmp_path: Path, clock: FixedClock, generic: dict[str, Any]
) -> None:
    alerts: list[GrantAlert] = []
    grants = manager(tmp_path, clock, alerts, **generic)
    token_server.auto_approve_as = USER
    with pytest.raises(OAuthError, match="oauth login"):
        grants.access_token("g")  # never signed in
    grants.login("g", show=lambda flow: None, sleep=lambda seconds: None)
    first = grants.access_token("g")

    token_server.revoke_all()
    with pytest.raises(OAuthError) as raised:
        grants.access_token("g", rejected=first)  # the server refused it: the refresh is refused too
    assert raised.value.signed_out and "invalid_grant" in str(raised.value)
    assert grants.stored()["g"].state == "signed_out"

    grants.login("g", show=lambda flow: None, sleep=lambda seconds: None)
    assert active_user(token_server, grants.access_token("g")) == USER
    assert [a.condition for a in alerts] == ["signed_out", "ok", "signed_out", "ok"]
    health = grants.health.get("oauth:g")
    assert health is not None and health.state == GREEN


def test_unreachable_token_endpoint_is_failed_not_signed_out_and_recovers(
    token_server: TokenServer, tmp_path: Path, clock: FixedClock, generic: dict[str, Any]
) -> None:
    grants = manager(tmp_path, clock, **generic)
    token_server.auto_approve_as = USER
    grants.login("g", show=lambda flow: None, sleep=lambda seconds: None)
    clock.advance(hours=1)
    token_server.failing = True

    with pytest.raises(OAuthError) as raised:
        grants.access_token("g")

    assert not raised.value.signed_out
    assert grants.stored()["g"].state == "failed"
    token_server.failing = False
    assert active_user(token_server, grants.access_token("g")) == USER


def test_a_grant_and_a_client_secret_nearing_expiry_are_warned_once_and_turn_amber(
    token_server: TokenServer, tmp_path: Path, clock: FixedClock, generic: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    token_server.refresh_expires_in = 10 * 86400  # the refresh token dies in 10 days
    token_server.auto_approve_as = USER
    alerts: list[GrantAlert] = []
    secret_expires = (clock.now() + dt.timedelta(days=30)).date().isoformat()
    grants = manager(tmp_path, clock, alerts, warn_days=14, client_secret_expires=secret_expires, **generic)

    grants.login("g", show=lambda flow: None, sleep=lambda seconds: None)
    for _hour in range(3):
        clock.advance(hours=1)
        grants.access_token("g")

    assert [(a.condition, a.reason.split(" expires")[0]) for a in alerts] == [("expiring", "grant")]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "within 14 days" in errors[0], errors
    health = grants.health.get("oauth:g")
    assert health is not None and health.state == AMBER

    # 20 days on (re-signed in meanwhile, so the grant is fresh): the client secret is next.
    clock.advance(days=20)
    token_server.refresh_expires_in = 0
    grants.login("g", show=lambda flow: None, sleep=lambda seconds: None)
    assert alerts[-1].condition == "expiring" and alerts[-1].reason == f"client secret expires {secret_expires}"


def test_two_processes_sharing_the_token_file_refresh_once(
    token_server: TokenServer, tmp_path: Path, clock: FixedClock
) -> None:
    token_server.clients["app"] = (SECRET, USER)
    grant = dict(provider="generic", flow="client_credentials", client_id="app", client_secret=SECRET,
                 token_endpoint=token_server.token_endpoint, ca_file=str(token_server.ca_file))  # fmt: skip
    # Two managers, two TokenFile objects, two file descriptors: flock treats them as two processes.
    managers = [manager(tmp_path, clock, **grant) for _ in range(2)]
    tokens: list[str] = []
    start = threading.Barrier(8)

    def fetch(m: GrantManager) -> None:
        start.wait()
        tokens.append(m.access_token("g"))

    threads = [threading.Thread(target=fetch, args=(managers[i % 2],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert len(set(tokens)) == 1 and len(tokens) == 8
    assert token_server.grants("client_credentials") == 1
    assert stat.S_IMODE(os.stat(tmp_path / "tokens.json").st_mode) == 0o600


# -- the admin mail ---------------------------------------------------------------------------


@pytest.fixture
def app(tmp_path: Path, settings: Any, clock: FixedClock) -> Iterator[App]:
    engine = make_engine(f"sqlite:///{tmp_path / 'mailcase.db'}")
    upgrade_schema(engine)
    yield App(settings=settings, engine=engine, clock=clock)
    engine.dispose()


def test_a_failing_grant_mails_the_admin_once_however_often_it_is_retried(
    token_server: TokenServer, tmp_path: Path, app: App, clock: FixedClock
) -> None:
    import dataclasses

    token_server.clients["app"] = ("rotated", USER)
    oauth = OAuthSettings(
        token_file=str(tmp_path / "tokens.json"),
        admin_address="mail-admin@support.example.com",
        grants={"m365": OAuthGrantSettings(provider="generic", flow="client_credentials", client_id="app",
                client_secret=SECRET, token_endpoint=token_server.token_endpoint, ca_file=str(token_server.ca_file))},
    )  # fmt: skip
    app.settings = dataclasses.replace(app.settings, oauth=oauth)
    for _retry in range(3):
        with pytest.raises(OAuthError):
            app.grants.access_token("m365")
        clock.advance(minutes=1)
    # A second process (its own App, same token file) retries too: still one mail.
    other = App(settings=app.settings, engine=app.engine, clock=clock)
    with pytest.raises(OAuthError):
        other.grants.access_token("m365")

    with Session(app.engine) as session:
        rows = list(session.exec(select(Outbox)))
    assert [(row.kind, row.template, row.recipients) for row in rows] == [
        ("oauth_alert", "staff.oauth_alert", ["mail-admin@support.example.com"])
    ]
    assert rows[0].context["condition"] == "signed_out"
    assert "invalid_client" in rows[0].context["reason"] and SECRET not in json.dumps(rows[0].context)
    rendered = app.renderer().render(rows[0].template, rows[0].locale, rows[0].context)
    assert rendered.subject == "[mailcase] OAuth2 grant m365: signed out"
    assert "mailcase oauth login m365" in rendered.text


# -- grants in PostgreSQL ----------------------------------------------------------------------


@pytest.mark.postgres
def test_grants_in_postgresql_are_encrypted_and_two_daemons_refresh_once(
    token_server: TokenServer, tmp_path: Path, clock: FixedClock, migrated_pg_url: str
) -> None:
    import sqlalchemy as sa

    from mailcase.oauth.tokens import DatabaseTokenStore

    token_server.clients["app"] = (SECRET, USER)
    settings = OAuthSettings(
        store="database",
        grants={"m365": OAuthGrantSettings(provider="generic", flow="client_credentials", client_id="app",
                client_secret=SECRET, token_endpoint=token_server.token_endpoint, ca_file=str(token_server.ca_file))},
    )  # fmt: skip
    engines = [make_engine(migrated_pg_url) for _ in range(2)]  # two daemons: two pools, two connections
    try:
        managers = [
            GrantManager(settings, clock=clock, store=DatabaseTokenStore(engine, b"installation-secret", ["m365"]))
            for engine in engines
        ]
        tokens: list[str] = []
        start = threading.Barrier(6)

        def fetch(m: GrantManager) -> None:
            start.wait()
            tokens.append(m.access_token("m365"))

        threads = [threading.Thread(target=fetch, args=(managers[i % 2],)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=20)

        assert len(tokens) == 6 and len(set(tokens)) == 1
        assert token_server.grants("client_credentials") == 1
        with engines[0].connect() as connection:
            stored = connection.execute(sa.text("SELECT value FROM installation WHERE key = 'oauth_grant:m365'")).scalar_one()
        assert tokens[0] not in stored and "access_token" not in stored, "encrypted at rest"
        assert active_user(token_server, tokens[0]) == USER
        # Another installation secret cannot read it: the grant counts as never signed in.
        stranger = DatabaseTokenStore(engines[0], b"another-secret", ["m365"]).read()
        assert stranger["m365"].access_token == "" and "not readable" in stranger["m365"].error
    finally:
        for engine in engines:
            engine.dispose()


def test_database_store_needs_postgresql(tmp_path: Path) -> None:
    from mailcase.errors import ConfigError

    path = tmp_path / "config.toml"
    path.write_text('[oauth]\nstore = "database"\n')
    with pytest.raises(ConfigError) as raised:
        load_config(path, {})
    assert raised.value.key == "oauth.store"
