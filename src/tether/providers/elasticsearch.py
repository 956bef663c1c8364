"""Elasticsearch and OpenSearch: an index prefix, a user and a role per instance, administered
through the cluster's HTTP API.

The cluster URL is the HTTP API with the credentials of an administrator:

    http://ADMIN:PASSWORD@127.0.0.1:9200          (user and password URL-encoded)
    https://ADMIN:PASSWORD@search.example.com:9200

`check` reads the flavour and version from the server ("opensearch-2.19.4",
"elasticsearch-8.19.21"): the catalog offers `opensearch-2`, `elasticsearch-8`... side by side.
The server must have security on (a request without credentials is refused with 401: neither
security off nor anonymous access) and the admin must be allowed to manage users, roles and role
mappings.

Which versions are offered (`OFFERED`): only those whose security could be exercised on servers
available to the tests, because an isolation that was never tested is not called done:

- OpenSearch 2 (tested on 2.19.4 with its security plugin): offered.
- OpenSearch 1 and 3: no server with the security plugin to test them here (3.x has no matching
  security plugin on Maven Central); refused by `check`, with that reason.
- Elasticsearch 7 and 8: the builds available here (Maven Central's integ-test distributions)
  cannot create users through the security API (the security index needs the analysis module
  they lack: "Unknown filter type [pattern_capture]"), so users and roles made through the API,
  which is how Tether isolates instances, cannot be tested; refused by `check`, with that reason.

Per instance (`names.base`, e.g. `tether_i12`), on OpenSearch's security plugin REST API
(`/_plugins/_security/api/...`):

- the index prefix `tether_i12`: the instance may use the index named `tether_i12` and indices
  named `tether_i12-...`. Never `tether_i12*`, which would also match `tether_i123-...`, another
  instance's indices.
- a role `tether_i12` whose index permissions cover exactly those two patterns with the actions
  an application needs (`INDEX_ACTIONS`: create, delete, read and write its indices, mappings,
  settings, refresh...), plus the few cluster actions clients call (`CLUSTER_ACTIONS`: `GET /`,
  and the multi-index requests `_bulk`, `_mget`, `_msearch` and scrolls, which the plugin checks
  at cluster level and then again per index). No aliases: OpenSearch checks an alias request
  against the index it points at, not against the alias's name, so a user allowed to make
  aliases could name one inside another instance's prefix (`tether_i123-x` pointing at its own
  index) and receive that instance's writes. Without `indices:admin/aliases`, creating an index
  with aliases is refused as well. (Measured on 2.19.4.)
- an internal user `tether_i12` with the instance's password, no backend roles and no roles of
  its own, mapped (role mapping `tether_i12`) to that role alone.

What Tether made carries its mark (the description "managed by Tether: tether_i12"): a role,
user or mapping of that name without it belongs to someone else, and Tether neither takes it
over nor removes it. Once the instance's role is there, the user and mapping of its name are the
instance's.

Drift (`observe`) and its repair (`provision` again): a missing role, user or mapping is made
again; the role's permissions are set back to exactly the ones above (extra actions, patterns,
document or field restrictions and tenant permissions are removed); the user's backend roles and
directly given roles are removed, and so are other users, backend roles and hosts in its
mapping, and the user's name in other roles' mappings; aliases that lead out of the prefix
(an alias of the instance's indices named elsewhere, or an alias named in the prefix that
points at another index, both of which only an administrator could make) are removed. What
cannot be repaired: a mapping of another role by a user-name pattern that matches the instance's
user (the demo configuration's `own_index` maps `*`), or by host, would give the user that role
too: `check` refuses such a cluster, `observe` reports it and `provision` refuses meanwhile (no
credentials with more than their role are handed out), but the mapping is the operator's to
change. Indices deleted by hand are gone (an application makes its indices itself).

Removal (`deprovision`) deletes the instance's role mapping and its user first (a running
application makes no new index from then on), then lists and deletes its indices (`tether_i12`
and `tether_i12-...`, by their exact names: wildcard deletes may be forbidden by
`action.destructive_requires_name`), and, last, its role: a removal interrupted half-way leaves
the role, and so Tether's mark, until a retry finishes it.

Index blocks: the instance may update its indices' settings (`indices:admin/settings/update`:
clients set `refresh_interval`, `number_of_replicas`, analysis settings of a closed index...;
OpenSearch cannot allow some settings and not others), so it may also set `index.blocks.*` on
its own indices. Under `read_only` or `metadata` an index cannot be deleted, and under
`metadata` its aliases cannot be read by name. So removal first clears those two blocks, as
the admin, one setting per request (a request with several block settings is refused under the
block); aliases are read from `_resolve/index`, which answers under a metadata block (`GET
/PATTERN/_alias` does not, and `GET /_alias/PATTERN` is refused under any index's metadata
block, another instance's too); a refusal caused by a block says so (`cluster_block_exception`),
not that the admin lacks a right. A block is the tenant's business on its own indices, not
drift: `observe` does not report it, and it harms no other instance.

Variables (shared/SPEC.md): `{P}_ELASTICSEARCH_DSN` and `{P}_HAYSTACK_URL`, both
`SCHEME://USER:PASSWORD@HOST:PORT/tether_i12` (user and password URL-encoded), with the scheme,
host and port of the cluster URL unless the settings `public_scheme`, `public_host` and
`public_port` say where applications reach the cluster (e.g. behind a proxy). There are no
`DEFAULT` aliases.

Known limit (measured on 2.19.4): scroll ids are not secret (the node's session id, the same in
every tenant's scroll ids, and a counter), and although another user's attempt to continue a
scroll is refused ("Wrong user in reader context"), that attempt, or clearing the scroll, ends
it: a tenant can end (not read) another tenant's open scrolls. Point-in-time searches are checked
against their indices and are not affected.

Known limit: the instance's user may change its own password (`PUT
/_plugins/_security/api/account`, open to every internal user). Its applications then hold a
password that no longer works, and `observe` cannot see it: the API never shows password hashes
(`"hash": ""`), and `observe` has no password to try. `provision` finds it (it tries the stored
password) and sets it back.

No per-instance limits: neither Elasticsearch nor OpenSearch has a per-user limit of connections,
requests, indices or storage that Tether could set, so `limits` is empty; one tenant can load a
shared cluster (a private cluster avoids that).

Not Rotatable: credential rotation is not offered for this kind yet.

Timeouts: the API must answer within `TIMEOUT` (5 s to connect, 30 s to answer), so an address
that accepts but never answers fails in seconds with a message that says so; deleting indices
may take `DELETE_TIMEOUT`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import httpx
from pydantic import Field

from tether.errors import ClusterError, TransientError
from tether.providers.base import (
    ClusterSettings,
    ClusterSpec,
    Credentials,
    Observation,
    ProviderBase,
    ResourceNames,
    major,
)
from tether.providers.common import (
    check_names,
    cluster_error,
    first_line,
    host_in_url,
    http_admin_client,
    http_admin_url,
    http_failure,
    rewrap,
)

log = logging.getLogger("tether.providers.elasticsearch")

#: seconds to connect to the HTTP API, and for it to answer one call
TIMEOUT = httpx.Timeout(30.0, connect=5.0)
#: deleting many indices takes a while
DELETE_TIMEOUT = httpx.Timeout(120.0, connect=5.0)
OPENSEARCH = "opensearch"
ELASTICSEARCH = "elasticsearch"
#: the (flavour, major version) pairs offered; see the module's docstring for the others
OFFERED = frozenset({(OPENSEARCH, "2")})
MARK = "managed by Tether"
_URL_HINT = "use http://ADMIN:PASSWORD@HOST:9200 (https:// for TLS)"
#: answers of a server (or a proxy in front of it) that is starting, stopping or overloaded
_UNAVAILABLE = (429, 502, 503, 504)
#: the security plugin's REST API (OpenSearch)
_SECURITY = "/_plugins/_security/api"
#: its endpoints Tether uses: the admin must be allowed them
_ENDPOINTS = ("ROLES", "INTERNALUSERS", "ROLESMAPPING")
#: the longest list of index names in one DELETE (URL length)
_DELETE_BATCH = 50

#: cluster-level actions the instance's role allows (OpenSearch). `cluster:monitor/main` is
#: `GET /` (clients call it first); the others are requests over several indices that the
#: security plugin checks at cluster level first, then for each index they name, against the
#: index permissions below.
CLUSTER_ACTIONS = (
    "cluster:monitor/main",
    "indices:data/read/mget",
    "indices:data/read/msearch",
    "indices:data/read/scroll",
    "indices:data/read/scroll/clear",
    "indices:data/write/bulk",
)
#: index-level actions on the instance's own indices (OpenSearch): everything an application does
#: with its indices, nothing that makes aliases (`indices:admin/aliases`, rollover, resize: see
#: the module's docstring) or touches templates
INDEX_ACTIONS = (
    "indices:admin/analyze",
    "indices:admin/aliases/get",
    "indices:admin/close*",
    "indices:admin/create",
    "indices:admin/delete",
    "indices:admin/flush*",
    "indices:admin/forcemerge*",
    "indices:admin/get",
    "indices:admin/mapping/auto_put",
    "indices:admin/mapping/put",
    "indices:admin/mappings/fields/get*",
    "indices:admin/mappings/get",
    "indices:admin/open",
    "indices:admin/refresh*",
    "indices:admin/settings/update",
    "indices:admin/validate/query*",
    "indices:data/read/*",
    "indices:data/write/*",
    "indices:monitor/*",
)
_NOT_OFFERED = {
    ELASTICSEARCH: (
        "Tether does not offer Elasticsearch clusters yet: the Elasticsearch builds available to "
        "its tests cannot create users through the security API, so the isolation of instances "
        "(a user and a role per instance) is untested on Elasticsearch. Use an OpenSearch 2 "
        "cluster"),
    OPENSEARCH: (
        "Tether offers OpenSearch 2 clusters only: the isolation of instances (a user and a role "
        "per instance, through the security plugin) is tested on OpenSearch 2, and no OpenSearch "
        "{major} with the security plugin was available to test it. Use an OpenSearch 2 cluster"),
}


def _p(name: str) -> str:
    """One path segment of the API."""
    return quote(name, safe="")


def _mark(names: ResourceNames) -> str:
    return f"{MARK}: {names.base}"


def _patterns(names: ResourceNames) -> list[str]:
    """The index patterns of an instance: its prefix alone, and `PREFIX-*` (never `PREFIX*`)."""
    return [names.base, f"{names.base}-*"]


def _in_prefix(index: str, names: ResourceNames) -> bool:
    return index == names.base or index.startswith(names.base + "-")


def _check(names: ResourceNames) -> None:
    """Plain identifiers (no `-`, `*`, `,`): a name is also an index name and an index pattern,
    and must not reach into another instance's prefix."""
    check_names(names)


def _flavoured(flavour: str, version: str) -> str:
    return f"{flavour}-{version}"


def _split_version(version: str) -> tuple[str, str]:
    """("opensearch", "2.19.4") of "opensearch-2.19.4"; a bare version is Elasticsearch's."""
    flavour, sep, number = version.partition("-")
    if sep and flavour in (OPENSEARCH, ELASTICSEARCH):
        return flavour, number
    return ELASTICSEARCH, version


@dataclass(frozen=True)
class _Target:
    """Where a cluster URL points, who the admin is (the password kept apart), and where
    applications reach the cluster."""

    base: str  # e.g. http://127.0.0.1:9200, no credentials
    where: str  # host:port, safe to show
    user: str
    password: str | None
    public_scheme: str
    public_host: str
    public_port: int

    @classmethod
    def of(cls, cluster: ClusterSpec) -> _Target:
        admin = http_admin_url(cluster.url, what="Elasticsearch/OpenSearch HTTP API",
                               hint=_URL_HINT, http_port=9200, allow_path=False)
        host, port = admin.host, admin.port
        settings = cluster.settings or {}
        public_port = settings.get("public_port") or port
        try:
            public_port = int(public_port)
        except (TypeError, ValueError):
            raise ClusterError(f"the cluster setting public_port={public_port!r} is not a port "
                               "number: use e.g. public_port=9200") from None
        return cls(base=admin.base, where=admin.where, user=admin.user, password=admin.password,
                   public_scheme=str(settings.get("public_scheme") or admin.scheme),
                   public_host=str(settings.get("public_host") or host),
                   public_port=public_port)


@dataclass(frozen=True)
class _Server:
    """What the server says it is."""

    flavour: str
    version: str
    cluster_uuid: str | None

    @property
    def name(self) -> str:
        return "OpenSearch" if self.flavour == OPENSEARCH else "Elasticsearch"

    @property
    def offered(self) -> bool:
        return (self.flavour, major(self.version)) in OFFERED

    def refusal(self) -> str:
        return (f"the cluster is {self.name} {self.version}: "
                + _NOT_OFFERED[self.flavour].format(major=major(self.version)))


class _Api:
    """The HTTP API as the cluster's admin; every failure becomes a `ClusterError` whose message
    says what to fix and holds no secret."""

    def __init__(self, target: _Target, client: httpx.Client, secrets: tuple[str | None, ...]
                 ) -> None:
        self.target = target
        self.client = client
        self.secrets = secrets

    def call(self, method: str, path: str, body: Any = None, ok_missing: bool = False,
             timeout: httpx.Timeout = TIMEOUT, auth: bool = True,
             as_is: tuple[int, ...] = ()) -> httpx.Response | None:
        """One request; None for a 404 when `ok_missing`; a response whose status is in `as_is`
        is returned as it is. Without `auth` (the anonymous probe), every response is."""
        t = self.target
        url = f"{t.base}{path}"
        try:
            response = self.client.request(
                method, url, json=body, timeout=timeout,
                auth=httpx.USE_CLIENT_DEFAULT if auth else None)
        except httpx.HTTPError as exc:
            raise http_failure(
                exc, api="the search cluster", where=t.where, request=f"{method} {path}",
                timeout=timeout,
                endpoint="its HTTP API (port 9200 by default, not the transport port 9300)",
                fix="check that the server runs and that the scheme, host and port in the "
                    "cluster URL are right",
                secrets=self.secrets) from None
        if not auth or response.status_code in as_is:
            return response
        if response.status_code == 404 and ok_missing:
            return None
        if response.status_code == 401:
            raise self._unauthorized()
        if response.status_code == 403 and self.error_type(response) == \
                "cluster_block_exception":
            # an index block (`index.blocks.*`), which an instance may set on its own indices:
            # not a missing right of the admin
            raise ClusterError(
                f"the search cluster at {t.where} refused {method} {path} because of an index "
                f"block ({self.reason(response)}): clear it as an administrator, one setting per "
                "request (PUT /INDEX/_settings?expand_wildcards=all {\"index.blocks.metadata\": "
                "null}, then read_only, write, read), then retry")
        if response.status_code == 403:
            raise ClusterError(
                f"the search cluster at {t.where} does not allow the user {t.user!r} to "
                f"{method} {path} ({self.reason(response)}): put an administrator in the "
                "cluster URL (on OpenSearch, one mapped to all_access, which may use the "
                "security plugin's REST API)")
        if response.status_code >= 400:
            raise cluster_error(f"the search cluster at {t.where} refused {method} {path}: "
                                f"{self.reason(response)}", response.status_code in _UNAVAILABLE)
        return response

    def json(self, method: str, path: str, body: Any = None, ok_missing: bool = False) -> Any:
        response = self.call(method, path, body, ok_missing=ok_missing)
        if response is None:
            return None
        try:
            return response.json()
        except ValueError:
            raise ClusterError(
                f"{self.target.where} did not answer {path} like Elasticsearch or OpenSearch: "
                f"check the scheme and port in the cluster URL ({_URL_HINT})") from None

    def get(self, path: str, ok_missing: bool = False) -> Any:
        return self.json("GET", path, ok_missing=ok_missing)

    @staticmethod
    def error_type(response: httpx.Response) -> str | None:
        """Elasticsearch's `error.type` ("cluster_block_exception"...), if any."""
        try:
            data = response.json()
        except ValueError:
            return None
        error = data.get("error") if isinstance(data, dict) else None
        return str(error.get("type")) if isinstance(error, dict) and error.get("type") else None

    def reason(self, response: httpx.Response) -> str:
        """The server's reason, one line, no secret: Elasticsearch's `error.reason`, the
        security plugin's `message` or `reason`."""
        text = ""
        try:
            data = response.json()
        except ValueError:
            data = None
        if isinstance(data, dict):
            error = data.get("error")
            if isinstance(error, dict):
                text = str(error.get("reason") or error.get("type") or "")
            elif isinstance(error, str):
                text = error
            text = text or str(data.get("message") or data.get("reason") or "")
        text = text or response.reason_phrase or "error"
        return first_line(f"HTTP {response.status_code} {text}", self.secrets)

    def _unauthorized(self) -> ClusterError:
        t = self.target
        if t.password is None:
            return ClusterError(f"the search cluster at {t.where} asks for a password for the "
                                f"user {t.user!r}: put it in the cluster URL ({_URL_HINT})")
        return ClusterError(f"the search cluster at {t.where} refused the user {t.user!r} and "
                            "its password: fix the user and password in the cluster URL")


class SearchSettings(ClusterSettings):
    """Where applications reach the cluster, when not at the cluster URL's scheme, host and port
    (e.g. a proxy in front of it): `public_scheme`, `public_host`, `public_port`."""

    public_scheme: Literal["http", "https"] | None = None
    public_host: str | None = Field(None, min_length=1, max_length=253, pattern=r"^[^\s/@:?#]+$")
    public_port: int | None = Field(None, ge=1, le=65535)


class ElasticsearchProvider(ProviderBase):
    """An index prefix, a user and a role limited to that prefix, per instance."""

    kind = "elasticsearch"
    title = ("Elasticsearch/OpenSearch clusters: an index prefix, a user and a role per "
             "instance")
    category = "SEARCH"
    backup_engine = "tether.backups.engines:SearchEngine"
    service = "elasticsearch"
    variables = ("{P}_ELASTICSEARCH_DSN", "{P}_HAYSTACK_URL")
    settings_model = SearchSettings
    private_servers = "tether.servers.search:PrivateSearchServers"

    def service_name(self, version: str) -> str:
        """`opensearch-2` for "opensearch-2.19.4", `elasticsearch-8` for
        "elasticsearch-8.19.21" (or a bare "8.19.21")."""
        flavour, number = _split_version(version)
        return f"{flavour}-{major(number)}"

    def offered_version(self, version: str) -> str:
        """The major version ("2" of "opensearch-2.19.4"): the catalog picks the newest of a
        flavour by it."""
        return major(_split_version(version)[1])

    @contextmanager
    def _api(self, cluster: ClusterSpec, *extra_secrets: str) -> Iterator[_Api]:
        target = _Target.of(cluster)
        with http_admin_client(target.user, target.password, TIMEOUT) as client:
            yield _Api(target, client, (target.password, cluster.url, *extra_secrets))

    @staticmethod
    def _server(api: _Api) -> _Server:
        """Flavour, version and cluster id, from `GET /`; Elasticsearch builds without the
        `rest-root` module (no `GET /`) are asked `_nodes` instead."""
        response = api.call("GET", "/", as_is=(404, 405))
        if response is not None and response.status_code == 200:
            try:
                info = response.json()
            except ValueError:
                info = None
            version = info.get("version") if isinstance(info, dict) else None
            if isinstance(version, dict) and version.get("number"):
                flavour = (OPENSEARCH if version.get("distribution") == OPENSEARCH
                           else ELASTICSEARCH)
                uuid = info.get("cluster_uuid")
                return _Server(flavour, str(version["number"]),
                               str(uuid) if uuid and uuid != "_na_" else None)
        return ElasticsearchProvider._server_from_nodes(api, response)

    @staticmethod
    def _server_from_nodes(api: _Api, root: httpx.Response | None) -> _Server:
        t = api.target
        not_search = ClusterError(f"{t.where} did not answer like Elasticsearch or OpenSearch: "
                                  f"check the port in the cluster URL ({_URL_HINT})")
        if root is not None and root.headers.get("x-elastic-product") != "Elasticsearch":
            raise not_search
        nodes = api.get("/_nodes/_local?filter_path=nodes.*.version")
        found = [n.get("version") for n in ((nodes or {}).get("nodes") or {}).values()
                 if isinstance(n, dict)] if isinstance(nodes, dict) else []
        if not found or not found[0]:
            raise not_search
        state = api.get("/_cluster/state/metadata?filter_path=metadata.cluster_uuid")
        uuid = ((state or {}).get("metadata") or {}).get("cluster_uuid") if isinstance(
            state, dict) else None
        return _Server(ELASTICSEARCH, str(found[0]),
                       str(uuid) if uuid and uuid != "_na_" else None)

    def _offered(self, api: _Api) -> _Server:
        """The server, refused with the reason when its version is not offered."""
        server = self._server(api)
        if not server.offered:
            raise ClusterError(server.refusal())
        return server

    def identity(self, cluster: ClusterSpec) -> str | None:
        """The cluster's UUID (made when the cluster first formed, kept across restarts and
        addresses), with its flavour; None when it cannot be read."""
        try:
            with self._api(cluster) as api:
                server = self._server(api)
        except ClusterError:
            return None
        return f"{server.flavour}:{server.cluster_uuid}" if server.cluster_uuid else None

    # -- Provider ---------------------------------------------------------------------------------

    def check(self, cluster: ClusterSpec) -> str:
        """Reachable, the admin's password right, security on (a request without credentials
        is refused), a version Tether offers, and an admin that may manage users, roles and
        role mappings; returns the flavoured version ("opensearch-2.19.4")."""
        with self._api(cluster) as api:
            t = api.target
            server = self._server(api)
            # an endpoint every build has (8.x integ-test builds have no `GET /`)
            anonymous = api.call("GET", "/_cluster/health", auth=False)
            assert anonymous is not None
            if anonymous.status_code != 401:
                raise ClusterError(
                    f"{server.name} at {t.where} answers a request without credentials with "
                    f"HTTP {anonymous.status_code}, not 401: its security is disabled or "
                    "anonymous access is on, so nothing would keep one instance out of "
                    "another's indices. Enable security (OpenSearch: the security plugin; "
                    "Elasticsearch: xpack.security.enabled) and turn anonymous access off")
            if not server.offered:
                raise ClusterError(server.refusal())
            info = api.get("/_plugins/_security/api/permissionsinfo")
            disabled = (info or {}).get("disabled_endpoints") or {} if isinstance(
                info, dict) else {}
            blocked = [e for e in _ENDPOINTS if disabled.get(e)]
            if not (isinstance(info, dict) and info.get("has_api_access")) or blocked:
                raise ClusterError(
                    f"the user {t.user!r} on OpenSearch at {t.where} may not use the security "
                    "plugin's REST API" + (f" endpoints {', '.join(blocked)}" if blocked else "")
                    + ": Tether creates users, roles and role mappings; put an administrator "
                    "in the cluster URL (a user mapped to all_access, with all_access in "
                    "plugins.security.restapi.roles_enabled)")
            wide = self._wide_mappings(api)
            if wide:
                raise _wide_refusal(t, wide, "then add the cluster again")
        return _flavoured(server.flavour, server.version)

    @staticmethod
    def _wide_mappings(api: _Api, user: str = "tether_i1") -> list[str]:
        """Role mappings of other roles that would map `user` (an instance's user; the default
        stands for any) by a user-name pattern, or any user by host. (The mapping of the
        instance's own role, named like its user, is compared whole and repaired.)"""
        mappings = api.get(f"{_SECURITY}/rolesmapping") or {}
        found = []
        for role, mapping in sorted(mappings.items()) if isinstance(mappings, dict) else []:
            if not isinstance(mapping, dict) or role == user:
                continue
            for pattern in mapping.get("users") or []:
                pattern = str(pattern)
                if pattern != user and _pattern_matches(pattern, user):
                    found.append(f"role {role} is mapped to the users {pattern!r}")
            hosts = [str(h) for h in mapping.get("hosts") or []]
            if hosts:
                found.append(f"role {role} is mapped to the hosts {', '.join(map(repr, hosts))}")
        return found

    def provision(self, cluster: ClusterSpec, names: ResourceNames, secret: str) -> Credentials:
        """Converge to: the role with exactly the instance's permissions, the user with this
        password and nothing else, the mapping of that user alone to that role, and no alias
        leading out of the prefix; repairs any drift `observe` reports that can be repaired. On
        a final failure, a fresh resource set is removed again (rule 5); the indices of an
        instance that was already provisioned are never deleted here."""
        _check(names)
        with self._api(cluster, secret) as api:
            t = api.target
            self._offered(api)
            if t.user == names.base:
                raise ClusterError(f"the cluster's admin user is named {t.user!r} like this "
                                   "instance's user: put another administrator in the cluster URL")
            state = _State.read(api, names)
            if state.role is not None and not state.own_role:
                raise ClusterError(
                    f"a role named {names.base} exists already on OpenSearch at {t.where} and "
                    "was not made by Tether: Tether never takes over a role it did not create; "
                    "delete or rename it, then retry")
            for what, found, own in (("user", state.user, state.own_user),
                                     ("role mapping", state.mapping, state.own_mapping)):
                if found is not None and not own and not state.own_role:
                    raise ClusterError(
                        f"a {what} named {names.base} exists already on OpenSearch at {t.where} "
                        "and was not made by Tether: Tether never takes it over; delete or "
                        "rename it, then retry")
            wide = self._wide_mappings(api, names.base)
            if wide:  # its user would get more than its role: hand out no such credentials
                raise _wide_refusal(t, wide, "then retry")
            fresh = not state.exists
            try:
                self._converge(api, names, secret, state)
            except ClusterError as exc:
                failure = exc.message
                if fresh and not isinstance(exc, TransientError):
                    try:
                        self._delete(api, names)
                    except ClusterError as cleanup_exc:  # recorded; a retry converges
                        failure += f" (clean-up also failed: {cleanup_exc.message})"
                raise rewrap(exc, f"provisioning {names.base} on OpenSearch at {t.where} "
                                  f"failed: {failure}") from None
        return Credentials({"user": names.base, "password": secret, "scheme": t.public_scheme,
                            "host": t.public_host, "port": t.public_port,
                            "prefix": names.base})

    def _converge(self, api: _Api, names: ResourceNames, secret: str, state: _State) -> None:
        """Write only what differs: each write to the security configuration reloads it on
        every node (and hashes a password), seconds on a busy cluster."""
        base, mark = _p(names.base), _mark(names)
        if not state.own_role or _role_differences(state.role or {}, names):
            api.call("PUT", f"{_SECURITY}/roles/{base}", {
                "description": mark,
                "cluster_permissions": list(CLUSTER_ACTIONS),
                "index_permissions": [{"index_patterns": _patterns(names), "dls": "",
                                       "fls": [], "masked_fields": [],
                                       "allowed_actions": list(INDEX_ACTIONS)}],
                "tenant_permissions": []})
        user = state.user
        if not (user is not None and state.own_user and not user.get("backend_roles")
                and not user.get("opendistro_security_roles")
                and self._logs_in(api, names.base, secret)):
            try:
                api.call("PUT", f"{_SECURITY}/internalusers/{base}", {
                    "password": secret, "description": mark, "backend_roles": [],
                    "opendistro_security_roles": [], "attributes": {}})
            except ClusterError as exc:
                if "password" in exc.message.lower() and not isinstance(exc, TransientError):
                    raise ClusterError(
                        f"{exc.message}: the cluster's password rules (plugins.security."
                        "restapi.password_validation_regex, password_min_length) refuse the "
                        "password Tether chose (32 random letters, digits, '-' and '_'); relax "
                        "them") from None
                raise
        if _mapping_differences(state.mapping, names) or not state.own_mapping:
            api.call("PUT", f"{_SECURITY}/rolesmapping/{base}", {
                "description": mark, "users": [names.base], "backend_roles": [], "hosts": [],
                "and_backend_roles": []})
        # the user's name given to other roles by hand
        for role in _State.other_roles(api, names):
            answer = api.get(f"{_SECURITY}/rolesmapping/{_p(role)}", ok_missing=True) or {}
            found = answer.get(role) if isinstance(answer, dict) else None
            if not isinstance(found, dict) or found.get("reserved") or found.get("hidden"):
                continue
            kept = {key: found.get(key) or [] for key in ("backend_roles", "hosts",
                                                          "and_backend_roles")}
            if found.get("description"):
                kept["description"] = found["description"]
            api.call("PUT", f"{_SECURITY}/rolesmapping/{_p(role)}", {
                **kept, "users": [u for u in found.get("users") or [] if u != names.base]})
        # aliases that lead out of the prefix
        removals = [{"remove": {"index": index, "alias": alias}}
                    for index, alias in _State.stray_aliases(api, names)]
        if removals:
            api.call("POST", "/_aliases", {"actions": removals})

    @staticmethod
    def _logs_in(api: _Api, user: str, password: str) -> bool:
        """Whether `user` logs in with `password` (cheaper than setting it again)."""
        try:
            response = api.client.get(f"{api.target.base}/_plugins/_security/authinfo",
                                      auth=(user, password), timeout=TIMEOUT)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def exists(self, cluster: ClusterSpec, names: ResourceNames) -> bool:
        _check(names)
        with self._api(cluster) as api:
            return _State.read(api, names).exists

    def observe(self, cluster: ClusterSpec, names: ResourceNames) -> Observation:
        """The role (there, Tether's, exactly the instance's permissions), the user (there, no
        backend roles, no roles of its own), its mapping (that user alone), other mappings that
        give the user another role, and aliases that lead out of the prefix."""
        _check(names)
        b = names.base
        with self._api(cluster) as api:
            self._offered(api)
            state = _State.read(api, names)
            others = _State.other_roles(api, names)
            wide = self._wide_mappings(api, names.base)
            strays = _State.stray_aliases(api, names)
        differences: list[str] = []
        if state.role is None:
            differences.append(f"role {b} is missing")
        elif not state.own_role:
            differences.append(f"role {b} was not made by Tether: Tether does not take it over")
        else:
            differences += _role_differences(state.role, names)
        if state.user is None:
            differences.append(f"user {b} is missing")
        else:
            if state.user.get("backend_roles"):
                differences.append(f"user {b} has the backend roles "
                                   f"{', '.join(map(str, state.user['backend_roles']))}")
            if state.user.get("opendistro_security_roles"):
                differences.append(f"user {b} is given the roles "
                                   f"{', '.join(map(str, state.user['opendistro_security_roles']))}"
                                   " directly")
        differences += _mapping_differences(state.mapping, names)
        differences += [f"user {b} is also mapped to role {role}" for role in others]
        differences += [f"{found} (not repaired: change that mapping)" for found in wide]
        differences += [f"alias {alias} of index {index} leads out of the prefix {b}"
                        for index, alias in strays]
        return Observation(exists=state.exists, differences=tuple(differences))

    def deprovision(self, cluster: ClusterSpec, names: ResourceNames) -> None:
        """Delete the instance's indices, its role mapping, its user and its role (last). What
        of that name was not made by Tether is left alone."""
        _check(names)
        with self._api(cluster) as api:
            self._offered(api)
            try:
                self._delete(api, names)
            except ClusterError as exc:
                raise rewrap(exc, f"removing {names.base} from OpenSearch at "
                                  f"{api.target.where} failed: {exc.message}") from None

    def _delete(self, api: _Api, names: ResourceNames) -> None:
        """The mapping and the user first, so that the application makes no new index (nor
        block) while its indices are listed and deleted; the role last: its mark keeps a removal
        interrupted half-way recognisable (`exists`), and a retry finishes it."""
        state = _State.read(api, names)
        base = _p(names.base)
        if state.mapping is not None and (state.own_mapping or state.own_role):
            api.call("DELETE", f"{_SECURITY}/rolesmapping/{base}", ok_missing=True)
        if state.user is not None and (state.own_user or state.own_role):
            api.call("DELETE", f"{_SECURITY}/internalusers/{base}", ok_missing=True)
        if state.role is not None and not state.own_role:
            log.warning("role %s on %s was not made by Tether: leaving it, its indices and its "
                        "mapping alone", names.base, api.target.where)
            return
        # listed again after the user is gone; a request it made just before may still create
        # an index afterwards, so list until none is left (a few rounds at most)
        for _ in range(3):
            indices = _State.list_indices(api, names)
            if not indices:
                break
            for start in range(0, len(indices), _DELETE_BATCH):
                batch = ",".join(_p(i) for i in indices[start:start + _DELETE_BATCH])
                _unblock(api, batch)
                api.call("DELETE", f"/{batch}?expand_wildcards=none", ok_missing=True,
                         timeout=DELETE_TIMEOUT)
        if state.own_role:
            api.call("DELETE", f"{_SECURITY}/roles/{base}", ok_missing=True)

    def env_vars(self, prefix: str, credentials: Credentials) -> dict[str, str]:
        """`{P}_ELASTICSEARCH_DSN` and `{P}_HAYSTACK_URL`, the same URL."""
        url = search_url(credentials)
        return self.named_vars(prefix, {template: url for template in self.variables})


@dataclass(frozen=True)
class _State:
    """What the cluster holds of an instance (OpenSearch)."""

    role: dict[str, Any] | None
    user: dict[str, Any] | None
    mapping: dict[str, Any] | None
    indices: list[str]
    mark: str

    @property
    def own_role(self) -> bool:
        return self.role is not None and self.role.get("description") == self.mark and not (
            self.role.get("reserved") or self.role.get("static"))

    @property
    def own_user(self) -> bool:
        return self.user is not None and self.user.get("description") == self.mark

    @property
    def own_mapping(self) -> bool:
        return self.mapping is not None and self.mapping.get("description") == self.mark

    @property
    def exists(self) -> bool:
        return self.own_role or self.own_user or self.own_mapping or bool(self.indices)

    @classmethod
    def read(cls, api: _Api, names: ResourceNames) -> _State:
        base = _p(names.base)
        found: dict[str, dict[str, Any] | None] = {}
        for kind in ("roles", "internalusers", "rolesmapping"):
            answer = api.get(f"{_SECURITY}/{kind}/{base}", ok_missing=True)
            entry = answer.get(names.base) if isinstance(answer, dict) else None
            found[kind] = entry if isinstance(entry, dict) else None
        return cls(role=found["roles"], user=found["internalusers"],
                   mapping=found["rolesmapping"], indices=cls.list_indices(api, names),
                   mark=_mark(names))

    @staticmethod
    def list_indices(api: _Api, names: ResourceNames) -> list[str]:
        """The instance's indices (hidden and closed ones too), by their exact names."""
        resolved = api.get(f"/_resolve/index/{_p(names.base)}*?expand_wildcards=all",
                           ok_missing=True) or {}
        indices = resolved.get("indices") or [] if isinstance(resolved, dict) else []
        return sorted(str(i.get("name")) for i in indices
                      if isinstance(i, dict) and _in_prefix(str(i.get("name")), names))

    @staticmethod
    def other_roles(api: _Api, names: ResourceNames) -> list[str]:
        """Roles other than the instance's whose mapping names its user exactly."""
        mappings = api.get(f"{_SECURITY}/rolesmapping") or {}
        return sorted(role for role, mapping in (mappings.items() if isinstance(
            mappings, dict) else []) if role != names.base and isinstance(mapping, dict)
            and names.base in [str(u) for u in mapping.get("users") or []])

    @staticmethod
    def stray_aliases(api: _Api, names: ResourceNames) -> list[tuple[str, str]]:
        """(index, alias) of every alias that leads out of the prefix: an alias of the
        instance's indices named outside it, or an alias named inside it on another index."""
        # `_resolve/index` answers under a metadata block, which an instance may set on its own
        # indices (`GET /PREFIX*/_alias` is refused then); `PREFIX*` is filtered here
        answer = api.get(f"/_resolve/index/{_p(names.base)}*?expand_wildcards=all",
                         ok_missing=True) or {}
        found: set[tuple[str, str]] = set()
        if not isinstance(answer, dict):
            return []
        for index in answer.get("indices") or []:
            if isinstance(index, dict) and _in_prefix(str(index.get("name")), names):
                found.update((str(index["name"]), str(alias))
                             for alias in index.get("aliases") or []
                             if not _in_prefix(str(alias), names))
        for alias in answer.get("aliases") or []:
            if isinstance(alias, dict) and _in_prefix(str(alias.get("name")), names):
                found.update((str(index), str(alias["name"]))
                             for index in alias.get("indices") or []
                             if not _in_prefix(str(index), names))
        return sorted(found)


#: the index blocks that forbid deleting an index (`metadata_write`), in the order they can be
#: cleared: a settings update is itself refused under `metadata` and `read_only` unless it
#: changes one of those alone
_DELETE_BLOCKS = ("index.blocks.metadata", "index.blocks.read_only")


def _unblock(api: _Api, indices: str) -> None:
    """Clear the blocks an instance may set on its own indices (it may update their settings)
    that would make deleting them fail, one setting per request (a request with several is
    refused under the block). `indices`: exact names, comma-separated and URL-encoded."""
    for setting in _DELETE_BLOCKS:
        api.call("PUT", f"/{indices}/_settings?expand_wildcards=all", {setting: None},
                 ok_missing=True)


def _role_differences(role: dict[str, Any], names: ResourceNames) -> list[str]:
    """How the instance's role differs from exactly its permissions."""
    b = names.base
    out: list[str] = []
    cluster = {str(a) for a in role.get("cluster_permissions") or []}
    if cluster - set(CLUSTER_ACTIONS):
        out.append(f"role {b} also allows the cluster actions "
                   f"{', '.join(sorted(cluster - set(CLUSTER_ACTIONS)))}")
    if set(CLUSTER_ACTIONS) - cluster:
        out.append(f"role {b} lacks the cluster actions "
                   f"{', '.join(sorted(set(CLUSTER_ACTIONS) - cluster))}")
    wanted = set(_patterns(names))
    entries = [e for e in role.get("index_permissions") or [] if isinstance(e, dict)]
    own = [e for e in entries if set(map(str, e.get("index_patterns") or [])) == wanted]
    for entry in entries:
        if entry in own:
            continue
        out.append(f"role {b} also allows "
                   f"{', '.join(map(str, entry.get('allowed_actions') or [])) or 'nothing'} on "
                   f"the indices {', '.join(map(str, entry.get('index_patterns') or []))}")
    if len(own) != 1:
        out.append(f"role {b} does not allow exactly its actions on the indices "
                   f"{', '.join(_patterns(names))}")
    else:
        actions = {str(a) for a in own[0].get("allowed_actions") or []}
        if actions - set(INDEX_ACTIONS):
            out.append(f"role {b} also allows the index actions "
                       f"{', '.join(sorted(actions - set(INDEX_ACTIONS)))} on its indices")
        if set(INDEX_ACTIONS) - actions:
            out.append(f"role {b} lacks the index actions "
                       f"{', '.join(sorted(set(INDEX_ACTIONS) - actions))} on its indices")
        if own[0].get("dls") or own[0].get("fls") or own[0].get("masked_fields"):
            out.append(f"role {b} restricts the documents or fields of its indices")
    if role.get("tenant_permissions"):
        out.append(f"role {b} has tenant permissions")
    return out


def _wide_refusal(t: _Target, wide: list[str], then: str) -> ClusterError:
    return ClusterError(
        f"OpenSearch at {t.where} maps roles to users by pattern or by host: "
        + "; ".join(wide) + ". Each instance's user would get those roles too, beside its own "
        "(the demo configuration's own_index maps '*'): map users by exact name or by backend "
        f"role instead, {then}")


def _mapping_differences(mapping: dict[str, Any] | None, names: ResourceNames) -> list[str]:
    """How the mapping of the instance's role differs from its user alone."""
    b = names.base
    if mapping is None:
        return [f"the mapping of role {b} to user {b} is missing"]
    out = []
    if [str(u) for u in mapping.get("users") or []] != [b]:
        out.append(f"role {b} is mapped to the users "
                   f"{', '.join(map(str, mapping.get('users') or [])) or 'none'}, not to {b} "
                   "alone")
    for key, what in (("backend_roles", "backend roles"), ("hosts", "hosts"),
                      ("and_backend_roles", "backend roles (and)")):
        if mapping.get(key):
            out.append(f"role {b} is also mapped to the {what} "
                       f"{', '.join(map(str, mapping[key]))}")
    return out


def _pattern_matches(pattern: str, user: str) -> bool:
    """Whether a user pattern of a role mapping (`*` and `?` wildcards, or a `/regex/`) may
    match `user`."""
    if len(pattern) > 1 and pattern.startswith("/") and pattern.endswith("/"):
        try:
            return re.fullmatch(pattern[1:-1], user) is not None
        except re.error:
            return True  # a pattern Python cannot read: say it may match
    if "*" not in pattern and "?" not in pattern:
        return pattern == user
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, user) is not None


def search_url(credentials: Credentials) -> str:
    """`SCHEME://USER:PASSWORD@HOST:PORT/PREFIX`, user and password URL-encoded."""
    c = credentials.values
    return (f"{c.get('scheme') or 'http'}://{quote(str(c['user']), safe='')}:"
            f"{quote(str(c['password']), safe='')}@{host_in_url(str(c['host']))}:"
            f"{int(c['port'])}/{quote(str(c['prefix']), safe='')}")


PROVIDER = ElasticsearchProvider
