"""Caddy as the front door: Tether drives a Caddy a team already runs, through its admin API.

Tether owns one server of Caddy's `http` app, named `tether`, and nothing else in its config. It
holds one route per environment, `ENV.PROJECT.DOMAIN` -> `reverse_proxy` to Tether's own front
door on this machine (which finds the environment's current release by the same host name),
ahead of a last route that answers 404 for any other host. Caddy terminates TLS: for a real
domain it gets a certificate per environment's host name itself (`tls="acme"`, its default
issuers); in tests and on private networks its own CA signs them (`tls="internal"`); `tls="off"`
serves plain HTTP.

Routes change when an environment is created or removed (each change atomic: Caddy loads a new
config whole), not at each switch of release: Caddy applies any change by replacing its servers,
which closes the idle kept-alive connections of every client of every site it serves, and a
client that reuses one just then sees a failed request. The switch stays in Tether's front door:
one assignment, requests in flight drained, none lost.

Certificates come in the background once a route is there (at once from Caddy's own CA, seconds
from an ACME CA): meanwhile a TLS handshake for that host fails. Caddy 2.6 also cancels a
certificate being obtained when its config changes (another environment's route added or removed
just then), and that host waits for Caddy's retry, about a second later with its own CA.

Admin API: https://caddyserver.com/docs/api (Caddy 2.6, as Debian ships it).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx

from tether.errors import OperationError, UserError
from tether.frontdoor import FrontDoor

SERVER = "tether"
TLS_MODES = ("acme", "internal", "off")
SERVER_PATH = f"/config/apps/http/servers/{SERVER}"
#: how long a refused connection to the admin API is tried again (Caddy restarts its admin
#: listener with each config it loads)
ADMIN_RESTART_S = 2.0
#: what Caddy says when a config load read a certificate still being written (tried again)
CERTIFICATE_RACE = "caching certificate"


def route_id(environment_key: str) -> str:
    """The `@id` of an environment's route (project and environment names are DNS labels)."""
    project, _, environment = environment_key.partition("/")
    return f"tether-{project}-{environment}"


class CaddyRoutes:
    """Routes of a Caddy (admin API at `admin_url`) for every environment of a runtime.

    Thread-safe: one lock orders the changes Tether makes (Caddy applies each atomically)."""

    def __init__(self, admin_url: str, door: FrontDoor, tls: str = "acme",
                 timeout: float = 10.0) -> None:
        """`door`: the public side, Caddy's (scheme, port it listens on, domain)."""
        if tls not in TLS_MODES:
            raise UserError(f"unknown Caddy TLS mode {tls!r}: use one of {', '.join(TLS_MODES)}")
        if (tls == "off") != (door.scheme == "http"):
            raise UserError("Caddy serves https unless its TLS mode is off: give a front door "
                            "of the matching scheme")
        self.admin_url = admin_url.rstrip("/")
        self.door = door
        self.tls = tls
        self._lock = threading.Lock()
        #: where Caddy sends every environment's requests: Tether's own front door
        #: (`ProcessRuntime.drive_caddy` sets it)
        self.upstream = ""
        # No kept connections: Caddy restarts its admin listener with every config it loads,
        # so a kept one is reset under the next request (seen in the tests). A new connection
        # each time, and a connection refused meanwhile is tried again (nothing was sent).
        self._http = httpx.Client(base_url=self.admin_url, timeout=timeout, trust_env=False,
                                  limits=httpx.Limits(max_keepalive_connections=0))

    def close(self) -> None:
        self._http.close()

    # -- admin API -----------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: Any = None) -> httpx.Response:
        deadline = time.monotonic() + ADMIN_RESTART_S
        while True:
            try:
                response = self._http.request(method, path, json=body)
                # Caddy 2.6 loading a config may read a certificate its background issuance
                # for the previous config is still writing ("caching certificate: decoding
                # ..."): the load fails and is rolled back, so it is tried again (seen once in
                # a full test run)
                if (response.status_code == 500 and CERTIFICATE_RACE in response.text
                        and time.monotonic() < deadline):
                    time.sleep(0.1)
                    continue
                return response
            except httpx.ConnectError as exc:  # not sent: its admin listener may be restarting
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                error: httpx.HTTPError = exc
            except httpx.HTTPError as exc:
                error = exc
            raise OperationError(f"Caddy's admin API at {self.admin_url} did not answer "
                                 f"({type(error).__name__}): is Caddy running?") from error

    def _ok(self, response: httpx.Response, what: str) -> httpx.Response:
        if response.status_code >= 400:
            detail = response.text.strip()[:300]
            raise OperationError(f"Caddy refused to {what} (HTTP {response.status_code}): "
                                 f"{detail}")
        return response

    # -- set-up --------------------------------------------------------------------------------

    def check(self) -> None:
        """OperationError unless Caddy's admin API answers (checked before a long start)."""
        self._ok(self._call("GET", "/config/"), "show its config")

    def install(self) -> None:
        """Put Tether's server into Caddy's config (listen address, HTTPS, the 404 fallback), in
        one change. Routes already there stay: releases that outlived a restart of Tether keep
        their traffic until Tether has adopted them."""
        with self._lock:
            config = self._ok(self._call("GET", "/config/"), "show its config").json() or {}
            apps = config.setdefault("apps", {})
            servers = apps.setdefault("http", {}).setdefault("servers", {})
            kept = [r for r in (servers.get(SERVER) or {}).get("routes", [])
                    if str(r.get("@id", "")).startswith("tether-")]
            for route in kept:  # Tether's front door may listen elsewhere now
                route["handle"] = [self._proxy()]
            server: dict[str, Any] = {"listen": [f":{self.door.port}"],
                                      "routes": [*kept, self._fallback()]}
            if self.tls == "off":
                server["automatic_https"] = {"disable": True}
            else:  # no redirect listener on :80 (it may be another program's)
                server["automatic_https"] = {"disable_redirects": True}
            servers[SERVER] = server
            if self.tls == "internal":
                self._internal_issuer(apps)
            self._ok(self._call("POST", "/load", config), "load Tether's server")

    def _internal_issuer(self, apps: dict[str, Any]) -> None:
        """Certificates of the front door's hosts signed by Caddy's own CA (`tls internal`)."""
        policies = apps.setdefault("tls", {}).setdefault("automation", {}).setdefault(
            "policies", [])
        policies[:] = [p for p in policies if p.get("@id") != "tether-tls"]
        policies.insert(0, {"@id": "tether-tls", "subjects": [f"*.*.{self.door.domain}"],
                            "issuers": [{"module": "internal"}], "on_demand": False})
        # never into this machine's trust store (Caddy would, running as root): whoever needs
        # to trust it is given the root certificate (GET /pki/ca/local)
        local = apps.setdefault("pki", {}).setdefault("certificate_authorities", {}).setdefault(
            "local", {})
        local["install_trust"] = False

    def _proxy(self) -> dict[str, Any]:
        if not self.upstream:
            raise OperationError("Caddy's routes need Tether's front door: open it first")
        # the Host header goes along unchanged: Tether's front door routes by it too
        return {"handler": "reverse_proxy", "upstreams": [{"dial": self.upstream}]}

    def _route(self, key: str) -> dict[str, Any]:
        project, _, environment = key.partition("/")
        return {"@id": route_id(key),
                "match": [{"host": [self.door.host_for(project, environment)]}],
                "handle": [self._proxy()], "terminal": True}

    def _fallback(self) -> dict[str, Any]:
        example = self.door.host_for("PROJECT", "ENV")
        return {"handle": [{"handler": "static_response", "status_code": 404,
                            "headers": {"Content-Type": ["text/plain; charset=utf-8"]},
                            "body": "this is Tether's front door: ask for an environment by its "
                                    f"host name, {example}\n"}]}

    # -- routes --------------------------------------------------------------------------------

    def ensure_route(self, environment_key: str) -> None:
        """Give the environment a route unless it has one (inserted before the fallback)."""
        with self._lock:
            if self._call("GET", f"/id/{route_id(environment_key)}").status_code != 404:
                return
            self._ok(self._call("PUT", f"{SERVER_PATH}/routes/0", self._route(environment_key)),
                     f"route {environment_key}")

    def remove_route(self, environment_key: str) -> None:
        with self._lock:
            answer = self._call("DELETE", f"/id/{route_id(environment_key)}")
            if answer.status_code != 404:
                self._ok(answer, f"remove the route of {environment_key}")

    def root_certificate(self) -> str:
        """The PEM of the root of Caddy's own CA (`tls="internal"`), for clients to trust."""
        answer = self._ok(self._call("GET", "/pki/ca/local"), "show its CA")
        return str(answer.json()["root_certificate"])

    def routes(self) -> dict[str, str | None]:
        """Host -> upstream (`HOST:PORT`) of each of Tether's routes, as Caddy has them."""
        answer = self._ok(self._call("GET", f"{SERVER_PATH}/routes"), "list Tether's routes")
        found: dict[str, str | None] = {}
        for route in answer.json() or []:
            hosts = [h for m in route.get("match", []) for h in m.get("host", [])]
            upstreams = (route.get("handle") or [{}])[0].get("upstreams") or [{}]
            for host in hosts:
                found[host] = upstreams[0].get("dial")
        return found
