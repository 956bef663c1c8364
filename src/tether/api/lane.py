"""Waited adds answered before routing.

A deploy script or CI job adds its services with `POST …/services?wait=N` and waits for the
answer: that call is what provisioning through Tether costs (issue 12: overhead per provision
under 10 ms). FastAPI's own per-request work around it — routing past the routes before it,
solving the dependencies, validating the query, path and body, encoding the answer — costs ~1 ms
on these machines, a tenth of that budget, for a call whose shape never changes. `WaitedAdds`
answers it without going through FastAPI: the same caller check, the same model of the body, the
same action (`answer`, the route's own function), the same error answers.

It takes only what it can prove FastAPI would accept: a known caller (kept as signed in, not
expired, since tokens and sessions last changed: `tether.api.kept`), a JSON body of at most
`MAX_LANE_BODY` bytes with its length declared that `ServiceIn` accepts, names that the route's
path parameters accept, and a query of exactly `wait=N` (0 ≤ N ≤ 60). Anything else — a first
call, a long or chunked body, a body or name FastAPI would refuse — goes on to FastAPI with the
body as it was sent, and FastAPI answers it (with its own error, should it refuse it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tether.api.auth import SignedIn
from tether.api.kept import caller_key, unexpired
from tether.api.limits import replaying
from tether.api.models import ENVIRONMENT_NAME, MAX_WAIT, PLAIN, PROJECT_NAME, ServiceIn
from tether.errors import TetherError
from tether.store.db import Store
from tether.store.readcache import ReadCache

#: `POST` here is an add (the route `add_service`)
ADD_PATH = re.compile(r"/api/v1/projects/([^/]+)/environments/([^/]+)/services")
#: the only query taken: `wait`, a number of seconds FastAPI's `Wait` (0 to 60) accepts
WAIT_QUERY = re.compile(rb"wait=(\d{1,2}(?:\.\d{1,6})?)")
#: an add's body is a few dozen bytes; a longer one is FastAPI's to judge
MAX_LANE_BODY = 4096
#: the pattern of the route's path parameters (`ProjectPath`, `EnvPath`)
_PLAIN = re.compile(PLAIN)

#: the route's own function: the answer to a waited add by `caller` of `body` to PROJECT/ENV
Answer = Callable[[SignedIn, Request, str, str, ServiceIn, float], Awaitable[dict[str, Any]]]


def _name(value: str, limit: int) -> bool:
    """Whether a path parameter is one FastAPI's `ProjectPath`/`EnvPath` accept."""
    return 0 < len(value) <= limit and _PLAIN.fullmatch(value) is not None


def _json_body(headers: list[tuple[bytes, bytes]]) -> tuple[int | None, str | None]:
    """The declared length of a JSON body that may take the lane (None: it may not) and the
    `Authorization` header."""
    length: int | None = None
    json_type = False
    authorization = None
    for name, value in headers:
        if name == b"content-length":
            if length is not None or not value.isdigit():
                return None, None  # two lengths, or a strange one: FastAPI's to judge
            length = int(value)
        elif name == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            json_type = media == b"application/json"
        elif name == b"transfer-encoding":
            return None, None
        elif name == b"authorization":
            authorization = value.decode("latin-1")
    if not json_type or length is None or length > MAX_LANE_BODY:
        return None, None
    return length, authorization


class WaitedAdds:
    """ASGI middleware in front of the API's routing: waited adds by known callers answered by
    `answer`; everything else passes through untouched (see the module doc)."""

    def __init__(self, app: ASGIApp, *, store: Store, callers: ReadCache[SignedIn],
                 answer: Answer, error: Callable[[TetherError], Response]) -> None:
        # it reads the callers' version with the data version (`Store.local_versions`)
        if callers.version != store.auth_version:
            raise ValueError("WaitedAdds needs the callers kept by Store.auth_version")
        self.app = app
        self.store = store
        self.callers = callers
        self.answer = answer
        self.error = error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # only where the store's version is a local read: elsewhere it would block the loop
        path = ADD_PATH.fullmatch(scope["path"]) if scope["type"] == "http" else None
        wait = WAIT_QUERY.fullmatch(scope["query_string"]) if path is not None else None
        if (wait is None or scope["method"] != "POST" or not self.store.version_is_local
                or float(wait[1]) > MAX_WAIT or not _name(path[1], PROJECT_NAME)
                or not _name(path[2], ENVIRONMENT_NAME)):
            await self.app(scope, receive, send)
            return
        length, authorization = _json_body(scope["headers"])
        caller = (None if length is None
                  else self.callers.peek(caller_key(authorization),
                                         self.store.local_versions()[1]))
        if caller is None or not unexpired(caller):
            await self.app(scope, receive, send)
            return
        body, receive = await _read(receive)
        try:
            asked = ServiceIn.model_validate(json.loads(body))
        except (ValueError, ValidationError):  # FastAPI says what is wrong with it
            asked = None
        if asked is None or len(body) != length:
            await self.app(scope, _replay(body, receive), send)
            return
        request = Request(scope, receive)
        request.state.session_id = caller.session_id
        request.state.authorization = authorization
        try:
            view = await self.answer(caller, request, path[1], path[2], asked, float(wait[1]))
        except TetherError as exc:
            response = self.error(exc)
        else:
            response = Response(json.dumps(view, ensure_ascii=False, allow_nan=False,
                                           separators=(",", ":")).encode(),
                                201, media_type="application/json")
        await response(scope, receive, send)


async def _read(receive: Receive) -> tuple[bytes, Receive]:
    """The whole request body, and what to receive from then on (the connection's end)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client left: no body to speak of
            return b"".join(chunks), replaying(message, receive)
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), receive


def _replay(body: bytes, receive: Receive) -> Receive:
    """`receive`, the body read already first."""
    return replaying({"type": "http.request", "body": body, "more_body": False}, receive)
