"""Talks to token endpoints: Microsoft identity platform through msal, Google through google-auth, any RFC 6749 endpoint directly; it never stores, never logs a token, never talks IMAP or SMTP.

Each flow returns a `Token`. Failures raise OAuthError: `signed_out=True` when the endpoint said
no (RFC 6749 §5.2 `invalid_grant`, `invalid_client`, `unauthorized_client`…: a revoked or expired
grant, a wrong or expired client secret), `signed_out=False` when it could not be reached or
answered 5xx (try again later). Error texts keep the endpoint's `error` code and description,
never the request.

The authority of msal and the token URI of google-auth are configurable (`authority`,
`token_endpoint`), which is also how the tests run both libraries against a local server.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mailcase.config import OAuthGrantSettings
from mailcase.errors import OAuthError

if TYPE_CHECKING:  # imported where used: the HTTP and Google libraries load only for a grant that needs them
    import requests
    from google.auth.credentials import Credentials
    from google.auth.transport.requests import Request

MsalResult = dict[str, Any]  # msal's JSON answer: access_token, expires_in, error, error_description…


class MsalApplication(Protocol):
    """The part of msal's Public- and ConfidentialClientApplication used here (msal ships no types)."""

    def initiate_device_flow(self, scopes: list[str]) -> MsalResult: ...
    def acquire_token_by_device_flow(self, flow: MsalResult) -> MsalResult: ...
    def acquire_token_by_refresh_token(self, refresh_token: str, scopes: list[str]) -> MsalResult: ...
    def acquire_token_for_client(self, scopes: list[str]) -> MsalResult: ...

MICROSOFT_AUTHORITY = "https://login.microsoftonline.com/{tenant}"
MICROSOFT_APP_SCOPES = ("https://outlook.office365.com/.default",)
MICROSOFT_DELEGATED_SCOPES = (
    "https://outlook.office.com/IMAP.AccessAsUser.All",
    "https://outlook.office.com/SMTP.Send",
)
GOOGLE_SCOPES = ("https://mail.google.com/",)
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
GOOGLE_DEVICE_URI = "https://oauth2.googleapis.com/device/code"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
HTTP_TIMEOUT_SECONDS = 30.0
# RFC 6749 §5.2 and RFC 8628 §3.5 codes after which only a person can help.
SIGNED_OUT_ERRORS = frozenset(
    {"invalid_grant", "invalid_client", "unauthorized_client", "access_denied", "expired_token",
     "invalid_scope", "invalid_request"}
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Token:
    access_token: str = field(repr=False)
    expires_at: datetime
    refresh_token: str = field(default="", repr=False)
    refresh_expires_at: datetime | None = None
    account: str = ""
    scopes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DeviceFlow:
    """A started device authorization (RFC 8628): what to show the person, and what to poll with."""

    verification_uri: str
    user_code: str
    message: str
    expires_at: datetime
    interval: float
    state: dict[str, Any] = field(repr=False)


def scopes_of(grant: OAuthGrantSettings) -> tuple[str, ...]:
    if grant.scopes:
        return grant.scopes
    if grant.provider == "microsoft":
        if grant.effective_flow() == "client_credentials":
            return MICROSOFT_APP_SCOPES
        return MICROSOFT_DELEGATED_SCOPES
    if grant.provider == "google":
        return GOOGLE_SCOPES
    return ()


def fetch(grant: OAuthGrantSettings, *, refresh_token: str, now: datetime) -> Token:
    """A new access token: by the app's own credentials, or by `refresh_token` for a delegated grant."""
    flow = grant.effective_flow()
    if flow == "device_code" and not refresh_token:
        raise OAuthError("not signed in: run `mailcase oauth login` for this grant", signed_out=True)
    if grant.provider == "microsoft":
        return _microsoft_fetch(grant, refresh_token, now)
    if grant.provider == "google":
        return _google_fetch(grant, refresh_token, now)
    if flow == "client_credentials":
        form = {"grant_type": "client_credentials", **_client_auth(grant)}
    else:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token, **_client_auth(grant)}
    if scopes_of(grant):
        form["scope"] = " ".join(scopes_of(grant))
    return _token_from(_post(grant, grant.token_endpoint, form), now, refresh_token, grant)


def start_device_flow(grant: OAuthGrantSettings, *, now: datetime) -> DeviceFlow:
    if grant.provider == "microsoft":
        app = _msal_public(grant)
        state = app.initiate_device_flow(scopes=list(scopes_of(grant)))
        if "user_code" not in state:
            raise OAuthError(_msal_error(state), signed_out=True)
        return DeviceFlow(
            verification_uri=str(state.get("verification_uri", "")),
            user_code=str(state["user_code"]),
            message=str(state.get("message", "")),
            expires_at=now + timedelta(seconds=int(state.get("expires_in", 900))),
            interval=float(state.get("interval", 5)),
            state=state,
        )
    endpoint = grant.device_authorization_endpoint
    if grant.provider == "google" and not endpoint:
        endpoint = GOOGLE_DEVICE_URI
    if not endpoint:
        raise OAuthError("no device_authorization_endpoint configured for this grant", signed_out=True)
    form = {"client_id": grant.client_id, "scope": " ".join(scopes_of(grant))}
    data = _post(grant, endpoint, form)
    uri = str(data.get("verification_uri") or data.get("verification_url") or "")
    return DeviceFlow(
        verification_uri=uri,
        user_code=str(data["user_code"]),
        message=f"To sign in, open {uri} and enter the code {data['user_code']}",
        expires_at=now + timedelta(seconds=int(data.get("expires_in", 900))),
        interval=float(data.get("interval", 5)),
        state=data,
    )


def finish_device_flow(
    grant: OAuthGrantSettings,
    flow: DeviceFlow,
    *,
    clock: Callable[[], datetime],
    sleep: Callable[[float], None] = time.sleep,
) -> Token:
    """Wait until the person approved (or refused, or the code expired); return the grant's first token."""
    if grant.provider == "microsoft":
        app = _msal_public(grant)
        result = app.acquire_token_by_device_flow(flow.state)
        return _msal_token(result, clock(), "")
    token_uri = grant.token_endpoint or (GOOGLE_TOKEN_URI if grant.provider == "google" else "")
    interval = flow.interval
    while True:
        form = {"grant_type": DEVICE_GRANT, "device_code": str(flow.state["device_code"]), **_client_auth(grant)}
        try:
            return _token_from(_post(grant, token_uri, form), clock(), "", grant)
        except _Pending as pending:
            if pending.slow_down:
                interval += 5  # RFC 8628 §3.5
        if clock() >= flow.expires_at:
            raise OAuthError("the device code expired before anyone approved it", signed_out=True)
        sleep(interval)


# -- generic RFC 6749 ---------------------------------------------------------------------------


class _Pending(Exception):
    def __init__(self, slow_down: bool) -> None:
        self.slow_down = slow_down


def _client_auth(grant: OAuthGrantSettings) -> dict[str, str]:
    form = {"client_id": grant.client_id}
    if grant.client_secret:
        form["client_secret"] = grant.client_secret
    return form


def _context(grant: OAuthGrantSettings) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=grant.ca_file or None)


def _post(grant: OAuthGrantSettings, url: str, form: dict[str, str]) -> dict[str, Any]:
    body = urllib.parse.urlencode(form).encode()
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
    )
    context = _context(grant) if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS, context=context) as response:
            return dict(json.loads(response.read() or b"{}"))
    except urllib.error.HTTPError as error:
        try:
            data = json.loads(error.read() or b"{}")
        except ValueError:
            data = {}
        code = str(data.get("error", ""))
        if code in ("authorization_pending", "slow_down"):
            raise _Pending(code == "slow_down") from None
        described = _described(code, str(data.get("error_description", "")), error.code)
        raise OAuthError(described, signed_out=code in SIGNED_OUT_ERRORS or error.code in (400, 401)) from None
    except (OSError, ValueError) as error:
        raise OAuthError(f"token endpoint unreachable: {type(error).__name__}: {error}", signed_out=False) from None


def _described(code: str, description: str, status: int | None = None) -> str:
    text = code or (f"HTTP {status}" if status else "refused")
    if description:
        text += f": {description.splitlines()[0][:300]}"
    return f"token endpoint refused: {text}"


def _token_from(data: dict[str, Any], now: datetime, refresh_token: str, grant: OAuthGrantSettings) -> Token:
    if "access_token" not in data:
        raise OAuthError(_described(str(data.get("error", "")), str(data.get("error_description", ""))), signed_out=True)
    refresh_expires = data.get("refresh_expires_in") or data.get("refresh_token_expires_in")
    return Token(
        access_token=str(data["access_token"]),
        expires_at=now + timedelta(seconds=int(data.get("expires_in", 3600))),
        refresh_token=str(data.get("refresh_token") or refresh_token),
        refresh_expires_at=now + timedelta(seconds=int(refresh_expires)) if refresh_expires else None,
        account=str(data.get("account", "")),
        scopes=tuple(str(data["scope"]).split()) if data.get("scope") else scopes_of(grant),
    )


# -- Microsoft (msal) ---------------------------------------------------------------------------


def _authority(grant: OAuthGrantSettings) -> str:
    return grant.authority or MICROSOFT_AUTHORITY.format(tenant=grant.tenant)


def _session(grant: OAuthGrantSettings) -> requests.Session:
    """A requests session that trusts `ca_file` when one is configured.

    requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE from the environment override a session's
    `verify`, so with a ca_file the environment is not consulted (proxies from it neither).
    """
    import requests

    session = requests.Session()
    if grant.ca_file:
        session.verify = grant.ca_file
        session.trust_env = False
    return session


def _msal_options(grant: OAuthGrantSettings) -> dict[str, Any]:
    options: dict[str, Any] = {"authority": _authority(grant), "http_client": _session(grant), "timeout": HTTP_TIMEOUT_SECONDS}
    if grant.authority:
        # A sovereign cloud, ADFS or a test server: do not ask Microsoft's instance discovery.
        options["instance_discovery"] = False
    return options


def _msal_public(grant: OAuthGrantSettings) -> MsalApplication:
    import msal

    try:
        app: MsalApplication = msal.PublicClientApplication(grant.client_id, **_msal_options(grant))
        return app
    except ValueError as error:
        raise OAuthError(f"Microsoft authority unusable: {error}", signed_out=False) from None


def _msal_confidential(grant: OAuthGrantSettings) -> MsalApplication:
    import msal

    credential: str | dict[str, str] = grant.client_secret
    if grant.certificate_file:
        credential = {
            "private_key": Path(grant.certificate_file).read_text(encoding="utf-8"),
            "thumbprint": grant.certificate_thumbprint,
        }
    try:
        # A new application (and so an empty token cache) each time: after a 401 a cached token
        # would be handed back instead of a new one.
        app: MsalApplication = msal.ConfidentialClientApplication(
            grant.client_id, client_credential=credential, **_msal_options(grant)
        )
        return app
    except ValueError as error:
        raise OAuthError(f"Microsoft authority unusable: {error}", signed_out=False) from None


def _microsoft_fetch(grant: OAuthGrantSettings, refresh_token: str, now: datetime) -> Token:
    scopes = list(scopes_of(grant))
    try:
        if grant.effective_flow() == "client_credentials":
            result = _msal_confidential(grant).acquire_token_for_client(scopes=scopes)
        else:
            result = _msal_public(grant).acquire_token_by_refresh_token(refresh_token, scopes=scopes)
    except OSError as error:  # requests' ConnectionError is an OSError
        raise OAuthError(f"Microsoft token endpoint unreachable: {type(error).__name__}", signed_out=False) from None
    return _msal_token(result, now, refresh_token)


def _msal_error(result: dict[str, Any]) -> str:
    return _described(str(result.get("error", "")), str(result.get("error_description", "")))


def _msal_token(result: dict[str, Any], now: datetime, refresh_token: str) -> Token:
    if "access_token" not in result:
        code = str(result.get("error", ""))
        raise OAuthError(_msal_error(result), signed_out=code in SIGNED_OUT_ERRORS or not code)
    claims = result.get("id_token_claims") or {}
    return Token(
        access_token=str(result["access_token"]),
        expires_at=now + timedelta(seconds=int(result.get("expires_in", 3600))),
        refresh_token=str(result.get("refresh_token") or refresh_token),
        account=str(claims.get("preferred_username", "")),
        scopes=tuple(str(result.get("scope", "")).split()),
    )


# -- Google (google-auth) -----------------------------------------------------------------------


def _google_request(grant: OAuthGrantSettings) -> Request:
    from google.auth.transport.requests import Request

    return Request(session=_session(grant))


def _google_fetch(grant: OAuthGrantSettings, refresh_token: str, now: datetime) -> Token:
    from google.auth import exceptions
    from google.oauth2 import credentials as user_credentials
    from google.oauth2 import service_account

    scopes = list(scopes_of(grant))
    credentials: Credentials
    if grant.effective_flow() == "service_account":
        try:
            info = json.loads(Path(grant.service_account_file).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise OAuthError(f"service account key unreadable: {type(error).__name__}", signed_out=True) from None
        if grant.token_endpoint:
            info["token_uri"] = grant.token_endpoint
        credentials = service_account.Credentials.from_service_account_info(info, scopes=scopes, subject=grant.subject)
        account = grant.subject
    else:
        credentials = user_credentials.Credentials(
            token=None,
            refresh_token=refresh_token,
            token_uri=grant.token_endpoint or GOOGLE_TOKEN_URI,
            client_id=grant.client_id,
            client_secret=grant.client_secret or None,
            scopes=scopes,
        )
        account = ""
    try:
        credentials.refresh(_google_request(grant))
    except exceptions.RefreshError as error:
        raise OAuthError(f"Google refused: {_google_reason(error)}", signed_out=True) from None
    except exceptions.TransportError as error:
        raise OAuthError(f"Google token endpoint unreachable: {type(error).__name__}", signed_out=False) from None
    # google-auth dates the expiry by the system clock; keep the lifetime, date it by ours.
    expiry = credentials.expiry
    lifetime = expiry.replace(tzinfo=UTC) - datetime.now(UTC) if expiry is not None else timedelta(hours=1)
    expires_at = now + lifetime
    return Token(
        access_token=str(credentials.token),
        expires_at=expires_at,
        refresh_token=str(getattr(credentials, "refresh_token", "") or refresh_token),
        account=account,
        scopes=tuple(scopes),
    )


def _google_reason(error: Exception) -> str:
    # RefreshError(message, response_body): the message is "invalid_grant: <description>".
    return str(error.args[0] if error.args else error).splitlines()[0][:300]
