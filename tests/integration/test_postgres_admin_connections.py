"""Kept admin connections of the PostgreSQL provider (issue 12: "kept, already-authenticated admin
connections per cluster (a small pool, checked before use, closed on cluster change)"), on the
suite's real server: one connection serves call after call; one the server ended is replaced
without an error; one in use when an error happened is not kept; a cluster whose URL changed
gets its old connections closed; at most `max_idle` are kept."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterator

import psycopg
import pytest

from tests.conftest import PgServer
from tether.errors import ClusterError
from tether.providers.base import ClusterSpec, ResourceNames
from tether.providers.postgres import ADMIN_CONNECTIONS, PostgresProvider

pytestmark = pytest.mark.integration

PROVIDER = PostgresProvider()


@pytest.fixture
def cluster(pg_server: PgServer) -> Iterator[ClusterSpec]:
    """A cluster id of its own (no other test's kept connections), cleared at the end."""
    spec = ClusterSpec(id=900_000 + secrets.randbelow(99_999), kind="postgres", region="local",
                       url=pg_server.admin_url)
    yield spec
    ADMIN_CONNECTIONS.close()


def backend(cluster: ClusterSpec) -> int:
    with PROVIDER._admin(cluster) as conn:
        return int(conn.info.backend_pid)


def alive(pg_server: PgServer, pid: int) -> bool:
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s",
                            (pid,)).fetchone() is not None


def gone(pg_server: PgServer, pid: int) -> bool:
    deadline = time.monotonic() + 10
    while alive(pg_server, pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_one_connection_serves_provision_after_provision(cluster: ClusterSpec,
                                                         pg_server: PgServer) -> None:
    first = backend(cluster)
    names = [ResourceNames(base=f"tether_t{secrets.token_hex(4)}") for _ in range(3)]
    try:
        for n in names:
            PROVIDER.provision(cluster, n, secrets.token_urlsafe(16))
        assert backend(cluster) == first  # no new login for any of them
        with PROVIDER._admin(cluster) as conn:
            timeout = conn.execute("SHOW statement_timeout").fetchone()
        assert timeout == ("2min",)  # set once, kept with the connection
    finally:
        for n in names:
            PROVIDER.deprovision(cluster, n)


def test_a_connection_the_server_ended_is_replaced(cluster: ClusterSpec,
                                                   pg_server: PgServer) -> None:
    first = backend(cluster)
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (first,))
    assert gone(pg_server, first)
    second = backend(cluster)  # no error: the check found it dead and a new one was made
    assert second != first and alive(pg_server, second)


def test_a_connection_in_use_during_an_error_is_not_kept(cluster: ClusterSpec,
                                                         pg_server: PgServer) -> None:
    first = backend(cluster)
    with pytest.raises(ClusterError, match="failed"), PROVIDER._admin(cluster) as conn:
        conn.execute("SELECT * FROM no_such_table_here")
    assert gone(pg_server, first)
    assert backend(cluster) != first


def test_a_changed_cluster_url_closes_the_old_connections(cluster: ClusterSpec,
                                                           pg_server: PgServer) -> None:
    first = backend(cluster)
    sep = "&" if "?" in cluster.url else "?"
    moved = ClusterSpec(id=cluster.id, kind=cluster.kind, region=cluster.region,
                        url=f"{cluster.url}{sep}connect_timeout=7")
    second = backend(moved)
    assert second != first
    assert gone(pg_server, first)
    assert backend(moved) == second


def test_at_most_max_idle_connections_are_kept(cluster: ClusterSpec,
                                               pg_server: PgServer) -> None:
    with contextlib.ExitStack() as stack:  # all in use at once: each its own connection
        held = [int(stack.enter_context(PROVIDER._admin(cluster)).info.backend_pid)
                for _ in range(ADMIN_CONNECTIONS.max_idle + 2)]
    assert len(set(held)) == len(held)
    # handed back last-in first: the last max_idle are kept, the first two closed
    assert gone(pg_server, held[0]) and gone(pg_server, held[1])
    assert all(alive(pg_server, pid) for pid in held[2:])
