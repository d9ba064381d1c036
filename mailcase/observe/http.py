"""The HTTP endpoint of `serve`: /healthz, /readyz and /metrics as a Starlette app, served by uvicorn as a
task of the daemon's own event loop; it only reads (checks run in worker threads) and never logs a token.

uvicorn's `Server.serve()` would take over SIGTERM and SIGINT with `signal.signal`, replacing the
daemon's own handlers for its graceful stop; `_EmbeddedServer` leaves signals to the daemon (the way
uvicorn is embedded in other asyncio programs). The socket is bound here, so a port in use is our clear
error at start, not uvicorn's `sys.exit`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from mailcase.errors import ConfigError
from mailcase.observe.readiness import Readiness

log = logging.getLogger(__name__)

START_SECONDS = 10.0
Handler = Callable[[Request], Awaitable[Response]]


def endpoint_app(
    *, check: Callable[[], Readiness], metrics: Callable[[], bytes], content_type: str, token: str
) -> Starlette:
    """/healthz (200 while the process runs), /readyz (200 or 503; `?format=json`), /metrics. Every path
    asks for `Authorization: Bearer <token>` when a token is set."""

    def guarded(handler: Handler) -> Handler:
        async def run(request: Request) -> Response:
            if token and not _bearer_matches(request.headers.get("authorization", ""), token):
                return PlainTextResponse("a bearer token is required\n", status_code=401,
                                         headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
            return await handler(request)

        return run

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> Response:
        readiness = await asyncio.to_thread(check)
        status = 200 if readiness.ready else 503
        if request.query_params.get("format") == "json":
            return JSONResponse(readiness.as_json(), status_code=status)
        return PlainTextResponse(readiness.text(), status_code=status)

    async def scrape(request: Request) -> Response:
        body = await asyncio.to_thread(metrics)
        return Response(body, media_type=content_type)

    return Starlette(
        routes=[
            Route("/healthz", guarded(healthz)),
            Route("/readyz", guarded(readyz)),
            Route("/metrics", guarded(scrape)),
        ]
    )


def _bearer_matches(header: str, token: str) -> bool:
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class EndpointServer:
    """Start with `await start()` on the daemon's loop; `await stop()` at its end."""

    def __init__(self, app: Starlette, *, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._socket = _bind(host, port)
        self.address: tuple[str, int] = self._socket.getsockname()[:2]
        config = uvicorn.Config(
            app, lifespan="off", log_config=None, access_log=False, server_header=False, proxy_headers=False,
        )  # fmt: skip
        self._server = _EmbeddedServer(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._server.serve(sockets=[self._socket]), name="http-endpoint"
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_SECONDS
        while not self._server.started and not self._task.done() and loop.time() < deadline:
            await asyncio.sleep(0.01)
        if not self._server.started:
            raise RuntimeError(f"the HTTP endpoint did not start on {self.host}:{self.port}")
        log.info("HTTP endpoint on http://%s:%d (/healthz, /readyz, /metrics)", *self.address)

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task
        self._socket.close()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise ConfigError("http.port", f"cannot listen on {host}:{port}: {error.strerror}") from None
    return sock
