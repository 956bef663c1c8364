"""Credential rotation without downtime on MariaDB (issue 8), which has no dual passwords: a second
user `NAME_<n>` with the same rights and connection limit, deployed, then the old one revoked
(locked with a password nobody knows, not dropped: the instance's own user's grant marks the
database as Tether's, and what a login defined (views, triggers, routines) needs it as DEFINER;
every login goes with the instance). Real server, real application process, no mocks."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pymysql
import pytest
from sqlalchemy import select

from tests.integration.mysql.conftest import MySQLServer
from tests.integration.rotation_app import App, instance_row, observe, zero_downtime_rotation
from tests.integration.rotation_drift import drift_during_a_rotation
from tests.plane import plane as make_plane
from tests.plane import wait_op
from tether.actions import projects, services
from tether.actions.common import Context
from tether.engine.core import Engine
from tether.errors import ClusterError
from tether.naming import resource_names
from tether.providers.base import ClusterSpec, Credentials, ResourceNames
from tether.providers.mysql import MySQLProvider
from tether.runtime.process import ProcessRuntime
from tether.store.models import Cluster, Instance
from tether.store.records import cluster_spec

pytestmark = pytest.mark.integration

PROVIDER = MySQLProvider()


def connect(dsn: str) -> pymysql.Connection:
    parts = urlsplit(dsn)
    return pymysql.connect(host=parts.hostname, port=parts.port, user=unquote(parts.username or ""),
                           password=unquote(parts.password or ""), database=parts.path[1:],
                           connect_timeout=5, autocommit=True)


def logs_in(dsn: str) -> bool:
    try:
        connect(dsn).close()
        return True
    except pymysql.err.OperationalError:
        return False


def dsn(creds: Credentials) -> str:
    return PROVIDER.env_vars("DEFAULT", creds)["DEFAULT_DATABASE_DSN"]


def users(server: MySQLServer, base: str) -> dict[str, bool]:
    """The instance's users on the server: name -> locked."""
    found = {}
    for (user,) in server.query("SELECT User FROM mysql.user WHERE Host = '%%' AND (User = %s "
                                "OR User LIKE %s)", (base, base.replace("_", "\\_") + "\\_%")):
        (create,) = server.query(f"SHOW CREATE USER '{user}'@'%'")[0]
        found[str(user)] = "ACCOUNT LOCK" in str(create).upper()
    return found


def test_a_second_user_works_beside_the_first_until_the_first_is_revoked(
        mysql_server: MySQLServer, unique_id: str) -> None:
    cluster = ClusterSpec(id=1, kind="mysql", region="local", url=mysql_server.admin_url,
                          settings={"connection_limit": 2})
    names = ResourceNames(base=f"tether_t{unique_id}r")
    try:
        first = PROVIDER.provision(cluster, names, secrets.token_urlsafe(24))
        second_names = names.rotated(1)
        second = PROVIDER.add_login(cluster, second_names, secrets.token_urlsafe(24))
        assert second.values["user"] == f"{names.base}_1"
        assert PROVIDER.add_login(cluster, second_names, str(second.values["password"])) == \
            second  # idempotent: a retry converges to the same user
        held = connect(dsn(first))  # the running release's session
        try:
            assert logs_in(dsn(first)) and logs_in(dsn(second))
            with connect(dsn(second)) as conn, conn.cursor() as cur:
                cur.execute("CREATE TABLE made_by_second (x int)")
                cur.execute("INSERT INTO made_by_second VALUES (7)")
                # its DEFINER is this login: it must keep working once the login is revoked
                cur.execute("CREATE VIEW view_by_second AS SELECT x FROM made_by_second")
                # the instance's connection limit applies to the login the app uses
                extra = connect(dsn(second))
                with pytest.raises(pymysql.err.OperationalError, match="max_user_connections"):
                    connect(dsn(second)).close()
                extra.close()
            assert PROVIDER.observe(cluster, second_names).differences == (
                f"user {names.role} can log in, but its credentials were rotated to user "
                f"{second_names.login}",)
            PROVIDER.revoke_login(cluster, second_names, names.role)
            PROVIDER.revoke_login(cluster, second_names, names.role)  # idempotent
            with pytest.raises(pymysql.err.OperationalError), held.cursor() as cur:
                cur.execute("SELECT 1")  # its open session was killed
        finally:
            held.close()
        assert not logs_in(dsn(first)) and logs_in(dsn(second))
        assert users(mysql_server, names.base) == {names.role: True, second_names.login: False}
        assert PROVIDER.observe(cluster, second_names).differences == ()
        # a repair (provision again) keeps the rotated state: the old user stays locked
        assert PROVIDER.provision(cluster, second_names, str(second.values["password"])) == \
            second
        assert not logs_in(dsn(first))
        assert PROVIDER.exists(cluster, names)

        third_names = names.rotated(2)
        third = PROVIDER.add_login(cluster, third_names, secrets.token_urlsafe(24))
        with pytest.raises(ClusterError, match="refusing to revoke"):
            PROVIDER.revoke_login(cluster, third_names, third_names.login)
        PROVIDER.revoke_login(cluster, third_names, second_names.login)
        PROVIDER.revoke_login(cluster, third_names, second_names.login)  # idempotent
        assert not logs_in(dsn(second)) and logs_in(dsn(third))
        with connect(dsn(third)) as conn, conn.cursor() as cur:
            cur.execute("SHOW FULL TABLES")
            assert sorted(cur.fetchall()) == [("made_by_second", "BASE TABLE"),
                                              ("view_by_second", "VIEW")]
            # review finding 7: the view the revoked login defined still works
            cur.execute("SELECT x FROM view_by_second")
            assert cur.fetchall() == ((7,),)
        # the revoked login is locked (with a password nobody knows), not dropped: its
        # definitions stay valid; it goes with the instance
        assert users(mysql_server, names.base) == {
            names.role: True, second_names.login: True, third_names.login: False}
        assert PROVIDER.observe(cluster, third_names).differences == ()
    finally:
        PROVIDER.deprovision(cluster, names)
    assert users(mysql_server, names.base) == {}  # every login went with it
    assert not PROVIDER.exists(cluster, names)


@pytest.fixture
def plane(tmp_path: Path, mysql_server: MySQLServer) -> Iterator[tuple[Context, Engine]]:
    with make_plane(tmp_path, "mysql", "local", mysql_server.admin_url, "maria",
                    runtime=ProcessRuntime()) as (ctx, engine):
        yield ctx, engine
        with ctx.store.session() as s:
            spec = cluster_spec(ctx.box, s.scalars(select(Cluster)).one())
            ids = list(s.scalars(select(Instance.id)))
    for inst_id in ids:
        PROVIDER.deprovision(spec, resource_names(inst_id))


def test_the_app_keeps_serving_through_a_rotation_and_the_old_password_stops_working(
        plane: tuple[Context, Engine], tmp_path: Path, unique_id: str) -> None:
    ctx, _ = plane
    zero_downtime_rotation(ctx, tmp_path, f"myr{unique_id}", "mysql", logs_in)


def test_a_detached_instance_is_rotated_and_revoked_at_once(
        plane: tuple[Context, Engine], mysql_server: MySQLServer, unique_id: str) -> None:
    ctx, _ = plane
    name = f"myd{unique_id}"
    projects.create_project(ctx, name)
    added = services.add(ctx, name, "test", "mysql", "DEFAULT", provision=True)
    assert wait_op(ctx, added["operation"]["id"])["status"] == "succeeded"
    old = Credentials(ctx.box.open(instance_row(ctx, name).credentials_enc))
    rotated = services.rotate(ctx, name, "test", "DEFAULT")
    op = wait_op(ctx, rotated["operation"]["id"])  # type: ignore[index]
    assert op["status"] == "succeeded" and op["deployment_id"] is None, op
    new = Credentials(ctx.box.open(instance_row(ctx, name).credentials_enc))
    assert not logs_in(dsn(old)) and logs_in(dsn(new))
    assert services.show(ctx, name, "test", "DEFAULT")["retiring_logins"] == []
    assert observe(ctx, name) == ()
    removed = services.remove(ctx, name, "test", "DEFAULT", "DEFAULT")
    assert wait_op(ctx, removed["operation"]["id"])["status"] == "succeeded"
    assert users(mysql_server, f"tether_i{added['id']}") == {}


def test_a_rotation_repairs_a_tenant_that_changed_its_own_password(
        plane: tuple[Context, Engine], tmp_path: Path, unique_id: str) -> None:
    ctx, _ = plane
    name = f"myp{unique_id}"
    app = App(ctx, tmp_path, name, "mysql")
    services.add(ctx, name, "test", "mysql", "DEFAULT")
    app.deploy_ok()
    own = "tenants-own-" + secrets.token_hex(6)
    with connect(app.dsn()) as conn, conn.cursor() as cur:
        cur.execute("SET PASSWORD = PASSWORD(%s)", (own,))
    parts = urlsplit(app.dsn())
    tenants = parts._replace(netloc=f"{parts.username}:{own}@{parts.hostname}:{parts.port}")
    assert not logs_in(app.dsn()) and logs_in(tenants.geturl())  # Tether's DSN is broken
    rotated = services.rotate(ctx, name, "test", "DEFAULT")
    op = wait_op(ctx, rotated["operation"]["id"])  # type: ignore[index]
    assert op["status"] == "succeeded" and op["deployment_id"], op
    app.wait_deployment(int(op["deployment_id"]))
    assert app.user().endswith("_1")  # the app works again, with a password Tether knows
    assert not logs_in(tenants.geturl())  # the old login is revoked, whatever its password


def test_drift_during_a_rotation_is_reported_not_repaired_until_the_deployment(
        plane: tuple[Context, Engine], tmp_path: Path, mysql_server: MySQLServer,
        unique_id: str) -> None:
    """Second review, finding 8: the pass skipped an instance whose old login a running release
    still used, so rights granted to that login meanwhile went unnoticed until the next
    deployment."""
    ctx, _ = plane
    elsewhere = f"drift{unique_id}"  # a database pattern of no instance (no `_`: no wildcard)

    def make_drift(base: str) -> None:
        mysql_server.query(f"GRANT SELECT ON `{elsewhere}`.* TO '{base}'@'%'")
        mysql_server.query(f"ALTER USER '{base}'@'%' WITH MAX_USER_CONNECTIONS 7")

    drift_during_a_rotation(ctx, tmp_path, f"mydr{unique_id}", "mysql", logs_in, make_drift,
                            lambda base: [f"user {base} may hold 7 connection(s) at once, not "
                                          "20 connection(s)",
                                          f"user {base} has rights on database {elsewhere}"])
