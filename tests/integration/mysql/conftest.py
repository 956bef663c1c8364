"""A real MariaDB (Debian `mariadb-server`, installed by scripts/servers/mariadb.sh) for the mysql
provider tests: a server of our own from `PrivateMariaDBServers` (mariadb-install-db + mariadbd)
on a free loopback port with its own data dir and a password-auth admin; stopped and deleted at
the end of the session.

`TETHER_TEST_MYSQL_URL` reuses a running server instead: its admin URL, e.g.
`mysql://ADMIN:PASSWORD@127.0.0.1:3306/` (password URL-encoded), an admin with
`ALL PRIVILEGES ON *.* WITH GRANT OPTION`.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import pymysql
import pytest

from tests.conftest import world_traversable_tmpdir
from tests.integration.names import unique_names
from tether.errors import ClusterError
from tether.net import free_port
from tether.providers.base import ClusterSpec, ResourceNames
from tether.providers.mysql import MySQLProvider
from tether.servers.mariadb import PrivateMariaDBServers


@dataclass(frozen=True)
class MySQLServer:
    """A MySQL/MariaDB server the tests may administer."""

    admin_url: str
    host: str
    port: int
    user: str
    password: str

    def connect(self, **kwargs: Any) -> pymysql.Connection:
        """An admin connection (autocommit)."""
        return pymysql.connect(host=self.host, port=self.port, user=self.user,
                               password=self.password, autocommit=True, connect_timeout=5,
                               **kwargs)

    def query(self, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())


@pytest.fixture(scope="session")
def mysql_server() -> Iterator[MySQLServer]:
    """TETHER_TEST_MYSQL_URL when set, else a MariaDB server of our own for the session."""
    url = os.environ.get("TETHER_TEST_MYSQL_URL")
    if url:
        parts = urlsplit(url)
        yield MySQLServer(admin_url=url, host=parts.hostname or "127.0.0.1",
                          port=parts.port or 3306, user=unquote(parts.username or ""),
                          password=unquote(parts.password or ""))
        return
    base = world_traversable_tmpdir("tether-test-mysql-")
    servers = PrivateMariaDBServers(base)
    names = ResourceNames(base="tether_testsrv")
    port = free_port()
    password = "adm:" + secrets.token_urlsafe(18)  # needs URL-encoding
    try:
        try:
            url = servers.create(names, port, password)
        except ClusterError as exc:
            pytest.fail(f"{exc.message} (or set TETHER_TEST_MYSQL_URL to the admin URL of a "
                        "running MySQL/MariaDB)")
        yield MySQLServer(admin_url=url, host="127.0.0.1", port=port, user="tether_admin",
                          password=password)
    finally:
        try:
            servers.destroy(names, port)
        finally:
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def mysql_cluster(mysql_server: MySQLServer) -> ClusterSpec:
    return ClusterSpec(id=1, kind="mysql", region="local", url=mysql_server.admin_url)


@pytest.fixture
def make_mysql_names(mysql_cluster: ClusterSpec,
                     unique_id: str) -> Iterator[Callable[[str], ResourceNames]]:
    """Resource names unique to this test; whatever they name is deprovisioned at the end."""
    def remove(names: ResourceNames) -> None:
        MySQLProvider().deprovision(mysql_cluster, names)

    with unique_names(unique_id, remove) as make:
        yield make


@pytest.fixture
def admin_user(mysql_server: MySQLServer, unique_id: str) -> Iterator[Callable[..., str]]:
    """Make an admin login with the given GRANT statements (`{u}` is the account), e.g.
    `admin_user("GRANT CREATE USER ON *.* TO {u}")`; returns its cluster URL. Dropped at the
    end."""
    made: list[str] = []

    def make(*grants: str) -> str:
        name = f"tether_t{unique_id}adm{len(made)}"
        password = secrets.token_urlsafe(12)
        account = f"'{name}'@'%'"
        with mysql_server.connect() as conn, conn.cursor() as cur:
            # with args PyMySQL substitutes `%`: the host is written `'%%'`
            cur.execute(f"CREATE USER '{name}'@'%%' IDENTIFIED BY %s", (password,))
            made.append(account)
            for grant in grants:
                cur.execute(grant.format(u=account))
        return (f"mysql://{name}:{quote(password, safe='')}@{mysql_server.host}:"
                f"{mysql_server.port}/")

    yield make
    with mysql_server.connect() as conn, conn.cursor() as cur:
        for account in made:
            cur.execute(f"DROP USER IF EXISTS {account}")
