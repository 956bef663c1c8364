"""ElasticsearchProvider against a real OpenSearch 2 with its security plugin (the HTTP API for
administration, raw HTTP and the real `opensearch-py` client for the application side):
isolation of instances whose prefixes start alike, drift and its repair, removal, crash resume,
and check()'s refusals. No mocks.

One server for the whole session: the `opensearch_server` fixture of this directory's
conftest.py (or the running server `TETHER_TEST_OPENSEARCH_URL` names).
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import httpx
import pytest
from opensearchpy import AuthenticationException, AuthorizationException, OpenSearch, helpers

from tests.integration.provider_contract import (
    check_final,
    check_observe_follows_provision,
    check_unreachable_is_transient,
)
from tests.integration.search.conftest import SearchNode
from tether.errors import ClusterError
from tether.net import free_port
from tether.providers.base import ClusterSpec, Credentials, ResourceNames
from tether.providers.elasticsearch import (
    CLUSTER_ACTIONS,
    INDEX_ACTIONS,
    MARK,
    ElasticsearchProvider,
    search_url,
)

pytestmark = pytest.mark.integration

PROVIDER = ElasticsearchProvider()
SECURITY = "/_plugins/_security/api"


@pytest.fixture(scope="session")
def search_admin_url(opensearch_server: SearchNode) -> str:
    """The admin URL of the session's OpenSearch 2 server."""
    return opensearch_server.admin_url


class Admin:
    """The HTTP API as the test server's admin, for looking behind the provider."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.base = f"{parts.scheme}://{parts.hostname}:{parts.port}"
        self.auth = (unquote(parts.username or ""), unquote(parts.password or ""))

    def request(self, method: str, path: str, body: Any = None) -> httpx.Response:
        return httpx.request(method, self.base + path, json=body, auth=self.auth, timeout=30)

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        response = self.request(method, path, body)
        assert response.status_code < 300, response.text
        return response.json() if response.content else None

    def status(self, path: str) -> int:
        return self.request("GET", path).status_code

    def indices(self, pattern: str) -> list[str]:
        found = self.ok("GET", f"/_resolve/index/{pattern}?expand_wildcards=all")
        return sorted(i["name"] for i in found["indices"])

    def count(self, index: str) -> int:
        self.ok("POST", f"/{index}/_refresh")
        return int(self.ok("GET", f"/{index}/_count")["count"])


class App:
    """An application's raw HTTP client with an instance's credentials."""

    def __init__(self, base: str, user: str, password: str) -> None:
        self.base, self.auth = base, (user, password)

    def request(self, method: str, path: str, body: Any = None,
                ndjson: list[dict[str, Any]] | None = None) -> httpx.Response:
        if ndjson is not None:
            content = "".join(json.dumps(line) + "\n" for line in ndjson).encode()
            return httpx.request(method, self.base + path, content=content, auth=self.auth,
                                 headers={"content-type": "application/x-ndjson"}, timeout=30)
        return httpx.request(method, self.base + path, json=body, auth=self.auth, timeout=30)


@pytest.fixture(scope="session")
def admin(search_admin_url: str) -> Admin:
    return Admin(search_admin_url)


def app_for(admin: Admin, creds: Credentials, password: str | None = None) -> App:
    c = creds.values
    return App(admin.base, str(c["user"]), password or str(c["password"]))


def client_from_dsn(dsn: str) -> tuple[OpenSearch, str]:
    """An opensearch-py client and the index prefix, from `{P}_ELASTICSEARCH_DSN` as an
    application reads it."""
    parts = urlsplit(dsn)
    client = OpenSearch(hosts=[f"{parts.scheme}://{parts.hostname}:{parts.port}"],
                        http_auth=(unquote(parts.username or ""), unquote(parts.password or "")),
                        timeout=30)
    return client, parts.path.strip("/")


# -- check ----------------------------------------------------------------------------------------


def test_check_reads_flavour_and_version(cluster: ClusterSpec) -> None:
    version = PROVIDER.check(cluster)
    assert version.startswith("opensearch-2.")
    assert PROVIDER.service_name(version) == "opensearch-2"
    assert PROVIDER.offered_version(version) == "2"
    assert PROVIDER.service_name("elasticsearch-8.19.21") == "elasticsearch-8"
    identity = PROVIDER.identity(cluster)
    assert identity is not None and identity.startswith("opensearch:")
    assert identity == PROVIDER.identity(cluster)


def test_check_refuses_a_wrong_password(cluster: ClusterSpec, admin: Admin) -> None:
    wrong = f"http://{quote(admin.auth[0])}:not-the-password-{secrets.token_hex(4)}@" + \
        admin.base.split("://", 1)[1]
    bad = ClusterSpec(id=1, kind="elasticsearch", region="local", url=wrong)
    check_final(lambda: PROVIDER.check(bad), "refused the user")
    with pytest.raises(ClusterError) as err:
        PROVIDER.check(bad)
    assert "not-the-password" not in err.value.message


def test_unreachable_is_transient(admin: Admin, make_names: Callable[[str], ResourceNames]
                                  ) -> None:
    url = f"http://{quote(admin.auth[0])}:{quote(admin.auth[1], safe='')}@127.0.0.1:{free_port()}"
    gone = ClusterSpec(id=1, kind="elasticsearch", region="local", url=url)
    check_unreachable_is_transient(PROVIDER, gone, make_names("u"), "cannot reach",
                                   admin.auth[1])


def test_check_refuses_an_admin_without_the_security_api(
        cluster: ClusterSpec, admin: Admin, unique_id: str) -> None:
    """A user with every index and cluster permission but no access to the security plugin's
    REST API cannot make users: refused at registration, with the fix."""
    name, password = f"tether_t{unique_id}adm", secrets.token_urlsafe(24)
    admin.ok("PUT", f"{SECURITY}/roles/{name}", {
        "cluster_permissions": ["cluster_all"],
        "index_permissions": [{"index_patterns": ["*"], "allowed_actions": ["indices_all"]}]})
    admin.ok("PUT", f"{SECURITY}/internalusers/{name}", {"password": password})
    admin.ok("PUT", f"{SECURITY}/rolesmapping/{name}", {"users": [name]})
    try:
        url = f"http://{name}:{quote(password, safe='')}@" + admin.base.split("://", 1)[1]
        weak = ClusterSpec(id=1, kind="elasticsearch", region="local", url=url)
        check_final(lambda: PROVIDER.check(weak), "may not use the security plugin's REST API")
    finally:
        for kind in ("rolesmapping", "internalusers", "roles"):
            admin.request("DELETE", f"{SECURITY}/{kind}/{name}")


def test_a_mapping_of_every_user_is_refused_and_reported(
        cluster: ClusterSpec, admin: Admin, unique_id: str,
        make_names: Callable[[str], ResourceNames]) -> None:
    """The demo configuration maps every user ('*') to own_index: each instance's user would
    get that role too. check() refuses such a cluster (and one mapping a role by host),
    observe() reports the mapping, provision() hands out no credentials meanwhile."""
    names = make_names("w")
    PROVIDER.provision(cluster, names, secrets.token_urlsafe(24))
    role = f"tether_t{unique_id}wide"
    admin.ok("PUT", f"{SECURITY}/roles/{role}", {
        "index_permissions": [{"index_patterns": ["*"], "allowed_actions": ["indices_all"]}]})
    admin.ok("PUT", f"{SECURITY}/rolesmapping/{role}", {"users": ["tether_*"]})
    try:
        check_final(lambda: PROVIDER.check(cluster), f"role {role} is mapped to the users "
                                                     "'tether_*'")
        seen = PROVIDER.observe(cluster, names)
        assert any(f"role {role} is mapped to the users 'tether_*'" in d
                   for d in seen.differences), seen
        # no credentials are handed out with more than their role
        check_final(lambda: PROVIDER.provision(cluster, names, secrets.token_urlsafe(24)),
                    "maps roles to users by pattern or by host")
        admin.ok("PUT", f"{SECURITY}/rolesmapping/{role}", {"hosts": ["*"]})
        check_final(lambda: PROVIDER.check(cluster), f"role {role} is mapped to the hosts '*'")
    finally:
        admin.request("DELETE", f"{SECURITY}/rolesmapping/{role}")
        admin.request("DELETE", f"{SECURITY}/roles/{role}")
    assert PROVIDER.observe(cluster, names).in_sync


# -- provisioning ---------------------------------------------------------------------------------


def test_observe_follows_provision(cluster: ClusterSpec,
                                   make_names: Callable[[str], ResourceNames]) -> None:
    check_observe_follows_provision(PROVIDER, cluster, make_names("o"))


def test_provision_is_idempotent_and_least_privilege(
        cluster: ClusterSpec, admin: Admin, make_names: Callable[[str], ResourceNames]) -> None:
    names = make_names("p")
    secret = secrets.token_urlsafe(24)
    first = PROVIDER.provision(cluster, names, secret)
    assert PROVIDER.provision(cluster, names, secret) == first
    b = names.base
    role = admin.ok("GET", f"{SECURITY}/roles/{b}")[b]
    assert role["description"] == f"{MARK}: {b}"
    assert sorted(role["cluster_permissions"]) == sorted(CLUSTER_ACTIONS)
    [entry] = role["index_permissions"]
    assert entry["index_patterns"] == [b, f"{b}-*"]  # never `b*`
    assert sorted(entry["allowed_actions"]) == sorted(INDEX_ACTIONS)
    assert not any(a.startswith("indices:admin/aliases") and a != "indices:admin/aliases/get"
                   for a in entry["allowed_actions"])
    user = admin.ok("GET", f"{SECURITY}/internalusers/{b}")[b]
    assert user["backend_roles"] == [] and user["opendistro_security_roles"] == []
    mapping = admin.ok("GET", f"{SECURITY}/rolesmapping/{b}")[b]
    assert mapping["users"] == [b] and not mapping["backend_roles"] and not mapping["hosts"]
    app = app_for(admin, first)
    account = app.request("GET", f"{SECURITY}/account").json()
    assert account["roles"] == [b] and account["backend_roles"] == []
    # no cluster-wide view, no security API
    for path in ("/_cat/indices", "/_cluster/health", "/_nodes", f"{SECURITY}/roles"):
        assert app.request("GET", path).status_code == 403, path


def test_env_vars_and_the_opensearch_py_client(
        cluster: ClusterSpec, admin: Admin, make_names: Callable[[str], ResourceNames]) -> None:
    """The real client, configured from the DSN of the environment variable, does what an
    application does on its prefix, and is refused on another instance's."""
    names, other = make_names("c"), make_names("c2")
    creds = PROVIDER.provision(cluster, names, "p@ss/word:%" + secrets.token_urlsafe(16))
    PROVIDER.provision(cluster, other, secrets.token_urlsafe(24))
    variables = PROVIDER.env_vars("SEARCH", creds)
    assert set(variables) == {"SEARCH_ELASTICSEARCH_DSN", "SEARCH_HAYSTACK_URL"}
    dsn = variables["SEARCH_ELASTICSEARCH_DSN"]
    assert variables["SEARCH_HAYSTACK_URL"] == dsn == search_url(creds)
    assert set(PROVIDER.env_vars("DEFAULT", creds)) == {"DEFAULT_ELASTICSEARCH_DSN",
                                                          "DEFAULT_HAYSTACK_URL"}
    assert dsn.endswith(f"/{names.base}") and "p%40ss%2Fword%3A%25" in dsn

    client, prefix = client_from_dsn(dsn)
    assert prefix == names.base
    assert client.info()["version"]["distribution"] == "opensearch"
    index = f"{prefix}-articles"
    client.indices.create(index=index,
                          body={"mappings": {"properties": {"title": {"type": "text"}}}})
    assert client.indices.exists(index=index)
    client.index(index=index, body={"title": "hello world"}, id="1", refresh=True)
    ok, errors = helpers.bulk(client, ({"_index": index, "_id": str(i), "title": f"doc {i}"}
                                       for i in range(2, 40)), refresh=True)
    assert ok == 38 and not errors
    assert client.count(index=index)["count"] == 39
    hits = client.search(index=index, body={"query": {"match": {"title": "hello"}}})
    assert [h["_id"] for h in hits["hits"]["hits"]] == ["1"]
    assert len(list(helpers.scan(client, index=index, size=10))) == 39  # scroll and clear
    assert client.mget(index=index, body={"ids": ["1", "2"]})["docs"][0]["found"]
    assert len(client.msearch(body=[{"index": index}, {"query": {"match_all": {}}}])[
        "responses"]) == 1
    client.indices.put_mapping(index=index, body={"properties": {"tag": {"type": "keyword"}}})
    client.indices.refresh(index=index)
    client.indices.create(index=prefix)  # the index named by the prefix itself
    client.delete(index=index, id="1", refresh=True)

    foreign = f"{other.base}-articles"
    with pytest.raises(AuthorizationException):
        client.indices.create(index=foreign)
    admin.ok("PUT", f"/{foreign}/_doc/1?refresh=true", {"title": "hello other world"})
    with pytest.raises(AuthorizationException):
        client.search(index=foreign, body={"query": {"match": {"title": "hello"}}})
    with pytest.raises(AuthorizationException):
        client.search(index=f"{other.base}*")
    with pytest.raises(AuthorizationException):
        client.indices.put_alias(index=index, name=f"{other.base}-alias")
    wrong, _ = client_from_dsn(dsn.replace(quote(str(creds.values["password"]), safe=""),
                                           "wrong-password-123"))
    with pytest.raises(AuthenticationException):
        wrong.info()
    client.indices.delete(index=index)
    assert [i for i in admin.indices(f"{names.base}*")
            if i == names.base or i.startswith(f"{names.base}-")] == [names.base]


# -- isolation ------------------------------------------------------------------------------------


def test_credentials_reach_only_their_own_prefix(
        cluster: ClusterSpec, admin: Admin, make_names: Callable[[str], ResourceNames]) -> None:
    """Instance A (`..x1`) and B (`..x12`): A's prefix is a prefix of B's, so a pattern `A*`
    would cover B's indices. Each is refused on the other's indices for create, read, search,
    aliases, bulk and multi-requests, and wildcard searches never return the other's data."""
    a, b = make_names("x1"), make_names("x12")
    app_a = app_for(admin, PROVIDER.provision(cluster, a, secrets.token_urlsafe(24)))
    app_b = app_for(admin, PROVIDER.provision(cluster, b, secrets.token_urlsafe(24)))
    secret_a, secret_b = f"only-a-{secrets.token_hex(6)}", f"only-b-{secrets.token_hex(6)}"
    for app, names, text in ((app_a, a, secret_a), (app_b, b, secret_b)):
        assert app.request("PUT", f"/{names.base}-docs").status_code == 200
        assert app.request("PUT", f"/{names.base}-docs/_doc/1?refresh=true",
                           {"text": text}).status_code == 201
        assert app.request("PUT", f"/{names.base}").status_code == 200

    def refused(app: App, method: str, path: str, body: Any = None) -> None:
        response = app.request(method, path, body)
        assert response.status_code == 403, (method, path, response.text)

    for app, me, them, their_secret in ((app_a, a, b, secret_b), (app_b, b, a, secret_a)):
        t = them.base
        refused(app, "PUT", f"/{t}-new")  # create
        refused(app, "PUT", f"/{t}")
        refused(app, "PUT", f"/{t}-docs/_doc/2", {"text": "intruder"})
        refused(app, "GET", f"/{t}-docs/_doc/1")  # read
        refused(app, "GET", f"/{t}-docs")
        refused(app, "GET", f"/{t}-docs/_search")  # search
        refused(app, "GET", f"/{t}-docs/_count")
        refused(app, "DELETE", f"/{t}-docs")
        refused(app, "PUT", f"/{t}-docs/_mapping", {"properties": {"x": {"type": "keyword"}}})
        # aliases: none on the other's indices, none named in the other's prefix, none at all
        for action in ({"index": f"{t}-docs", "alias": f"{me.base}-stolen"},
                       {"index": f"{me.base}-docs", "alias": f"{t}-planted"},
                       {"index": f"{me.base}-docs", "alias": f"{me.base}-alias"}):
            refused(app, "POST", "/_aliases", {"actions": [{"add": action}]})
        refused(app, "PUT", f"/{me.base}-docs/_alias/{t}-planted")
        refused(app, "PUT", f"/{me.base}-withalias", {"aliases": {f"{t}-planted": {}}})
        # wildcard and cluster-wide searches: refused, or at least nothing of the other's
        for pattern in (f"{me.base}*", f"{t}*", "tether_*", "*", "_all", f"{t}-*"):
            response = app.request("GET", f"/{pattern}/_search")
            assert response.status_code in (403, 404) or (
                response.status_code == 200 and their_secret not in response.text), pattern
        for path in ("/_search", "/_cat/indices", "/_cat/aliases", f"/{t}-docs/_alias"):
            response = app.request("GET", path)
            assert response.status_code == 403 and their_secret not in response.text, path
        # bulk and multi-requests: refused per item
        bulk = app.request("POST", "/_bulk?refresh=true", ndjson=[
            {"index": {"_index": f"{me.base}-docs", "_id": "b1"}}, {"text": "mine"},
            {"index": {"_index": f"{t}-docs", "_id": "b2"}}, {"text": "intruder"},
            {"delete": {"_index": f"{t}-docs", "_id": "1"}},
            {"create": {"_index": f"{t}-bulkmade", "_id": "b3"}}, {"text": "intruder"}])
        assert bulk.status_code == 200, bulk.text
        statuses = [next(iter(item.values()))["status"] for item in bulk.json()["items"]]
        assert statuses[0] == 201 and statuses[1:] == [403, 403, 403], statuses
        msearch = app.request("POST", "/_msearch", ndjson=[
            {"index": f"{t}-docs"}, {"query": {"match_all": {}}},
            {"index": f"{t}*"}, {"query": {"match_all": {}}}])
        assert their_secret not in msearch.text
        assert all("error" in r for r in msearch.json()["responses"]), msearch.text
        mget = app.request("POST", "/_mget", {"docs": [{"_index": f"{t}-docs", "_id": "1"}]})
        assert their_secret not in mget.text
        assert mget.status_code == 403 or all("error" in d for d in mget.json()["docs"])

    # nothing of that reached the other instance
    for names in (a, b):
        assert admin.indices(f"{names.base}*") == sorted(
            [names.base, f"{names.base}-docs"] + ([f"{b.base}", f"{b.base}-docs"]
                                                  if names is a else []))
        assert admin.count(f"{names.base}-docs") == 2  # its doc 1 and its own bulk doc
    aliases = admin.ok("GET", "/_alias/tether_*")
    assert not any(entry["aliases"] for entry in aliases.values()), aliases


def test_wrong_password_and_other_users_password_are_refused(
        cluster: ClusterSpec, admin: Admin, make_names: Callable[[str], ResourceNames]) -> None:
    a, b = make_names("pw"), make_names("pw2")
    creds_a = PROVIDER.provision(cluster, a, secrets.token_urlsafe(24))
    creds_b = PROVIDER.provision(cluster, b, secrets.token_urlsafe(24))
    assert app_for(admin, creds_a).request("PUT", f"/{a.base}-x").status_code == 200
    for password in ("not-" + str(creds_a.values["password"]), str(creds_b.values["password"]),
                     ""):
        response = app_for(admin, creds_a, password or " ").request("GET", f"/{a.base}-x")
        assert response.status_code == 401
    anonymous = httpx.get(f"{admin.base}/{a.base}-x/_search", timeout=30)
    assert anonymous.status_code == 401


# -- drift, crash, removal ------------------------------------------------------------------------


def test_observe_sees_drift_and_provision_repairs_it(
        cluster: ClusterSpec, admin: Admin, unique_id: str,
        make_names: Callable[[str], ResourceNames]) -> None:
    names, other = make_names("d"), make_names("d2")
    secret = secrets.token_urlsafe(24)
    creds = PROVIDER.provision(cluster, names, secret)
    PROVIDER.provision(cluster, other, secrets.token_urlsafe(24))
    app = app_for(admin, creds)
    assert app.request("PUT", f"/{names.base}-x").status_code == 200
    admin.ok("PUT", f"/{other.base}-y")
    b = names.base
    # an extra cluster action, an extra index permission on everything, dls, a tenant
    role = admin.ok("GET", f"{SECURITY}/roles/{b}")[b]
    for key in ("reserved", "hidden", "static"):
        role.pop(key, None)
    role["cluster_permissions"].append("cluster:monitor/health")
    role["index_permissions"][0]["dls"] = '{"match_all": {}}'
    role["index_permissions"].append({"index_patterns": ["*"], "allowed_actions": ["read"]})
    role["tenant_permissions"] = [{"tenant_patterns": ["global_tenant"],
                                   "allowed_actions": ["kibana_all_write"]}]
    admin.ok("PUT", f"{SECURITY}/roles/{b}", role)
    # another user, a backend role and every host in its mapping, its user mapped to another
    # role, a backend role given to its user
    admin.ok("PUT", f"{SECURITY}/rolesmapping/{b}", {
        "description": f"{MARK}: {b}", "users": [b, other.base], "backend_roles": ["staff"],
        "hosts": ["*"]})
    extra_role = f"tether_t{unique_id}extra"
    admin.ok("PUT", f"{SECURITY}/roles/{extra_role}", {"cluster_permissions": ["cluster_all"]})
    admin.ok("PUT", f"{SECURITY}/rolesmapping/{extra_role}", {"users": [b, "someone"]})
    admin.ok("PATCH", f"{SECURITY}/internalusers/{b}",
             [{"op": "add", "path": "/backend_roles", "value": ["admin"]}])
    # aliases out of the prefix, as only an admin can make them
    admin.ok("POST", "/_aliases", {"actions": [
        {"add": {"index": f"{b}-x", "alias": f"{other.base}-planted"}},
        {"add": {"index": f"{other.base}-y", "alias": f"{b}-stolen"}}]})
    try:
        differences = "\n".join(PROVIDER.observe(cluster, names).differences)
        for expected in (f"role {b} also allows the cluster actions cluster:monitor/health",
                         f"role {b} also allows read on the indices *",
                         f"role {b} restricts the documents or fields",
                         f"role {b} has tenant permissions",
                         f"role {b} is mapped to the users {b}, {other.base}, not to {b} alone",
                         f"role {b} is also mapped to the backend roles staff",
                         f"role {b} is also mapped to the hosts *",
                         f"user {b} is also mapped to role {extra_role}",
                         f"user {b} has the backend roles admin",
                         f"alias {other.base}-planted of index {b}-x leads out",
                         f"alias {b}-stolen of index {other.base}-y leads out"):
            assert expected in differences, (expected, differences)
        PROVIDER.provision(cluster, names, secret)
        assert PROVIDER.observe(cluster, names).in_sync
        assert admin.ok("GET", f"{SECURITY}/rolesmapping/{extra_role}")[extra_role][
            "users"] == ["someone"]
        assert app.request("GET", f"{SECURITY}/account").json()["roles"] == [b]
        assert app.request("GET", f"/{other.base}-y/_search").status_code == 403
        assert app.request("GET", f"/{b}-x/_search").status_code == 200
    finally:
        admin.request("DELETE", f"{SECURITY}/rolesmapping/{extra_role}")
        admin.request("DELETE", f"{SECURITY}/roles/{extra_role}")


def test_a_removed_user_is_seen_and_made_again(
        cluster: ClusterSpec, admin: Admin, make_names: Callable[[str], ResourceNames]) -> None:
    """Also the state a provision that crashed after making the role leaves, and a removal that
    crashed before deleting the role: provision and deprovision both converge from it."""
    names = make_names("r")
    secret = secrets.token_urlsafe(24)
    creds = PROVIDER.provision(cluster, names, secret)
    b = names.base
    admin.ok("DELETE", f"{SECURITY}/rolesmapping/{b}")
    admin.ok("DELETE", f"{SECURITY}/internalusers/{b}")
    seen = PROVIDER.observe(cluster, names)
    assert seen.exists and set(seen.differences) == {
        f"user {b} is missing", f"the mapping of role {b} to user {b} is missing"}
    assert app_for(admin, creds).request("PUT", f"/{b}-x").status_code == 401
    PROVIDER.provision(cluster, names, secret)
    assert PROVIDER.observe(cluster, names).in_sync
    assert app_for(admin, creds).request("PUT", f"/{b}-x").status_code == 200
    # a removal that stopped after the user (removal deletes the mapping and the user first,
    # then the indices, the role last), and one that stopped before the role
    admin.ok("DELETE", f"{SECURITY}/rolesmapping/{b}")
    admin.ok("DELETE", f"{SECURITY}/internalusers/{b}")
    assert PROVIDER.exists(cluster, names)
    PROVIDER.deprovision(cluster, names)
    assert not PROVIDER.exists(cluster, names)
    assert admin.status(f"{SECURITY}/roles/{b}") == 404
    assert admin.indices(f"{b}*") == []


def test_remove_deletes_indices_role_and_user_and_nothing_else(
        cluster: ClusterSpec, admin: Admin, make_names: Callable[[str], ResourceNames]) -> None:
    a, b = make_names("m1"), make_names("m12")  # a's prefix is a prefix of b's
    app_a = app_for(admin, PROVIDER.provision(cluster, a, secrets.token_urlsafe(24)))
    app_b = app_for(admin, PROVIDER.provision(cluster, b, secrets.token_urlsafe(24)))
    for index in (a.base, f"{a.base}-one", f"{a.base}-two", f"{a.base}-closed"):
        assert app_a.request("PUT", f"/{index}").status_code == 200
    assert app_a.request("PUT", f"/{a.base}-hidden", {"settings": {"index.hidden": True}}
                         ).status_code == 200
    assert app_a.request("POST", f"/{a.base}-closed/_close").status_code == 200
    for index in (b.base, f"{b.base}-one"):
        assert app_b.request("PUT", f"/{index}").status_code == 200
    # an index of that pattern that only `a*` would match, made by the admin
    admin.ok("PUT", f"/{a.base}x-notmine")
    try:
        PROVIDER.deprovision(cluster, a)
        assert admin.indices(f"{a.base}*") == sorted(
            [b.base, f"{b.base}-one", f"{a.base}x-notmine"])
        for kind in ("roles", "internalusers", "rolesmapping"):
            assert admin.status(f"{SECURITY}/{kind}/{a.base}") == 404
            assert admin.status(f"{SECURITY}/{kind}/{b.base}") == 200
        assert not PROVIDER.observe(cluster, a).exists
        PROVIDER.deprovision(cluster, a)  # idempotent
        assert app_b.request("GET", f"/{b.base}-one/_search").status_code == 200
    finally:
        admin.request("DELETE", f"/{a.base}x-notmine")


def test_what_tether_did_not_make_is_neither_taken_over_nor_removed(
        cluster: ClusterSpec, admin: Admin, make_names: Callable[[str], ResourceNames]) -> None:
    names = make_names("f")
    b = names.base
    admin.ok("PUT", f"{SECURITY}/roles/{b}", {"cluster_permissions": ["cluster_monitor"]})
    admin.ok("PUT", f"/{b}-theirs")
    try:
        check_final(lambda: PROVIDER.provision(cluster, names, secrets.token_urlsafe(24)),
                    "was not made by Tether")
        assert admin.status(f"{SECURITY}/roles/{b}") == 200
        assert admin.status(f"{SECURITY}/internalusers/{b}") == 404
        seen = PROVIDER.observe(cluster, names)
        assert f"role {b} was not made by Tether: Tether does not take it over" in \
            seen.differences
        PROVIDER.deprovision(cluster, names)
        assert admin.status(f"{SECURITY}/roles/{b}") == 200
        assert admin.indices(f"{b}*") == [f"{b}-theirs"]
    finally:
        admin.request("DELETE", f"{SECURITY}/roles/{b}")
        admin.request("DELETE", f"/{b}-theirs")


def test_a_failed_fresh_provision_leaves_nothing_behind(
        cluster: ClusterSpec, admin: Admin, make_names: Callable[[str], ResourceNames]) -> None:
    """Rule 5: the cluster's password rules refuse the password (a final error, after the role
    was made): the role goes again, and the message says what to change."""
    names = make_names("weak")
    with pytest.raises(ClusterError) as err:
        PROVIDER.provision(cluster, names, "short")
    assert "password rules" in err.value.message and "short" not in err.value.message
    for kind in ("roles", "internalusers", "rolesmapping"):
        assert admin.status(f"{SECURITY}/{kind}/{names.base}") == 404
    assert not PROVIDER.exists(cluster, names)


def test_blocks_set_by_the_instance_do_not_stop_its_removal(
        cluster: ClusterSpec, admin: Admin, make_names: Callable[[str], ResourceNames]) -> None:
    """The instance may update its indices' settings, so it may set `index.blocks.*` on them
    (read_only and metadata forbid deleting an index, metadata forbids reading its aliases):
    observe still works (for it and for other instances), a refusal caused by a block says so,
    and removal clears the blocks, deletes the indices (normal, hidden, closed, the base index)
    and the user, which can no longer log in."""
    names = make_names("blk")
    b = names.base
    creds = PROVIDER.provision(cluster, names, secrets.token_urlsafe(24))
    app = app_for(admin, creds)
    indices = [b, f"{b}-one", f"{b}-hidden", f"{b}-closed"]
    for index in indices:
        body = {"settings": {"index.hidden": True}} if index.endswith("-hidden") else None
        assert app.request("PUT", f"/{index}", body).status_code == 200
    assert app.request("POST", f"/{b}-closed/_close").status_code == 200
    # an alias leading out of the prefix (only an admin can make one), to be repaired later
    admin.ok("PUT", f"/{b}-one/_alias/{b}x-out")
    for index in indices:
        for block in ("write", "read", "read_only", "metadata"):
            response = app.request("PUT", f"/{index}/_settings?expand_wildcards=all",
                                   {f"index.blocks.{block}": True})
            assert response.status_code == 200, (index, block, response.text)
    assert admin.request("DELETE", f"/{b}-one").status_code == 403  # blocked indeed
    # another instance is not affected (`GET /_alias/PATTERN` is refused under any index's
    # metadata block, whichever instance's)
    other = make_names("blk2")
    PROVIDER.provision(cluster, other, secrets.token_urlsafe(24))
    assert PROVIDER.observe(cluster, other).in_sync

    seen = PROVIDER.observe(cluster, names)
    assert seen.exists and seen.differences == (
        f"alias {b}x-out of index {b}-one leads out of the prefix {b}",), seen
    # repairing it is refused by the block: the message says so (not "put an administrator")
    with pytest.raises(ClusterError) as err:
        PROVIDER.provision(cluster, names, str(creds.values["password"]))
    assert "because of an index block" in err.value.message, err.value.message
    assert "index.blocks.metadata" in err.value.message
    assert "put an administrator" not in err.value.message

    PROVIDER.deprovision(cluster, names)
    assert admin.indices(f"{b}*") == []
    for kind in ("roles", "internalusers", "rolesmapping"):
        assert admin.status(f"{SECURITY}/{kind}/{b}") == 404
    assert app.request("GET", "/_plugins/_security/authinfo").status_code == 401
    assert not PROVIDER.exists(cluster, names)


def test_indices_made_while_removing_are_removed_too(
        cluster: ClusterSpec, admin: Admin, make_names: Callable[[str], ResourceNames]) -> None:
    """A running application keeps creating indices while its instance is removed: removal
    revokes its user before listing the indices, so none of them survives."""
    names = make_names("run")
    b = names.base
    app = app_for(admin, PROVIDER.provision(cluster, names, secrets.token_urlsafe(24)))
    stop, made = threading.Event(), threading.Event()
    created: list[str] = []

    def keep_creating() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                response = app.request("PUT", f"/{b}-t{i}")
            except httpx.HTTPError:
                continue
            if response.status_code == 200:
                created.append(f"{b}-t{i}")
                if len(created) >= 3:
                    made.set()

    worker = threading.Thread(target=keep_creating, daemon=True)
    worker.start()
    try:
        assert made.wait(60), "the application made no index"
        PROVIDER.deprovision(cluster, names)
        # the application's requests are refused from now on
        assert app.request("PUT", f"/{b}-late").status_code == 401
    finally:
        stop.set()
        worker.join(60)
    assert len(created) >= 3
    assert admin.indices(f"{b}*") == [], created
    assert not PROVIDER.exists(cluster, names)


def test_a_password_changed_by_the_instance_is_set_back(
        cluster: ClusterSpec, admin: Admin, make_names: Callable[[str], ResourceNames]) -> None:
    """Known limit: the instance's user may change its own password (the `account` API);
    observe cannot see it (no hash is shown, no password to try), provision sets it back."""
    names = make_names("acct")
    secret = secrets.token_urlsafe(24)
    creds = PROVIDER.provision(cluster, names, secret)
    app = app_for(admin, creds)
    changed = secrets.token_urlsafe(24)
    response = app.request("PUT", f"{SECURITY}/account",
                           {"current_password": secret, "password": changed})
    assert response.status_code == 200, response.text
    assert app.request("GET", "/_plugins/_security/authinfo").status_code == 401
    assert PROVIDER.observe(cluster, names).in_sync  # the documented limit
    PROVIDER.provision(cluster, names, secret)
    assert app.request("GET", "/_plugins/_security/authinfo").status_code == 200
