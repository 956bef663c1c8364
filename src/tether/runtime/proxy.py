"""The stable address of each environment: a small HTTP/1.1 reverse proxy.

Each environment keeps one port for its whole life, while every release of its application runs
on a fresh port. The proxy forwards each request to whatever release is current *when the request
arrives*, so switching releases is one assignment and no request is ever refused or cut.

All proxies share one background thread running an asyncio loop, one `uvicorn.Server` per
environment, and one `httpx.AsyncClient` (with its connection pool) to talk to the releases.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any, Protocol

import httpx
import uvicorn

from tether.errors import OperationError

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

# Headers that describe one connection, not the message: never forwarded (RFC 9110 7.6.1).
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Methods that may be sent twice without harm: retried when a pooled connection turns out stale.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
CONNECT_ATTEMPTS = 3


class Upstream(Protocol):
    """A running release, as the proxy sees it."""

    release_id: int
    port: int

    def exit_reason(self) -> str | None:
        """Why the release is not running (None while it runs)."""
        ...


class Router(Protocol):
    """Picks the release for a request and counts it as in flight until `done`."""

    def acquire(self, environment_key: str) -> Upstream | None: ...

    def done(self, upstream: Upstream) -> None: ...


def _plain(status: int, message: str) -> tuple[dict[str, Any], dict[str, Any]]:
    body = (message + "\n").encode()
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    return start, {"type": "http.response.body", "body": body}


def _connection_tokens(headers: list[tuple[bytes, bytes]]) -> set[bytes]:
    """Header names listed in `Connection:` are hop-by-hop too."""
    names: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            names.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return names


def _forward_headers(scope: Scope) -> list[tuple[bytes, bytes]]:
    """The client's headers minus hop-by-hop ones, plus the usual X-Forwarded-* trio."""
    raw: list[tuple[bytes, bytes]] = [(n.lower(), v) for n, v in scope["headers"]]
    drop = HOP_BY_HOP | _connection_tokens(raw) | {b"content-length", b"expect"}
    out = [(n, v) for n, v in raw if n not in drop]
    names = {n for n, _ in out}
    client = scope.get("client")
    if client:
        previous = [v for n, v in out if n == b"x-forwarded-for"]
        out = [(n, v) for n, v in out if n != b"x-forwarded-for"]
        chain = b", ".join([*previous, client[0].encode()])
        out.append((b"x-forwarded-for", chain))
    if b"x-forwarded-proto" not in names:
        out.append((b"x-forwarded-proto", scope.get("scheme", "http").encode()))
    host = next((v for n, v in out if n == b"host"), None)
    if host is not None and b"x-forwarded-host" not in names:
        out.append((b"x-forwarded-host", host))
    return out


def _response_headers(response: httpx.Response) -> list[tuple[bytes, bytes]]:
    raw = [(n.lower(), v) for n, v in response.headers.raw]
    drop = HOP_BY_HOP | _connection_tokens(raw)
    return [(n, v) for n, v in raw if n not in drop]


class ProxyApp:
    """ASGI app of one environment's stable address."""

    def __init__(self, environment_key: str, router: Router, host: ProxyHost) -> None:
        self.environment_key = environment_key
        self.router = router
        self.host = host

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan is off; websockets are not proxied
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        await self._forward(scope, bytes(body), send)

    async def _forward(self, scope: Scope, body: bytes, send: Send) -> None:
        method: str = scope["method"]
        target = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        headers = _forward_headers(scope)
        failure = ""
        for attempt in range(CONNECT_ATTEMPTS):
            upstream = self.router.acquire(self.environment_key)
            if upstream is None:
                msg = f"no release of {self.environment_key} is running yet: deploy it"
                await self._reply(send, 503, msg)
                return
            try:
                client = self.host.client
                url = httpx.URL(
                    scheme="http", host="127.0.0.1", port=upstream.port, raw_path=target
                )
                request = client.build_request(method, url, headers=headers, content=body)
                response = await client.send(request, stream=True)
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
                # Nothing was answered. A refused connect is always safe to retry; a stale
                # pooled connection only for idempotent methods.
                self.router.done(upstream)
                reason = upstream.exit_reason()
                if reason is not None:
                    failure = (
                        f"release {upstream.release_id} of {self.environment_key} is not "
                        f"running ({reason}): deploy it again"
                    )
                    break
                failure = (
                    f"release {upstream.release_id} of {self.environment_key} could not be "
                    f"reached: {type(exc).__name__}"
                )
                if not isinstance(exc, httpx.ConnectError) and method not in IDEMPOTENT:
                    break
                await asyncio.sleep(0.05 * (attempt + 1))
                continue
            except httpx.TimeoutException:
                self.router.done(upstream)
                await self._reply(send, 504, f"{self.environment_key} did not answer in time")
                return
            except httpx.HTTPError as exc:
                self.router.done(upstream)
                await self._reply(send, 502, f"{self.environment_key}: {type(exc).__name__}")
                return
            try:
                await send(
                    {
                        "type": "http.response.start",
                        "status": response.status_code,
                        "headers": _response_headers(response),
                    }
                )
                async for chunk in response.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
            finally:
                await response.aclose()
                self.router.done(upstream)
            return
        await self._reply(send, 502, failure)

    @staticmethod
    async def _reply(send: Send, status: int, message: str) -> None:
        start, body = _plain(status, message)
        await send(start)
        await send(body)


class ProxyServer:
    """One running stable address (a uvicorn server on the shared loop)."""

    def __init__(self, server: uvicorn.Server, future: Future[None], port: int) -> None:
        self.server = server
        self.future = future
        self.port = port


class ProxyHost:
    """The background loop thread and HTTP client shared by every stable address."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        assert self._client is not None
        return self._client

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="tether-proxy", daemon=True)
                thread.start()
                # No read timeout by default: a slow page is the app's business, and `stop`
                # bounds how long a release may keep a request.
                self._client = httpx.AsyncClient(
                    timeout=httpx.Timeout(None, connect=5.0),
                    limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100),
                    follow_redirects=False,
                    trust_env=False,  # never send app traffic through the operator's HTTP proxy
                )
                self._loop, self._thread = loop, thread
            return self._loop

    def serve(self, sock: socket.socket, app: ProxyApp) -> ProxyServer:
        """Serve `app` on an already bound and listening socket; returns once it accepts."""
        loop = self._ensure_loop()
        config = uvicorn.Config(
            app,
            interface="asgi3",
            lifespan="off",
            ws="none",
            log_config=None,  # never reconfigure the host process's logging
            log_level=None,
            server_header=False,  # the app's own Server/Date headers are forwarded
            date_header=False,
            proxy_headers=False,
            timeout_graceful_shutdown=5,
        )
        # Set after construction: passing access_log=False would silence the global
        # "uvicorn.access" logger, which the control plane's own API server also uses.
        config.access_log = False
        server = uvicorn.Server(config)
        future = asyncio.run_coroutine_threadsafe(server.serve(sockets=[sock]), loop)
        deadline = time.monotonic() + 10
        while not server.started:
            if future.done():
                future.result()  # raises the reason it could not start
                raise OperationError("the stable address stopped while starting")
            if time.monotonic() > deadline:
                server.should_exit = True
                raise OperationError("the stable address did not start within 10 s")
            time.sleep(0.005)
        return ProxyServer(server, future, sock.getsockname()[1])

    def close_server(self, proxy: ProxyServer, timeout: float = 15.0) -> None:
        """Stop accepting, let requests in flight finish (bounded), close the socket."""
        proxy.server.should_exit = True  # polled by uvicorn's main loop every 0.1 s
        with contextlib.suppress(Exception):
            proxy.future.result(timeout=timeout)
        if not proxy.future.done():
            proxy.server.force_exit = True
            with contextlib.suppress(Exception):
                proxy.future.result(timeout=2)

    def close(self) -> None:
        """Close the HTTP client and stop the loop thread (servers must be closed first)."""
        with self._lock:
            loop, thread, client = self._loop, self._thread, self._client
            self._loop = self._thread = self._client = None
        if loop is None:
            return
        if client is not None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(client.aclose(), loop).result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=5)
        if not loop.is_running():
            loop.close()
