"""Fair shares on a shared PostgreSQL server (issue 8, finding 5: 97 connections of one role
exhausted the server): each instance's role gets a connection limit, the cluster setting
`connection_limit` (checked at the edge), so a tenant at its limit is refused and another tenant
still connects. The MariaDB and RabbitMQ counterparts are in tests/integration/mysql and
tests/integration/rabbitmq."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from sqlalchemy import select

from tests.conftest import PgServer
from tether.actions import clusters
from tether.actions.common import Context
from tether.crypto import SecretBox
from tether.errors import UserError
from tether.providers.base import ClusterSpec, Credentials, ResourceNames
from tether.providers.postgres import PostgresProvider
from tether.providers.registry import provider_class
from tether.store.db import Store
from tether.store.models import Cluster

pytestmark = pytest.mark.integration

PROVIDER = PostgresProvider()
LIMIT = 3


def spec(pg_server: PgServer, private: bool = False, **settings: Any) -> ClusterSpec:
    return ClusterSpec(id=1, kind="postgres", region="local", url=pg_server.admin_url,
                       private=private, settings=settings)


def dsn(creds: Credentials) -> str:
    c = creds.values
    return (f"postgres://{c['user']}:{quote(str(c['password']), safe='')}@{c['host']}:"
            f"{c['port']}/{c['database']}")


def connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, connect_timeout=5, autocommit=True)


def role_limit(pg_server: PgServer, role: str) -> int:
    with connect(pg_server.admin_url) as conn:
        row = conn.execute("SELECT rolconnlimit FROM pg_roles WHERE rolname = %s",
                           (role,)).fetchone()
    assert row is not None, f"role {role} is missing"
    return int(row[0])


@pytest.fixture
def limited(pg_server: PgServer) -> ClusterSpec:
    return spec(pg_server, connection_limit=LIMIT)


@pytest.fixture
def make_names(pg_server: PgServer,
               unique_id: str) -> Iterator[Callable[[str], ResourceNames]]:
    """Resource names unique to this run; whatever they name is deprovisioned at the end."""
    made: list[ResourceNames] = []

    def make(suffix: str) -> ResourceNames:
        names = ResourceNames(base=f"tether_t{unique_id}{suffix}")
        made.append(names)
        return names

    yield make
    for names in made:
        PROVIDER.deprovision(spec(pg_server), names)


def test_a_tenant_at_its_limit_is_refused_and_another_still_connects(
        limited: ClusterSpec, make_names: Callable[[str], ResourceNames]) -> None:
    a = PROVIDER.provision(limited, make_names("a"), secrets.token_urlsafe(24))
    b = PROVIDER.provision(limited, make_names("b"), secrets.token_urlsafe(24))
    with contextlib.ExitStack() as held:
        for _ in range(LIMIT):
            held.enter_context(connect(dsn(a)))
        with pytest.raises(psycopg.OperationalError) as err:
            connect(dsn(a)).close()
        assert "too many connections for role" in str(err.value)
        with connect(dsn(b)) as other:  # the other tenant is not locked out
            assert other.execute("SELECT 1").fetchone() == (1,)
    with connect(dsn(a)):  # the slots are given back as connections close
        pass


def test_the_limit_is_applied_again_when_provisioned_again_and_its_drift_is_seen(
        pg_server: PgServer, limited: ClusterSpec,
        make_names: Callable[[str], ResourceNames]) -> None:
    names = make_names("r")
    secret = secrets.token_urlsafe(24)
    PROVIDER.provision(limited, names, secret)
    assert role_limit(pg_server, names.role) == LIMIT
    assert PROVIDER.observe(limited, names).in_sync
    with connect(pg_server.admin_url) as conn:  # lifted by hand
        conn.execute(f'ALTER ROLE "{names.role}" CONNECTION LIMIT -1')
    seen = PROVIDER.observe(limited, names)
    assert seen.differences == (f"role {names.role} may hold any number of connections at "
                                f"once, not {LIMIT} connection(s)",)
    PROVIDER.provision(limited, names, secret)  # the repair, idempotent
    PROVIDER.provision(limited, names, secret)
    assert role_limit(pg_server, names.role) == LIMIT
    assert PROVIDER.observe(limited, names).in_sync
    # a new setting reaches existing instances through the same repair
    wider = spec(pg_server, connection_limit=LIMIT + 2)
    assert not PROVIDER.observe(wider, names).in_sync
    PROVIDER.provision(wider, names, secret)
    assert role_limit(pg_server, names.role) == LIMIT + 2


def test_defaults_shared_clusters_have_one_private_ones_none_and_0_lifts_it(
        pg_server: PgServer, make_names: Callable[[str], ResourceNames]) -> None:
    shared, private, unlimited = make_names("s"), make_names("p"), make_names("u")
    PROVIDER.provision(spec(pg_server), shared, secrets.token_urlsafe(24))
    PROVIDER.provision(spec(pg_server, private=True), private, secrets.token_urlsafe(24))
    PROVIDER.provision(spec(pg_server, connection_limit=0), unlimited, secrets.token_urlsafe(24))
    assert (role_limit(pg_server, shared.role)
            == provider_class("postgres").limits["connection_limit"])
    assert role_limit(pg_server, private.role) == -1
    assert role_limit(pg_server, unlimited.role) == -1
    private_limited = spec(pg_server, private=True, connection_limit=LIMIT)
    assert PROVIDER.observe(spec(pg_server, private=True), private).in_sync
    PROVIDER.provision(private_limited, private, secrets.token_urlsafe(24))
    assert role_limit(pg_server, private.role) == LIMIT


# -- the setting, checked at the edge -------------------------------------------------------------


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[Context]:
    store = Store(f"sqlite:///{tmp_path / 'tether.db'}")
    store.migrate()
    yield Context(store=store, box=SecretBox.from_data_dir(tmp_path), data_dir=tmp_path,
                  actor="test")
    store.dispose()


@pytest.mark.parametrize("value", [-1, 10_001, 2.5, True, "lots", "", None, [3], "٣"])
def test_a_bad_connection_limit_is_refused_before_the_cluster_is_contacted(
        ctx: Context, value: Any) -> None:
    with pytest.raises(UserError) as err:  # nothing listens there: the setting is refused first
        clusters.add_cluster(ctx, "postgres", "local", "postgres://a:pw@127.0.0.1:9/postgres",
                             settings={"connection_limit": value})
    assert "connection_limit" in err.value.message
    assert "from 1 to 10000, or 0 for no limit" in err.value.message
    assert clusters.list_clusters(ctx) == []


def test_limits_a_kind_does_not_have_are_refused(ctx: Context) -> None:
    with pytest.raises(UserError, match="s3 clusters have no connection_limit setting"):
        clusters.add_cluster(ctx, "s3", "eu-aws", "s3://k:pw@127.0.0.1:9/",
                             settings={"connection_limit": 5})
    with pytest.raises(UserError, match="postgres clusters have no queue_limit setting"):
        clusters.add_cluster(ctx, "postgres", "local", "postgres://a:pw@127.0.0.1:9/postgres",
                             settings={"queue_limit": 5})


def test_a_connection_limit_given_as_text_is_stored_as_a_number(ctx: Context,
                                                               pg_server: PgServer) -> None:
    clusters.add_cluster(ctx, "postgres", "local", pg_server.admin_url, name="limited",
                         settings={"connection_limit": " 7 "})
    with ctx.store.session() as s:
        row = s.scalar(select(Cluster).where(Cluster.name == "limited"))
        assert row is not None and row.settings["connection_limit"] == 7
