"""A small OAuth2 authorization server for tests, on loopback only: issues, refreshes, expires and revokes tokens on command, and answers Dovecot's introspection; never a real cloud endpoint.

It speaks HTTPS (msal insists on an https authority) with a throwaway certificate, trusted through
`ca_file`, and plain HTTP on a second port for Dovecot's `introspection_url`. It serves:

* `POST /<tenant>/oauth2/v2.0/token` (any path ending in `/token`): client_credentials (secret or
  a msal certificate assertion), refresh_token, the RFC 8628 device_code grant, and the JWT
  bearer grant of Google service accounts;
* `POST …/devicecode`: starts a device authorization; `approve(user_code, user)` completes it
  (or `auto_approve_as = user`);
* `GET /<tenant>/v2.0/.well-known/openid-configuration`: what msal discovers;
* `POST /introspect` (RFC 7662): `{"active": true, "username": …}` for a live access token.

Commands: `expire(token)` / `expire_all()` (access tokens stop working, refresh tokens still
work), `revoke_all()` (everything stops working until someone signs in again).
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import shutil
import ssl
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

HOST = "127.0.0.1"
TENANT = "contoso"


@dataclass
class _Access:
    user: str
    client: str
    live: bool = True


@dataclass
class _Refresh:
    user: str
    client: str
    live: bool = True


@dataclass
class _Device:
    user_code: str
    client: str
    approved_as: str = ""


@dataclass
class TokenServer:
    """Start with `start()` (or the `token_server` fixture); `url` is the HTTPS base, `introspection_url` HTTP."""

    directory: Path
    # client id -> (client secret or "" for a public client, the mailbox its app-only tokens open)
    clients: dict[str, tuple[str, str]] = field(default_factory=dict)
    # service account e-mail -> allowed (domain-wide delegation: any subject)
    service_accounts: set[str] = field(default_factory=set)
    expires_in: int = 3600
    refresh_expires_in: int = 0
    auto_approve_as: str = ""
    access: dict[str, _Access] = field(default_factory=dict)
    refresh: dict[str, _Refresh] = field(default_factory=dict)
    devices: dict[str, _Device] = field(default_factory=dict)
    requests: list[dict[str, str]] = field(default_factory=list)
    introspections: int = 0
    failing: bool = False  # answer every token request with 503

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._servers: list[ThreadingHTTPServer] = []
        self.ca_file = self.directory / "token-server.pem"
        self.port = 0
        self.http_port = 0

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> TokenServer:
        key = self.directory / "token-server.key"
        if shutil.which("openssl") is None:
            pytest.skip("openssl is needed to make a test certificate")
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", str(key), "-out", str(self.ca_file), "-days", "1",
                "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.ca_file, key)
        handler = _handler_for(self)
        secure = ThreadingHTTPServer((HOST, 0), handler)
        secure.socket = context.wrap_socket(secure.socket, server_side=True)
        plain = ThreadingHTTPServer((HOST, 0), handler)
        for server in (secure, plain):
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
            self._servers.append(server)
        self.port = secure.server_address[1]
        self.http_port = plain.server_address[1]
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers.clear()

    @property
    def url(self) -> str:
        return f"https://{HOST}:{self.port}"

    @property
    def authority(self) -> str:
        return f"{self.url}/{TENANT}"

    @property
    def token_endpoint(self) -> str:
        return f"{self.url}/{TENANT}/oauth2/v2.0/token"

    @property
    def device_endpoint(self) -> str:
        return f"{self.url}/{TENANT}/oauth2/v2.0/devicecode"

    @property
    def introspection_url(self) -> str:
        return f"http://{HOST}:{self.http_port}/introspect"

    # -- commands -----------------------------------------------------------------------------

    def expire_all(self) -> None:
        with self._lock:
            for token in self.access.values():
                token.live = False

    def revoke_all(self) -> None:
        with self._lock:
            for token in self.access.values():
                token.live = False
            for refresh in self.refresh.values():
                refresh.live = False

    def approve(self, user_code: str, user: str) -> None:
        with self._lock:
            for device in self.devices.values():
                if device.user_code == user_code:
                    device.approved_as = user

    def grants(self, grant_type: str) -> int:
        """How many token requests of `grant_type` succeeded."""
        with self._lock:
            return sum(1 for r in self.requests if r.get("grant_type") == grant_type and r.get("ok"))

    def live_tokens(self) -> set[str]:
        with self._lock:
            return {token for token, access in self.access.items() if access.live}

    # -- the protocol -------------------------------------------------------------------------

    def _issue(self, user: str, client: str, *, with_refresh: bool) -> dict[str, Any]:
        token = "at-" + secrets.token_urlsafe(16)
        self.access[token] = _Access(user, client)
        answer: dict[str, Any] = {"access_token": token, "token_type": "Bearer", "expires_in": self.expires_in}
        if with_refresh:
            refresh = "rt-" + secrets.token_urlsafe(16)
            self.refresh[refresh] = _Refresh(user, client)
            answer["refresh_token"] = refresh
            if self.refresh_expires_in:
                answer["refresh_expires_in"] = self.refresh_expires_in
        return answer

    def token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            status, answer = self._token(form)
            self.requests.append({"grant_type": form.get("grant_type", ""), "ok": "1" if status == 200 else ""})
            return status, answer

    def _token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if self.failing:
            return 503, {"error": "temporarily_unavailable"}
        grant = form.get("grant_type", "")
        client = form.get("client_id", "")
        if grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            claims = _jwt_claims(form.get("assertion", ""))
            if claims.get("iss") not in self.service_accounts or not claims.get("sub"):
                return 400, {"error": "unauthorized_client", "error_description": "not a known service account"}
            return 200, self._issue(str(claims["sub"]), str(claims["iss"]), with_refresh=False)
        if form.get("client_assertion"):
            claims = _jwt_claims(form["client_assertion"])
            client = client or str(claims.get("iss", ""))
            if client not in self.clients or claims.get("iss") != client:
                return 401, {"error": "invalid_client", "error_description": "AADSTS700027: bad assertion"}
        elif client not in self.clients:
            return 400, {"error": "invalid_client", "error_description": "unknown client"}
        else:
            secret, _mailbox = self.clients[client]
            if secret and form.get("client_secret") != secret:
                return 401, {"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret"}
        if grant == "client_credentials":
            return 200, self._issue(self.clients[client][1], client, with_refresh=False)
        if grant == "refresh_token":
            refresh = self.refresh.get(form.get("refresh_token", ""))
            if refresh is None or not refresh.live or refresh.client != client:
                return 400, {"error": "invalid_grant", "error_description": "AADSTS50173: the grant was revoked"}
            refresh.live = False  # rotation, as Microsoft and Keycloak do
            return 200, self._issue(refresh.user, client, with_refresh=True)
        if grant == "urn:ietf:params:oauth:grant-type:device_code":
            device = self.devices.get(form.get("device_code", ""))
            if device is None:
                return 400, {"error": "expired_token"}
            user = device.approved_as or self.auto_approve_as
            if not user:
                return 400, {"error": "authorization_pending"}
            del self.devices[form["device_code"]]
            answer = self._issue(user, client, with_refresh=True)
            answer["account"] = user
            answer["id_token"] = self._id_token(user, client)
            return 200, answer
        return 400, {"error": "unsupported_grant_type"}

    def _id_token(self, user: str, client: str) -> str:
        """An unsigned OpenID Connect ID token naming the account (msal reads preferred_username)."""
        now = int(time.time())
        claims = {
            "iss": f"{self.authority}/v2.0", "aud": client, "iat": now, "exp": now + 3600,
            "sub": user, "oid": user, "tid": TENANT, "preferred_username": user,
        }  # fmt: skip

        def part(value: dict[str, Any]) -> str:
            return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

        return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."

    def device(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            if form.get("client_id") not in self.clients:
                return 400, {"error": "invalid_client"}
            code = "dc-" + secrets.token_urlsafe(8)
            user_code = secrets.token_hex(4).upper()
            self.devices[code] = _Device(user_code, form["client_id"])
            uri = f"{self.url}/device"
            return 200, {
                "device_code": code,
                "user_code": user_code,
                "verification_uri": uri,
                "expires_in": 900,
                "interval": 1,
                "message": f"To sign in, use a web browser to open the page {uri} and enter the code {user_code}",
            }

    def introspect(self, form: dict[str, str]) -> dict[str, Any]:
        with self._lock:
            self.introspections += 1
            access = self.access.get(form.get("token", ""))
            if access is None or not access.live:
                return {"active": False}
            return {"active": True, "username": access.user, "client_id": access.client}

    def openid_configuration(self, tenant: str) -> dict[str, Any]:
        base = f"{self.url}/{tenant}"
        return {
            "issuer": f"{base}/v2.0",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
        }


def _jwt_claims(assertion: str) -> dict[str, Any]:
    try:
        payload = assertion.split(".")[1]
        return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))
    except (IndexError, ValueError):
        return {}


def _handler_for(server: TokenServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: pytest shows failures, not every request

        def _form(self) -> dict[str, str]:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode()
            form = dict(urllib.parse.parse_qsl(body))
            authorization = self.headers.get("Authorization", "")
            if authorization.startswith("Basic "):  # client_secret_basic (RFC 6749 §2.3.1)
                client, _, secret = base64.b64decode(authorization[6:]).decode().partition(":")
                form.setdefault("client_id", urllib.parse.unquote(client))
                form.setdefault("client_secret", urllib.parse.unquote(secret))
            return form

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            path = urllib.parse.urlparse(self.path).path
            if path.endswith("/v2.0/.well-known/openid-configuration"):
                self._answer(200, server.openid_configuration(path.split("/")[1]))
            else:
                self._answer(404, {"error": "not_found"})

        def do_POST(self) -> None:
            path = urllib.parse.urlparse(self.path).path
            form = self._form()
            if path.endswith("/token"):
                self._answer(*server.token(form))
            elif path.endswith("/devicecode"):
                self._answer(*server.device(form))
            elif path.endswith("/introspect"):
                self._answer(200, server.introspect(form))
            else:
                self._answer(404, {"error": "not_found"})

    return Handler


@contextlib.contextmanager
def running_token_server(directory: Path, **options: Any) -> Iterator[TokenServer]:
    server = TokenServer(directory, **options).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def token_server(tmp_path: Path) -> Iterator[TokenServer]:
    with running_token_server(tmp_path) as server:
        yield server
