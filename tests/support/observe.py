"""Test helpers for `serve`'s HTTP endpoint and alerts: a local webhook receiver that keeps every POSTed
alert, a GET with an optional bearer token, /metrics parsed by prometheus_client.parser, and the
environment that turns the endpoint on; no tests here.

    with WebhookReceiver() as hook:
        daemon = MailcaseDaemon(tmp_path, env=endpoint_env(port, webhook=hook.url))
        ...
        assert hook.states("database") == ["critical", "ok"]
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from support.relay import HOST

TOKEN = "s3cret-scrape-token"


class WebhookReceiver:
    """An HTTP server on a free loopback port that answers 204 to every POST and keeps its JSON body."""

    def __init__(self) -> None:
        alerts: list[dict[str, Any]] = []
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with lock:
                    alerts.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._alerts = alerts
        self._lock = lock
        self._server = ThreadingHTTPServer((HOST, 0), Handler)
        self.url = f"http://{HOST}:{self._server.server_address[1]}/hooks/mailcase"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def alerts(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._alerts)

    def states(self, part: str) -> list[str]:
        """The states the receiver was told for `part`, in order."""
        return [alert["state"] for alert in self.alerts if alert["part"] == part]

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()


def endpoint_env(port: int, *, token_file: Path | None = None, webhook: str = "", **health: str) -> dict[str, str]:
    """MAILCASE_* variables: the endpoint on `port`, checks every half second, `[health]` overrides."""
    env = {
        "MAILCASE_HTTP__ENABLED": "true",
        "MAILCASE_HTTP__PORT": str(port),
        "MAILCASE_HEALTH__CHECK_INTERVAL_SECONDS": "0.5",
    }
    if token_file is not None:
        env["MAILCASE_HTTP__TOKEN_FILE"] = str(token_file)
    if webhook:
        env["MAILCASE_ALERTS__WEBHOOK_URL"] = webhook
    env.update({f"MAILCASE_HEALTH__{key.upper()}": value for key, value in health.items()})
    return env


def get(port: int, path: str, *, token: str | None = None) -> tuple[int, str]:
    """GET http://127.0.0.1:port/path; (status, body), 4xx and 5xx included."""
    request = urllib.request.Request(f"http://{HOST}:{port}{path}")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def scrape(port: int, *, token: str | None = None) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics parsed: (sample name, sorted labels) → value."""
    status, body = get(port, "/metrics", token=token)
    assert status == 200, body
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels` (0 when there are none yet)."""
    wanted = set(labels.items())
    return sum(value for (sample, found), value in samples.items() if sample == name and wanted <= set(found))
