"""`mailcase oauth login NAME` and `mailcase oauth status [--json]`: sign a grant in, and show every grant's health; never prints a token."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import Any

from mailcase.app import App
from mailcase.commands.output import emit_json
from mailcase.errors import OAuthError, UsageError
from mailcase.oauth.providers import DeviceFlow, scopes_of
from mailcase.oauth.tokens import StoredGrant


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser("oauth", help="OAuth2 grants for IMAP and outbound SMTP (Microsoft 365, Google Workspace)")
    group = parser.add_subparsers(dest="oauth_command", metavar="ACTION", required=True)
    p = group.add_parser(
        "login",
        help="sign a grant in: the device-code flow for delegated grants (prints a URL and a code, waits), "
        "one token request for app-only ones",
    )
    p.add_argument("name", help="the [oauth.<name>] grant")
    p.set_defaults(handler=run_login)
    p = group.add_parser("status", help="every grant: state, account, scopes, when its tokens expire, warnings")
    p.add_argument("--json", action="store_true", help="JSON on stdout")
    p.set_defaults(handler=run_status)


def run_login(app: App, args: argparse.Namespace) -> int:
    if args.name not in app.settings.oauth.grants:
        known = ", ".join(sorted(app.settings.oauth.grants)) or "none configured"
        raise UsageError(f"no grant [oauth.{args.name}] ({known})")

    def show(flow: DeviceFlow) -> None:
        print(flow.message or f"To sign in, open {flow.verification_uri} and enter the code {flow.user_code}")
        print(f"Waiting for the sign-in (the code expires at {flow.expires_at:%H:%M} UTC)...", flush=True)

    try:
        stored = app.grants.login(args.name, show=show)
    except OAuthError as error:
        print(f"mailcase: oauth login {args.name}: {error}", file=sys.stderr)
        return 1
    account = f" as {stored.account}" if stored.account else ""
    print(f"signed in{account}; grant {args.name} stored in {app.settings.oauth.token_file}")
    return 0


def grant_statuses(app: App) -> list[dict[str, Any]]:
    """One plain dict per configured grant, for `oauth status` (and the health endpoint)."""
    now = app.clock.now()
    stored = app.grants.stored()
    rows = []
    for name, grant in sorted(app.settings.oauth.grants.items()):

        kept = stored.get(name) or StoredGrant()
        warning = app.grants.expiry_warning(grant, kept, now)
        users = [f"imap:{box.name}" for box in app.settings.imap if box.auth == "oauth2" and box.oauth == name]
        if app.settings.outbound.auth == "oauth2" and app.settings.outbound.oauth == name:
            users.append("outbound")
        rows.append(
            {
                "name": name,
                "provider": grant.provider,
                "flow": grant.effective_flow(),
                "state": kept.state,
                "healthy": kept.state == "ok" and not warning,
                "since": _iso(kept.state_since),
                "error": kept.error,
                "warning": warning,
                "account": kept.account or grant.subject,
                "scopes": list(kept.scopes or scopes_of(grant)),
                "access_token_expires_at": _iso(kept.expires_at),
                "has_refresh_token": bool(kept.refresh_token),
                "refresh_token_expires_at": _iso(kept.refresh_expires_at),
                "client_secret_expires": grant.client_secret_expires or None,
                "used_by": users,
            }
        )
    return rows


def run_status(app: App, args: argparse.Namespace) -> int:
    rows = grant_statuses(app)
    if args.json:
        emit_json(rows)
        return 0
    if not rows:
        print("no [oauth.<name>] grants configured")
        return 0
    for row in rows:
        mark = "OK  " if row["healthy"] else ("WARN" if row["state"] == "ok" else "FAIL")
        print(f"{mark} {row['name']} ({row['provider']}, {row['flow']}): {row['state']}" + (f" since {row['since']}" if row["since"] else ""))
        print(f"     account: {row['account'] or '-'}; used by: {', '.join(row['used_by']) or '-'}")
        print(f"     scopes: {' '.join(row['scopes']) or '-'}")
        print(
            f"     access token expires: {row['access_token_expires_at'] or '-'}; refresh token: "
            + ("yes" if row["has_refresh_token"] else "no")
            + (f", expires {row['refresh_token_expires_at']}" if row["refresh_token_expires_at"] else "")
        )
        if row["client_secret_expires"]:
            print(f"     client secret expires: {row['client_secret_expires']}")
        if row["error"]:
            print(f"     error: {row['error']}")
        if row["warning"]:
            print(f"     warning: {row['warning']}")
    return 0


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
