"""Real search servers for the tests: OpenSearch 2.19.4, Elasticsearch 8.19.21 and 7.17.29, each
run by `tether.servers.search` (integ-test zips from Maven Central on a JDK 17, installed and
fetched by scripts/servers/search.sh) on a free loopback port with security on and a password
admin; stopped and deleted at the end of the session.

Each fixture is session-scoped and so started only when a test first asks for it: selecting one
test starts one JVM, not three (each start costs 15-80 s on two busy cores, ~750 MB of memory).

The fixtures are registered in tests/conftest.py, so the search integration tests and the
end-to-end story in one pytest run share one server per release.

A running server is reused instead when its admin URL is set: `TETHER_TEST_OPENSEARCH_URL`,
`TETHER_TEST_ELASTICSEARCH8_URL`, `TETHER_TEST_ELASTICSEARCH7_URL`, e.g.
`http://ADMIN:PASSWORD@127.0.0.1:9200` (password URL-encoded), an admin with every right.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import pytest

from tether.errors import ClusterError
from tether.net import free_port
from tether.servers.search import PortTaken, SearchServer, parse_release

# The C1 compiler alone: a JVM start takes about half as long on two busy cores (27 s against
# 48 s for Elasticsearch 7.17), which matters more to a test run than peak query speed.
os.environ.setdefault("TETHER_SEARCH_JAVA_OPTS", "-XX:TieredStopAtLevel=1")


@dataclass(frozen=True)
class SearchNode:
    """A search server the tests may administer."""

    release: str  # e.g. "opensearch-2.19.4"; "" for a reused server of unknown release
    admin_url: str
    url: str  # without credentials
    user: str
    password: str
    server: SearchServer | None  # None when reused from TETHER_TEST_*_URL

    def request(self, method: str, path: str, *, auth: tuple[str, str] | None = None,
                **kwargs: Any) -> httpx.Response:
        """A request as the admin (or as `auth`)."""
        return httpx.request(method, self.url + path, auth=auth or (self.user, self.password),
                             timeout=30, **kwargs)


def _reused(url: str) -> SearchNode:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 9200
    return SearchNode(release="", admin_url=url, url=f"{parts.scheme}://{host}:{port}",
                      user=unquote(parts.username or ""), password=unquote(parts.password or ""),
                      server=None)


def _search_node(release: str, env_var: str) -> Iterator[SearchNode]:
    url = os.environ.get(env_var)
    if url:
        yield _reused(url)
        return
    from tests.conftest import world_traversable_tmpdir  # it imports this module

    base = world_traversable_tmpdir("tether-test-search-")
    server = SearchServer(parse_release(release), base / release, free_port())
    password = "adm:" + secrets.token_urlsafe(18)  # needs URL-encoding
    try:
        try:
            server.init(password)
            for attempt in range(3):
                try:
                    # a JVM starts in 1-2 minutes here, more beside the rest of the suite on
                    # 2 cores
                    server.start(timeout=360.0, password=password)
                    break
                except PortTaken:
                    # chosen free, taken by another test group's server before the JVM bound
                    # it: another port
                    if attempt == 2:
                        raise
                    server.port = free_port()
        except ClusterError as exc:
            pytest.fail(f"{exc.message} (or set {env_var} to the admin URL of a running "
                        f"{release} server)")
        yield SearchNode(release=release, admin_url=server.admin_url(password), url=server.url,
                         user="tether_admin", password=password, server=server)
    finally:
        try:
            server.destroy()
        finally:
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def opensearch_server() -> Iterator[SearchNode]:
    """OpenSearch 2.19.4 with its security plugin (TETHER_TEST_OPENSEARCH_URL reuses one)."""
    yield from _search_node("opensearch-2.19.4", "TETHER_TEST_OPENSEARCH_URL")


@pytest.fixture(scope="session")
def elasticsearch8_server() -> Iterator[SearchNode]:
    """Elasticsearch 8.19.21 with x-pack security (TETHER_TEST_ELASTICSEARCH8_URL reuses one)."""
    yield from _search_node("elasticsearch-8.19.21", "TETHER_TEST_ELASTICSEARCH8_URL")


@pytest.fixture(scope="session")
def elasticsearch7_server() -> Iterator[SearchNode]:
    """Elasticsearch 7.17.29 with x-pack security (TETHER_TEST_ELASTICSEARCH7_URL reuses one)."""
    yield from _search_node("elasticsearch-7.17.29", "TETHER_TEST_ELASTICSEARCH7_URL")
