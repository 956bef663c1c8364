"""Search through the engine (issue 9): an OpenSearch 2 cluster registered as kind elasticsearch
is catalogued as opensearch-2 (`opensearch` alone picks it), a deploy provisions it, the
application's variables work with opensearch-py, and remove deletes the indices, the role and the
user. A `--private` instance gets a dedicated OpenSearch run by Tether, gone with the instance.
Against real OpenSearch servers; no mocks."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from urllib.parse import unquote, urlsplit

import pytest
from opensearchpy import AuthenticationException, AuthorizationException, OpenSearch
from opensearchpy.exceptions import ConnectionError as SearchConnectionError

from tests.conftest import world_traversable_tmpdir
from tests.integration.search.conftest import SearchNode
from tests.plane import APP_COMMAND, wait_op
from tests.plane import plane as make_plane
from tether.actions import deployments, projects, services, variables
from tether.actions.common import Context
from tether.engine.core import Engine

pytestmark = pytest.mark.integration

SECURITY = "/_plugins/_security/api"


@pytest.fixture
def plane(opensearch_server: SearchNode) -> Iterator[tuple[Context, Engine]]:
    data_dir = world_traversable_tmpdir("tether-test-engine-search-")  # private servers' user
    try:
        with make_plane(data_dir, "elasticsearch", "local", opensearch_server.admin_url,
                        "search") as made:
            yield made
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def client_from_dsn(dsn: str) -> tuple[OpenSearch, str]:
    parts = urlsplit(dsn)
    client = OpenSearch(hosts=[f"{parts.scheme}://{parts.hostname}:{parts.port}"],
                        http_auth=(unquote(parts.username or ""), unquote(parts.password or "")),
                        timeout=30)
    return client, parts.path.strip("/")


def test_search_through_deploy_and_remove(plane: tuple[Context, Engine],
                                          opensearch_server: SearchNode, unique_id: str) -> None:
    ctx, _ = plane
    name = f"se{unique_id}"
    projects.create_project(ctx, name, app_command=APP_COMMAND)
    offered = {o["service"]: o for o in services.catalog_view(ctx, "local", None)}
    assert "opensearch-2" in offered, offered
    added = services.add(ctx, name, "test", "opensearch", "SEARCH")
    other = services.add(ctx, name, "test", "opensearch-2", "OTHER")
    dep = deployments.deploy(ctx, name, "test")
    assert wait_op(ctx, dep["operation"]["id"], timeout=180)["status"] == "succeeded"
    env = {v["name"]: v["value"] for v in variables.list_variables(ctx, name, "test", True)}
    assert env["SEARCH_HAYSTACK_URL"] == env["SEARCH_ELASTICSEARCH_DSN"]
    assert "DATABASE_URL" not in env and "HAYSTACK_URL" not in env  # no DEFAULT aliases
    base = f"tether_i{added['id']}"
    client, prefix = client_from_dsn(env["SEARCH_ELASTICSEARCH_DSN"])
    assert prefix == base
    client.index(index=f"{prefix}-notes", body={"text": "hello"}, id="1", refresh=True)
    assert client.count(index=f"{prefix}-notes")["count"] == 1
    other_client, other_prefix = client_from_dsn(env["OTHER_ELASTICSEARCH_DSN"])
    assert other_prefix == f"tether_i{other['id']}"
    with pytest.raises(AuthorizationException):
        other_client.search(index=f"{prefix}-notes")

    services.detach(ctx, name, "test", "SEARCH")
    dep = deployments.deploy(ctx, name, "test")
    assert wait_op(ctx, dep["operation"]["id"], timeout=180)["status"] == "succeeded"
    removed = services.remove(ctx, name, "test", "SEARCH", "SEARCH")
    assert wait_op(ctx, removed["operation"]["id"], timeout=180)["status"] == "succeeded"
    for kind in ("roles", "internalusers", "rolesmapping"):
        assert opensearch_server.request("GET", f"{SECURITY}/{kind}/{base}").status_code == 404
    found = opensearch_server.request("GET", f"/_resolve/index/{base}*").json()["indices"]
    assert [i["name"] for i in found if i["name"].startswith(f"{base}-")] == []
    # the other instance is untouched; remove it too (nothing left on the shared server)
    assert other_client.indices.create(index=f"{other_prefix}-x")["acknowledged"]
    services.detach(ctx, name, "test", "OTHER")
    dep = deployments.deploy(ctx, name, "test")
    assert wait_op(ctx, dep["operation"]["id"], timeout=180)["status"] == "succeeded"
    removed = services.remove(ctx, name, "test", "OTHER", "OTHER")
    assert wait_op(ctx, removed["operation"]["id"], timeout=180)["status"] == "succeeded"
    found = opensearch_server.request("GET", f"/_resolve/index/{other_prefix}*").json()
    assert [i["name"] for i in found["indices"] if i["name"].startswith(other_prefix + "-")] == []


def test_private_search_server_through_the_engine(plane: tuple[Context, Engine],
                                                  opensearch_server: SearchNode,
                                                  unique_id: str) -> None:
    ctx, _ = plane
    name = f"sp{unique_id}"
    projects.create_project(ctx, name, app_command=APP_COMMAND)
    own = services.add(ctx, name, "test", "opensearch-2", "OWN", private=True, provision=True)
    assert wait_op(ctx, own["operation"]["id"], timeout=300)["status"] == "succeeded", \
        services.show(ctx, name, "test", "OWN")["last_error"]
    dep = deployments.deploy(ctx, name, "test")
    assert wait_op(ctx, dep["operation"]["id"], timeout=180)["status"] == "succeeded"
    env = {v["name"]: v["value"] for v in variables.list_variables(ctx, name, "test", True)}
    dsn = env["OWN_ELASTICSEARCH_DSN"]
    assert urlsplit(dsn).port != urlsplit(opensearch_server.url).port  # its own server
    client, prefix = client_from_dsn(dsn)
    assert prefix == f"tether_i{own['id']}"
    assert client.info()["version"]["distribution"] == "opensearch"
    client.index(index=f"{prefix}-notes", body={"text": "mine"}, id="1", refresh=True)
    assert client.count(index=f"{prefix}-notes")["count"] == 1
    with pytest.raises(AuthorizationException):  # its user is not the server's admin
        client.indices.create(index="not-my-prefix")
    private_dir = ctx.data_dir / "private" / prefix
    assert private_dir.exists()

    services.detach(ctx, name, "test", "OWN")
    dep = deployments.deploy(ctx, name, "test")
    assert wait_op(ctx, dep["operation"]["id"], timeout=180)["status"] == "succeeded"
    removed = services.remove(ctx, name, "test", "OWN", "OWN")
    assert wait_op(ctx, removed["operation"]["id"], timeout=300)["status"] == "succeeded"
    assert not private_dir.exists()
    with pytest.raises((SearchConnectionError, AuthenticationException)):
        client.info()
