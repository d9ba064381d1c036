"""Asks a running daemon's /readyz for its readiness (what `mailcase health` prints); it reads nothing
else, never touches the database, and never prints or logs the bearer token."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from mailcase.config import HttpSettings


class EndpointUnusable(Exception):
    """The daemon could not be asked: `reachable` False when nothing answered at all."""

    def __init__(self, message: str, *, reachable: bool) -> None:
        super().__init__(message)
        self.reachable = reachable


@dataclass(frozen=True, slots=True)
class Answer:
    url: str
    report: dict[str, Any]


def readyz_url(http: HttpSettings) -> str:
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(http.host, http.host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{http.port}/readyz?format=json"


def ask_readiness(http: HttpSettings, *, timeout: float) -> Answer:
    """The daemon's readiness report (JSON of observe.readiness.Readiness), 200 and 503 alike."""
    url = readyz_url(http)
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    if http.token:
        request.add_header("Authorization", f"Bearer {http.token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as error:
        if error.code != 503:
            reason = "the token was refused: check [http] token_file" if error.code == 401 else error.reason
            raise EndpointUnusable(f"{url} answered {error.code}: {reason}", reachable=True) from None
        body = error.read()
    except (urllib.error.URLError, OSError) as error:
        why = getattr(error, "reason", error)
        raise EndpointUnusable(f"the daemon is not reachable at {url.split('?')[0]}: {why}", reachable=False) from None
    try:
        report = json.loads(body)
    except ValueError:
        raise EndpointUnusable(f"{url} did not answer with mailcase's JSON", reachable=True) from None
    if not isinstance(report, dict) or "status" not in report:
        raise EndpointUnusable(f"{url} did not answer with mailcase's JSON", reachable=True)
    return Answer(url=url, report=report)
