"""The CLI's HTTP client of the Tether REST API (`/api/v1`).

The CLI is a thin client: it never touches the store. This module turns every way a call can go
wrong into the CLI's contract: a refused or bad request (4xx) exits 2 with the API's message, an
unreachable or failing server exits 1, and no configuration exits 2 with how to fix it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from tether import __version__
from tether.cli.output import fail
from tether.config import ClientSettings, ConfigError, load_client_settings

#: seconds for an ordinary call
DEFAULT_TIMEOUT = 30.0
#: seconds to wait for a TCP connection
CONNECT_TIMEOUT = 10.0
#: seconds the server may hold a long-poll (`GET /operations/{id}?wait=`)
LONG_POLL = 10
#: rows asked for per page when following a paged list (every list route takes this many)
SERVER_PAGE = 200
#: rows a list command shows unless told otherwise (`--limit N`, `--all`)
DEFAULT_LIST = 100

NO_CONFIG = (
    "no Tether control plane configured: run `tether up` (it adds a context to "
    "~/.config/tether/config.json) or set TETHER_URL and TETHER_TOKEN"
)


def next_cursor(response: httpx.Response) -> str | None:
    """The `after` cursor of the next page, from the answer's `Link: <URL>; rel="next"`."""
    link = response.links.get("next")
    if not link or not link.get("url"):
        return None
    found = httpx.URL(link["url"]).params.get("after")
    return str(found) if found else None


def seg(value: object) -> str:
    """One URL path segment, quoted (a name can never reach another route)."""
    return quote(str(value), safe="")


def env_path(project: str, env: str) -> str:
    """The API path of one environment of a project."""
    return f"/projects/{seg(project)}/environments/{seg(env)}"


class Client:
    """A bearer-token client of one Tether control plane.

    Every method returns the decoded JSON answer or exits the CLI (see the module docstring);
    `json_mode` makes errors print as one JSON document on stdout as well.
    """

    def __init__(self, settings: ClientSettings, *, json_mode: bool = False,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.url = settings.url.rstrip("/")
        self.json_mode = json_mode
        try:
            self._http = httpx.Client(
                base_url=self.url + "/api/v1",
                headers={"Authorization": f"Bearer {settings.token}",
                         "Accept": "application/json",
                         "User-Agent": f"tether-cli/{__version__}"},
                timeout=httpx.Timeout(DEFAULT_TIMEOUT, connect=CONNECT_TIMEOUT),
                transport=transport,
            )
        except (httpx.InvalidURL, httpx.UnsupportedProtocol):
            self._bad_url()

    @classmethod
    def connect(cls, json_mode: bool = False) -> Client:
        """A client from `TETHER_URL`/`TETHER_TOKEN` or a context of the config `tether up`
        wrote (`TETHER_CONTEXT`, else the current one)."""
        try:
            settings = load_client_settings()
        except ConfigError as exc:
            fail(exc.message, 2, json_mode=json_mode, code=exc.code)
        except (OSError, ValueError) as exc:
            fail(f"cannot read the CLI config ({type(exc).__name__}): run `tether up` again "
                 "to rewrite it, or set TETHER_URL and TETHER_TOKEN", 2,
                 json_mode=json_mode, code="bad_config")
        if settings is None:
            fail(NO_CONFIG, 2, json_mode=json_mode, code="not_configured")
        return cls(settings, json_mode=json_mode)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _bad_url(self) -> None:
        fail(f"invalid Tether URL {self.url!r}: set TETHER_URL to e.g. http://127.0.0.1:8070, "
             "or run `tether up` to rewrite the config", 2, json_mode=self.json_mode,
             code="bad_config")

    # -- calls ---------------------------------------------------------------------------------

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                body: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        """Call the API; `path` is below `/api/v1`. Returns the decoded JSON answer."""
        return self._answer(self._send(method, path, params=params, body=body,
                                       timeout=timeout))

    def get_list(self, path: str, *, params: dict[str, Any] | None = None,
                 limit: int | None = None) -> tuple[list[Any], bool]:
        """A paged list (`--limit N`, `--all`): its pages, followed through each answer's
        `Link: <…?after=CURSOR>; rel="next"`, until `limit` rows (None: every row). Answers
        the rows and whether the list holds more than were read."""
        rows: list[Any] = []
        query = dict(params or {})
        while True:
            want = SERVER_PAGE if limit is None else min(SERVER_PAGE, limit - len(rows))
            response = self._send("GET", path, params={**query, "limit": want})
            page = self._answer(response)
            rows.extend(page)
            after = next_cursor(response)
            if after is None:
                return rows, False
            if limit is not None and len(rows) >= limit:
                return rows, True
            query["after"] = after

    def _send(self, method: str, path: str, *, params: dict[str, Any] | None = None,
              body: dict[str, Any] | None = None, timeout: float | None = None
              ) -> httpx.Response:
        try:
            response = self._http.request(
                method, path, params=params, json=body,
                timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else
                httpx.Timeout(timeout, connect=CONNECT_TIMEOUT))
        except (httpx.ConnectError, httpx.ConnectTimeout):
            fail(f"cannot reach Tether at {self.url}: is `tether up` running?", 1,
                 json_mode=self.json_mode, code="unreachable")
        except httpx.TimeoutException:
            fail(f"Tether at {self.url} did not answer in time: try again, and if it "
                 "persists look at the output of `tether up`", 1,
                 json_mode=self.json_mode, code="timeout")
        except (httpx.InvalidURL, httpx.UnsupportedProtocol):
            self._bad_url()
        except httpx.HTTPError as exc:
            fail(f"cannot talk to Tether at {self.url}: {type(exc).__name__}: {exc}", 1,
                 json_mode=self.json_mode, code="unreachable")
        return response

    def _answer(self, response: httpx.Response) -> Any:
        status = response.status_code
        try:
            data = response.json()
        except ValueError:
            data = None
        if status < 400:
            if data is None and response.content:
                fail(f"unexpected answer from {self.url} (HTTP {status}, not JSON): does "
                     "TETHER_URL point at the Tether API?", 1, json_mode=self.json_mode,
                     code="bad_response")
            return data
        code, message = "error", ""
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            code = str(data["error"].get("code") or code)
            message = str(data["error"].get("message") or "")
        if not message:
            message = (f"HTTP {status} from {response.request.method} {response.request.url.path}"
                       ": does TETHER_URL point at the Tether API?")
        if status < 500:  # 401 included: a missing or wrong token is fixed by the user
            fail(message, 2, json_mode=self.json_mode, code=code)
        fail(f"Tether failed (HTTP {status}): {message}", 1, json_mode=self.json_mode,
             code=code)

    def get(self, path: str, *, params: dict[str, Any] | None = None,
            timeout: float | None = None) -> Any:
        return self.request("GET", path, params=params, timeout=timeout)

    def post(self, path: str, body: dict[str, Any] | None = None, *,
             params: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        return self.request("POST", path, params=params, body=body, timeout=timeout)

    def put(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("PUT", path, body=body)

    def patch(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("PATCH", path, body=body)

    def delete(self, path: str, *, params: dict[str, Any] | None = None) -> Any:
        return self.request("DELETE", path, params=params)

    def _transfer_failed(self, exc: httpx.HTTPError) -> None:
        if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
            fail(f"cannot reach Tether at {self.url}: is `tether up` running?", 1,
                 json_mode=self.json_mode, code="unreachable")
        fail(f"the transfer from {self.url} was cut short: {type(exc).__name__}: {exc}; "
             "try again", 1, json_mode=self.json_mode, code="unreachable")

    def download(self, path: str, dest: Path, *, params: dict[str, Any] | None = None) -> int:
        """Stream a file answer into `dest` (via `dest.partial`, renamed when complete, so a
        cut-short download never looks whole); returns its size."""
        partial = dest.with_name(dest.name + ".partial")
        size = 0
        try:
            with self._http.stream("GET", path, params=params,
                                   timeout=httpx.Timeout(None, connect=CONNECT_TIMEOUT)) as r:
                if r.status_code >= 400:
                    r.read()
                    self._answer(r)
                with open(partial, "wb") as out:
                    for chunk in r.iter_bytes(1 << 20):
                        out.write(chunk)
                        size += len(chunk)
                    out.flush()
                    os.fsync(out.fileno())
            partial.replace(dest)
        except httpx.HTTPError as exc:
            partial.unlink(missing_ok=True)
            self._transfer_failed(exc)
        finally:
            partial.unlink(missing_ok=True)
        return size

    def upload(self, path: str, source: Path, *, params: dict[str, Any] | None = None) -> Any:
        """PUT a file as the request body, streamed; returns the decoded JSON answer."""
        def chunks() -> Iterator[bytes]:
            with open(source, "rb") as f:
                while data := f.read(1 << 20):
                    yield data

        try:
            response = self._http.put(
                path, params=params, content=chunks(),
                headers={"Content-Type": "application/octet-stream",
                         "Content-Length": str(source.stat().st_size)},
                timeout=httpx.Timeout(None, connect=CONNECT_TIMEOUT))
        except httpx.HTTPError as exc:
            self._transfer_failed(exc)
        return self._answer(response)
