"""Which search clusters the elasticsearch provider accepts (issue 9): Elasticsearch clusters are
refused at registration, with the reason, because the Elasticsearch builds available here cannot
make users through the security API (so the isolation of instances cannot be tested on them);
so is a server whose security is off. Against real Elasticsearch 8.19.21 and 7.17.29 servers and
an OpenSearch 2.19.4 started with its security plugin disabled; no mocks."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import world_traversable_tmpdir
from tests.integration.provider_contract import check_final
from tests.integration.search.conftest import SearchNode
from tether.net import free_port
from tether.providers.base import ClusterSpec, ResourceNames
from tether.providers.elasticsearch import ElasticsearchProvider
from tether.servers.search import SERVICE_USER, SearchServer, distribution, parse_release

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


@pytest.fixture(scope="module")
def insecure_opensearch() -> Iterator[str]:
    """An OpenSearch 2.19.4 home made by tether.servers.search, started with
    `plugins.security.disabled: true`: every request is answered without credentials. Its URL
    (credentials are ignored)."""
    base = world_traversable_tmpdir("tether-test-insecure-search-")
    release = parse_release("opensearch-2.19.4")
    server = SearchServer(release, base / "nosec", free_port())
    try:
        server.init("adm:" + secrets.token_urlsafe(18))
        with (server.config_dir / release.config_name).open("a") as conf:
            conf.write("plugins.security.disabled: true\n")
        account = pwd.getpwnam(SERVICE_USER) if os.geteuid() == 0 else None
        ids = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []
               } if account else {}
        server.launcher_log.touch()
        if account:
            os.chown(server.launcher_log, account.pw_uid, account.pw_gid)
        args = [str(distribution(release) / release.program), "-d", "-p", str(server.pid_file),
                f"-Ehttp.port={server.port}", "-Etransport.port=0"]
        subprocess.run(["/bin/sh", "-c", '"$@" </dev/null >>"$0" 2>&1 &',
                        str(server.launcher_log), *args], check=True, timeout=30,
                       env=server._env(), cwd=str(server.home), stdin=subprocess.DEVNULL,
                       start_new_session=True, **ids)
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(server.url + "/", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(1)
        yield f"http://tether_admin:whatever@127.0.0.1:{server.port}"
    finally:
        try:
            server.destroy()
        finally:
            shutil.rmtree(base, ignore_errors=True)


def test_a_server_without_security_is_refused(insecure_opensearch: str) -> None:
    cluster = ClusterSpec(id=1, kind="elasticsearch", region="local", url=insecure_opensearch)
    check_final(lambda: PROVIDER.check(cluster), "answers a request without credentials")
    check_final(lambda: PROVIDER.check(cluster), "security is disabled")
