"""Kept admin connections of the MySQL/MariaDB provider (issue 12), on the suite's real server:
one connection serves provision after provision; one the server ended is replaced without an
error; one in use when an error happened is not kept; a cluster whose URL changed gets its old
connections closed."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import pytest

from tests.integration.mysql.conftest import MySQLServer
from tether.errors import ClusterError
from tether.providers.base import ClusterSpec, ResourceNames
from tether.providers.mysql import ADMIN_CONNECTIONS, MySQLProvider

pytestmark = pytest.mark.integration

PROVIDER = MySQLProvider()


@pytest.fixture
def cluster(mysql_server: MySQLServer) -> Iterator[ClusterSpec]:
    """A cluster id of its own (no other test's kept connections), cleared at the end."""
    spec = ClusterSpec(id=900_000 + secrets.randbelow(99_999), kind="mysql", region="local",
                       url=mysql_server.admin_url)
    yield spec
    ADMIN_CONNECTIONS.close()


def session_id(cluster: ClusterSpec) -> int:
    with PROVIDER._admin(cluster) as cur:
        cur.execute("SELECT CONNECTION_ID()")
        row = cur.fetchone()
    assert row is not None
    return int(row[0])


def gone(server: MySQLServer, session: int) -> bool:
    deadline = time.monotonic() + 10
    while server.query("SELECT 1 FROM information_schema.PROCESSLIST WHERE ID = %s",
                       (session,)):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_one_connection_serves_provision_after_provision(cluster: ClusterSpec,
                                                         mysql_server: MySQLServer) -> None:
    first = session_id(cluster)
    names = [ResourceNames(base=f"tether_t{secrets.token_hex(4)}") for _ in range(3)]
    try:
        for n in names:
            PROVIDER.provision(cluster, n, secrets.token_urlsafe(16))
        assert session_id(cluster) == first  # no new login for any of them
        with PROVIDER._admin(cluster) as cur:
            cur.execute("SELECT @@SESSION.lock_wait_timeout")
            assert cur.fetchone() == (60,)  # set once, kept with the connection
    finally:
        for n in names:
            PROVIDER.deprovision(cluster, n)


def test_a_connection_the_server_ended_is_replaced(cluster: ClusterSpec,
                                                   mysql_server: MySQLServer) -> None:
    first = session_id(cluster)
    mysql_server.query(f"KILL {first}")
    assert gone(mysql_server, first)
    assert session_id(cluster) != first  # no error: the check found it dead


def test_a_connection_in_use_during_an_error_is_not_kept(cluster: ClusterSpec,
                                                         mysql_server: MySQLServer) -> None:
    first = session_id(cluster)
    with pytest.raises(ClusterError, match="failed"), PROVIDER._admin(cluster) as cur:
        cur.execute("SELECT * FROM no_such_database_here.no_such_table")
    assert gone(mysql_server, first)
    assert session_id(cluster) != first


def test_a_changed_cluster_url_closes_the_old_connections(cluster: ClusterSpec,
                                                           mysql_server: MySQLServer) -> None:
    first = session_id(cluster)
    moved = ClusterSpec(id=cluster.id, kind=cluster.kind, region=cluster.region,
                        url=cluster.url.replace("@127.0.0.1:", "@localhost:"))
    assert moved.url != cluster.url
    second = session_id(moved)
    assert second != first
    assert gone(mysql_server, first)
    assert session_id(moved) == second
