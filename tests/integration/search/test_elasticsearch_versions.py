"""Which search versions the elasticsearch provider offers (issue 9): Elasticsearch clusters are
refused at registration, with the reason, because the Elasticsearch builds available here cannot
make users through the security API (so the isolation of instances cannot be tested on them).
Against real Elasticsearch 8.19.21 and 7.17.29 servers; no mocks."""

from __future__ import annotations

import pytest

from tests.integration.provider_contract import check_final
from tests.integration.search.conftest import SearchNode
from tether.providers.base import ClusterSpec, ResourceNames
from tether.providers.elasticsearch import ElasticsearchProvider

pytestmark = pytest.mark.integration

PROVIDER = ElasticsearchProvider()


@pytest.mark.parametrize(("fixture", "major"), [("elasticsearch8_server", "8"),
                                                ("elasticsearch7_server", "7")])
def test_elasticsearch_is_refused_with_the_reason(request: pytest.FixtureRequest, fixture: str,
                                                  major: str) -> None:
    node: SearchNode = request.getfixturevalue(fixture)
    cluster = ClusterSpec(id=1, kind="elasticsearch", region="local", url=node.admin_url)
    check_final(lambda: PROVIDER.check(cluster),
                f"the cluster is Elasticsearch {major}.")
    check_final(lambda: PROVIDER.check(cluster),
                "cannot create users through the security API")
    # what the server is, read even where `GET /` is missing (8.x integ-test builds)
    identity = PROVIDER.identity(cluster)
    assert identity is not None and identity.startswith("elasticsearch:")
    assert PROVIDER.service_name(f"elasticsearch-{major}.1.2") == f"elasticsearch-{major}"
    # and nothing is made on it
    check_final(lambda: PROVIDER.provision(cluster, ResourceNames(base="tether_tnever"),
                                           "x" * 32), "does not offer Elasticsearch")


def test_service_names_and_settings() -> None:
    """No server needed: how versions name services, and the typed settings."""
    assert PROVIDER.service_name("opensearch-2.19.4") == "opensearch-2"
    assert PROVIDER.offered_version("opensearch-2.19.4") == "2"
    assert PROVIDER.service_name("8.19.21") == "elasticsearch-8"  # a bare version
    assert PROVIDER.check_settings({"public_host": "search.example.com", "public_port": 443,
                                    "public_scheme": "https"})
    for bad in ({"public_port": 70000}, {"public_scheme": "ftp"},
                {"public_host": "user@host"}, {"connection_limit": 5}):
        with pytest.raises(ValueError):
            PROVIDER.check_settings(bad)
