"""Servers Tether runs itself, against real PostgreSQL servers: a taken port moves the server
instead of wedging it, and a cluster that holds instances is never re-pointed at another server
(the same server on a new port is fine, and its instances follow it)."""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest

from tests.conftest import own_postgres, world_traversable_tmpdir
from tether.actions import clusters
from tether.actions.common import Context
from tether.crypto import SecretBox
from tether.errors import Conflict
from tether.net import free_port
from tether.servers.postgres import EmbeddedPostgres, PortTaken
from tether.store.db import Store
from tether.store.models import Cluster, Environment, Instance, Project

pytestmark = pytest.mark.integration


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[Context]:
    store = Store(f"sqlite:///{tmp_path / 'tether.db'}")
    store.migrate()
    yield Context(store=store, box=SecretBox.from_data_dir(tmp_path), data_dir=tmp_path,
                  actor="test")
    store.dispose()


@pytest.fixture(scope="module")
def own_server() -> Iterator[tuple[EmbeddedPostgres, str]]:
    """A second PostgreSQL server, with its password, that the tests may stop and move."""
    with own_postgres("tether-test-own-pg-") as own:
        yield own


def _listen(port: int) -> socket.socket:
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT
    squatter.bind(("127.0.0.1", port))
    squatter.listen(1)
    return squatter


def _instance_on(ctx: Context, cluster_name: str, port: int,
                 credentials: dict[str, Any] | None = None,
                 state: str = "pending attachment") -> int:
    """An instance row on the cluster (as the engine leaves one after provisioning)."""
    with ctx.store.session() as s:
        cluster = s.query(Cluster).filter_by(name=cluster_name).one()
        project = Project(name=f"p{secrets.token_hex(3)}", region="local")
        s.add(project)
        s.flush()
        env = Environment(project_id=project.id, name="test", port=port,
                          secret_key_enc=ctx.box.seal("k"))
        s.add(env)
        s.flush()
        inst = Instance(environment_id=env.id, service=f"postgres-{cluster.version}",
                        kind="postgres", prefix="DEFAULT", state=state, cluster_id=cluster.id,
                        credentials_enc=ctx.box.seal(credentials) if credentials else None)
        s.add(inst)
        s.flush()
        return inst.id


def test_a_taken_port_fails_plainly_or_moves_the_server(
        own_server: tuple[EmbeddedPostgres, str]) -> None:
    server, password = own_server
    server.stop()
    old = server.port
    squatter = _listen(old)
    try:
        with pytest.raises(PortTaken, match=f"port {old} on 127.0.0.1 is taken"):
            server.start()
        assert not server.is_running()
        server.start(move_if_taken=True)
        assert server.port != old and server.is_running()
        with psycopg.connect(server.admin_url(password), connect_timeout=5) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        squatter.close()


def test_a_cluster_holding_instances_is_never_pointed_at_another_server(
        ctx: Context, pg_server: Any, own_server: tuple[EmbeddedPostgres, str]) -> None:
    server, password = own_server
    server.start()
    own_url = server.admin_url(password)
    clusters.add_cluster(ctx, "postgres", "local", own_url, name="local-postgres",
                         managed=True)

    # empty: re-pointing it is harmless, and allowed
    clusters.add_cluster(ctx, "postgres", "local", pg_server.admin_url, name="local-postgres",
                         managed=True)
    clusters.add_cluster(ctx, "postgres", "local", own_url, name="local-postgres",
                         managed=True)

    _instance_on(ctx, "local-postgres", free_port())
    with pytest.raises(Conflict) as refused:
        clusters.add_cluster(ctx, "postgres", "local", pg_server.admin_url,
                             name="local-postgres", managed=True)
    message = refused.value.message
    assert "local-postgres" in message and "holds 1 instance" in message
    assert "another name" in message
    assert pg_server.password not in message and password not in message
    with ctx.store.session() as s:  # nothing changed
        stored = s.query(Cluster).filter_by(name="local-postgres").one()
        assert ctx.box.open(stored.url_enc) == own_url

    # a cluster file upsert is refused the same way
    with pytest.raises(Conflict, match="local-postgres"):
        clusters.add_cluster(ctx, "postgres", "local", pg_server.admin_url,
                             name="local-postgres", upsert=True)

    # the server (and its node) is what the cluster keeps; a start of the node that runs it
    # again is the same server
    view = clusters.add_cluster(ctx, "postgres", "local", own_url, name="local-postgres",
                                managed=True, node_id="node-a")
    assert view["node_id"] == "node-a"
    with ctx.store.session() as s:
        stored = s.query(Cluster).filter_by(name="local-postgres").one()
        assert str(stored.settings["server_identity"]).startswith("postgres:")


def test_the_same_server_on_a_new_port_is_followed_by_its_instances(
        ctx: Context, own_server: tuple[EmbeddedPostgres, str]) -> None:
    server, password = own_server
    server.start()
    clusters.add_cluster(ctx, "postgres", "local", server.admin_url(password),
                         name="local-postgres", managed=True)
    old = server.port
    inst_id = _instance_on(ctx, "local-postgres", free_port(), credentials={
        "user": "tether_i1", "password": "pw", "host": "127.0.0.1", "port": old,
        "database": "tether_i1"})
    server.stop()
    squatter = _listen(old)
    try:
        server.start(move_if_taken=True)
    finally:
        squatter.close()
    assert server.port != old
    view = clusters.add_cluster(ctx, "postgres", "local", server.admin_url(password),
                                name="local-postgres", managed=True)
    assert view["location"] == f"127.0.0.1:{server.port}"
    with ctx.store.session() as s:
        creds = ctx.box.open(s.get(Instance, inst_id).credentials_enc)
    assert creds["port"] == server.port and creds["host"] == "127.0.0.1"
    assert urlsplit(server.admin_url(password)).port == server.port


def test_local_files_clusters_know_their_tree(ctx: Context, tmp_path: Path) -> None:
    one, other = tmp_path / "one", tmp_path / "other"
    settings = {"base_dir": str(one), "public_url": "http://127.0.0.1:1/media/"}
    clusters.add_cluster(ctx, "local-files", "local", f"file://{one}", name="local-media",
                         managed=True, settings=settings)
    _instance_on(ctx, "local-media", free_port())
    # the same tree, moved (as with a moved data dir): allowed
    moved = tmp_path / "moved"
    one.rename(moved)
    clusters.add_cluster(ctx, "local-files", "local", f"file://{moved}", name="local-media",
                         managed=True, settings={**settings, "base_dir": str(moved)})
    # another node's tree: refused
    with pytest.raises(Conflict, match="local-media"):
        clusters.add_cluster(ctx, "local-files", "local", f"file://{other}", name="local-media",
                             managed=True, settings={**settings, "base_dir": str(other)})


_HANG = """
import os, signal, sys, time
from pathlib import Path

from tether.server import Stops, Supervisor

out = Path(sys.argv[1])
stops = Stops(say=lambda m: None)
stops.push("a server", lambda: (out / "stopped").write_text("in order"),
           force=lambda: (out / "server-forced").write_text("at once"))
stops.push("an operation that never ends", lambda: time.sleep(3600),
           force=lambda: (out / "operation-forced").write_text("at once"))
supervisor = Supervisor(stops, stop_timeout=1.0)
supervisor.install()
supervisor.phase = "serving"
os.kill(os.getpid(), signal.SIGTERM)  # handled: the process goes on to its stop
supervisor.phase = "stopping"
stops.unwind()
sys.exit(0)  # never reached: the watchdog forces the stop and exits with 1
"""


def test_a_stop_that_hangs_is_forced_after_the_timeout(tmp_path: Path) -> None:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", _HANG, str(tmp_path)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 1, proc.stderr
    assert time.monotonic() - started < 30
    assert "forcing the stop of an operation that never ends, a server" in proc.stderr
    assert (tmp_path / "operation-forced").exists() and (tmp_path / "server-forced").exists()
    assert not (tmp_path / "stopped").exists()  # the ordered stop never got there


def test_a_slow_start_of_its_own_is_not_taken_for_a_taken_port(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pg_ctl gives up waiting (exit 1) while the postmaster it started goes on starting (a long
    crash recovery): the port is held by our own server, so the start used to be taken for a
    taken port and moved, restarting the recovery on another port, again and again."""
    from tether.servers import postgres as pgserver

    base = world_traversable_tmpdir("tether-test-slow-start-")
    server = pgserver.EmbeddedPostgres(base / "pg", free_port())
    real_run = pgserver._run

    def slow_pg_ctl(args: list[str], *rest: Any, **kwargs: Any) -> Any:
        done = real_run(args, *rest, **kwargs)
        if args[1:2] == ["start"]:  # the server starts; pg_ctl reports its wait ran out
            return subprocess.CompletedProcess(args, 1, "", "pg_ctl: server did not start in "
                                               "time")
        return done

    try:
        server.init("a-password-" + secrets.token_hex(4))
        port = server.port
        monkeypatch.setattr(pgserver, "_run", slow_pg_ctl)
        server.start(timeout=20, move_if_taken=True)
        monkeypatch.setattr(pgserver, "_run", real_run)
        assert server.port == port
        assert server.is_running()
    finally:
        monkeypatch.setattr(pgserver, "_run", real_run)
        server.destroy()
        shutil.rmtree(base, ignore_errors=True)


def test_the_api_port_is_held_from_the_start(tmp_path: Path) -> None:
    """A port only bound (not listening) with SO_REUSEADDR can be bound again by another
    program on Linux, which then took it while Tether was still starting."""
    from tether import server
    from tether.errors import UserError
    from tether.net import bind_port

    port = free_port()
    held = server._bind_api(tmp_path, "127.0.0.1", port)
    try:
        with pytest.raises(OSError):
            bind_port(port).close()
        with pytest.raises(UserError, match="is taken"):
            server._bind_api(tmp_path, "127.0.0.1", port)
    finally:
        held.close()


def test_the_start_loads_the_providers_before_any_thread_of_the_engine(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The providers' modules are loaded by the start's own thread, before the engine (its
    worker, heartbeat and operations) and the API start: loaded by a thread beside them, a
    restore importing azure.core in an operation's thread failed with a _DeadlockError (two
    threads importing a package with circular imports)."""
    from tether import server
    from tether.engine.core import Engine

    seen: list[tuple[str, str]] = []
    real_load, real_start = server.providers_available, Engine.start

    def load() -> Any:
        seen.append(("providers loaded", threading.current_thread().name))
        return real_load()

    def start(self: Engine, *args: Any, **kwargs: Any) -> Any:
        seen.append(("engine started", threading.current_thread().name))
        return real_start(self, *args, **kwargs)

    monkeypatch.setattr(server, "providers_available", load)
    monkeypatch.setattr(Engine, "start", start)
    base = world_traversable_tmpdir("tether-test-start-order-")
    stops = server.Stops(say=lambda _m: None)
    try:
        server.build(base / "data", "127.0.0.1", free_port(), stops=stops)
        main = threading.main_thread().name
        assert seen == [("providers loaded", main), ("engine started", main)]
    finally:
        stops.unwind()
        shutil.rmtree(base, ignore_errors=True)
