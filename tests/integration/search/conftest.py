"""The search servers' fixtures live in tests/search.py (registered by tests/conftest.py, so the
end-to-end tests share them); `SearchNode` is imported from here by the search tests.

Here: the session's OpenSearch 2 server as a cluster (`cluster`), and resource names unique to a
test whose instances are removed at its end (`make_names`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.integration.names import unique_names
from tests.search import SearchNode
from tether.providers.base import ClusterSpec, ResourceNames
from tether.providers.elasticsearch import ElasticsearchProvider

__all__ = ["SearchNode"]


@pytest.fixture
def cluster(opensearch_server: SearchNode) -> ClusterSpec:
    """The session's OpenSearch 2 server (or `TETHER_TEST_OPENSEARCH_URL`'s) as a shared
    cluster."""
    return ClusterSpec(id=1, kind="elasticsearch", region="local",
                       url=opensearch_server.admin_url)


@pytest.fixture
def make_names(cluster: ClusterSpec, unique_id: str) -> Iterator[Callable[[str], ResourceNames]]:
    """Resource names unique to this test; whatever they name is deprovisioned at the end."""
    provider = ElasticsearchProvider()
    with unique_names(unique_id, lambda names: provider.deprovision(cluster, names)) as make:
        yield make
