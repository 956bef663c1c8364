"""The story with a search service (issue 9), through the real CLI against a real `tether up` and
a real OpenSearch 2 with its security plugin: the operator registers the cluster (flavour and
version read from it), a developer adds `opensearch-2` under a prefix, deploys a real app that logs
in with its variable, and removes it: the indices, the role and the user are gone."""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx
import pytest

from tests.e2e.conftest import Tether
from tests.e2e.test_story import app_status, env_url
from tests.search import SearchNode

pytestmark = pytest.mark.e2e

APP = f"{sys.executable} examples/hello/app.py"
SECURITY = "/_plugins/_security/api"


def test_a_search_service_from_registration_to_removal(tether: Tether,
                                                       opensearch_server: SearchNode) -> None:
    t = tether
    wrong = opensearch_server.admin_url.replace(
        opensearch_server.password.replace(":", "%3A"), "not-the-password")
    refused = t.cli("cluster", "add", "elasticsearch", "--region", "local", "--url", wrong)
    assert refused.code == 2, refused.out + refused.err
    assert "not-the-password" not in refused.out + refused.err

    added = t.ok("cluster", "add", "elasticsearch", "--region", "local", "--name", "search-e2e",
                 "--url", opensearch_server.admin_url, "--json").json()
    assert added["version"].startswith("opensearch-2.")
    assert opensearch_server.password not in str(added)
    t.ok("project", "create", "finder", "--app-command", APP, "--health-path", "/health",
         "--app-dir", str(Path.cwd()), "--no-database")
    catalog = {o["service"] for o in t.ok("service", "catalog", "-p", "finder",
                                          "--json").json()}
    assert "opensearch-2" in catalog
    shown = t.ok("service", "add", "test", "opensearch", "--prefix", "SEARCH", "-p", "finder",
                 "--json").json()
    assert shown["service"] == "opensearch-2"
    deployed = t.cli("deploy", "test", "-p", "finder")
    assert deployed.code == 0, deployed.out + deployed.err
    assert states_of(t, "finder")["SEARCH"] == "attached"

    variables = {v["name"]: v["value"] for v in t.ok(
        "project", "env-vars", "-p", "finder", "-e", "test", "--all", "--reveal",
        "--json").json()}
    dsn = variables["SEARCH_ELASTICSEARCH_DSN"]
    assert variables["SEARCH_HAYSTACK_URL"] == dsn
    parts = urlsplit(dsn)
    index = parts.path.strip("/")
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    assert index.startswith("tether_i") and user and len(password) >= 16

    # the application logs in with its variable; its index is its own
    base = f"{parts.scheme}://{parts.hostname}:{parts.port}"
    made = httpx.put(f"{base}/{index}/_doc/1?refresh=true", json={"title": "found"},
                     auth=(user, password), timeout=30)
    assert made.status_code in (200, 201), made.text
    url = env_url(t, "finder", "test")
    status = app_status(url)["services"]["SEARCH_ELASTICSEARCH_DSN"]
    assert status["ok"] and "holds 1 document" in status["detail"], status
    assert password not in str(app_status(url))
    # and nobody else's: the admin's security API and the other indices are refused
    assert httpx.get(f"{base}{SECURITY}/internalusers", auth=(user, password),
                     timeout=30).status_code == 403
    assert httpx.get(f"{base}/_cat/indices", auth=(user, password), timeout=30).status_code == 403

    # remove: detach and deploy, then the typed prefix; indices, role and user are gone
    t.ok("service", "detach", "test", "SEARCH", "-p", "finder")
    t.ok("deploy", "test", "-p", "finder")
    t.ok("service", "remove", "test", "SEARCH", "--confirm", "SEARCH", "-p", "finder")
    assert "SEARCH" not in states_of(t, "finder")
    assert opensearch_server.request("GET", f"/{index}").status_code == 404
    assert opensearch_server.request("GET", f"{SECURITY}/roles/{user}").status_code == 404
    assert opensearch_server.request("GET", f"{SECURITY}/internalusers/{user}").status_code == 404
    assert httpx.get(f"{base}/{index}/_count", auth=(user, password),
                     timeout=30).status_code == 401


def states_of(t: Tether, project: str) -> dict[str, str]:
    return {i["prefix"]: i["state"] for i in t.ok("service", "list", "test", "-p", project,
                                                 "--json").json()}

