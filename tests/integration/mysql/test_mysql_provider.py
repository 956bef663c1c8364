"""MySQLProvider and PrivateMariaDBServers against a real MariaDB: credential isolation, least
privilege, idempotence and clean failure. No mocks."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import pymysql
import pytest

from tests.conftest import world_traversable_tmpdir
from tests.integration.mysql.conftest import MySQLServer
from tests.integration.provider_contract import (
    check_final,
    check_observe_follows_provision,
    check_unreachable_is_transient,
)
from tether.errors import ClusterError
from tether.net import free_port
from tether.providers import mysql as mysql_module
from tether.providers.base import ClusterSpec, Credentials, ResourceNames
from tether.providers.mysql import MySQLProvider, native_password_hash
from tether.servers import mariadb as mariadb_module
from tether.servers.mariadb import PrivateMariaDBServers

pytestmark = pytest.mark.integration

PROVIDER = MySQLProvider()
REPO = Path(__file__).resolve().parents[3]


def spec(url: str) -> ClusterSpec:
    return ClusterSpec(id=1, kind="mysql", region="local", url=url)


def app_connect(creds: Credentials, database: str | None = None,
                password: str | None = None) -> pymysql.Connection:
    """Connect the way an application does, with the instance's own credentials."""
    c = creds.values
    return pymysql.connect(host=c["host"], port=int(c["port"]), user=c["user"],
                           password=password if password is not None else c["password"],
                           database=database or c["database"], autocommit=True,
                           connect_timeout=5)


def connect_dsn(dsn: str) -> pymysql.Connection:
    parts = urlsplit(dsn)
    return pymysql.connect(host=parts.hostname, port=parts.port or 3306,
                           user=unquote(parts.username or ""),
                           password=unquote(parts.password or ""),
                           database=parts.path.lstrip("/"), autocommit=True, connect_timeout=5)


def fetch(conn: pymysql.Connection, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return list(cur.fetchall())


def user_exists(server: MySQLServer, user: str) -> bool:
    return bool(server.query("SELECT 1 FROM mysql.user WHERE User = %s", (user,)))


def db_exists(server: MySQLServer, database: str) -> bool:
    return bool(server.query("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
                             (database,)))


def access_denied(exc: pytest.ExceptionInfo[pymysql.err.OperationalError]) -> int:
    return int(exc.value.args[0])


# -- shared cluster --------------------------------------------------------------------------------


def test_check_returns_the_version(mysql_cluster: ClusterSpec) -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", PROVIDER.check(mysql_cluster))


def test_a_port_that_never_greets_fails_in_seconds() -> None:
    """A port that accepts connections but never sends MySQL's greeting (another service, a hung
    server): `tether cluster add mysql` used to wait 60-180 s for it."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        spec = ClusterSpec(id=0, kind="mysql", region="local",
                           url=f"mysql://admin:pw@127.0.0.1:{port}/")
        started = time.monotonic()
        with pytest.raises(ClusterError) as err:
            MySQLProvider().check(spec)
        assert time.monotonic() - started < mysql_module.GREETING_TIMEOUT + 10
    assert f"127.0.0.1:{port}" in err.value.message and "pw" not in err.value.message


def test_provision_twice_is_idempotent(mysql_server: MySQLServer, mysql_cluster: ClusterSpec,
                                       make_mysql_names: Callable[[str], ResourceNames]) -> None:
    names = make_mysql_names("a")
    secret = secrets.token_urlsafe(24)
    first = PROVIDER.provision(mysql_cluster, names, secret)
    second = PROVIDER.provision(mysql_cluster, names, secret)
    assert first == second
    assert set(first.values) == {"user", "password", "host", "port", "database"}
    assert first.values["user"] == names.role and first.values["database"] == names.database
    assert PROVIDER.exists(mysql_cluster, names)
    with app_connect(second) as conn:
        assert fetch(conn, "SELECT CURRENT_USER(), DATABASE()") == [
            (f"{names.role}@%", names.database)]
    assert mysql_server.query("SELECT DEFAULT_CHARACTER_SET_NAME FROM information_schema."
                              "SCHEMATA WHERE SCHEMA_NAME = %s", (names.database,)) == [
        ("utf8mb4",)]
    assert mysql_server.query("SELECT count(*) FROM mysql.user WHERE User = %s",
                              (names.role,)) == [(1,)]


def test_provision_again_with_another_secret_rotates_the_password(
        mysql_cluster: ClusterSpec, make_mysql_names: Callable[[str], ResourceNames]) -> None:
    names = make_mysql_names("r")
    old = PROVIDER.provision(mysql_cluster, names, "first-" + secrets.token_urlsafe(12))
    new = PROVIDER.provision(mysql_cluster, names, "second-" + secrets.token_urlsafe(12))
    with app_connect(new):
        pass
    with pytest.raises(pymysql.err.OperationalError) as err:
        app_connect(old)
    assert access_denied(err) == 1045


def test_the_server_only_ever_sees_a_hash_of_the_password(
        mysql_server: MySQLServer, mysql_cluster: ClusterSpec,
        make_mysql_names: Callable[[str], ResourceNames]) -> None:
    names = make_mysql_names("h")
    secret = secrets.token_urlsafe(24)
    PROVIDER.provision(mysql_cluster, names, secret)
    version = mysql_server.query("SELECT VERSION()")[0][0]
    if "mariadb" not in str(version).lower():
        pytest.skip("the hashed password path is MariaDB's")
    rows = mysql_server.query("SELECT authentication_string FROM mysql.user WHERE User = %s",
                              (names.role,))
    assert rows == [(native_password_hash(secret),)]


def test_env_vars_use_the_divio_names(mysql_cluster: ClusterSpec,
                                      make_mysql_names: Callable[[str], ResourceNames]) -> None:
    names = make_mysql_names("e")
    creds = PROVIDER.provision(mysql_cluster, names, "p@ss/word:%" + secrets.token_hex(4))
    default = PROVIDER.env_vars("DEFAULT", creds)
    assert set(default) == {"DEFAULT_DATABASE_DSN", "DATABASE_URL"}
    assert default["DATABASE_URL"] == default["DEFAULT_DATABASE_DSN"]
    assert default["DATABASE_URL"].startswith(f"mysql://{names.role}:")
    assert default["DATABASE_URL"].endswith(f"/{names.database}")
    assert set(PROVIDER.env_vars("ANALYTICS", creds)) == {"ANALYTICS_DATABASE_DSN"}
    with connect_dsn(default["DATABASE_URL"]) as conn:  # the DSN works as given to the app
        assert fetch(conn, "SELECT DATABASE()") == [(names.database,)]


def test_credentials_reach_only_their_own_database(
        mysql_server: MySQLServer, mysql_cluster: ClusterSpec,
        make_mysql_names: Callable[[str], ResourceNames]) -> None:
    a, b = make_mysql_names("a"), make_mysql_names("b")
    creds_a = PROVIDER.provision(mysql_cluster, a, secrets.token_urlsafe(24))
    creds_b = PROVIDER.provision(mysql_cluster, b, secrets.token_urlsafe(24))
    with app_connect(creds_a) as conn:
        fetch(conn, "CREATE TABLE notes (id INT AUTO_INCREMENT PRIMARY KEY, body TEXT)")
        fetch(conn, "INSERT INTO notes (body) VALUES (%s)", ("hello",))
        assert fetch(conn, "SELECT body FROM notes") == [("hello",)]
        # it sees its own database only, and may not make others
        assert {r[0] for r in fetch(conn, "SHOW DATABASES")} == {
            "information_schema", a.database}
        with pytest.raises(pymysql.err.OperationalError) as err:
            fetch(conn, f"CREATE DATABASE `{a.database}x`")
        assert access_denied(err) == 1044
        with pytest.raises(pymysql.err.OperationalError) as err:
            fetch(conn, "SELECT User FROM mysql.user")
        assert access_denied(err) in (1142, 1044)
    with pytest.raises(pymysql.err.OperationalError) as err:
        app_connect(creds_b, database=a.database)
    assert access_denied(err) == 1044
    with pytest.raises(pymysql.err.OperationalError) as err:
        app_connect(creds_a, database=b.database)
    assert access_denied(err) == 1044
    with pytest.raises(pymysql.err.OperationalError) as err:
        app_connect(creds_a, password="not-" + str(creds_a.values["password"]))
    assert access_denied(err) == 1045


def test_the_grant_does_not_match_lookalike_databases(
        mysql_server: MySQLServer, mysql_cluster: ClusterSpec,
        make_mysql_names: Callable[[str], ResourceNames]) -> None:
    # `_` is a wildcard in GRANT: an unescaped grant on tether_tXl would also cover tetherxtXl
    names = make_mysql_names("l")
    lookalike = names.database.replace("_", "x")
    with mysql_server.connect() as conn:
        fetch(conn, f"CREATE DATABASE `{lookalike}`")
    try:
        creds = PROVIDER.provision(mysql_cluster, names, secrets.token_urlsafe(24))
        with pytest.raises(pymysql.err.OperationalError) as err:
            app_connect(creds, database=lookalike)
        assert access_denied(err) == 1044
    finally:
        with mysql_server.connect() as conn:
            fetch(conn, f"DROP DATABASE IF EXISTS `{lookalike}`")


def test_deprovision_with_an_open_connection(mysql_server: MySQLServer,
                                             mysql_cluster: ClusterSpec,
                                             make_mysql_names: Callable[[str], ResourceNames]
                                             ) -> None:
    names = make_mysql_names("d")
    creds = PROVIDER.provision(mysql_cluster, names, secrets.token_urlsafe(24))
    app = app_connect(creds)
    try:
        fetch(app, "CREATE TABLE t (x INT)")
        app.begin()
        fetch(app, "INSERT INTO t VALUES (1)")  # an open transaction holds a metadata lock
        PROVIDER.deprovision(mysql_cluster, names)
        with pytest.raises(pymysql.err.OperationalError):
            fetch(app, "SELECT 1")
    finally:
        app.close()
    assert not db_exists(mysql_server, names.database)
    assert not user_exists(mysql_server, names.role)
    assert not PROVIDER.exists(mysql_cluster, names)
    PROVIDER.deprovision(mysql_cluster, names)  # already gone: still succeeds
    with pytest.raises(pymysql.err.OperationalError) as err:
        app_connect(creds)
    assert access_denied(err) in (1045, 1698)  # 1698: MariaDB's "no such user"


def test_failed_provision_leaves_nothing_behind(
        mysql_server: MySQLServer, make_mysql_names: Callable[[str], ResourceNames],
        admin_user: Callable[..., str]) -> None:
    # A genuine failure: the cluster admin may create users but not grant on databases.
    url = admin_user("GRANT CREATE USER ON *.* TO {u}", "GRANT SELECT ON mysql.* TO {u}")
    limited = spec(url)
    names = make_mysql_names("f")
    secret = "instance-secret-" + secrets.token_hex(8)
    with pytest.raises(ClusterError) as err:
        PROVIDER.provision(limited, names, secret)
    message = err.value.message
    assert "Access denied" in message and names.database in message
    assert secret not in message and url not in message
    assert str(unquote(urlsplit(url).password or "")) not in message  # the admin's password
    assert not user_exists(mysql_server, names.role)
    assert not db_exists(mysql_server, names.database)
    # ... and check() says what is missing, and how to fix it
    with pytest.raises(ClusterError) as err:
        PROVIDER.check(limited)
    message = err.value.message
    assert "lacks CREATE, DROP, GRANT OPTION" in message
    assert "WITH GRANT OPTION" in message
    assert str(unquote(urlsplit(url).password or "")) not in message


def test_a_database_of_someone_else_is_never_taken_over(
        mysql_server: MySQLServer, mysql_cluster: ClusterSpec,
        make_mysql_names: Callable[[str], ResourceNames]) -> None:
    names = make_mysql_names("o")
    with mysql_server.connect() as conn:
        fetch(conn, f"CREATE DATABASE `{names.database}`")
        fetch(conn, f"CREATE TABLE `{names.database}`.precious (v INT)")
    try:
        with pytest.raises(ClusterError, match="exists already"):
            PROVIDER.provision(mysql_cluster, names, secrets.token_urlsafe(24))
        assert not user_exists(mysql_server, names.role)
        assert db_exists(mysql_server, names.database)  # not ours: left alone
        assert not PROVIDER.exists(mysql_cluster, names)
        PROVIDER.deprovision(mysql_cluster, names)
        assert db_exists(mysql_server, names.database)
    finally:
        with mysql_server.connect() as conn:
            fetch(conn, f"DROP DATABASE IF EXISTS `{names.database}`")


def test_a_retry_after_a_crash_between_grant_and_database_converges(
        mysql_server: MySQLServer, mysql_cluster: ClusterSpec,
        make_mysql_names: Callable[[str], ResourceNames]) -> None:
    names = make_mysql_names("g")
    secret = secrets.token_urlsafe(24)
    creds = PROVIDER.provision(mysql_cluster, names, secret)
    with mysql_server.connect() as conn:  # as if the first attempt died before CREATE DATABASE
        fetch(conn, f"DROP DATABASE `{names.database}`")
    assert PROVIDER.exists(mysql_cluster, names)
    assert PROVIDER.provision(mysql_cluster, names, secret) == creds
    with app_connect(creds) as conn:
        assert fetch(conn, "SELECT DATABASE()") == [(names.database,)]


def test_a_limited_admin_is_enough(mysql_server: MySQLServer,
                                   make_mysql_names: Callable[[str], ResourceNames],
                                   admin_user: Callable[..., str]) -> None:
    # Not a superuser: users, its own database pattern, and seeing/ending sessions.
    url = admin_user("GRANT CREATE USER, PROCESS, CONNECTION ADMIN ON *.* TO {u}",
                     "GRANT SELECT ON mysql.* TO {u}",
                     "GRANT ALL PRIVILEGES ON `tether\\_%`.* TO {u} WITH GRANT OPTION")
    limited = spec(url)
    assert PROVIDER.check(limited)
    names = make_mysql_names("c")
    creds = PROVIDER.provision(limited, names, secrets.token_urlsafe(24))
    assert PROVIDER.provision(limited, names, str(creds.values["password"])) == creds
    assert PROVIDER.observe(limited, names).in_sync  # it sees the grants it must check
    app = app_connect(creds)
    try:
        fetch(app, "CREATE TABLE t (x INT)")
        PROVIDER.deprovision(limited, names)
        with pytest.raises(pymysql.err.OperationalError):
            fetch(app, "SELECT 1")
    finally:
        app.close()
    assert not db_exists(mysql_server, names.database)
    assert not user_exists(mysql_server, names.role)


def test_check_says_how_to_fix_a_wrong_password(mysql_server: MySQLServer) -> None:
    wrong = "Wr0ng-" + secrets.token_hex(6)
    url = f"mysql://{mysql_server.user}:{wrong}@{mysql_server.host}:{mysql_server.port}/"
    with pytest.raises(ClusterError) as err:
        PROVIDER.check(spec(url))
    message = err.value.message
    assert "password" in message and "fix" in message
    assert wrong not in message and mysql_server.password not in message


def test_check_says_how_to_fix_an_unreachable_server(mysql_server: MySQLServer) -> None:
    port = free_port()
    url = f"mysql://{mysql_server.user}:{quote(mysql_server.password, safe='')}@127.0.0.1:{port}/"
    with pytest.raises(ClusterError) as err:
        PROVIDER.check(spec(url))
    message = err.value.message
    assert f"cannot reach MySQL at 127.0.0.1:{port}" in message
    assert "host and port" in message
    assert mysql_server.password not in message


@pytest.mark.parametrize("url", ["mysql://u:s3cret-pw@h:notaport/db",
                                 "postgres://u:s3cret-pw@h:3306/",
                                 "mysql://:s3cret-pw@h:3306/"])
def test_a_bad_url_is_refused_without_echoing_it(url: str) -> None:
    with pytest.raises(ClusterError, match="not a valid MySQL URL") as err:
        PROVIDER.check(spec(url))
    assert "s3cret-pw" not in err.value.message


# -- drift: observe, repair by provisioning again --------------------------------------------------


def test_observe_is_in_sync_after_provision_and_absent_after_deprovision(
        mysql_cluster: ClusterSpec, make_mysql_names: Callable[[str], ResourceNames]) -> None:
    check_observe_follows_provision(PROVIDER, mysql_cluster, make_mysql_names("s"))


def test_a_dropped_user_is_found_and_made_again(
        mysql_server: MySQLServer, mysql_cluster: ClusterSpec,
        make_mysql_names: Callable[[str], ResourceNames]) -> None:
    names = make_mysql_names("u")
    creds = PROVIDER.provision(mysql_cluster, names, secrets.token_urlsafe(24))
    with app_connect(creds) as conn:
        fetch(conn, "CREATE TABLE kept (v INT)")
        fetch(conn, "INSERT INTO kept VALUES (7)")
    mysql_server.query(f"DROP USER '{names.role}'@'%%'", ())
    seen = PROVIDER.observe(mysql_cluster, names)
    assert seen.exists  # its database carries Tether's mark
    assert seen.differences == (f"user {names.role} is missing",)
    assert PROVIDER.provision(mysql_cluster, names, str(creds.values["password"])) == creds
    assert PROVIDER.observe(mysql_cluster, names).in_sync
    with app_connect(creds) as conn:  # the same credentials, the data kept
        assert fetch(conn, "SELECT v FROM kept") == [(7,)]


def test_a_dropped_database_is_found_and_made_again_empty(
        mysql_server: MySQLServer, mysql_cluster: ClusterSpec,
        make_mysql_names: Callable[[str], ResourceNames]) -> None:
    names = make_mysql_names("x")
    creds = PROVIDER.provision(mysql_cluster, names, secrets.token_urlsafe(24))
    with app_connect(creds) as conn:
        fetch(conn, "CREATE TABLE kept (v INT)")
    mysql_server.query(f"DROP DATABASE `{names.database}`")
    assert PROVIDER.observe(mysql_cluster, names).differences == (
        f"database {names.database} is missing: its data is lost (a repair makes it again, "
        "EMPTY)",)
    PROVIDER.provision(mysql_cluster, names, str(creds.values["password"]))
    assert PROVIDER.observe(mysql_cluster, names).in_sync
    with app_connect(creds) as conn:
        assert fetch(conn, "SHOW TABLES") == []


def test_rights_beyond_its_database_and_a_lock_are_taken_back(
        mysql_server: MySQLServer, mysql_cluster: ClusterSpec,
        make_mysql_names: Callable[[str], ResourceNames]) -> None:
    names, other = make_mysql_names("g"), make_mysql_names("o")
    creds = PROVIDER.provision(mysql_cluster, names, secrets.token_urlsafe(24))
    other_creds = PROVIDER.provision(mysql_cluster, other, secrets.token_urlsafe(24))
    with app_connect(other_creds) as conn:
        fetch(conn, "CREATE TABLE secret (v INT)")
    account = f"'{names.role}'@'%'"
    for statement in (f"GRANT SELECT ON `{other.database}`.* TO {account}",
                      f"GRANT INSERT ON `{other.database}`.`secret` TO {account}",
                      f"GRANT PROCESS ON *.* TO {account}",
                      f"REVOKE DROP, ALTER ON `{names.database.replace('_', chr(92) + '_')}`.* "
                      f"FROM {account}",
                      f"ALTER USER {account} ACCOUNT LOCK"):
        with mysql_server.connect() as conn, conn.cursor() as cur:
            cur.execute(statement)
    assert set(PROVIDER.observe(mysql_cluster, names).differences) == {
        f"user {names.role} is locked",
        f"user {names.role} lacks DROP, ALTER on database {names.database}",
        f"user {names.role} has the global rights PROCESS",
        f"user {names.role} has rights on database {other.database}",
        f"user {names.role} has rights on table {other.database}.secret"}
    PROVIDER.provision(mysql_cluster, names, str(creds.values["password"]))
    assert PROVIDER.observe(mysql_cluster, names).in_sync
    assert PROVIDER.observe(mysql_cluster, other).in_sync
    with app_connect(creds) as conn:
        with pytest.raises(pymysql.err.OperationalError):
            fetch(conn, f"SELECT * FROM `{other.database}`.secret")
        fetch(conn, "CREATE TABLE t (v INT)")
        fetch(conn, "DROP TABLE t")


def test_a_database_without_grant_nor_mark_is_still_not_taken_over(
        mysql_server: MySQLServer, mysql_cluster: ClusterSpec,
        make_mysql_names: Callable[[str], ResourceNames]) -> None:
    names = make_mysql_names("n")
    mysql_server.query(f"CREATE DATABASE `{names.database}`")
    try:
        seen = PROVIDER.observe(mysql_cluster, names)
        assert not seen.exists and "Tether does not take it over" in seen.differences[-1]
        with pytest.raises(ClusterError, match="exists already"):
            PROVIDER.provision(mysql_cluster, names, secrets.token_urlsafe(24))
        assert not user_exists(mysql_server, names.role)
    finally:
        mysql_server.query(f"DROP DATABASE IF EXISTS `{names.database}`")


# -- errors that may pass, and final ones ----------------------------------------------------------


def test_a_server_where_nothing_listens_is_a_transient_error(
        mysql_server: MySQLServer, make_mysql_names: Callable[[str], ResourceNames]) -> None:
    url = (f"mysql://{mysql_server.user}:{quote(mysql_server.password, safe='')}@127.0.0.1:"
           f"{free_port()}/")
    check_unreachable_is_transient(PROVIDER, spec(url), make_mysql_names("t"),
                                   "cannot reach MySQL at 127.0.0.1:", mysql_server.password)


def test_a_wrong_password_is_a_final_error(
        mysql_server: MySQLServer, make_mysql_names: Callable[[str], ResourceNames]) -> None:
    url = (f"mysql://{mysql_server.user}:Wr0ng-{secrets.token_hex(6)}@{mysql_server.host}:"
           f"{mysql_server.port}/")
    check_final(lambda: PROVIDER.provision(spec(url), make_mysql_names("v"),
                                           secrets.token_urlsafe(24)), "refused the password")


# -- private servers -------------------------------------------------------------------------------


@pytest.fixture
def tmp_base() -> Iterator[Path]:
    base = world_traversable_tmpdir("tether-test-private-mysql-")
    yield base
    shutil.rmtree(base, ignore_errors=True)


_CREATE_IN_ANOTHER_PROCESS = """
import os, sys
from pathlib import Path
from tether.providers.base import ResourceNames
from tether.servers.mariadb import PrivateMariaDBServers
servers = PrivateMariaDBServers(Path(sys.argv[1]))
url = servers.create(ResourceNames(base=sys.argv[2]), int(sys.argv[3]), os.environ["ADMIN_PW"])
sys.stdout.write(url)
"""


def test_private_server_lifecycle(tmp_base: Path, unique_id: str) -> None:
    servers = PrivateMariaDBServers(tmp_base)
    names = ResourceNames(base=f"tether_t{unique_id}x")
    port = free_port()
    password = "adm:" + secrets.token_urlsafe(12)
    try:
        # created by a Python process that then exits: the server outlives it
        proc = subprocess.run([sys.executable, "-c", _CREATE_IN_ANOTHER_PROCESS, str(tmp_base),
                               names.base, str(port)], capture_output=True, text=True,
                              timeout=120, cwd=REPO, env={**os.environ, "ADMIN_PW": password},
                              check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
        url = proc.stdout
        assert servers.create(names, port, password) == url  # idempotent
        private = ClusterSpec(id=2, kind="mysql", region="local", url=url, private=True)
        assert PROVIDER.check(private) == servers.version()
        server = servers.server(names, port)
        assert server.is_running()
        admin = urlsplit(url)
        assert admin.hostname == "127.0.0.1" and admin.port == port
        assert unquote(admin.password or "") == password

        creds = PROVIDER.provision(private, names, secrets.token_urlsafe(24))
        with app_connect(creds) as conn:
            fetch(conn, "CREATE TABLE kept (v VARCHAR(20))")
            fetch(conn, "INSERT INTO kept VALUES ('still here')")
            # no test database, no anonymous users: the tenant sees its own database only
            assert {r[0] for r in fetch(conn, "SHOW DATABASES")} == {
                "information_schema", names.database}
        with pytest.raises(pymysql.err.OperationalError) as err:  # the admin needs its password
            connect_dsn(url.replace(quote(password, safe=""), "wrong") + "mysql")
        assert access_denied(err) == 1045

        servers.stop(names, port)
        servers.stop(names, port)  # idempotent
        assert not server.is_running()
        with pytest.raises(pymysql.err.OperationalError) as err:
            app_connect(creds)
        assert access_denied(err) == 2003

        servers.start(names, port)
        servers.start(names, port)  # idempotent
        with app_connect(creds) as conn:
            assert fetch(conn, "SELECT v FROM kept") == [("still here",)]

        # a crash leaves a stale pid file behind: start must still work
        pid = server.pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while server.is_running() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not server.is_running()
        assert server.pid_file.exists()
        servers.start(names, port)
        with app_connect(creds) as conn:
            assert fetch(conn, "SELECT v FROM kept") == [("still here",)]
    finally:
        servers.destroy(names, port)
    assert not (tmp_base / names.base).exists()
    servers.destroy(names, port)  # already gone: still fine
    with pytest.raises(pymysql.err.OperationalError):
        connect_dsn(url + "mysql")


def test_private_server_on_a_taken_port_fails_with_its_log(tmp_base: Path,
                                                          unique_id: str) -> None:
    servers = PrivateMariaDBServers(tmp_base)
    names = ResourceNames(base=f"tether_t{unique_id}p")
    password = "hunter2-" + secrets.token_hex(6)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        try:
            with pytest.raises(ClusterError) as err:
                servers.create(names, port, password)
            message = err.value.message
            assert "did not start" in message and "port" in message
            assert password not in message
            assert not servers.server(names, port).is_running()
        finally:
            servers.destroy(names, port)
    assert not (tmp_base / names.base).exists()


def test_private_servers_need_mariadb_installed(tmp_base: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_base))
    monkeypatch.setattr(mariadb_module, "_SBIN_DIRS", ())
    servers = PrivateMariaDBServers(tmp_base)
    with pytest.raises(ClusterError, match="install the Debian package mariadb-server"):
        servers.version()
    with pytest.raises(ClusterError, match="mariadb-server"):
        servers.create(ResourceNames(base="tether_tmissing"), free_port(), "whatever-pw")
    assert not (tmp_base / "tether_tmissing").exists()
