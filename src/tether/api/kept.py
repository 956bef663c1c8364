"""Repeated reads answered before routing.

Every deploy script, CI job and Divio CLI asks for an environment's variables, again and again,
and the answer changes only when the store does. The API keeps such answers
(`tether.store.readcache`); `KeptAnswers` serves them without going through FastAPI at all —
routing, parameter validation and dependency solving cost ~0.3 ms a request on these machines,
more than the rest of a kept answer together.

It answers only what it can prove it was asked before: a GET of a kept path with exactly the
same path and query, whose `Authorization` header is kept as signed in (and not expired) since
the store last changed, by the same principal. Anything else — a first call, a changed store, an
unknown or refused token, another parameter spelling — goes on to FastAPI, which checks it all
and keeps its answer for next time. It never refuses anything itself.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Hashable
from datetime import UTC, datetime

from starlette.datastructures import URL
from starlette.types import ASGIApp, Receive, Scope, Send

from tether.access import Principal
from tether.api.auth import SignedIn
from tether.store.db import Store
from tether.store.readcache import ReadCache

#: a kept page: its JSON and the next page's cursor (None: the last page)
KeptPage = tuple[bytes, str | None]

#: the GETs whose answers are kept: an environment's variables
KEPT_PATHS = re.compile(r"/api/v1/projects/[^/]+/environments/[^/]+/variables")


def caller_key(authorization: str | None) -> bytes:
    """The key of who an `Authorization` header is (a hash: no secret kept as a key)."""
    return hashlib.sha256((authorization or "").encode()).digest()


def page_key(principal: Principal, scope: Scope) -> Hashable:
    """The key of a kept page: who asked, and exactly what (the path and query as sent)."""
    return principal, scope["path"], scope["query_string"]


def unexpired(caller: SignedIn) -> bool:
    return caller.expires_at is None or caller.expires_at > datetime.now(UTC)


def page_headers(url: URL, after: str | None) -> dict[str, str]:
    """A page's headers beside its JSON: the next page's URL in `Link` (RFC 8288)."""
    if after is None:
        return {}
    return {"Link": f'<{url.include_query_params(after=after)}>; rel="next"'}


class KeptAnswers:
    """ASGI middleware in front of the API's routing: kept answers of `KEPT_PATHS`, sent as
    FastAPI sends them; everything else passes through untouched."""

    def __init__(self, app: ASGIApp, *, store: Store, callers: ReadCache[SignedIn],
                 pages: ReadCache[KeptPage]) -> None:
        # it reads both versions as one consistent pair (`Store.local_versions`): they must be
        # the ones the caches keep their answers by, or a revoked token could be served
        if callers.version != store.auth_version or pages.version != store.data_version:
            raise ValueError("KeptAnswers needs the callers kept by Store.auth_version and the "
                             "pages by Store.data_version")
        self.app = app
        self.store = store
        self.callers = callers
        self.pages = pages

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # only where the store's version is a local read: elsewhere it would block the loop
        if (scope["type"] != "http" or scope["method"] != "GET"
                or not self.store.version_is_local or not KEPT_PATHS.fullmatch(scope["path"])):
            await self.app(scope, receive, send)
            return
        authorization = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break
        versions = self.store.local_versions()  # both in one read
        caller = self.callers.peek(caller_key(authorization), versions[1])
        page = (None if caller is None or not unexpired(caller)
                else self.pages.peek(page_key(caller.principal, scope), versions[0]))
        if page is None:
            await self.app(scope, receive, send)
            return
        body, after = page
        headers = [(b"content-length", str(len(body)).encode()),
                   (b"content-type", b"application/json")]
        if after is not None:  # (a URL costs as much as the rest of the answer)
            headers += [(k.lower().encode(), v.encode("latin-1"))
                        for k, v in page_headers(URL(scope=scope), after).items()]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
