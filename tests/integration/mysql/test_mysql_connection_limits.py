"""Fair shares on a shared MariaDB server (issue 8, finding 5): each instance's user gets
`MAX_USER_CONNECTIONS` (the cluster setting `connection_limit`), so a tenant at its limit is
refused and another tenant still connects."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable
from typing import Any

import pymysql
import pytest

from tests.integration.mysql.conftest import MySQLServer
from tether.providers.base import ClusterSpec, Credentials, ResourceNames
from tether.providers.mysql import MySQLProvider
from tether.providers.registry import provider_class

pytestmark = pytest.mark.integration

PROVIDER = MySQLProvider()
LIMIT = 3
#: MariaDB's "has exceeded the 'max_user_connections' resource"
ER_USER_LIMIT_REACHED = 1226


def spec(server: MySQLServer, private: bool = False, **settings: Any) -> ClusterSpec:
    return ClusterSpec(id=1, kind="mysql", region="local", url=server.admin_url,
                       private=private, settings=settings)


def connect(creds: Credentials) -> pymysql.Connection:
    c = creds.values
    return pymysql.connect(host=str(c["host"]), port=int(c["port"]), user=str(c["user"]),
                           password=str(c["password"]), database=str(c["database"]),
                           connect_timeout=5)


def user_limit(server: MySQLServer, user: str) -> int:
    rows = server.query("SELECT max_user_connections FROM mysql.user WHERE User = %s "
                        "AND Host = '%%'", (user,))
    assert rows, f"user {user} is missing"
    return int(rows[0][0])


def test_a_tenant_at_its_limit_is_refused_and_another_still_connects(
        mysql_server: MySQLServer, make_mysql_names: Callable[[str], ResourceNames]) -> None:
    limited = spec(mysql_server, connection_limit=LIMIT)
    a = PROVIDER.provision(limited, make_mysql_names("a"), secrets.token_urlsafe(24))
    b = PROVIDER.provision(limited, make_mysql_names("b"), secrets.token_urlsafe(24))
    with contextlib.ExitStack() as held:
        for _ in range(LIMIT):
            held.enter_context(connect(a))
        with pytest.raises(pymysql.err.OperationalError) as err:
            connect(a).close()
        assert err.value.args[0] == ER_USER_LIMIT_REACHED
        assert "max_user_connections" in str(err.value)
        with connect(b) as other, other.cursor() as cur:  # the other tenant is not locked out
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
    with connect(a):  # the slots are given back as connections close
        pass


def test_the_limit_is_applied_again_when_provisioned_again_and_its_drift_is_seen(
        mysql_server: MySQLServer, make_mysql_names: Callable[[str], ResourceNames]) -> None:
    limited = spec(mysql_server, connection_limit=LIMIT)
    names = make_mysql_names("r")
    secret = secrets.token_urlsafe(24)
    PROVIDER.provision(limited, names, secret)
    assert user_limit(mysql_server, names.role) == LIMIT
    assert PROVIDER.observe(limited, names).in_sync
    mysql_server.query(f"ALTER USER '{names.role}'@'%%' WITH MAX_USER_CONNECTIONS 0", ())
    assert PROVIDER.observe(limited, names).differences == (
        f"user {names.role} may hold any number of connections at once, not "
        f"{LIMIT} connection(s)",)
    PROVIDER.provision(limited, names, secret)  # the repair, idempotent
    PROVIDER.provision(limited, names, secret)
    assert user_limit(mysql_server, names.role) == LIMIT
    assert PROVIDER.observe(limited, names).in_sync


def test_defaults_shared_clusters_have_one_private_ones_none(
        mysql_server: MySQLServer, make_mysql_names: Callable[[str], ResourceNames]) -> None:
    shared, private = make_mysql_names("s"), make_mysql_names("p")
    PROVIDER.provision(spec(mysql_server), shared, secrets.token_urlsafe(24))
    PROVIDER.provision(spec(mysql_server, private=True), private, secrets.token_urlsafe(24))
    assert (user_limit(mysql_server, shared.role)
            == provider_class("mysql").limits["connection_limit"])
    assert user_limit(mysql_server, private.role) == 0
    assert PROVIDER.observe(spec(mysql_server, private=True), private).in_sync
