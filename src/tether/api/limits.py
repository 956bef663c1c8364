"""Limits on what a request may bring, enforced before anything reads it.

`BodyLimit` is the outermost layer of the control plane's HTTP app (API, Services view): a
request body above `MAX_BODY` is refused with 413 before authentication and before it is read
into memory. A declared `Content-Length` above the cap is refused at once, without reading a
byte of the body; a chunked body (no length declared) is counted as it streams and refused as
soon as it passes the cap, so at most `MAX_BODY` bytes of it are ever held. Either way the answer
closes the connection: the rest of the body is never read.

`install` also gives the answers Starlette and FastAPI make themselves (an unknown path, a
method a path does not take, a body that is not JSON) the API's error shape,
`{"error": {"code", "message"}}`, and a 405's `Allow` header every method of the path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: the largest request body accepted (bytes). The largest legitimate one is a variable value
#: of at most 32 KiB, or a cluster with its settings: 1 MiB leaves room and still keeps a flood
#: of big bodies from growing the server.
MAX_BODY = 1024 * 1024

#: uploads streamed by their route (after authentication, never held whole): `PUT` of a dump to
#: restore. Their route counts what it reads against `MAX_UPLOAD` itself.
STREAMED = re.compile(r"/api/v1/projects/[^/]+/environments/[^/]+/services/[^/]+/upload")
#: the largest upload (a dump to restore): 64 GiB
MAX_UPLOAD = 64 << 30

#: error codes of the answers made here
TOO_LARGE = "too_large"
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def human_size(size: int) -> str:
    for unit, factor in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} bytes"


def _framing(headers: Iterable[tuple[bytes, bytes]]) -> tuple[int | None, bool]:
    """The largest `Content-Length` the request declares (None: none that is a number) and
    whether its body is chunked. The HTTP server already refused malformed framing; several
    lengths are judged by the largest, so no way of declaring one slips past the cap."""
    length: int | None = None
    chunked = False
    for name, value in headers:
        if name.lower() == b"content-length":
            text = value.strip()
            if text.isdigit():
                length = max(length or 0, int(text))
        elif name.lower() == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    return length, chunked


def too_large_response(limit: int) -> JSONResponse:
    """413 in the API's error shape. `Connection: close`: the server then stops reading the
    connection, so the rest of the body is never received."""
    return JSONResponse(
        {"error": {"code": TOO_LARGE,
                   "message": f"the request body is larger than {human_size(limit)}: send less "
                              "(e.g. a shorter value, fewer settings)"}},
        413, headers={"Connection": "close"})


def replaying(first: Message, receive: Receive) -> Receive:
    """`receive`, with `first` (a message read from it already, e.g. the whole body) first."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return first
        return await receive()

    return replayed


class BodyLimit:
    """Pure ASGI middleware capping request bodies at `limit` bytes (see the module doc)."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (
                scope.get("method") == "PUT" and STREAMED.fullmatch(scope.get("path", ""))):
            await self.app(scope, receive, send)
            return
        length, chunked = _framing(scope.get("headers") or ())
        if length is not None and length > self.limit:
            await too_large_response(self.limit)(scope, receive, send)
            return
        if not chunked:
            # No body, or one the server delivers exactly `length` (<= limit) bytes of.
            await self.app(scope, receive, send)
            return
        first = await self._read_chunked(receive)
        if first is None:
            await too_large_response(self.limit)(scope, receive, send)
            return
        await self.app(scope, replaying(first, receive), send)

    async def _read_chunked(self, receive: Receive) -> Message | None:
        """The whole chunked body as one message (or the client's disconnect), or None as soon
        as it passes the limit. Holding it here, at most `limit` bytes, is what every JSON route
        would do anyway; the app then reads it as one piece."""
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return message  # the client went away: the app sees that as usual
            chunk = message.get("body", b"")
            if len(body) + len(chunk) > self.limit:
                return None
            body += chunk
            if not message.get("more_body", False):
                return {"type": "http.request", "body": bytes(body), "more_body": False}


def _allowed_methods(app: FastAPI, path: str) -> list[str]:
    """Every method the API document gives this path. Starlette's 405 names only the methods of
    the first route that matched the path, while e.g. GET and PATCH of a project are two."""
    methods: set[str] = set()
    for template, item in app.openapi().get("paths", {}).items():
        pattern = "".join("[^/]+" if part.startswith("{") else re.escape(part)
                          for part in re.split(r"(\{[^}]+\})", template))
        if re.fullmatch(pattern, path):
            methods |= {method.upper() for method in item if method.upper() in HTTP_METHODS}
    return sorted(methods)


def install(app: FastAPI, limit: int = MAX_BODY) -> None:
    """Cap request bodies (outermost, before authentication) and answer the framework's own
    errors on `/api/` in the API's error shape (elsewhere, e.g. the Services view, as before)."""

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if not request.url.path.startswith("/api/"):
            return await http_exception_handler(request, exc)
        headers = dict(exc.headers or {})
        detail: Any = exc.detail
        if exc.status_code == 405:
            allowed = ", ".join(_allowed_methods(app, request.url.path))
            headers["Allow"] = allowed
            detail = f"{request.method} is not taken here: use {allowed or 'another path'}"
        code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
                413: TOO_LARGE}.get(exc.status_code, "error")
        message = detail if isinstance(detail, str) else json.dumps(detail)
        if exc.status_code == 400 and message == "There was an error parsing the body":
            message = "the request body is not valid JSON (UTF-8): send a JSON object"
        return JSONResponse({"error": {"code": code, "message": message}}, exc.status_code,
                            headers=headers)

    app.add_middleware(BodyLimit, limit=limit)
