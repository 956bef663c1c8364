"""Actions + store + engine against real servers, on both stores: SQLite (the embedded default)
and PostgreSQL (TETHER_DATABASE_URL). No HTTP here: the API and CLI are covered end to end."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import select

from tests.plane import APP_COMMAND, wait_op
from tests.plane import plane as make_plane
from tether.actions import deployments, projects, services, variables
from tether.actions.common import Context
from tether.engine.core import Engine
from tether.errors import Conflict, UserError
from tether.naming import resource_names
from tether.providers.registry import get_provider
from tether.store.db import Store
from tether.store.models import AuditEntry, Cluster, Instance, Operation
from tether.store.records import cluster_spec

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path, pg_server: Any,
          unique_id: str) -> Iterator[Store]:
    if request.param == "sqlite":
        st = Store(f"sqlite:///{tmp_path / 'tether.db'}")
        st.migrate()
        yield st
        st.dispose()
        return
    name = f"tether_store_{unique_id}"
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = pg_server.admin_url.rsplit("/", 1)[0] + "/" + name
    st = Store(url)
    st.migrate()
    st.migrate()  # migrations are idempotent
    yield st
    st.dispose()
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def plane(store: Store, tmp_path: Path, pg_server: Any) -> Iterator[tuple[Context, Engine]]:
    with make_plane(tmp_path, "postgres", "local", pg_server.admin_url, "pg",
                    store=store) as (ctx, engine):
        yield ctx, engine
        # leave nothing behind on the shared server, whatever the test left
        with store.session() as s:
            pg = s.scalars(select(Cluster).where(Cluster.name == "pg")).one()
            spec = cluster_spec(ctx.box, pg)
            ids = list(s.scalars(select(Instance.id)))
    for inst_id in ids:
        get_provider("postgres").deprovision(spec, resource_names(inst_id))


def state(ctx: Context, project: str, env: str, prefix: str) -> str:
    return str(services.show(ctx, project, env, prefix)["state"])


def test_provision_deploy_detach_remove(plane: tuple[Context, Engine], pg_server: Any,
                                        unique_id: str) -> None:
    ctx, _engine = plane
    name = f"p{unique_id}"
    projects.create_project(ctx, name, app_command=APP_COMMAND)
    added = services.add(ctx, name, "test", "postgres", "DEFAULT", provision=True)
    assert added["state"] == "provisioning"
    assert wait_op(ctx, added["operation"]["id"])["status"] == "succeeded"
    assert state(ctx, name, "test", "DEFAULT") == "pending attachment"

    env_vars = {v["name"]: v for v in variables.list_variables(ctx, name, "test", True)}
    dsn = env_vars["DEFAULT_DATABASE_DSN"]["value"]
    assert env_vars["DATABASE_URL"]["value"] == dsn
    assert env_vars["STAGE"]["value"] == "test"
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE filled_early (x int)")

    dep = deployments.deploy(ctx, name, "test")
    assert wait_op(ctx, dep["operation"]["id"])["status"] == "succeeded"
    assert state(ctx, name, "test", "DEFAULT") == "attached"
    with pytest.raises(Conflict, match="DEFAULT is attached: detach it and deploy"):
        services.remove(ctx, name, "test", "DEFAULT", "DEFAULT")

    services.detach(ctx, name, "test", "DEFAULT")
    assert state(ctx, name, "test", "DEFAULT") == "pending detachment"
    dep = deployments.deploy(ctx, name, "test")
    assert wait_op(ctx, dep["operation"]["id"])["status"] == "succeeded"
    assert state(ctx, name, "test", "DEFAULT") == "detached"

    with pytest.raises(UserError, match="--confirm DEFAULT"):
        services.remove(ctx, name, "test", "DEFAULT", None)
    removed = services.remove(ctx, name, "test", "DEFAULT", "DEFAULT")
    assert wait_op(ctx, removed["operation"]["id"])["status"] == "succeeded"
    assert state(ctx, name, "test", "DEFAULT") == "removed"
    with psycopg.connect(pg_server.admin_url) as conn:
        db = dsn.rsplit("/", 1)[1]
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,)).fetchone() \
            is None
        assert conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (db,)).fetchone() \
            is None

    history = services.show(ctx, name, "test", "DEFAULT")["history"]
    transitions = [(h["from"], h["to"]) for h in history if h["to"]]
    assert transitions == [
        (None, "new"), ("new", "provisioning"), ("provisioning", "pending attachment"),
        ("pending attachment", "attached"), ("attached", "pending detachment"),
        ("pending detachment", "detached"), ("detached", "removed"),
    ]
    assert {h["actor"] for h in history} >= {"alice"}
    # the same prefix can be used again once removed
    again = services.add(ctx, name, "test", "postgres", "DEFAULT")
    assert again["state"] == "new" and again["id"] != added["id"]


def test_failed_provision_returns_to_new_and_retry_is_safe(
        plane: tuple[Context, Engine], pg_server: Any, unique_id: str) -> None:
    ctx, engine = plane
    name = f"f{unique_id}"
    projects.create_project(ctx, name)
    added = services.add(ctx, name, "test", "postgres", "DB")
    inst_id = int(added["id"])
    # a real failure: the instance's database name is taken by someone else on the cluster
    db = f"tether_i{inst_id}"
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    try:
        op = services.provision(ctx, name, "test", "DB")["operation"]
        result = wait_op(ctx, op["id"])
        assert result["status"] == "failed"
        assert "provisioning DB failed" in result["error"]
        shown = services.show(ctx, name, "test", "DB")
        assert shown["state"] == "new"
        assert shown["last_error"]
        with psycopg.connect(pg_server.admin_url) as conn:  # no half-made role left behind
            assert conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s",
                                (db,)).fetchone() is None
    finally:
        with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}"')
    op = services.provision(ctx, name, "test", "DB")["operation"]
    assert wait_op(ctx, op["id"])["status"] == "succeeded"
    assert state(ctx, name, "test", "DB") == "pending attachment"
    # provisioning again is a no-op, and the engine step itself is idempotent
    assert services.provision(ctx, name, "test", "DB")["operation"] is None
    assert "already provisioned" in engine.provision_instance(inst_id, "test")
    services.remove(ctx, name, "test", "DB", "DB")


def test_operations_on_one_environment_are_serialised(plane: tuple[Context, Engine],
                                                      unique_id: str) -> None:
    ctx, _engine = plane
    name = f"s{unique_id}"
    projects.create_project(ctx, name)
    ops = []
    for prefix in ("A", "B", "C"):
        ops.append(services.add(ctx, name, "test", "postgres", prefix,
                                provision=True)["operation"]["id"])
    other = services.add(ctx, name, "live", "postgres", "A", provision=True)["operation"]["id"]
    for op in [*ops, other]:
        assert wait_op(ctx, op)["status"] == "succeeded"
    with ctx.store.session() as s:
        rows = [s.get(Operation, i) for i in ops]
        for before, after in itertools.pairwise(rows):
            assert before is not None and after is not None
            assert before.finished_at is not None and after.started_at is not None
            assert after.started_at >= before.finished_at
        assert s.scalars(select(AuditEntry)).first() is not None
    for env, prefix in (("test", "A"), ("test", "B"), ("test", "C"), ("live", "A")):
        services.remove(ctx, name, env, prefix, prefix)


def test_custom_variables_cannot_shadow_service_variables(plane: tuple[Context, Engine],
                                                          unique_id: str) -> None:
    ctx, _engine = plane
    name = f"v{unique_id}"
    projects.create_project(ctx, name)
    services.add(ctx, name, "test", "postgres", "DEFAULT")
    with pytest.raises(Conflict, match="shadow"):
        variables.set_variable(ctx, name, "test", "DATABASE_URL", "x")
    variables.set_variable(ctx, name, "test", "DJANGO_DEBUG", "1")
    listed = variables.list_variables(ctx, name, "test")
    assert [(v["name"], v["value"]) for v in listed] == [("DJANGO_DEBUG", "1")]
    variables.set_variable(ctx, name, "test", "ANALYTICS_DATABASE_DSN", "x")
    with pytest.raises(Conflict, match="shadow"):
        services.add(ctx, name, "test", "postgres", "ANALYTICS")
    with pytest.raises(UserError, match="set by Tether"):
        variables.set_variable(ctx, name, "test", "STAGE", "x")


def test_an_operation_a_crash_interrupted_is_resumed(plane: tuple[Context, Engine],
                                                     pg_server: Any, unique_id: str) -> None:
    """A crash mid-provision leaves the operation `running`, the instance `provisioning` and a
    half-made role on the cluster; the next start resumes and converges, without duplicates."""
    ctx, engine = plane
    name = f"c{unique_id}"
    projects.create_project(ctx, name)
    inst_id = int(services.add(ctx, name, "test", "postgres", "DEFAULT")["id"])
    engine.worker.stop()  # the "crash": no worker runs what we queue now
    op_id = services.provision(ctx, name, "test", "DEFAULT")["operation"]["id"]
    with ctx.store.session() as s:
        op = s.get(Operation, op_id)
        assert op is not None
        op.status, op.attempts = "running", 1
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "tether_i{inst_id}" LOGIN')  # half-made by the crashed run
    restarted = Engine(ctx.store, ctx.box, ctx.data_dir, runtime=None)
    restarted.worker.start()
    try:
        result = wait_op(ctx, op_id)
        assert result["status"] == "succeeded", result
        assert state(ctx, name, "test", "DEFAULT") == "pending attachment"
        dsn = next(v["value"] for v in variables.list_variables(ctx, name, "test", True)
                   if v["name"] == "DEFAULT_DATABASE_DSN")
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == (f"tether_i{inst_id}",)
        with ctx.store.session() as s:
            assert s.get(Operation, op_id).attempts == 2  # type: ignore[union-attr]
    finally:
        restarted.worker.stop()
