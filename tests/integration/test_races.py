"""Every change that can race a running deployment has one defined outcome, shown through the
engine with a real application process and a real PostgreSQL cluster: the deployment is held at
its health check (the app answers 503 until a gate file exists) while the user acts.

Also the other findings of the lifecycle: an error before the provider call (finding 2), a
removal that waits (finding 9), a failed removal, an instance stranded in `provisioning`."""

from __future__ import annotations

import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from tests.plane import plane as make_plane
from tests.plane import wait_op
from tether.actions import clusters, deployments, projects, services, variables
from tether.actions.common import Context
from tether.engine.core import Engine
from tether.errors import Conflict
from tether.naming import resource_names
from tether.providers.registry import get_provider
from tether.runtime.process import ProcessRuntime
from tether.store.models import Cluster, Instance, Operation, Release
from tether.store.records import cluster_spec

pytestmark = pytest.mark.integration

GATED_APP = textwrap.dedent(
    """
    import os
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            ok = os.path.exists(os.environ["GATE_FILE"])
            self.send_response(200 if ok else 503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
    """
)


@pytest.fixture
def plane(tmp_path: Path, pg_server: Any) -> Iterator[tuple[Context, Engine]]:
    with make_plane(tmp_path, "postgres", "local", pg_server.admin_url, "pg",
                    runtime=ProcessRuntime()) as (ctx, engine):
        yield ctx, engine
        with ctx.store.session() as s:
            spec = cluster_spec(ctx.box, s.scalars(select(Cluster).where(
                Cluster.name == "pg")).one())
            ids = list(s.scalars(select(Instance.id)))
    for inst_id in ids:
        get_provider("postgres").deprovision(spec, resource_names(inst_id))


class Gate:
    """A project whose deployments wait at the health check until `open()`."""

    def __init__(self, ctx: Context, tmp_path: Path, name: str) -> None:
        self.ctx, self.name = ctx, name
        # the app's own directory, beside the data dir (tmp_path): its user reads nothing there
        app_dir = tmp_path.parent / f"{tmp_path.name}-app-{name}"
        app_dir.mkdir()
        (app_dir / "gated_app.py").write_text(GATED_APP)
        self.file = app_dir / f"gate-{name}"
        projects.create_project(ctx, name, app_command=f"{sys.executable} gated_app.py",
                                app_dir=str(app_dir), health_path="/health", health_timeout=60)
        variables.set_variable(ctx, name, "test", "GATE_FILE", str(self.file))

    def open(self) -> None:
        self.file.touch()

    def close(self) -> None:
        self.file.unlink(missing_ok=True)

    def deploy_and_hold(self) -> dict[str, Any]:
        """Start a deployment and return once its release has been built and its process is
        starting (the variables are decided), held at the health check."""
        self.close()
        dep = deployments.deploy(self.ctx, self.name, "test")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            logs = deployments.get_deployment(self.ctx, dep["id"])
            lines = [row["line"] for row in deployments.get_deployment(
                self.ctx, dep["id"], logs_after=0)["logs"]]  # type: ignore[index]
            if any(line.startswith("starting release") for line in lines):
                return dep
            assert logs["status"] in ("queued", "running"), (logs, lines)
            time.sleep(0.05)
        raise AssertionError("the deployment did not reach its release start")

    def finish(self, dep: dict[str, Any]) -> dict[str, Any]:
        self.open()
        return wait_op(self.ctx, dep["operation"]["id"], timeout=90)


def state(ctx: Context, project: str, prefix: str) -> str:
    return str(services.show(ctx, project, "test", prefix)["state"])


def provisioned(ctx: Context, project: str, prefix: str) -> str:
    added = services.add(ctx, project, "test", "postgres", prefix, provision=True)
    assert wait_op(ctx, added["operation"]["id"])["status"] == "succeeded"
    return str(next(v["value"] for v in variables.list_variables(ctx, project, "test", True)
                    if v["name"] == f"{prefix}_DATABASE_DSN"))


def release_has(ctx: Context, dep: dict[str, Any], name: str) -> bool:
    with ctx.store.session() as s:
        release = s.scalar(select(Release).where(Release.deployment_id == dep["id"]))
        assert release is not None
        return name in release.variable_names


def test_detach_during_a_deploy_keeps_the_data_of_the_running_release(
        plane: tuple[Context, Engine], tmp_path: Path, unique_id: str) -> None:
    """Finding 1: the release got the variables; the detach settled as `detached` and remove
    deleted the data under the running application. Now: `pending detachment`, remove refused."""
    ctx, _ = plane
    gate = Gate(ctx, tmp_path, f"d{unique_id}")
    dsn = provisioned(ctx, gate.name, "DB")
    dep = gate.deploy_and_hold()
    services.detach(ctx, gate.name, "test", "DB")  # pending attachment -> detached, mid-deploy
    assert gate.finish(dep)["status"] == "succeeded"
    assert release_has(ctx, dep, "DB_DATABASE_DSN")
    assert state(ctx, gate.name, "DB") == "pending detachment"
    with pytest.raises(Conflict, match="deploy test first"):
        services.remove(ctx, gate.name, "test", "DB", "DB")
    with psycopg.connect(dsn) as conn:  # the running application's database is still there
        assert conn.execute("SELECT 1").fetchone() == (1,)
    # the next deployment really detaches it; then it can be removed
    dep = gate.deploy_and_hold()
    assert gate.finish(dep)["status"] == "succeeded"
    assert state(ctx, gate.name, "DB") == "detached"
    removed = services.remove(ctx, gate.name, "test", "DB", "DB")
    assert wait_op(ctx, removed["operation"]["id"])["status"] == "succeeded"


def test_attach_during_a_deploy_waits_for_the_next_one(
        plane: tuple[Context, Engine], tmp_path: Path, unique_id: str) -> None:
    ctx, _ = plane
    gate = Gate(ctx, tmp_path, f"a{unique_id}")
    provisioned(ctx, gate.name, "DB")
    services.detach(ctx, gate.name, "test", "DB")
    dep = gate.deploy_and_hold()
    services.attach(ctx, gate.name, "test", "DB")  # detached -> pending attachment, mid-deploy
    assert gate.finish(dep)["status"] == "succeeded"
    assert not release_has(ctx, dep, "DB_DATABASE_DSN")
    assert state(ctx, gate.name, "DB") == "pending attachment"
    dep = gate.deploy_and_hold()
    assert gate.finish(dep)["status"] == "succeeded"
    assert state(ctx, gate.name, "DB") == "attached"


def test_remove_asked_during_a_deploy_that_gave_the_variables_is_refused_when_it_runs(
        plane: tuple[Context, Engine], tmp_path: Path, unique_id: str) -> None:
    """The removal was allowed when asked (nothing ran the instance yet), but the deployment it
    queued behind attached it: the removal is refused when it runs, the data kept."""
    ctx, _ = plane
    gate = Gate(ctx, tmp_path, f"r{unique_id}")
    dsn = provisioned(ctx, gate.name, "DB")
    dep = gate.deploy_and_hold()
    removal = services.remove(ctx, gate.name, "test", "DB", "DB")["operation"]
    assert gate.finish(dep)["status"] == "succeeded"
    result = wait_op(ctx, removal["id"])
    assert result["status"] == "failed" and "is attached" in result["error"]
    shown = services.show(ctx, gate.name, "test", "DB")
    assert shown["state"] == "attached" and "refused" in str(shown["last_error"])
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_deploy_leaves_out_an_instance_whose_removal_waits(
        plane: tuple[Context, Engine], tmp_path: Path, unique_id: str) -> None:
    """Finding 9's other side: a deployment queued before a removal of the same instance must
    not hand the application variables of data about to be deleted."""
    ctx, engine = plane
    gate = Gate(ctx, tmp_path, f"q{unique_id}")
    provisioned(ctx, gate.name, "DB")
    engine.worker.stop()  # both are queued before either runs
    gate.open()
    dep = deployments.deploy(ctx, gate.name, "test")
    removal = services.remove(ctx, gate.name, "test", "DB", "DB")["operation"]
    restarted = Engine(ctx.store, ctx.box, ctx.data_dir, runtime=ProcessRuntime())
    restarted.worker.start()
    try:
        assert wait_op(ctx, dep["operation"]["id"])["status"] == "succeeded"
        assert not release_has(ctx, dep, "DB_DATABASE_DSN")
        assert wait_op(ctx, removal["id"])["status"] == "succeeded"
        assert state(ctx, gate.name, "DB") == "removed"
    finally:
        restarted.stop()


def test_actions_are_refused_while_a_removal_waits(plane: tuple[Context, Engine],
                                                   tmp_path: Path, unique_id: str) -> None:
    """Finding 9: attach was accepted while a remove of the same instance waited."""
    ctx, engine = plane
    name = f"w{unique_id}"
    projects.create_project(ctx, name)
    provisioned(ctx, name, "DB")
    services.detach(ctx, name, "test", "DB")
    engine.worker.stop()
    services.remove(ctx, name, "test", "DB", "DB")
    for act in (services.attach, services.detach, services.provision):
        with pytest.raises(Conflict, match="being removed"):
            act(ctx, name, "test", "DB")
    shown = services.show(ctx, name, "test", "DB")
    assert not shown["actions"]["attach"]["allowed"]  # type: ignore[index]
    assert shown["state"] == "detached"


def test_add_provision_and_variables_during_a_deploy(
        plane: tuple[Context, Engine], tmp_path: Path, unique_id: str) -> None:
    """An instance added and provisioned, and a variable set, while a deployment runs: none of
    them is in that release; they wait for the next deployment, which has them."""
    ctx, _ = plane
    gate = Gate(ctx, tmp_path, f"p{unique_id}")
    provisioned(ctx, gate.name, "DB")
    dep = gate.deploy_and_hold()
    late = services.add(ctx, gate.name, "test", "postgres", "LATE", provision=True)
    variables.set_variable(ctx, gate.name, "test", "FEATURE", "on")
    assert gate.finish(dep)["status"] == "succeeded"
    assert wait_op(ctx, late["operation"]["id"])["status"] == "succeeded"
    assert not release_has(ctx, dep, "LATE_DATABASE_DSN")
    assert not release_has(ctx, dep, "FEATURE")
    assert state(ctx, gate.name, "LATE") == "pending attachment"
    assert state(ctx, gate.name, "DB") == "attached"
    dep = gate.deploy_and_hold()
    assert gate.finish(dep)["status"] == "succeeded"
    assert release_has(ctx, dep, "LATE_DATABASE_DSN") and release_has(ctx, dep, "FEATURE")
    assert state(ctx, gate.name, "LATE") == "attached"


def test_an_error_before_the_provider_call_returns_to_new(plane: tuple[Context, Engine],
                                                          unique_id: str) -> None:
    """Finding 2: an error raised before the provider call (here: the service's only cluster
    changed version, so no cluster fits any more) rolled back and left the instance
    `provisioning` with no error; provision was a no-op and remove was refused for ever."""
    ctx, _ = plane
    name = f"e{unique_id}"
    projects.create_project(ctx, name)
    services.add(ctx, name, "test", "postgres", "DB")
    with ctx.store.session() as s:
        cluster = s.scalars(select(Cluster).where(Cluster.name == "pg")).one()
        real_version, cluster.version = cluster.version, "9.6"
    try:
        op = services.provision(ctx, name, "test", "DB")["operation"]
        result = wait_op(ctx, op["id"])
        assert result["status"] == "failed" and "no shared cluster" in result["error"]
        shown = services.show(ctx, name, "test", "DB")
        assert shown["state"] == "new"
        assert "no shared cluster" in str(shown["last_error"])
        transitions = [(h["from"], h["to"]) for h in shown["history"] if h["to"]]
        assert transitions[-1] == ("provisioning", "new")
    finally:
        with ctx.store.session() as s:
            s.scalars(select(Cluster).where(Cluster.name == "pg")).one().version = real_version
    op = services.provision(ctx, name, "test", "DB")["operation"]  # retrying is safe
    assert wait_op(ctx, op["id"])["status"] == "succeeded"
    assert state(ctx, name, "DB") == "pending attachment"


def test_a_failed_clean_up_keeps_the_private_cluster_for_the_retry(
        plane: tuple[Context, Engine], pg_server: Any, unique_id: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A provision fails and deleting what it made fails too: the instance used to hand its
    private cluster back at once, so the leftovers sat on a cluster another instance could
    claim, and a removal of this one deleted nothing. Now it keeps its cluster until a retry
    (or a removal) cleans up."""
    from tether.errors import ClusterError

    ctx, _ = plane
    clusters.add_cluster(ctx, "postgres", "local", pg_server.admin_url, private=True,
                         name=f"priv{unique_id}")
    name = f"c{unique_id}"
    projects.create_project(ctx, name)
    services.add(ctx, name, "test", "postgres", "DB", private=True)
    provider = type(get_provider("postgres"))  # a new object per call: patch its class

    def refused(*_args: Any, **_kwargs: Any) -> Any:
        raise ClusterError("the cluster refused (injected)")

    monkeypatch.setattr(provider, "provision", refused)
    monkeypatch.setattr(provider, "deprovision", refused)
    op = services.provision(ctx, name, "test", "DB")["operation"]
    assert wait_op(ctx, op["id"])["status"] == "failed"
    shown = services.show(ctx, name, "test", "DB")
    assert shown["state"] == "new" and "clean-up also failed" in str(shown["last_error"])
    with ctx.store.session() as s:
        cluster = s.scalars(select(Cluster).where(Cluster.name == f"priv{unique_id}")).one()
        inst = s.scalars(select(Instance).where(Instance.prefix == "DB",
                                                Instance.cluster_id.is_not(None))).all()
        assert [i.id for i in inst] == [cluster.owner_instance_id]
    monkeypatch.undo()
    op = services.provision(ctx, name, "test", "DB")["operation"]  # the retry converges
    assert wait_op(ctx, op["id"])["status"] == "succeeded"
    assert services.show(ctx, name, "test", "DB")["cluster"]["name"] == f"priv{unique_id}"


def test_a_failed_removal_stays_retryable_with_its_error(plane: tuple[Context, Engine],
                                                        pg_server: Any, unique_id: str) -> None:
    ctx, _ = plane
    name = f"f{unique_id}"
    projects.create_project(ctx, name)
    provisioned(ctx, name, "DB")
    with ctx.store.session() as s:  # the admin password was changed on the server
        cluster = s.scalars(select(Cluster).where(Cluster.name == "pg")).one()
        good = cluster.url_enc
        cluster.url_enc = ctx.box.seal(pg_server.admin_url.replace(
            f":{pg_server.password}@", ":wrong-password@"))
    try:
        op = services.remove(ctx, name, "test", "DB", "DB")["operation"]
        result = wait_op(ctx, op["id"])
        assert result["status"] == "failed"
        shown = services.show(ctx, name, "test", "DB")
        assert shown["state"] == "pending attachment"
        assert "removing DB failed" in str(shown["last_error"])
        assert "wrong-password" not in str(shown["last_error"])
        assert shown["actions"]["remove"]["allowed"]  # type: ignore[index]
    finally:
        with ctx.store.session() as s:
            s.scalars(select(Cluster).where(Cluster.name == "pg")).one().url_enc = good
    op = services.remove(ctx, name, "test", "DB", "DB")["operation"]
    assert wait_op(ctx, op["id"])["status"] == "succeeded"
    assert state(ctx, name, "DB") == "removed"


def test_an_instance_stranded_in_provisioning_is_recovered_at_start(
        plane: tuple[Context, Engine], pg_server: Any, unique_id: str) -> None:
    """No operation will ever finish it (e.g. its operation row was lost): at the next start
    it is cleaned up and back to `new` with the reason, instead of refusing everything."""
    ctx, engine = plane
    name = f"s{unique_id}"
    projects.create_project(ctx, name)
    inst_id = int(services.add(ctx, name, "test", "postgres", "DB")["id"])
    with ctx.store.session() as s:
        inst = s.get(Instance, inst_id)
        assert inst is not None
        inst.state = "provisioning"
        inst.cluster_id = s.scalars(select(Cluster.id).where(Cluster.name == "pg")).one()
        assert not s.scalars(select(Operation).where(Operation.instance_id == inst_id)).all()
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:  # half-made
        conn.execute(f'CREATE ROLE "tether_i{inst_id}" LOGIN')
    assert engine.provisioning.recover_stranded() == [inst_id]
    shown = services.show(ctx, name, "test", "DB")
    assert shown["state"] == "new" and "interrupted" in str(shown["last_error"])
    with psycopg.connect(pg_server.admin_url) as conn:
        assert conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s",
                            (f"tether_i{inst_id}",)).fetchone() is None


def test_a_store_error_after_the_traffic_switch_does_not_fail_the_deployment(
        plane: tuple[Context, Engine], tmp_path: Path, unique_id: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Once traffic is switched the new release serves: a failure to record it (the store away
    for a moment) used to mark the deployment failed with the states of the old release, so a
    removal could delete the data of an instance the serving release uses (rules 3 and 4). Now
    the operation is retried and the deployment succeeds."""
    ctx, engine = plane
    gate = Gate(ctx, tmp_path, f"sw{unique_id}")
    gate.open()
    provisioned(ctx, gate.name, "DB")
    real = engine.deploying._settle
    failures: list[int] = []

    def settle(*args: Any, **kwargs: Any) -> None:
        if not failures:
            failures.append(1)
            raise OperationalError("UPDATE environments ...", {}, Exception("database is locked"))
        real(*args, **kwargs)

    monkeypatch.setattr(engine.deploying, "_settle", settle)
    dep = deployments.deploy(ctx, gate.name, "test")
    assert wait_op(ctx, dep["operation"]["id"], timeout=120)["status"] == "succeeded"
    assert failures == [1]
    shown = deployments.get_deployment(ctx, dep["id"])
    assert shown["status"] == "succeeded", shown
    assert state(ctx, gate.name, "DB") == "attached"
    with pytest.raises(Conflict):
        services.remove(ctx, gate.name, "test", "DB", "DB")
    with ctx.store.session() as s:  # one release runs: the retry's; the first one was stopped
        statuses = sorted(s.scalars(select(Release.status).where(
            Release.deployment_id == dep["id"])))
    assert statuses == ["running", "stopped"], statuses
