"""Credential rotation without downtime on PostgreSQL (issue 8): `tether service rotate` gives an
instance a second login, deploys it, then revokes the old one. Real servers, real application
processes, real crashes; no mocks.

- the provider: a login role beside the instance's role, acting as it, with its connection
  limit; the old login revoked (the instance's role NOLOGIN, an earlier login dropped with what
  it owns given back), everything idempotent, all of it gone with the instance;
- the engine: an app under load keeps serving through the rotation and ends on the new login,
  the old password stops working; a detached instance is revoked at once; a failed deployment
  revokes nothing; a crash at any step converges; a tenant that changed its own password is
  repaired; a revoke that failed is retried by the reconcile pass, which sees no drift."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql
from sqlalchemy import select

from tests.conftest import PgServer
from tests.integration.rotation_app import App, instance_row, observe, zero_downtime_rotation
from tests.integration.rotation_drift import drift_during_a_rotation
from tests.integration.test_supervision import Node
from tests.plane import plane as make_plane
from tests.plane import wait_op
from tether.actions import clusters, projects, services
from tether.actions.common import Context
from tether.api.app import create_app
from tether.api.auth import create_token
from tether.crypto import SecretBox
from tether.engine.core import Engine
from tether.engine.reconcile import Reconciler, ReconcileReport
from tether.errors import ClusterError, Conflict, UserError
from tether.naming import resource_names
from tether.net import free_port
from tether.providers.base import ClusterSpec, Credentials, ResourceNames
from tether.providers.postgres import PostgresProvider
from tether.runtime.process import ProcessRuntime
from tether.store.db import Store
from tether.store.models import AuditEntry, Cluster, Environment, Instance, Operation, Release
from tether.store.records import cluster_spec

pytestmark = pytest.mark.integration

PROVIDER = PostgresProvider()


def dsn(creds: Credentials) -> str:
    c = creds.values
    return (f"postgres://{c['user']}:{quote(str(c['password']), safe='')}@{c['host']}:"
            f"{c['port']}/{c['database']}")


def logs_in(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.OperationalError:
        return False


def roles(admin_url: str, base: str) -> dict[str, bool]:
    """The instance's roles on the server: name -> can log in."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        return {str(name): bool(login) for name, login in conn.execute(
            "SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname = %s OR rolname LIKE %s",
            (base, base.replace("_", "\\_") + "\\_%"))}


@pytest.fixture
def admin_url(pg_server: PgServer, unique_id: str, request: pytest.FixtureRequest
              ) -> Iterator[str]:
    """The superuser, or (param "createrole") an admin with CREATEROLE CREATEDB only."""
    if getattr(request, "param", "superuser") == "superuser":
        yield pg_server.admin_url
        return
    name, password = f"tether_t{unique_id}adm", secrets.token_urlsafe(12)
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEROLE CREATEDB PASSWORD {}").format(
            sql.Identifier(name), sql.Literal(password)))
    yield f"postgres://{name}:{password}@{pg_server.host}:{pg_server.port}/postgres"
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


# -- the provider ---------------------------------------------------------------------------------


@pytest.mark.parametrize("admin_url", ["superuser", "createrole"], indirect=True)
def test_a_second_login_works_beside_the_first_until_the_first_is_revoked(
        pg_server: PgServer, admin_url: str, unique_id: str) -> None:
    cluster = ClusterSpec(id=1, kind="postgres", region="local", url=admin_url,
                          settings={"connection_limit": 2})
    names = ResourceNames(base=f"tether_t{unique_id}r")
    try:
        first = PROVIDER.provision(cluster, names, secrets.token_urlsafe(24))
        second_names = names.rotated(1)
        second = PROVIDER.add_login(cluster, second_names, secrets.token_urlsafe(24))
        assert second.values["user"] == f"{names.base}_1"
        assert PROVIDER.add_login(cluster, second_names, str(second.values["password"])) == \
            second  # idempotent: a retry converges to the same login
        held = psycopg.connect(dsn(first), autocommit=True)  # the running release's session
        try:
            assert logs_in(dsn(first)) and logs_in(dsn(second))
            with psycopg.connect(dsn(second), autocommit=True) as conn:
                # it acts as the instance's role: what it makes belongs to that role
                assert conn.execute("SELECT current_user, session_user").fetchone() == (
                    names.role, second_names.login)
                conn.execute("CREATE TABLE made_by_second (x int)")
                assert conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = "
                                    "'made_by_second'").fetchone() == (names.role,)
                # the instance's connection limit applies to the login the app uses
                extra = psycopg.connect(dsn(second))
                with pytest.raises(psycopg.OperationalError, match="too many connections"):
                    psycopg.connect(dsn(second), connect_timeout=5).close()
                extra.close()
            # before the revoke the old login is still allowed, and observe says so
            assert PROVIDER.observe(cluster, second_names).differences == (
                f"role {names.role} can log in, but its credentials were rotated to role "
                f"{second_names.login}",)
            PROVIDER.revoke_login(cluster, second_names, names.role)
            PROVIDER.revoke_login(cluster, second_names, names.role)  # idempotent
            with pytest.raises(psycopg.OperationalError):
                held.execute("SELECT 1")  # its open session was ended
        finally:
            held.close()
        assert not logs_in(dsn(first)) and logs_in(dsn(second))
        assert roles(pg_server.admin_url, names.base) == {names.role: False,
                                                          second_names.login: True}
        assert PROVIDER.observe(cluster, second_names).differences == ()
        # a repair (provision again) keeps the rotated state: the old login stays revoked
        assert PROVIDER.provision(cluster, second_names, str(second.values["password"])) == \
            second
        assert not logs_in(dsn(first))

        third_names = names.rotated(2)
        third = PROVIDER.add_login(cluster, third_names, secrets.token_urlsafe(24))
        with psycopg.connect(dsn(second), autocommit=True) as conn:
            conn.execute("RESET ROLE")  # made as the login itself: given back at its revoke
            conn.execute("CREATE TABLE made_as_second (x int)")
        with pytest.raises(ClusterError, match="refusing to revoke"):
            PROVIDER.revoke_login(cluster, third_names, third_names.login)  # the current one
        with pytest.raises(ClusterError, match="refusing to revoke"):
            PROVIDER.revoke_login(cluster, third_names, "postgres")
        PROVIDER.revoke_login(cluster, third_names, second_names.login)
        assert not logs_in(dsn(second)) and logs_in(dsn(third))
        with psycopg.connect(dsn(third), autocommit=True) as conn:
            assert dict(conn.execute("SELECT tablename, tableowner FROM pg_tables WHERE "
                                     "schemaname = 'public'").fetchall()) == {
                "made_by_second": names.role, "made_as_second": names.role}
        assert roles(pg_server.admin_url, names.base) == {names.role: False,
                                                          third_names.login: True}
        assert PROVIDER.observe(cluster, third_names).differences == ()
    finally:
        PROVIDER.deprovision(cluster, names)
    assert roles(pg_server.admin_url, names.base) == {}  # every login went with it


# -- through the engine ------------------------------------------------------------------------


@pytest.fixture
def plane(tmp_path: Path, pg_server: Any) -> Iterator[tuple[Context, Engine]]:
    with make_plane(tmp_path, "postgres", "local", pg_server.admin_url, "pg",
                    runtime=ProcessRuntime()) as (ctx, engine):
        yield ctx, engine
        with ctx.store.session() as s:
            spec = cluster_spec(ctx.box, s.scalars(select(Cluster).where(
                Cluster.name == "pg")).one())
            ids = list(s.scalars(select(Instance.id).where(Instance.kind == "postgres")))
    for inst_id in ids:
        PROVIDER.deprovision(spec, resource_names(inst_id))


def test_the_app_keeps_serving_through_a_rotation_and_the_old_password_stops_working(
        plane: tuple[Context, Engine], tmp_path: Path, unique_id: str) -> None:
    ctx, _ = plane
    zero_downtime_rotation(ctx, tmp_path, f"rot{unique_id}", "postgres", logs_in)


def test_a_detached_instance_is_rotated_and_revoked_at_once(
        plane: tuple[Context, Engine], pg_server: PgServer, unique_id: str) -> None:
    ctx, _ = plane
    name = f"det{unique_id}"
    projects.create_project(ctx, name)
    added = services.add(ctx, name, "test", "postgres", "DEFAULT", provision=True)
    assert wait_op(ctx, added["operation"]["id"])["status"] == "succeeded"
    services.detach(ctx, name, "test", "DEFAULT")
    old = Credentials(ctx.box.open(instance_row(ctx, name).credentials_enc))
    rotated = services.rotate(ctx, name, "test", "DEFAULT")
    assert "revoked at once" in str(rotated["message"])
    op = wait_op(ctx, rotated["operation"]["id"])  # type: ignore[index]
    assert op["status"] == "succeeded" and op["deployment_id"] is None, op
    assert "the old ones are revoked" in op["message"]
    new = Credentials(ctx.box.open(instance_row(ctx, name).credentials_enc))
    assert not logs_in(dsn(old)) and logs_in(dsn(new))
    shown = services.show(ctx, name, "test", "DEFAULT")
    assert shown["state"] == "detached" and shown["retiring_logins"] == []
    assert observe(ctx, name) == ()
    # removing it drops every login it ever had
    removed = services.remove(ctx, name, "test", "DEFAULT", "DEFAULT")
    assert wait_op(ctx, removed["operation"]["id"])["status"] == "succeeded"
    assert roles(pg_server.admin_url, f"tether_i{added['id']}") == {}


def test_a_failed_deployment_revokes_nothing(plane: tuple[Context, Engine], tmp_path: Path,
                                             unique_id: str) -> None:
    ctx, _ = plane
    name = f"fail{unique_id}"
    app = App(ctx, tmp_path, name, "postgres", health_timeout=8)
    services.add(ctx, name, "test", "postgres", "DEFAULT")
    app.deploy_ok()
    old_dsn = app.dsn()
    app.gate.unlink()  # the next release never becomes healthy
    rotated = services.rotate(ctx, name, "test", "DEFAULT")
    op = wait_op(ctx, rotated["operation"]["id"])  # type: ignore[index]
    assert op["status"] == "succeeded" and op["deployment_id"]
    app.wait_deployment(int(op["deployment_id"]), expect="failed")
    # the previous release serves on with the old credentials; both stay valid
    assert app.user() == f"tether_i{instance_row(ctx, name).id}"
    assert logs_in(old_dsn) and logs_in(app.dsn())
    shown = services.show(ctx, name, "test", "DEFAULT")
    assert shown["state"] == "attached" and len(shown["retiring_logins"]) == 1  # type: ignore
    app.gate.touch()
    app.deploy_ok()  # the next successful deployment finishes the rotation
    assert app.user().endswith("_1")
    assert not logs_in(old_dsn)
    assert services.show(ctx, name, "test", "DEFAULT")["retiring_logins"] == []


def test_rotating_again_after_a_failed_deployment_keeps_only_what_the_app_uses(
        plane: tuple[Context, Engine], tmp_path: Path, unique_id: str) -> None:
    """The running release still uses the first login; the second, which no release ever got,
    is revoked at once by the next rotation; the first only once the third serves."""
    ctx, _ = plane
    name = f"again{unique_id}"
    app = App(ctx, tmp_path, name, "postgres", health_timeout=8)
    services.add(ctx, name, "test", "postgres", "DEFAULT")
    app.deploy_ok()
    first = app.dsn()
    app.gate.unlink()
    op = wait_op(ctx, services.rotate(ctx, name, "test", "DEFAULT")["operation"]["id"])  # type: ignore[index]
    app.wait_deployment(int(op["deployment_id"]), expect="failed")
    second = app.dsn()
    app.gate.touch()
    op = wait_op(ctx, services.rotate(ctx, name, "test", "DEFAULT")["operation"]["id"])  # type: ignore[index]
    assert op["status"] == "succeeded" and op["deployment_id"], op
    assert not logs_in(second)  # unused: revoked by the rotation itself
    app.wait_deployment(int(op["deployment_id"]))
    assert app.user().endswith("_2")
    assert not logs_in(first) and logs_in(app.dsn())
    shown = services.show(ctx, name, "test", "DEFAULT")
    assert shown["rotations"] == 2 and shown["retiring_logins"] == []


def test_a_rotation_repairs_a_tenant_that_changed_its_own_password(
        plane: tuple[Context, Engine], tmp_path: Path, unique_id: str) -> None:
    ctx, _ = plane
    name = f"rep{unique_id}"
    app = App(ctx, tmp_path, name, "postgres")
    services.add(ctx, name, "test", "postgres", "DEFAULT")
    app.deploy_ok()
    own = "tenants-own-" + secrets.token_hex(6)
    with psycopg.connect(app.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER ROLE CURRENT_USER PASSWORD {}").format(sql.Literal(own)))
    parts = urlsplit(app.dsn())
    tenants = parts._replace(netloc=f"{parts.username}:{own}@{parts.hostname}:{parts.port}")
    assert not logs_in(app.dsn()) and logs_in(tenants.geturl())  # Tether's DSN is broken
    rotated = services.rotate(ctx, name, "test", "DEFAULT")
    op = wait_op(ctx, rotated["operation"]["id"])  # type: ignore[index]
    assert op["status"] == "succeeded" and op["deployment_id"], op
    app.wait_deployment(int(op["deployment_id"]))
    assert app.user().endswith("_1")  # the app works again, with a password Tether knows
    assert logs_in(app.dsn())
    assert not logs_in(tenants.geturl())  # the old login is revoked, whatever its password


def test_a_revoke_that_failed_is_retried_by_the_reconcile_pass(
        plane: tuple[Context, Engine], tmp_path: Path, pg_server: PgServer,
        unique_id: str) -> None:
    ctx, _ = plane
    name = f"rec{unique_id}"
    app = App(ctx, tmp_path, name, "postgres")
    services.add(ctx, name, "test", "postgres", "DEFAULT")
    app.deploy_ok()
    old_dsn = app.dsn()
    app.gate.unlink()
    rotated = services.rotate(ctx, name, "test", "DEFAULT")
    op = wait_op(ctx, rotated["operation"]["id"])  # type: ignore[index]
    app.wait_held(int(op["deployment_id"]))
    # the cluster goes away for a while, just as the rotation's deployment switches
    with ctx.store.session() as s:
        cluster = s.scalars(select(Cluster)).one()
        good_url = ctx.box.open(cluster.url_enc)
        cluster.url_enc = ctx.box.seal(good_url.replace(f":{pg_server.port}/",
                                                        f":{free_port()}/"))
    app.gate.touch()
    deployed = app.wait_deployment(int(op["deployment_id"]))
    lines = [row["line"] for row in deployed["logs"]]
    assert any("revoking the old credentials of DEFAULT" in line for line in lines), lines
    assert app.user().endswith("_1")
    assert logs_in(old_dsn)  # not revoked yet: the old login still works
    shown = services.show(ctx, name, "test", "DEFAULT")
    assert len(shown["retiring_logins"]) == 1  # type: ignore[arg-type]
    assert str(shown["last_error"]).startswith("revoking the old credentials of DEFAULT")
    assert urlsplit(old_dsn).password not in str(shown["last_error"])

    with ctx.store.session() as s:
        s.scalars(select(Cluster)).one().url_enc = ctx.box.seal(good_url)
    report = Reconciler(ctx.store, ctx.box, ctx.data_dir).run_once()
    inst = instance_row(ctx, name)
    assert not logs_in(old_dsn) and logs_in(app.dsn())
    shown = services.show(ctx, name, "test", "DEFAULT")
    assert shown["retiring_logins"] == [] and shown["last_error"] is None
    # ... and the same pass observes it rotated as it should be: no drift, nothing undone
    assert inst.id in report.in_sync and shown["drift"] is None
    assert not logs_in(old_dsn)
    with ctx.store.session() as s:
        revoked = s.scalars(select(AuditEntry).where(
            AuditEntry.instance_id == inst.id,
            AuditEntry.action == "old credentials revoked")).all()
        assert [a.actor for a in revoked] == ["reconciler"]


def test_a_current_release_stopped_with_tether_keeps_its_credentials(
        plane: tuple[Context, Engine], tmp_path: Path, unique_id: str) -> None:
    """Review finding 6: Tether stopping marks the current release `stopped` and the next start
    brings it back with its stored variables; a reconcile pass (or a rotation) in between must
    not revoke the old login that release will start with after a failed rotation deploy."""
    ctx, _ = plane
    name = f"stp{unique_id}"
    app = App(ctx, tmp_path, name, "postgres", health_timeout=8)
    services.add(ctx, name, "test", "postgres", "DEFAULT")
    app.deploy_ok()
    old_dsn = app.dsn()
    app.gate.unlink()
    op = wait_op(ctx, services.rotate(ctx, name, "test", "DEFAULT")["operation"]["id"])  # type: ignore[index]
    app.wait_deployment(int(op["deployment_id"]), expect="failed")
    with ctx.store.session() as s:  # as `Releases._stopped_with_tether` leaves it
        env = s.get(Environment, instance_row(ctx, name).environment_id)
        assert env is not None and env.current_release_id is not None
        release = s.get(Release, env.current_release_id)
        assert release is not None and release.status == "running"
        release.status = "stopped"
    try:
        Reconciler(ctx.store, ctx.box, ctx.data_dir).run_once()
        assert logs_in(old_dsn)  # the release the restore brings back still logs in
        shown = services.show(ctx, name, "test", "DEFAULT")
        assert len(shown["retiring_logins"]) == 1  # type: ignore[arg-type]
    finally:
        with ctx.store.session() as s:
            release = s.get(Release, env.current_release_id)
            assert release is not None
            release.status = "running"
    with ctx.store.session() as s:  # a failed current release is not brought back: revoked
        s.get(Release, env.current_release_id).status = "failed"  # type: ignore[union-attr]
    try:
        Reconciler(ctx.store, ctx.box, ctx.data_dir).run_once()
        assert not logs_in(old_dsn)
    finally:
        with ctx.store.session() as s:
            s.get(Release, env.current_release_id).status = "running"  # type: ignore[union-attr]


def test_a_reconcile_target_read_before_a_rotation_does_not_revive_the_old_login(
        plane: tuple[Context, Engine], unique_id: str) -> None:
    """Review finding 5: a pass reads its targets, a rotation finishes (the old login revoked),
    then the pass reaches the instance: it must not observe the stale login as drift and
    "repair" it with the old password."""
    ctx, _ = plane
    name = f"stale{unique_id}"
    projects.create_project(ctx, name)
    added = services.add(ctx, name, "test", "postgres", "DEFAULT", provision=True)
    assert wait_op(ctx, added["operation"]["id"])["status"] == "succeeded"
    old = Credentials(ctx.box.open(instance_row(ctx, name).credentials_enc))
    reconciler = Reconciler(ctx.store, ctx.box, ctx.data_dir)
    report = ReconcileReport()
    (target,) = [t for t in reconciler._targets(report) if t.instance_id == added["id"]]
    op = wait_op(ctx, services.rotate(ctx, name, "test", "DEFAULT")["operation"]["id"])  # type: ignore[index]
    assert op["status"] == "succeeded" and op["deployment_id"] is None, op
    new = Credentials(ctx.box.open(instance_row(ctx, name).credentials_enc))
    assert not logs_in(dsn(old)) and logs_in(dsn(new))
    reconciler._reconcile(target, report)
    assert not logs_in(dsn(old)) and logs_in(dsn(new))
    assert added["id"] in report.skipped
    shown = services.show(ctx, name, "test", "DEFAULT")
    assert shown["drift"] is None and observe(ctx, name) == ()
    # a repair of the stale target that ran while the rotation finished is undone
    PROVIDER.provision(target.spec, target.names, str(target.secret))
    assert logs_in(dsn(old))
    reconciler._undo_if_rotated(target)
    assert not logs_in(dsn(old)) and logs_in(dsn(new))


def test_drift_during_a_rotation_is_reported_not_repaired_until_the_deployment(
        plane: tuple[Context, Engine], tmp_path: Path, pg_server: PgServer,
        unique_id: str) -> None:
    """Second review, finding 8: the pass skipped an instance whose old login a running release
    still used, so a superuser granted meanwhile went unnoticed until the next deployment."""
    ctx, _ = plane

    def make_drift(base: str) -> None:
        with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
            # the old login the running release uses, and the new one
            conn.execute(sql.SQL("ALTER ROLE {} SUPERUSER CONNECTION LIMIT 7").format(
                sql.Identifier(base)))
            conn.execute(sql.SQL("ALTER ROLE {} CREATEDB").format(sql.Identifier(f"{base}_1")))

    drift_during_a_rotation(ctx, tmp_path, f"drr{unique_id}", "postgres", logs_in, make_drift,
                            lambda base: [f"role {base} has SUPERUSER",
                                          f"role {base} may hold 7 connection(s) at once, "
                                          "not 20 connection(s)",
                                          f"role {base}_1 has CREATEDB"])


def test_rotate_is_refused_before_provisioning_and_for_kinds_without_it(
        plane: tuple[Context, Engine], unique_id: str) -> None:
    ctx, _ = plane
    name = f"ref{unique_id}"
    projects.create_project(ctx, name)
    services.add(ctx, name, "test", "postgres", "FRESH")
    with pytest.raises(Conflict, match="new and not provisioned"):
        services.rotate(ctx, name, "test", "FRESH")
    assert services.show(ctx, name, "test", "FRESH")["actions"]["rotate"][  # type: ignore
        "allowed"] is False
    media = ctx.data_dir / "media"
    clusters.add_cluster(ctx, "local-files", "local", f"file://{media}", name="media",
                         settings={"base_dir": str(media),
                                   "public_url": "http://127.0.0.1:1/media/"})
    services.add(ctx, name, "test", "local-media", "MEDIA", provision=True)
    with pytest.raises(UserError, match="rotation is not supported for local-files yet"):
        services.rotate(ctx, name, "test", "MEDIA")
    with pytest.raises(UserError, match="no service with prefix NOPE"):
        services.rotate(ctx, name, "test", "NOPE")
    # through the API: 409 and 400, with the message
    token = create_token(ctx.store, "rotation-test")
    with TestClient(create_app(ctx)) as client:
        base = f"/api/v1/projects/{name}/environments/test/services"
        auth = {"Authorization": f"Bearer {token}"}
        refused = client.post(f"{base}/FRESH/rotate", headers=auth)
        assert refused.status_code == 409, refused.text
        assert "provision it first" in refused.json()["error"]["message"]
        assert client.post(f"{base}/MEDIA/rotate", headers=auth).status_code == 400


def test_asking_twice_gives_one_rotation_and_running_it_twice_converges(
        tmp_path: Path, pg_server: PgServer, unique_id: str) -> None:
    """The operation runs at least once: its handler run again after it finished (a crash
    before its outcome was written) neither rotates again nor leaves another login."""
    store = Store(f"sqlite:///{tmp_path / 'tether.db'}")
    store.migrate()
    box = SecretBox.from_data_dir(tmp_path)
    ctx = Context(store=store, box=box, data_dir=tmp_path, actor="alice")
    engine = Engine(store, box, tmp_path)  # its worker is not started: the test runs it
    clusters.add_cluster(ctx, "postgres", "local", pg_server.admin_url, name="pg")
    name = f"twice{unique_id}"
    projects.create_project(ctx, name)
    added = services.add(ctx, name, "test", "postgres", "DEFAULT")
    engine.provision_instance(int(added["id"]), "alice")  # type: ignore[arg-type]
    base = f"tether_i{added['id']}"
    try:
        old = Credentials(box.open(instance_row(ctx, name).credentials_enc))
        first = services.rotate(ctx, name, "test", "DEFAULT")
        again = services.rotate(ctx, name, "test", "DEFAULT")
        assert again["operation"]["id"] == first["operation"]["id"]  # type: ignore[index]
        assert "being rotated already" in str(again["message"])
        with store.session() as s:
            op = s.get(Operation, first["operation"]["id"])  # type: ignore[index]
            assert op is not None
            s.expunge(op)
        assert "revoked" in engine.rotation.run(op)
        new = Credentials(box.open(instance_row(ctx, name).credentials_enc))
        assert engine.rotation.run(op).endswith("the old ones are revoked")
        inst = instance_row(ctx, name)
        assert inst.rotations == 1 and Credentials(box.open(inst.credentials_enc)) == new
        assert roles(pg_server.admin_url, base) == {base: False, f"{base}_1": True}
        assert not logs_in(dsn(old)) and logs_in(dsn(new))
    finally:
        with store.session() as s:
            spec = cluster_spec(box, s.scalars(select(Cluster)).one())
        PROVIDER.deprovision(spec, resource_names(int(added["id"])))  # type: ignore[arg-type]
        store.dispose()


@pytest.mark.parametrize("point", ["rotate.before_provider", "rotate.after_provider",
                                   "rotate.after_record"])
def test_a_rotation_cut_short_by_a_crash_converges(
        tmp_path: Path, pg_server: PgServer, unique_id: str, point: str) -> None:
    """A real crash (SIGKILL at the named point) of the node running the rotation, then a
    restart: the rotation ends as if nothing happened, with one new login and the old one
    revoked."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    store = Store(f"sqlite:///{data_dir / 'tether.db'}")
    store.migrate()
    box = SecretBox.from_data_dir(data_dir)
    ctx = Context(store=store, box=box, data_dir=data_dir, actor="alice")
    clusters.add_cluster(ctx, "postgres", "local", pg_server.admin_url, name="pg")
    name = f"crash{unique_id}"
    projects.create_project(ctx, name)
    added = services.add(ctx, name, "test", "postgres", "DEFAULT", provision=True)
    base = f"tether_i{added['id']}"
    node = Node(data_dir, "node-a", crash_at=point)
    try:
        assert wait_op(ctx, added["operation"]["id"])["status"] == "succeeded"
        old = Credentials(box.open(instance_row(ctx, name).credentials_enc))
        rotated = services.rotate(ctx, name, "test", "DEFAULT")
        node.wait_dead()  # the crash point ended it
        node = Node(data_dir, "node-a")  # its leftover operation is resumed
        op = wait_op(ctx, rotated["operation"]["id"], timeout=90)  # type: ignore[index]
        assert op["status"] == "succeeded", op
        inst = instance_row(ctx, name)
        new = Credentials(box.open(inst.credentials_enc))
        assert inst.rotations == 1 and new.values["user"] == f"{base}_1"
        assert inst.rotation_secret_enc is None and inst.retiring_credentials_enc is None
        assert roles(pg_server.admin_url, base) == {base: False, f"{base}_1": True}
        assert not logs_in(dsn(old)) and logs_in(dsn(new))
        assert observe(ctx, name) == ()
    finally:
        node.stop()
        with store.session() as s:
            spec = cluster_spec(box, s.scalars(select(Cluster)).one())
        PROVIDER.deprovision(spec, resource_names(int(added["id"])))  # type: ignore[arg-type]
        store.dispose()
