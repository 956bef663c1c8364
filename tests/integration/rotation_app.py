"""What the rotation tests share (issue 8): a real application that logs in to its service with
its DSN on every request, a thread that hammers the environment's stable address, and the whole
zero-downtime rotation, checked step by step on a real server through the engine.

The application (`APP`) answers `GET /` by logging in with the variable `DSN_VAR` names
(PostgreSQL with psycopg, MySQL with PyMySQL, RabbitMQ with an AMQP login) and returns the user
it logged in as; `GET /health` answers 200 only while the file `GATE_FILE` exists and a login
works, so a test can hold a deployment at its health check: the previous release keeps serving
meanwhile, as it would while a slow release starts."""

from __future__ import annotations

import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
from sqlalchemy import select

from tests.plane import wait_op
from tether.actions import deployments, projects, services, variables
from tether.actions.common import Context
from tether.engine.rotation import names_of
from tether.providers.registry import get_provider
from tether.store.models import Cluster, Environment, Instance, Operation, Project
from tether.store.records import cluster_spec

APP = textwrap.dedent(
    """
    import json, os
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import unquote, urlsplit

    CHECK, DSN_VAR = os.environ["CHECK"], os.environ["DSN_VAR"]

    def login():
        dsn = os.environ[DSN_VAR]
        parts = urlsplit(dsn)
        user, password = unquote(parts.username or ""), unquote(parts.password or "")
        if CHECK == "postgres":
            import psycopg
            with psycopg.connect(dsn, connect_timeout=5) as conn:
                return str(conn.execute("SELECT session_user").fetchone()[0])
        if CHECK == "mysql":
            import pymysql
            conn = pymysql.connect(host=parts.hostname, port=parts.port, user=user,
                                   password=password, database=parts.path[1:],
                                   connect_timeout=5)
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT USER()")
                    return str(cur.fetchone()[0]).split("@")[0]
            finally:
                conn.close()
        import amqp
        conn = amqp.Connection(host=f"{parts.hostname}:{parts.port}", userid=user,
                               password=password, virtual_host=unquote(parts.path[1:]),
                               connect_timeout=5)
        conn.connect()
        try:
            conn.channel().close()
            return user
        finally:
            conn.close()

    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            try:
                if self.path == "/health" and not os.path.exists(os.environ["GATE_FILE"]):
                    code, body = 503, {"error": "gate closed"}
                else:
                    code, body = 200, {"user": login()}
            except Exception as exc:
                code, body = 500, {"error": f"{type(exc).__name__}: {exc}"[:300]}
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
    """
)

#: the variable the app logs in with, per kind of service (prefix DEFAULT)
DSN_VARS = {"postgres": "DEFAULT_DATABASE_DSN", "mysql": "DEFAULT_DATABASE_DSN",
            "rabbitmq": "DEFAULT_AMQP_BROKER_URL"}
CHECKS = {"postgres": "postgres", "mysql": "mysql", "rabbitmq": "amqp"}


class App:
    """A project whose application logs in to its DEFAULT service on every request; its
    deployments wait at the health check while the gate is closed."""

    def __init__(self, ctx: Context, tmp_path: Path, name: str, kind: str,
                 health_timeout: int = 90) -> None:
        self.ctx, self.name, self.kind = ctx, name, kind
        # the app's own directory, beside the data dir (tmp_path): its user reads nothing there
        app_dir = tmp_path.parent / f"{tmp_path.name}-app-{name}"
        app_dir.mkdir()
        (app_dir / "rotation_app.py").write_text(APP)
        self.gate = app_dir / "gate"
        self.gate.touch()
        projects.create_project(ctx, name, app_command=f"{sys.executable} rotation_app.py",
                                app_dir=str(app_dir), health_path="/health",
                                health_timeout=health_timeout)
        for key, value in (("GATE_FILE", str(self.gate)), ("CHECK", CHECKS[kind]),
                           ("DSN_VAR", DSN_VARS[kind])):
            variables.set_variable(ctx, name, "test", key, value)

    @property
    def url(self) -> str:
        with self.ctx.store.session() as s:
            env = s.scalars(select(Environment).join(Project).where(
                Project.name == self.name, Environment.name == "test")).one()
            return f"http://127.0.0.1:{env.port}/"

    def dsn(self) -> str:
        """The DSN the next release gets (the instance's current credentials)."""
        listed = variables.list_variables(self.ctx, self.name, "test", True, True)
        return str(next(v["value"] for v in listed if v["name"] == DSN_VARS[self.kind]))

    def deploy_ok(self) -> dict[str, Any]:
        dep = deployments.deploy(self.ctx, self.name, "test")
        return self.wait_deployment(int(dep["id"]))

    def wait_deployment(self, dep_id: int, timeout: float = 150,
                        expect: str = "succeeded") -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            shown = deployments.get_deployment(self.ctx, dep_id, logs_after=0)
            if shown["status"] in ("succeeded", "failed"):
                assert shown["status"] == expect, shown
                # and its operations have ended: the deployment is marked failed before its
                # operation settles, and a drift pass skips an environment being deployed
                # (seen: a pass just after found the instance busy)
                with self.ctx.store.session() as s:
                    ops = s.scalars(select(Operation.id).where(
                        Operation.deployment_id == dep_id)).all()
                for op_id in ops:
                    wait_op(self.ctx, op_id, max(1.0, deadline - time.monotonic()))
                return shown
            time.sleep(0.05)
        raise AssertionError(f"deployment {dep_id} did not finish in {timeout} s")

    def wait_held(self, dep_id: int, timeout: float = 90) -> None:
        """Until the deployment's new release has started and waits at its health check."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            shown = deployments.get_deployment(self.ctx, dep_id, logs_after=0)
            lines = [row["line"] for row in shown["logs"]]  # type: ignore[index]
            if any(line.startswith("starting release") for line in lines):
                time.sleep(0.5)  # the app is up and answering 503 at /health
                return
            assert shown["status"] in ("queued", "running"), (shown["status"], lines)
            time.sleep(0.05)
        raise AssertionError("the deployment did not reach its release start")

    def user(self) -> str:
        answer = httpx.get(self.url, timeout=10)
        assert answer.status_code == 200, answer.text
        return str(answer.json()["user"])


@dataclass
class Hammer:
    """Requests to a stable address from a thread, one after the other, until stopped: every
    answer that is not a 200 is a failure, with what it said."""

    url: str
    ok: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Hammer:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        with httpx.Client(timeout=15) as client:
            while not self._stop.is_set():
                try:
                    answer = client.get(self.url)
                    if answer.status_code == 200:
                        self.ok[str(answer.json()["user"])] += 1
                    else:
                        self.failures.append(f"{answer.status_code} {answer.text[:200]}")
                except httpx.HTTPError as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                time.sleep(0.01)

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(30)


def instance_row(ctx: Context, project: str, prefix: str = "DEFAULT") -> Instance:
    with ctx.store.session() as s:
        inst = s.scalars(select(Instance).join(Environment).join(Project).where(
            Project.name == project, Environment.name == "test", Instance.prefix == prefix,
            Instance.state != "removed")).one()
        s.expunge(inst)
        return inst


def observe(ctx: Context, project: str, prefix: str = "DEFAULT") -> tuple[str, ...]:
    """What the provider finds different on the server, with the instance's current login."""
    inst = instance_row(ctx, project, prefix)
    with ctx.store.session() as s:
        cluster = s.get(Cluster, inst.cluster_id)
        assert cluster is not None
        spec = cluster_spec(ctx.box, cluster)
    return get_provider(inst.kind).observe(spec, names_of(inst)).differences


def zero_downtime_rotation(ctx: Context, tmp_path: Path, name: str, kind: str,
                           logs_in: Callable[[str], bool]) -> None:
    """The rotation of issue 8, on a deployed app under load: the old credentials keep working
    until the release with the new ones serves, no request fails, then the old ones stop
    working. `logs_in(dsn)`: whether a login with that DSN succeeds."""
    app = App(ctx, tmp_path, name, kind)
    added = services.add(ctx, name, "test", kind, "DEFAULT")
    app.deploy_ok()
    base = f"tether_i{added['id']}"
    assert app.user() == base
    old_dsn = app.dsn()

    with Hammer(app.url) as hammer:
        time.sleep(0.5)
        app.gate.unlink()  # the rotation's deployment waits at its health check
        rotated = services.rotate(ctx, name, "test", "DEFAULT")
        assert "then the old ones are revoked" in str(rotated["message"])
        op = wait_op(ctx, rotated["operation"]["id"])  # type: ignore[index]
        assert op["status"] == "succeeded", op
        assert op["deployment_id"], op  # the running release uses it: a deployment follows
        new_dsn = app.dsn()
        assert new_dsn != old_dsn
        app.wait_held(int(op["deployment_id"]))
        # Between the new login and the traffic switch both work: the running release still
        # logs in with the old password (a rotation that changed the password would fail here)
        assert logs_in(old_dsn), "the old credentials stopped working before the switch"
        assert logs_in(new_dsn)
        assert app.user() == base
        shown = services.show(ctx, name, "test", "DEFAULT")
        assert shown["retiring_logins"] == [base]
        app.gate.touch()
        deployed = app.wait_deployment(int(op["deployment_id"]))
        time.sleep(0.5)
    assert hammer.failures == [], hammer.failures[:5]
    assert hammer.ok[base] > 0 and hammer.ok[f"{base}_1"] > 0, hammer.ok
    assert app.user() == f"{base}_1"
    assert not logs_in(old_dsn), "the old credentials still work after the rotation"
    assert logs_in(new_dsn)
    lines = [row["line"] for row in deployed["logs"]]
    assert any(f"login {base} no longer works" in line for line in lines), lines
    shown = services.show(ctx, name, "test", "DEFAULT")
    assert shown["state"] == "attached"
    assert shown["rotations"] == 1 and shown["retiring_logins"] == []
    actions = [h["action"] for h in shown["history"]]  # type: ignore[union-attr]
    assert "credentials rotated" in actions and "old credentials revoked" in actions
    passwords = [unquote(urlsplit(d).password or "") for d in (old_dsn, new_dsn)]
    assert all(pw and pw not in str(shown["history"]) for pw in passwords)  # never a secret
    # the provider sees the rotated instance as it should be: no drift to "repair" back
    assert observe(ctx, name) == ()
