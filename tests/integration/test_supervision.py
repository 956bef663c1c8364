"""Finding 6 (supervision) and finding 7 (logs) through the engine, with real application
processes on a SQLite store, a local-files cluster and real crashes.

A crash of Tether is a real SIGKILL of a node process running the engine (this module is also
that process: `python -m tests.integration.test_supervision node DATA_DIR NODE_ID`); the app
processes it started keep running, as they would. Applications are counted by a marker on their
command line, by scanning /proc."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from tests.conftest import clean_env
from tests.plane import wait_op
from tether.actions import clusters, deployments, projects, variables
from tether.actions.common import Context
from tether.crypto import SecretBox
from tether.engine.core import Engine
from tether.errors import UserError
from tether.faults import ENV as CRASH_ENV
from tether.net import free_port
from tether.runtime.process import ProcessRuntime, process_start_token
from tether.store.db import Store
from tether.store.models import Deployment, DeploymentLog, Environment, Project, Release

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "tok-5ecret-value-42"

# "/health": 200 once HEALTH_DELAY seconds have passed since the start; "/": the app's pid.
# Prints its API_TOKEN at start (to be masked) and a tick every TICK seconds, for ever.
APP = textwrap.dedent(
    """
    import os, sys, threading, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    started = time.monotonic()
    delay = float(os.environ.get("HEALTH_DELAY", "0"))
    print("secret is", os.environ.get("API_TOKEN"), flush=True)

    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/health":
                code = 200 if time.monotonic() - started >= delay else 503
                body = b"health"
            else:
                code, body = 200, f"pid {os.getpid()}".encode()
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    def tick():
        n = 0
        while True:
            n += 1
            print("tick", n, flush=True)
            time.sleep(float(os.environ.get("TICK", "0.05")))

    threading.Thread(target=tick, daemon=True).start()
    ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
    """
)


# -- the node process -------------------------------------------------------------------------


def node_main(data_dir: Path, node_id: str) -> int:
    """An engine with a process runtime on the store of `data_dir`, until SIGTERM."""
    store = Store(f"sqlite:///{data_dir / 'tether.db'}")
    engine = Engine(store, SecretBox.from_data_dir(data_dir), data_dir,
                    runtime=ProcessRuntime(), node_id=node_id)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    engine.start()
    print("ready", flush=True)
    while not stopping.wait(0.1):
        pass
    engine.stop()
    store.dispose()
    return 0


class Node:
    """`tether up`'s engine in a process of its own, to be stopped or killed."""

    def __init__(self, data_dir: Path, node_id: str, crash_at: str | None = None) -> None:
        env = clean_env()
        if crash_at:
            env[CRASH_ENV] = crash_at
        self.log = data_dir.parent / f"node-{node_id}.log"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.integration.test_supervision", "node",
                 str(data_dir), node_id], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                stderr=out)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.strip() == b"ready", self.log.read_text()[-3000:]

    def kill(self) -> None:
        """A crash: no shutdown of anything."""
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)

    def wait_dead(self, timeout: float = 90) -> None:
        self.proc.wait(timeout)


# -- helpers ------------------------------------------------------------------------------------


def app_groups(marker: str) -> dict[int, int]:
    """The live processes of the app with `marker` on their command line: pid -> process
    group (a release's group is led by its log writer, the pid recorded on its row)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if marker.encode() not in argv:
                continue
            stat = (entry / "stat").read_text().rpartition(")")[2].split()
            if stat[0] not in ("Z", "X"):
                found[int(entry.name)] = int(stat[2])
    return found


def eventually(check: Callable[[], Any], timeout: float = 30, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except (AssertionError, httpx.HTTPError):
            if time.monotonic() > deadline:
                raise
        else:
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.1)


@dataclass
class Project_:
    ctx: Context
    name: str
    marker: str
    url: str
    env_id: int

    def deploy(self) -> dict[str, Any]:
        return deployments.deploy(self.ctx, self.name, "test")

    def deploy_ok(self) -> dict[str, Any]:
        dep = self.deploy()
        op = wait_op(self.ctx, dep["operation"]["id"], timeout=120)
        assert op["status"] == "succeeded", (op, deployments.get_deployment(
            self.ctx, dep["id"])["logs"])
        return dep

    def releases(self) -> dict[int, Release]:
        with self.ctx.store.session() as s:
            return {r.id: r for r in s.scalars(select(Release).where(
                Release.environment_id == self.env_id))}

    def current_id(self) -> int | None:
        with self.ctx.store.session() as s:
            env = s.get(Environment, self.env_id)
            assert env is not None
            return env.current_release_id

    def serves(self, pid_group: int | None = None) -> bool:
        answer = httpx.get(self.url, timeout=5, trust_env=False)
        if answer.status_code != 200:
            return False
        pid = int(answer.text.split()[1])
        return pid_group is None or os.getpgid(pid) == pid_group


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    data = tmp_path / "data"
    data.mkdir()
    store = Store(f"sqlite:///{data / 'tether.db'}")
    store.migrate()
    store.dispose()
    yield data


@pytest.fixture
def ctx(data_dir: Path) -> Iterator[Context]:
    store = Store(f"sqlite:///{data_dir / 'tether.db'}")
    context = Context(store=store, box=SecretBox.from_data_dir(data_dir), data_dir=data_dir,
                      actor="alice")
    media = data_dir / "media"
    clusters.add_cluster(context, "local-files", "local", f"file://{media}", name="media",
                         settings={"base_dir": str(media),
                                   "public_url": "http://127.0.0.1:8070/media/"})
    yield context
    store.dispose()


@pytest.fixture
def project(ctx: Context, tmp_path: Path, unique_id: str) -> Iterator[Project_]:
    app = tmp_path / "app.py"
    app.write_text(APP)
    marker = f"marker-{unique_id}"
    name = f"sup{unique_id}"
    shown = projects.create_project(ctx, name, app_command=f"{sys.executable} {app} {marker}",
                                    health_path="/health", health_timeout=30)
    variables.set_variable(ctx, name, "test", "API_TOKEN", TOKEN)
    assert shown["name"] == name
    with ctx.store.session() as s:
        env = s.scalars(select(Environment).join(Project).where(
            Project.name == name, Environment.name == "test")).one()
        # an ephemeral port, not the first of 8100-8999: other test runs on this machine may
        # hold those while a node of this test is down
        env.port = free_port()
        env_id, port = env.id, env.port
    yield Project_(ctx, name, marker, f"http://127.0.0.1:{port}", env_id)
    for group in set(app_groups(marker).values()):  # whatever a failed test left running
        with contextlib.suppress(OSError):
            os.killpg(group, signal.SIGKILL)


def engine_for(ctx: Context, node_id: str = "node-a") -> Engine:
    return Engine(ctx.store, ctx.box, ctx.data_dir, runtime=ProcessRuntime(), node_id=node_id)


# -- supervision -------------------------------------------------------------------------------


def test_a_crashed_tether_s_app_is_adopted_not_doubled(
        data_dir: Path, project: Project_) -> None:
    node = Node(data_dir, "node-a")
    try:
        project.deploy_ok()
        ((app_pid, group),) = app_groups(project.marker).items()

        node.kill()  # a crash: the app keeps running, the stable address is gone
        assert app_groups(project.marker) == {app_pid: group}
        node = Node(data_dir, "node-a")
        eventually(project.serves, what="the app to serve again")
        time.sleep(0.5)
        assert app_groups(project.marker) == {app_pid: group}  # adopted, not doubled
        assert project.serves(group)
        (release,) = project.releases().values()
        assert release.node_id == "node-a" and release.port and release.log_path
        assert release.pid == group and release.pid_start == process_start_token(group)
        assert (release.status, release.pid) == ("running", group)

        node.stop()  # a clean stop: the app stops, its release is `stopped` and stays current
        assert app_groups(project.marker) == {}
        (release,) = project.releases().values()
        assert release.status == "stopped" and project.current_id() == release.id

        node = Node(data_dir, "node-a")  # ... so the next start brings it back
        eventually(project.serves, what="the app started again")
        ((_, again),) = app_groups(project.marker).items()
        (release,) = project.releases().values()
        assert again != group and (release.status, release.pid) == ("running", again)
    finally:
        with contextlib.suppress(Exception):
            node.stop()


@pytest.mark.parametrize("point", ["deploy.before_switch", "deploy.after_switch"])
def test_a_deploy_cut_short_by_a_crash_leaves_one_process(
        data_dir: Path, project: Project_, point: str) -> None:
    node = Node(data_dir, "node-a")
    try:
        project.deploy_ok()
        first = project.current_id()
        node.kill()
        node = Node(data_dir, "node-a", crash_at=point)
        cut = project.deploy()
        node.wait_dead()  # the crash point ended it, with both releases' processes running
        assert len(set(app_groups(project.marker).values())) == 2
        starting = [r for r in project.releases().values() if r.status == "starting"]
        assert len(starting) == 1 and starting[0].pid  # recorded before its health wait
        second = starting[0].id

        node = Node(data_dir, "node-a")  # the leftover is stopped; the deploy resumes
        assert wait_op(project.ctx, cut["operation"]["id"], timeout=120)["status"] == \
            "succeeded"
        eventually(lambda: len(app_groups(project.marker)) == 1, what="one app process")
        rows = project.releases()
        third = project.current_id()
        assert third not in (first, second)
        assert {i: r.status for i, r in rows.items()} == {
            first: "stopped", second: "failed", third: "running"}
        assert set(app_groups(project.marker).values()) == {rows[third].pid}  # type: ignore
        assert project.serves(rows[third].pid)  # type: ignore[index]
    finally:
        with contextlib.suppress(Exception):
            node.stop()


def test_a_reused_pid_is_neither_adopted_nor_killed(ctx: Context, project: Project_) -> None:
    """Rows whose pid now names another process (same pid, another start time) are not the
    app: not adopted, not killed. A live process of another node's release is not touched."""
    sleeps = [subprocess.Popen(["sleep", "300"], start_new_session=True) for _ in range(3)]
    tokens = [process_start_token(p.pid) for p in sleeps]
    env_vars = {"STAGE": "test", "API_TOKEN": TOKEN}
    with ctx.store.session() as s:
        command = s.scalar(select(Project.app_command).where(Project.name == project.name))
        deps = [Deployment(environment_id=project.env_id, requested_by="test",
                           status="succeeded") for _ in range(3)]
        s.add_all(deps)
        s.flush()

        def release(n: int, status: str, node: str, token: str | None) -> Release:
            return Release(environment_id=project.env_id, deployment_id=deps[n].id,
                           env_enc=ctx.box.seal(env_vars), variable_names=sorted(env_vars),
                           command=command, status=status, node_id=node,
                           pid=sleeps[n].pid, pid_start=token, port=1)

        rows = [release(0, "running", "node-a", "1"),  # the current one; its pid reused
                release(1, "starting", "node-b", tokens[1]),  # another node's, alive
                release(2, "starting", "node-a", "1")]  # a leftover; its pid reused
        s.add_all(rows)
        s.flush()
        ids = [r.id for r in rows]
        s.get(Environment, project.env_id).current_release_id = ids[0]  # type: ignore
    engine = engine_for(ctx)
    try:
        engine.releases.restore()
        assert all(p.poll() is None for p in sleeps)  # none was killed
        ((_, group),) = app_groups(project.marker).items()  # the current release started anew
        assert group not in {p.pid for p in sleeps}
        assert project.serves(group)
        now = project.releases()
        assert (now[ids[0]].status, now[ids[0]].pid) == ("running", group)
        assert now[ids[0]].pid_start == process_start_token(group)
        assert (now[ids[1]].status, now[ids[1]].pid_start) == ("starting", tokens[1])
        assert now[ids[2]].status == "failed"
    finally:
        engine.stop()
        for p in sleeps:
            p.kill()
            p.wait()


def test_engine_start_returns_before_a_slow_app_is_healthy(
        ctx: Context, project: Project_) -> None:
    variables.set_variable(ctx, project.name, "test", "HEALTH_DELAY", "3")
    engine = engine_for(ctx)
    engine.start()
    try:
        first = project.deploy_ok()
    finally:
        engine.stop()
    assert app_groups(project.marker) == {}
    engine = engine_for(ctx)
    started = time.monotonic()
    engine.start()
    try:
        assert time.monotonic() - started < 2.0  # not after the 3 s the app needs
        answer = httpx.get(project.url, timeout=5, trust_env=False)  # the address is up
        assert answer.status_code == 503 and "no release" in answer.text
        # a deploy asked at once waits for the restore of its environment: never two apps
        second = project.deploy()
        eventually(project.serves, what="the restored release to serve")
        assert wait_op(ctx, second["operation"]["id"], timeout=120)["status"] == "succeeded"
        eventually(lambda: len(app_groups(project.marker)) == 1, what="one app process")
        rows = project.releases()
        assert {r.deployment_id: r.status for r in rows.values()} == {
            first["id"]: "stopped", second["id"]: "running"}
    finally:
        engine.stop()


# -- logs (finding 7) --------------------------------------------------------------------------


def test_the_app_s_output_goes_to_its_log_file_once_healthy(
        ctx: Context, project: Project_) -> None:
    """Finding 7: the deployment log grew by every line the app printed, for its whole life
    (14 rows when the deploy finished, 243 three seconds later)."""
    engine = engine_for(ctx)
    engine.start()
    try:
        dep = project.deploy_ok()

        def log_rows() -> int:
            with ctx.store.session() as s:
                return int(s.scalar(select(func.count()).select_from(DeploymentLog).where(
                    DeploymentLog.deployment_id == dep["id"])) or 0)

        rows = log_rows()
        time.sleep(2)  # the app prints ~40 lines meanwhile
        assert log_rows() == rows  # the deployment log stopped at healthy
        (release,) = project.releases().values()
        path = Path(release.log_path)  # type: ignore[arg-type]
        assert path == ctx.data_dir / "logs" / project.name / "test" / \
            f"release-{release.id}.log"
        size = path.stat().st_size
        eventually(lambda: path.stat().st_size > size)  # the release's log file grows instead
        lines = [r["line"] for r in deployments.get_deployment(ctx, dep["id"])["logs"]]
        assert "app: secret is ***" in lines  # the start's output, masked
        assert not any(TOKEN in line for line in lines)

        assert oct(path.stat().st_mode & 0o777) == "0o600"
        for d in (path.parent, path.parent.parent, ctx.data_dir / "logs"):
            assert oct(d.stat().st_mode & 0o777) == "0o700"
        text = path.read_text()
        assert TOKEN not in text and "secret is ***" in text

        shown = deployments.app_logs(ctx, project.name, "test", lines=5)
        assert shown["release_id"] == release.id
        assert len(shown["lines"]) == 5  # type: ignore[arg-type]
        assert all(entry["line"].startswith("tick ")  # type: ignore[index]
                   for entry in shown["lines"])  # type: ignore[union-attr]
        last = int(shown["lines"][-1]["line"].split()[1])  # type: ignore[index]
        after = eventually(lambda: deployments.app_logs(
            ctx, project.name, "test", after=str(shown["cursor"]))["lines"])
        assert after[0]["line"] == f"tick {last + 1}"
    finally:
        engine.stop()
    # the file outlives the release and Tether: `tether logs` reads it after a restart too
    assert "tick" in path.read_text()


def test_a_crafted_log_cursor_is_a_bad_cursor(ctx: Context, project: Project_) -> None:
    """A cursor with a negative number made the read seek before the file's start: an OSError,
    HTTP 500. It is refused like any cursor Tether did not make (UserError: 400, exit 2)."""
    engine = engine_for(ctx)
    engine.start()
    try:
        project.deploy_ok()

        def tail() -> dict[str, object] | None:
            shown = deployments.app_logs(ctx, project.name, "test", lines=2)
            return shown if shown["lines"] else None

        shown = eventually(tail, what="the app's first lines")
        release, inode, head, offset = str(shown["cursor"]).split(".")
        assert int(offset) > 0
        good = deployments.app_logs(ctx, project.name, "test", after=str(shown["cursor"]))
        assert good["release_id"] == int(release)
        for crafted in (f"{release}.{inode}.{head}.-{offset}", f"{release}.{inode}.{head}.-1",
                        f"{release}.{inode}.-{head}.{offset}", f"{release}.-{inode}.0.0",
                        f"{release}.{inode}.{head}", f"{release}.x.y.z"):
            with pytest.raises(UserError, match="invalid log cursor") as caught:
                deployments.app_logs(ctx, project.name, "test", after=crafted)
            assert caught.value.status == 400
    finally:
        engine.stop()


if __name__ == "__main__":
    if sys.argv[1:2] == ["node"]:
        sys.exit(node_main(Path(sys.argv[2]), sys.argv[3]))
