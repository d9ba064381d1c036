"""IMAP sign-in with OAuth2 against a real Dovecot whose oauth2 passdb asks a local token server: sign-in, refresh, revocation, re-login, warnings, the red health state, and no mail lost or repeated."""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from mailcase.app import App
from mailcase.clock import FixedClock
from mailcase.config import OAuthGrantSettings, OAuthSettings, Settings
from mailcase.domain import RawMessage
from mailcase.ingest.imap import MailboxPoller
from mailcase.oauth.grants import GrantAlert, GrantManager
from mailcase.oauth.health import GREEN, RED, HealthBoard
from mailcase.rules.directory_format import load_directory
from mailcase.store.directory import import_directory
from mailcase.store.engine import make_engine, transaction, upgrade_schema
from mailcase.store.models import Case
from support.cli import REPO
from support.dovecot import USER, DovecotServer, running_dovecot
from support.oauth import TokenServer, token_server  # noqa: F401 (fixture)
from support.pollers import running  # noqa: F401 (a fixture)

pytestmark = pytest.mark.dovecot

LOGGER = "mailcase.ingest.imap.oauth-test"
CLIENT_ID = "mailcase-desk"
SECRET = "app-secret-0123456789"
WAIT_SECONDS = 10.0


def message(number: int) -> bytes:
    return (
        f"From: Pat Doe <pat@acme.example>\r\n"
        f"To: support@support.example.com\r\n"
        f"Subject: Router o{number} is down\r\n"
        f"Message-ID: <o{number}.oauth-test@acme.example>\r\n"
        f"\r\n"
        f"Site {number} lost its uplink.\r\n"
    ).encode()


def wait_until(condition: Callable[[], bool], timeout: float = WAIT_SECONDS) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def subjects(engine: Engine) -> list[str]:
    with Session(engine) as session:
        return sorted(session.exec(select(Case.subject)))


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'mailcase.db'}")
    upgrade_schema(engine)
    directory = load_directory((REPO / "examples" / "directory.toml").read_text(encoding="utf-8"))
    with transaction(engine) as session:
        import_directory(directory, session=session)
    yield engine
    engine.dispose()


@pytest.fixture
def ingest(db: Engine, settings: Settings, clock: FixedClock) -> Callable[[RawMessage], object]:
    return App(settings=settings, engine=db, clock=clock).pipeline()  # type: ignore[no-any-return]


@pytest.fixture
def server(token_server: TokenServer) -> TokenServer:
    token_server.clients[CLIENT_ID] = (SECRET, USER)
    return token_server


@pytest.fixture
def dovecot(tmp_path: Path, server: TokenServer) -> Iterator[DovecotServer]:
    with running_dovecot(tmp_path, oauth2_introspection_url=server.introspection_url) as running:
        yield running


def oauth_settings(tmp_path: Path, server: TokenServer, **grant: Any) -> OAuthSettings:
    values: dict[str, Any] = dict(
        provider="generic",
        flow="client_credentials",
        client_id=CLIENT_ID,
        client_secret=SECRET,
        token_endpoint=server.token_endpoint,
        ca_file=str(server.ca_file),
    )
    values.update(grant)
    return OAuthSettings(token_file=str(tmp_path / "tokens.json"), grants={"desk": OAuthGrantSettings(**values)})


@pytest.fixture
def alerts() -> list[GrantAlert]:
    return []


@pytest.fixture
def health() -> HealthBoard:
    return HealthBoard()


@pytest.fixture
def grants(tmp_path: Path, server: TokenServer, clock: FixedClock, health: HealthBoard, alerts: list[GrantAlert]) -> GrantManager:
    return GrantManager(oauth_settings(tmp_path, server), clock=clock, health=health, alert=alerts.append)


@pytest.fixture
def make_poller(
    db: Engine, ingest: Callable[[RawMessage], object], clock: FixedClock, grants: GrantManager, health: HealthBoard
) -> Iterator[Callable[..., MailboxPoller]]:
    pollers: list[MailboxPoller] = []

    def make(server: DovecotServer, **settings: Any) -> MailboxPoller:
        poller = MailboxPoller(
            server.settings(**{"auth": "oauth2", "oauth": "desk", "password": "", **settings}),
            ingest=ingest,
            engine=db,
            clock=clock,
            stop=threading.Event(),
            logger=logging.getLogger(LOGGER),
            lock_retry_seconds=0.1,
            backoff_base_seconds=0.05,
            backoff_max_seconds=0.3,
            tokens=grants,
            health=health,
        )
        pollers.append(poller)
        return poller

    yield make
    for poller in pollers:
        poller.close()



# -- the tests --------------------------------------------------------------------------------


def test_app_only_grant_signs_in_with_oauthbearer_and_stores_the_mail(
    dovecot: DovecotServer, make_poller: Callable[..., MailboxPoller], db: Engine, server: TokenServer,
    tmp_path: Path, health: HealthBoard,
) -> None:
    assert b"AUTH=OAUTHBEARER" in dovecot.greeting_capabilities()
    dovecot.append([message(1), message(2)])

    assert make_poller(dovecot).poll_once() == 2

    assert subjects(db) == ["Router o1 is down", "Router o2 is down"]
    assert server.grants("client_credentials") == 1
    assert server.introspections >= 1
    token_file = tmp_path / "tokens.json"
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    health_of_mailbox = health.get("imap:desk")
    assert health_of_mailbox is not None and health_of_mailbox.state == GREEN


def test_without_oauthbearer_the_poller_signs_in_with_xoauth2(
    tmp_path: Path, server: TokenServer, make_poller: Callable[..., MailboxPoller], db: Engine
) -> None:
    with running_dovecot(tmp_path / "x", oauth2_introspection_url=server.introspection_url, oauthbearer=False) as xo:
        capabilities = xo.greeting_capabilities()
        assert b"AUTH=XOAUTH2" in capabilities and b"AUTH=OAUTHBEARER" not in capabilities
        xo.append([message(1)])

        assert make_poller(xo).poll_once() == 1

    assert subjects(db) == ["Router o1 is down"]


def test_token_is_refreshed_before_it_expires_not_after(
    dovecot: DovecotServer, make_poller: Callable[..., MailboxPoller], db: Engine, server: TokenServer,
    grants: GrantManager, clock: FixedClock,
) -> None:
    first = grants.access_token("desk")
    assert grants.access_token("desk") == first, "a valid token is reused, not fetched again"
    # 3,600 s tokens, refreshed 300 s (refresh_margin_seconds) ahead: at 3,299 s still reused,
    # at 3,301 s a new one, while the old one would still have worked for 299 s.
    clock.advance(seconds=3299)
    assert grants.access_token("desk") == first
    clock.advance(seconds=2)
    second = grants.access_token("desk")
    assert second != first
    assert first in server.live_tokens(), "refreshed before the server expired it"
    dovecot.append([message(1)])

    assert make_poller(dovecot).poll_once() == 1
    assert server.grants("client_credentials") == 2


def test_a_token_the_server_expired_early_is_replaced_at_once_and_no_mail_waits(
    dovecot: DovecotServer, make_poller: Callable[..., MailboxPoller], db: Engine, server: TokenServer,
    grants: GrantManager,
) -> None:
    grants.access_token("desk")
    server.expire_all()  # the server's 401: our copy still looks valid for an hour
    dovecot.append([message(1)])

    assert make_poller(dovecot).poll_once() == 1

    assert subjects(db) == ["Router o1 is down"]
    assert server.grants("client_credentials") == 2


def test_revoked_grant_turns_the_mailbox_red_logs_and_alerts_once_then_resumes_without_loss(
    dovecot: DovecotServer, make_poller: Callable[..., MailboxPoller], running: Callable[[MailboxPoller], threading.Thread],
    db: Engine, server: TokenServer, health: HealthBoard, alerts: list[GrantAlert], caplog: pytest.LogCaptureFixture,
) -> None:
    dovecot.append([message(1)])
    poller = make_poller(dovecot, poll_interval_seconds=600)
    with caplog.at_level(logging.INFO):
        running(poller)
        assert wait_until(lambda: subjects(db) == ["Router o1 is down"])

        # The app registration's secret is rotated out from under us and the server drops us.
        server.clients[CLIENT_ID] = ("a-new-secret", USER)
        server.revoke_all()
        dovecot.kick()
        dovecot.append([message(2), message(3)])

        assert wait_until(lambda: (health.get("imap:desk") or health.get("x")).state == RED)  # type: ignore[union-attr]
        # Several backoff retries (0.05-0.3 s apart), each refused by the token endpoint.
        assert wait_until(lambda: sum(1 for r in server.requests if not r["ok"]) >= 3)
        red = health.get("imap:desk")
        assert red is not None and "invalid_client" in red.reason
        grant_health = health.get("oauth:desk")
        assert grant_health is not None and grant_health.state == RED
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len([r for r in errors if "cannot sign in" in r.getMessage()]) == 1, "once per state change"
        assert len([r for r in errors if "oauth grant desk: signed out" in r.getMessage()]) == 1
        assert [(a.grant, a.condition) for a in alerts] == [("desk", "signed_out")]
        assert all(SECRET not in r.getMessage() and "a-new-secret" not in r.getMessage() for r in caplog.records)
        assert subjects(db) == ["Router o1 is down"]

        # The operator puts the new secret in place (here: the server accepts the old one again).
        server.clients[CLIENT_ID] = (SECRET, USER)

        assert wait_until(lambda: len(subjects(db)) == 3), "polling resumes from the UID cursor"
        assert subjects(db) == ["Router o1 is down", "Router o2 is down", "Router o3 is down"]
        assert wait_until(lambda: (health.get("imap:desk") or red).state == GREEN)
        assert any("signed in again" in r.getMessage() for r in caplog.records)
        assert [(a.grant, a.condition) for a in alerts] == [("desk", "signed_out"), ("desk", "ok")]
    assert wait_until(lambda: dovecot.uids("INBOX") == [])
    assert len(dovecot.uids("Processed")) == 3


def _service_account_key(path: Path, account: str) -> None:
    import json

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.write_text(json.dumps({
        "type": "service_account", "private_key": pem.decode(), "client_email": account,
        "private_key_id": "k1", "token_uri": "https://oauth2.googleapis.com/token",
    }))  # fmt: skip


@pytest.mark.parametrize("provider", ["microsoft", "google"])
def test_msal_and_google_auth_tokens_sign_the_poller_in(
    provider: str, dovecot: DovecotServer, server: TokenServer, tmp_path: Path, clock: FixedClock, db: Engine,
    ingest: Callable[[RawMessage], object],
) -> None:
    if provider == "microsoft":
        grant = OAuthGrantSettings(
            provider="microsoft", authority=server.authority, client_id=CLIENT_ID, client_secret=SECRET,
            ca_file=str(server.ca_file),
        )  # fmt: skip
    else:
        account = "mailcase@desk.iam.gserviceaccount.com"
        server.service_accounts.add(account)
        _service_account_key(tmp_path / "sa.json", account)
        grant = OAuthGrantSettings(
            provider="google", service_account_file=str(tmp_path / "sa.json"), subject=USER,
            token_endpoint=server.token_endpoint, ca_file=str(server.ca_file),
        )  # fmt: skip
    grants = GrantManager(OAuthSettings(token_file=str(tmp_path / "t.json"), grants={"desk": grant}), clock=clock)
    dovecot.append([message(1)])
    poller = MailboxPoller(
        dovecot.settings(auth="oauth2", oauth="desk", password=""), ingest=ingest, engine=db, clock=clock,
        stop=threading.Event(), tokens=grants,
    )  # fmt: skip
    try:
        assert poller.poll_once() == 1
    finally:
        poller.close()
    assert subjects(db) == ["Router o1 is down"]


def test_tick_reads_an_oauth2_mailbox_configured_as_an_operator_would(
    dovecot: DovecotServer, server: TokenServer, tmp_path: Path
) -> None:
    from support.cli import SAMPLE_CONFIG, run_mailcase

    (tmp_path / "desk-secret").write_text(SECRET + "\n")
    config = tmp_path / "config.toml"
    config.write_text(
        SAMPLE_CONFIG.read_text(encoding="utf-8")
        + f"""
[oauth.desk]
provider = "generic"
token_endpoint = "{server.token_endpoint}"
client_id = "{CLIENT_ID}"
client_secret_file = "desk-secret"
ca_file = "{server.ca_file}"

[[imap]]
name = "desk"
host = "{dovecot.host}"
port = {dovecot.port}
tls = "none"
user = "{USER}"
auth = "oauth2"
oauth = "desk"
"""
    )
    url = f"sqlite:///{tmp_path / 'mailcase.db'}"
    env = {"MAILCASE_OUTBOUND__ENABLED": "false"}
    assert run_mailcase(["init"], database_url=url, config=config, env=env).status == 0
    directory = REPO / "examples" / "directory.toml"
    assert run_mailcase(["directory", "import", str(directory)], database_url=url, config=config, env=env).status == 0
    dovecot.append([message(1), message(2)])

    tick = run_mailcase(["tick", "--json"], database_url=url, config=config, env=env)

    assert tick.status == 0, tick.stderr
    assert tick.json()["imap"] == {"desk": {"stored": 2, "error": None}}
    cases = run_mailcase(["cases", "list", "--json"], database_url=url, config=config, env=env).json()
    assert sorted(case["subject"] for case in cases) == ["Router o1 is down", "Router o2 is down"]
    status = run_mailcase(["oauth", "status", "--json"], database_url=url, config=config, env=env).json()
    assert [(row["name"], row["state"], row["used_by"]) for row in status] == [("desk", "ok", ["imap:desk"])]
    assert (tmp_path / "oauth-tokens.json").exists()
