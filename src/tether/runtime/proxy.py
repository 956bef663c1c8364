"""The stable address of each environment: a small HTTP/1.1 reverse proxy.

Each environment keeps one port for its whole life, while every release of its application runs
on a fresh port. The proxy forwards each request to whatever release is current *when the request
arrives*, so switching releases is one assignment and no request is ever refused or cut.

All proxies (each environment's own port, and the front door, which finds the environment by
the request's host name) share one background thread running an asyncio loop with one
`uvicorn.Server` each. Each proxied request goes to the release through httpx, on a loopback
connection of its own.
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
from tether.frontdoor import FrontDoor

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
# Methods that may be sent twice without harm: retried on the current release when the one
# they were sent to went away without answering (e.g. killed after its drain timeout).
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
ATTEMPTS = 3
CONNECT_TIMEOUT = 5.0
READ_SIZE = 65536


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

    def knows(self, environment_key: str) -> bool:
        """Whether the environment exists here (the front door answers 404 for others)."""
        ...


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


class UpstreamUnreachable(Exception):
    """No answer from the release. `sent` says whether the request may have reached the app."""

    def __init__(self, reason: str, *, sent: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sent = sent


def upstream_client() -> httpx.AsyncClient:
    """The proxies' HTTP client to releases. No kept connections: a connection never outlives
    the request it was opened for, so none goes stale when a release is replaced or stopped,
    and none is reused just as the app closes it (which would fail a POST that cannot be
    retried). No read timeout: a request may legitimately take long."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(None, connect=CONNECT_TIMEOUT),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=0),
        follow_redirects=False,
        trust_env=False,  # never an HTTP(S)_PROXY from Tether's environment
    )


async def open_upstream(client: httpx.AsyncClient, port: int, method: str, target: bytes,
                        headers: list[tuple[bytes, bytes]], body: bytes) -> httpx.Response:
    """Send the whole request to the release on `port` and return its response with the body
    still to read (`aiter_raw`, then `aclose`). The request is built without the client's
    default headers (User-Agent, Accept-Encoding…): the app sees the browser's."""
    url = httpx.URL(f"http://127.0.0.1:{port}{target.decode('latin-1')}")
    if not any(name == b"host" for name, _ in headers):
        headers = [*headers, (b"host", b"127.0.0.1")]
    request = httpx.Request(method, url, headers=headers,
                            content=body if body or method in ("POST", "PUT", "PATCH") else None)
    try:
        return await client.send(request, stream=True)
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise UpstreamUnreachable(type(exc).__name__, sent=False) from exc
    except httpx.TransportError as exc:
        raise UpstreamUnreachable(str(exc) or type(exc).__name__, sent=True) from exc


class ProxyApp:
    """ASGI app of one environment's stable address (`environment_key`), or of the front door
    (`door`), which finds the environment by the request's host name."""

    def __init__(self, environment_key: str | None, router: Router,
                 door: FrontDoor | None = None) -> None:
        assert (environment_key is None) != (door is None)
        self.environment_key = environment_key
        self.router = router
        self.door = door
        #: the client to releases, shared by every proxy on the loop (`ProxyHost.serve`)
        self.client: httpx.AsyncClient | None = None

    def _key(self, scope: Scope) -> tuple[str | None, str]:
        """The environment a request is for, or None and why not."""
        if self.environment_key is not None:
            return self.environment_key, ""
        assert self.door is not None
        host = next((v.decode("latin-1") for n, v in scope["headers"] if n.lower() == b"host"), "")
        key = self.door.key_for_host(host)
        example = self.door.host_for("PROJECT", "ENV")
        if key is None:
            return None, (f"this is Tether's front door: ask for an environment by its host name, "
                          f"{example} (not {host or 'no Host header'})")
        if not self.router.knows(key):
            project, _, env = key.partition("/")
            return None, (f"no release of {key} has been deployed here (is there an environment "
                          f"{env} in a project {project}? deploy it)")
        return key, ""

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
        key, why_not = self._key(scope)
        if key is None:
            await self._reply(send, 404, why_not)
            return
        method: str = scope["method"]
        target = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        headers = _forward_headers(scope)
        failure = ""
        for attempt in range(ATTEMPTS):
            upstream = self.router.acquire(key)
            if upstream is None:
                await self._reply(send, 503, f"no release of {key} is running yet: deploy it")
                return
            name = f"release {upstream.release_id} of {key}"
            reason = upstream.exit_reason()
            if reason is not None:  # the current release died: say so rather than retry
                self.router.done(upstream)
                failure = f"{name} is not running ({reason}): deploy it again"
                break
            assert self.client is not None, "served by ProxyHost.serve"
            try:
                response = await open_upstream(self.client, upstream.port, method, target,
                                               headers, body)
            except UpstreamUnreachable as exc:
                self.router.done(upstream)
                failure = f"{name} could not be reached: {exc.reason}"
                # Retry what cannot have reached the app, and idempotent requests: the next
                # attempt goes to the current release, which may have been replaced meanwhile.
                if exc.sent and method not in IDEMPOTENT:
                    break
                await asyncio.sleep(0.05 * attempt)
                continue
            try:
                raw = [(n.lower(), v) for n, v in response.headers.raw]
                drop = HOP_BY_HOP | _connection_tokens(raw)
                await send(
                    {
                        "type": "http.response.start",
                        "status": response.status_code,
                        "headers": [(n, v) for n, v in raw if n not in drop],
                    }
                )
                # raw: the body exactly as the app sent it (still compressed, if it was)
                async for chunk in response.aiter_raw(READ_SIZE):
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
    """The background loop thread shared by every stable address."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: httpx.AsyncClient | None = None

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="tether-proxy", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
                self._client = upstream_client()
            return self._loop

    def serve(self, sock: socket.socket, app: ProxyApp) -> ProxyServer:
        """Serve `app` on an already bound and listening socket; returns once it accepts."""
        loop = self._ensure_loop()
        app.client = self._client
        config = uvicorn.Config(
            app,
            interface="asgi3",
            lifespan="off",
            ws="none",
            http="h11",
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
        """Stop the loop thread (servers must be closed first)."""
        with self._lock:
            loop, thread, client = self._loop, self._thread, self._client
            self._loop = self._thread = self._client = None
        if loop is None:
            return
        if client is not None and loop.is_running():
            closing = asyncio.run_coroutine_threadsafe(client.aclose(), loop)
            with contextlib.suppress(Exception):
                closing.result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=5)
        if not loop.is_running():
            loop.close()
