"""Ending a revoked login's sessions on MariaDB (issue 8, second review, finding 10): without
PROCESS the admin sees only its own sessions in the process list, and without CONNECTION ADMIN
(or SUPER) it may not kill another user's: a revoked (locked) login's open sessions stayed open
with their rights, silently. `check` now refuses such an admin with the GRANT that fixes it, and a
revoke or removal whose sessions cannot be ended says so. Real server, restricted admins made
(and dropped) here, no mocks."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pymysql
import pytest
from sqlalchemy import select

from tests.integration.mysql.conftest import MySQLServer
from tests.integration.rotation_app import instance_row
from tests.plane import plane as make_plane
from tests.plane import wait_op
from tether.actions import projects, services
from tether.actions.common import Context
from tether.engine.core import Engine
from tether.engine.reconcile import Reconciler
from tether.errors import ClusterError
from tether.naming import resource_names
from tether.providers.base import ClusterSpec, Credentials, ResourceNames
from tether.providers.mysql import MySQLProvider
from tether.store.models import Cluster, Instance
from tether.store.records import cluster_spec

pytestmark = pytest.mark.integration

PROVIDER = MySQLProvider()
#: all Tether needs but the rights over other users' sessions
BASIC = ("GRANT CREATE USER ON *.* TO {u}", "GRANT SELECT ON mysql.* TO {u}",
         "GRANT ALL PRIVILEGES ON `tether\\_%`.* TO {u} WITH GRANT OPTION")


def spec(url: str) -> ClusterSpec:
    return ClusterSpec(id=1, kind="mysql", region="local", url=url)


def account(url: str) -> str:
    return f"'{unquote(urlsplit(url).username or '')}'@'%'"


def connect(creds: Credentials) -> pymysql.Connection:
    c = creds.values
    return pymysql.connect(host=str(c["host"]), port=int(c["port"]), user=str(c["user"]),
                           password=str(c["password"]), database=str(c["database"]),
                           connect_timeout=5, autocommit=True)


def alive(conn: pymysql.Connection) -> bool:
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
        return True
    except pymysql.err.OperationalError:
        return False


def logs_in(creds: Credentials) -> bool:
    try:
        connect(creds).close()
        return True
    except pymysql.err.OperationalError:
        return False


def test_an_admin_that_cannot_end_sessions_is_refused_with_the_grant_that_fixes_it(
        mysql_server: MySQLServer, admin_user: Callable[..., str]) -> None:
    blind = admin_user(*BASIC)  # sees only its own sessions, may end none
    with pytest.raises(ClusterError) as err:
        PROVIDER.check(spec(blind))
    message = err.value.message
    fix = f"GRANT PROCESS, CONNECTION ADMIN ON *.* TO {account(blind)}"
    assert "lacks PROCESS and CONNECTION ADMIN" in message and message.endswith(fix), message
    assert unquote(urlsplit(blind).password or "") not in message
    mysql_server.query(fix)  # the GRANT the message gives is the fix
    assert PROVIDER.check(spec(blind))

    sees = admin_user(*BASIC, "GRANT PROCESS ON *.* TO {u}")  # sees them, may end none
    with pytest.raises(ClusterError) as err:
        PROVIDER.check(spec(sees))
    assert err.value.message.endswith(f"GRANT CONNECTION ADMIN ON *.* TO {account(sees)}")
    # SUPER still includes the right to end sessions
    assert PROVIDER.check(spec(admin_user(*BASIC, "GRANT PROCESS, SUPER ON *.* TO {u}")))
    # lacking more, the message names every right (and the general fix)
    with pytest.raises(ClusterError, match=r"lacks CREATE, DROP, GRANT OPTION, PROCESS, "
                                           r"CONNECTION ADMIN: .*WITH GRANT OPTION"):
        PROVIDER.check(spec(admin_user("GRANT CREATE USER ON *.* TO {u}",
                                       "GRANT SELECT ON mysql.* TO {u}")))


def test_a_revoke_whose_sessions_cannot_be_ended_is_reported(
        mysql_server: MySQLServer, mysql_cluster: ClusterSpec, unique_id: str,
        admin_user: Callable[..., str]) -> None:
    names = ResourceNames(base=f"tether_t{unique_id}k")
    second_names = names.rotated(1)
    no_kill = spec(admin_user(*BASIC, "GRANT PROCESS ON *.* TO {u}"))
    blind = spec(admin_user(*BASIC, "GRANT CONNECTION ADMIN ON *.* TO {u}"))
    try:
        first = PROVIDER.provision(mysql_cluster, names, secrets.token_urlsafe(24))
        second = PROVIDER.add_login(mysql_cluster, second_names, secrets.token_urlsafe(24))
        held = connect(first)  # the session of a release that used the old login
        try:
            with pytest.raises(ClusterError) as err:
                PROVIDER.revoke_login(no_kill, second_names, names.role)
            message = err.value.message
            assert (f"the login {names.role} on MySQL at {mysql_server.host}:"
                    f"{mysql_server.port} is locked (no new session), but 1 of its open "
                    "session(s) could not be ended") in message, message
            assert f"GRANT CONNECTION ADMIN ON *.* TO {account(no_kill.url)}" in message
            assert str(first.values["password"]) not in message
            assert unquote(urlsplit(no_kill.url).password or "") not in message
            assert alive(held) and not logs_in(first)  # locked, but the session lives on
            # without PROCESS its sessions cannot even be counted
            with pytest.raises(ClusterError, match=r"its open sessions cannot be listed \(the "
                                                   r"admin lacks PROCESS.*GRANT PROCESS ON"):
                PROVIDER.revoke_login(blind, second_names, names.role)
            assert alive(held)
            PROVIDER.revoke_login(mysql_cluster, second_names, names.role)  # the retry
            assert not alive(held)
        finally:
            held.close()

        # a removal drops nothing while a user's session cannot be ended
        held = connect(second)
        try:
            with pytest.raises(ClusterError, match=f"user {second_names.login}: 1 of its open "
                                                   r"session\(s\) could not be ended.*Nothing "
                                                   "was dropped"):
                PROVIDER.deprovision(no_kill, names)
            assert alive(held) and PROVIDER.exists(mysql_cluster, names)
            assert mysql_server.query("SELECT 1 FROM information_schema.SCHEMATA WHERE "
                                      "SCHEMA_NAME = %s", (names.database,))
        finally:
            held.close()
    finally:
        PROVIDER.deprovision(mysql_cluster, names)
    assert not PROVIDER.exists(mysql_cluster, names)


@pytest.fixture
def plane(tmp_path: Path, mysql_server: MySQLServer) -> Iterator[tuple[Context, Engine]]:
    with make_plane(tmp_path, "mysql", "local", mysql_server.admin_url, "maria") as (ctx, engine):
        yield ctx, engine
        with ctx.store.session() as s:
            cluster = s.scalars(select(Cluster)).one()
            cluster.url_enc = ctx.box.seal(mysql_server.admin_url)
            spec_ = cluster_spec(ctx.box, cluster)
            ids = list(s.scalars(select(Instance.id)))
    for inst_id in ids:
        PROVIDER.deprovision(spec_, resource_names(inst_id))


def test_a_rotation_whose_old_sessions_cannot_be_ended_says_so_and_is_retried(
        plane: tuple[Context, Engine], mysql_server: MySQLServer, unique_id: str,
        admin_user: Callable[..., str]) -> None:
    """The rotation of a detached instance revokes at once: the kill denied fails the operation
    with the reason and the fix, the old login stays retiring (its session alive), and the
    reconcile pass revokes it once the admin may end sessions."""
    ctx, _ = plane
    name = f"myk{unique_id}"
    projects.create_project(ctx, name)
    added = services.add(ctx, name, "test", "mysql", "DEFAULT", provision=True)
    assert wait_op(ctx, added["operation"]["id"])["status"] == "succeeded"
    services.detach(ctx, name, "test", "DEFAULT")
    old = Credentials(ctx.box.open(instance_row(ctx, name).credentials_enc))
    no_kill = admin_user(*BASIC, "GRANT PROCESS ON *.* TO {u}")
    with ctx.store.session() as s:  # the admin lost CONNECTION ADMIN since the cluster was added
        s.scalars(select(Cluster)).one().url_enc = ctx.box.seal(no_kill)
    held = connect(old)
    try:
        op = wait_op(ctx, services.rotate(ctx, name, "test", "DEFAULT")["operation"]["id"])  # type: ignore[index]
        assert op["status"] == "failed", op
        said = str(op["error"])
        assert "revoking the old credentials of DEFAULT" in said, op
        assert "1 of its open session(s) could not be ended" in said, op
        assert f"GRANT CONNECTION ADMIN ON *.* TO {account(no_kill)}" in said, op
        assert str(old.values["password"]) not in said
        shown = services.show(ctx, name, "test", "DEFAULT")
        assert shown["retiring_logins"] == [f"tether_i{added['id']}"]
        assert "could not be ended" in str(shown["last_error"])
        assert alive(held) and not logs_in(old)
        new = Credentials(ctx.box.open(instance_row(ctx, name).credentials_enc))
        assert logs_in(new)

        with ctx.store.session() as s:  # the admin is fixed: the next pass finishes the revoke
            s.scalars(select(Cluster)).one().url_enc = ctx.box.seal(mysql_server.admin_url)
        Reconciler(ctx.store, ctx.box, ctx.data_dir).run_once()
        assert not alive(held)
        shown = services.show(ctx, name, "test", "DEFAULT")
        assert shown["retiring_logins"] == [] and shown["last_error"] is None
        assert logs_in(new) and not logs_in(old)
    finally:
        held.close()
