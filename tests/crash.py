"""The crash matrix: a real `tether up` is ended abruptly (SIGKILL from inside, at a named crash
point armed by `TETHER_CRASH_AT`, see `tether.faults`) at each step of provision, deploy (before
and after the traffic switch), detach-then-deploy and remove; then started again, unarmed or armed
at the next point, and it must converge:

- every instance reaches the state its operation leads to, and every state is one of the
  lifecycle's;
- no orphaned resource on the real server: for every instance in the store, the provider's
  `observe` finds its resources exactly when its state is functional;
- no duplicate application process (counted by a marker in the app's environment), and the app
  serving at the environment's stable address once a deployment converged.

One provider's whole matrix runs on one data dir as a chain of ten starts (each restart is armed
at the next point, in another kind of operation than the one it resumes, or not at all), so each
cell is checked after its own crash. The outcome of every cell is written to
`tests/crash-matrix.json` (the README's table is made from it)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from tests.conftest import clean_env, world_traversable_tmpdir
from tests.e2e.conftest import ROOT, Tether
from tether import lifecycle, naming
from tether.crypto import SecretBox
from tether.faults import ENV as CRASH_ENV
from tether.lifecycle import State
from tether.net import free_port
from tether.providers.registry import get_provider
from tether.servers.postgres import EmbeddedPostgres
from tether.store.db import Store
from tether.store.models import Cluster, Instance
from tether.store.records import cluster_spec

MATRIX_FILE = ROOT / "tests" / "crash-matrix.json"
POINTS = ("provision.before_provider", "provision.after_provider", "deploy.before_switch",
          "deploy.after_switch", "detach+deploy.before_switch", "detach+deploy.after_switch",
          "remove.before_provider", "remove.after_provider")
#: the points where a provider's own code runs (the others are the engine's and the runtime's,
#: the same for every kind: the PostgreSQL column covers them, each kind's deploy tests check
#: that its variables reach the application)
PROVIDER_POINTS = ("provision.before_provider", "provision.after_provider",
                   "remove.before_provider", "remove.after_provider")
#: what the matrix file says of a point a provider's column does not run
ENGINE_ONLY = "not the provider's code: see the postgres column"


@dataclass
class Provider:
    """How to register one kind of cluster with `tether cluster add`, and its service."""

    kind: str
    service: str
    region: str = "local"
    cluster_args: list[str] = field(default_factory=list)  # --url ... --setting ...
    embedded: bool = False  # the embedded PostgreSQL of `tether up`: nothing to register


class CrashRun:
    def __init__(self, base: Path, provider: Provider) -> None:
        base.mkdir(parents=True, exist_ok=True)
        os.chmod(base, 0o755)  # noqa: S103 - the embedded PostgreSQL's user must traverse it
        self.base, self.provider = base, provider
        self.marker = secrets.token_hex(6)
        env = clean_env()
        env["XDG_CONFIG_HOME"] = str(base / "config")
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
        self.tether = Tether(data_dir=base / "data", config_home=base / "config",
                             port=free_port(), env=env)
        self.project = f"crash{self.marker[:6]}"
        self.cells: dict[str, str] = {}

    # -- the process --------------------------------------------------------------------------

    def start(self, armed: str | None) -> None:
        self.tether.env.pop(CRASH_ENV, None)
        if armed:
            self.tether.env[CRASH_ENV] = armed
        self.tether.start()

    def crashed(self, timeout: float = 120) -> None:
        """Wait until the armed crash point ended `tether up` (SIGKILL from inside)."""
        proc = self.tether.proc
        assert proc is not None
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"tether up did not crash at {self.tether.env.get(CRASH_ENV)}:"
                                 f"\n{self.tether.log_tail()}") from None
        assert code == -9, (code, self.tether.log_tail())

    def stop(self) -> None:
        self.tether.stop()

    def ok(self, *args: str) -> Any:
        return self.tether.ok(*args, "-p", self.project, "--json").json()

    def trigger(self, *args: str) -> Any:
        """A request that reaches an armed crash point: its answer, or None when the crash came
        first (the worker may take the operation and reach the point before the API's answer
        is written, on a loaded machine) — what it asked for is in the store either way."""
        result = self.tether.cli(*args, "-p", self.project, "--json")
        if result.code == 0:
            return result.json()
        assert result.code == 1 and "unreachable" in result.out, (args, result.out, result.err)
        return None

    def deployment_id(self, answer: Any) -> int:
        """The id of the deployment a `trigger`ed deploy made (the newest, if its answer was
        lost to the crash)."""
        if answer is not None:
            return int(answer["id"])
        listed = self.tether.ok("deployments", "test", "-p", self.project, "--json").json()
        return int(listed[0]["id"])

    # -- what converged -----------------------------------------------------------------------

    def _store(self) -> tuple[Store, SecretBox]:
        return (Store(f"sqlite:///{self.tether.data_dir / 'tether.db'}"),
                SecretBox.from_data_dir(self.tether.data_dir))

    def wait_instance(self, prefix: str, state: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        shown: dict[str, Any] = {}
        while time.monotonic() < deadline:
            shown = self.tether.ok("service", "show", "test", prefix, "-p", self.project,
                                   "--json").json()
            if shown["state"] == state and shown["operation"] is None:
                return
            time.sleep(0.2)
        raise AssertionError(f"{prefix} did not reach {state}: {shown}\n"
                             f"{self.tether.log_tail()}")

    def wait_deployment(self, dep_id: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        shown: dict[str, Any] = {}
        while time.monotonic() < deadline:
            shown = self.tether.ok("deployment", "show", str(dep_id), "--json").json()
            if shown["status"] in ("succeeded", "failed"):
                assert shown["status"] == "succeeded", shown
                return
            time.sleep(0.2)
        raise AssertionError(f"deployment {dep_id} did not finish: {shown}")

    def check_resources(self) -> None:
        """Every state is the lifecycle's, and the provider finds an instance's resources on
        the real server exactly when its state says it is functional."""
        store, box = self._store()
        try:
            with store.session() as s:
                rows = [(i.id, i.prefix, State(i.state), s.get(Cluster, i.cluster_id))
                        for i in s.scalars(select(Instance)) if i.cluster_id is not None]
                specs = [(i, p, st, cluster_spec(box, c)) for i, p, st, c in rows if c]
        finally:
            store.dispose()
        for inst_id, prefix, state, spec in specs:
            seen = get_provider(spec.kind).observe(spec, naming.resource_names(inst_id))
            assert seen.exists == (state in lifecycle.FUNCTIONAL), (prefix, state, seen)

    def app_processes(self) -> list[int]:
        """The application process groups of this run (marker in their environment): one per
        running release (`sh -c` and the app it started share one group)."""
        groups = set()
        needle = f"CRASH_MARKER={self.marker}".encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                environ = (entry / "environ").read_bytes()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if needle in environ.split(b"\0") and b"app.py" in cmdline:
                with contextlib.suppress(OSError, IndexError):
                    stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                    groups.add(int(stat[2]))  # the process group id
        return sorted(groups)

    def clean_up(self) -> None:
        """Whatever a failed run left: its app processes and its embedded PostgreSQL."""
        self.tether.stop()
        for group in self.app_processes():
            with contextlib.suppress(OSError):
                os.killpg(group, signal.SIGKILL)
        pg_state = self.tether.data_dir / "embedded-postgres.json"
        if pg_state.exists():
            port = int(json.loads(pg_state.read_text())["port"])
            with contextlib.suppress(Exception):
                EmbeddedPostgres(self.tether.data_dir / "postgres", port).stop()

    def check_app(self) -> None:
        """Exactly one application process, serving at the stable address."""
        deadline = time.monotonic() + 30
        while True:
            procs = self.app_processes()
            if len(procs) == 1:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(procs)} application process groups: {procs}")
            time.sleep(0.2)
        project = self.tether.ok("project", "show", "-p", self.project, "--json").json()
        url = next(e["url"] for e in project["environments"] if e["name"] == "test")
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200

    def cell(self, point: str, outcome: str) -> None:
        self.cells[point] = outcome

    # -- the chain ----------------------------------------------------------------------------

    def run(self) -> dict[str, str]:
        """The eight crash points, each checked after its own crash; returns point -> result."""
        p = self.provider
        self.start("provision.before_provider")
        if not p.embedded:
            self.tether.ok("cluster", "add", p.kind, "--region", p.region, *p.cluster_args)
        self.tether.ok("project", "create", self.project, "--region", p.region,
                       "--app-command", f"{sys.executable} examples/hello/app.py",
                       "--health-path", "/health", "--no-database")
        self.ok("project", "env-vars", "-e", "test", "--set", "CRASH_MARKER", self.marker)
        self.trigger("service", "add", "test", p.service, "--prefix", "ONE", "--provision",
                "--no-wait")
        self.crashed()

        self.start("deploy.before_switch")
        self.wait_instance("ONE", "pending attachment")
        self.check_resources()
        self.cell("provision.before_provider", "converged: pending attachment")
        dep = self.trigger("deploy", "test", "--no-wait")
        self.crashed()

        self.start("provision.after_provider")
        self.wait_deployment(self.deployment_id(dep))
        self.wait_instance("ONE", "attached")
        self.check_resources()
        self.check_app()
        self.cell("deploy.before_switch", "converged: attached, one app serving")
        self.trigger("service", "add", "test", p.service, "--prefix", "TWO", "--provision",
                "--no-wait")
        self.crashed()

        self.start("deploy.after_switch")
        self.wait_instance("TWO", "pending attachment")
        self.check_resources()
        self.cell("provision.after_provider", "converged: pending attachment")
        dep = self.trigger("deploy", "test", "--no-wait")
        self.crashed()

        # a resumed deploy passes both deploy points again: this restart is not armed, and
        # the next deploy point is armed by an orderly restart after the check
        self.start(None)
        self.wait_deployment(self.deployment_id(dep))
        self.wait_instance("TWO", "attached")
        self.check_resources()
        self.check_app()
        self.cell("deploy.after_switch", "converged: attached, one app serving")
        self.stop()
        self.start("deploy.before_switch")
        self.ok("service", "detach", "test", "ONE")
        dep = self.trigger("deploy", "test", "--no-wait")
        self.crashed()

        self.start("remove.before_provider")
        self.wait_deployment(self.deployment_id(dep))
        self.wait_instance("ONE", "detached")
        self.check_resources()
        self.check_app()
        self.cell("detach+deploy.before_switch", "converged: detached, one app serving")
        self.trigger("service", "remove", "test", "ONE", "--confirm", "ONE", "--no-wait")
        self.crashed()

        self.start("deploy.after_switch")
        self.wait_instance("ONE", "removed")
        self.check_resources()
        self.cell("remove.before_provider", "converged: removed, nothing left")
        self.ok("service", "detach", "test", "TWO")
        dep = self.trigger("deploy", "test", "--no-wait")
        self.crashed()

        self.start("remove.after_provider")
        self.wait_deployment(self.deployment_id(dep))
        self.wait_instance("TWO", "detached")
        self.check_resources()
        self.check_app()
        self.cell("detach+deploy.after_switch", "converged: detached, one app serving")
        self.trigger("service", "remove", "test", "TWO", "--confirm", "TWO", "--no-wait")
        self.crashed()

        self.start(None)
        self.wait_instance("TWO", "removed")
        self.check_resources()
        self.check_app()
        self.cell("remove.after_provider", "converged: removed, nothing left")
        self.stop()
        assert not self.app_processes(), "the application outlived tether up"
        return self.cells


    def run_provider_points(self) -> dict[str, str]:
        """The provider's four points only (`PROVIDER_POINTS`), each checked after its own
        crash, in one chain of five starts; each restart is armed at a point of the other kind
        of operation than the one it resumes (a resumed provision passes both provision points
        again)."""
        p = self.provider
        self.start("provision.before_provider")
        if not p.embedded:
            self.tether.ok("cluster", "add", p.kind, "--region", p.region, *p.cluster_args)
        self.tether.ok("project", "create", self.project, "--region", p.region,
                       "--no-database")
        self.trigger("service", "add", "test", p.service, "--prefix", "ONE", "--provision",
                     "--no-wait")
        self.crashed()

        self.start("remove.before_provider")
        self.wait_instance("ONE", "pending attachment")
        self.check_resources()
        self.cell("provision.before_provider", "converged: pending attachment")
        self.trigger("service", "remove", "test", "ONE", "--confirm", "ONE", "--no-wait")
        self.crashed()

        self.start("provision.after_provider")
        self.wait_instance("ONE", "removed")
        self.check_resources()
        self.cell("remove.before_provider", "converged: removed, nothing left")
        self.trigger("service", "add", "test", p.service, "--prefix", "TWO", "--provision",
                     "--no-wait")
        self.crashed()

        self.start("remove.after_provider")
        self.wait_instance("TWO", "pending attachment")
        self.check_resources()
        self.cell("provision.after_provider", "converged: pending attachment")
        self.trigger("service", "remove", "test", "TWO", "--confirm", "TWO", "--no-wait")
        self.crashed()

        self.start(None)
        self.wait_instance("TWO", "removed")
        self.check_resources()
        self.cell("remove.after_provider", "converged: removed, nothing left")
        self.stop()
        return self.cells


def record(kind: str, cells: dict[str, str], points: tuple[str, ...] = POINTS) -> None:
    """Merge one provider's column into tests/crash-matrix.json."""
    try:
        matrix = json.loads(MATRIX_FILE.read_text())
    except (OSError, ValueError):
        matrix = {}
    matrix[kind] = {point: cells.get(point, "not reached") if point in points else ENGINE_ONLY
                    for point in POINTS}
    MATRIX_FILE.write_text(json.dumps(matrix, indent=2, sort_keys=True) + "\n")


def run_matrix(provider: Provider, full: bool = True) -> None:
    """One provider's column, on a data dir of its own, recorded: every point (`full`), or the
    provider's own points only (`PROVIDER_POINTS`, in five starts instead of ten and without
    an application); whatever it left (app processes, the embedded PostgreSQL, the data dir) is
    cleaned up, even when it failed."""
    base = world_traversable_tmpdir(f"tether-crash-{provider.kind}-")
    run = CrashRun(base, provider)
    try:
        if full:
            record(provider.kind, run.run())
        else:
            cells = run.run_provider_points()
            assert {p: cells.get(p) for p in PROVIDER_POINTS} == {
                p: "converged: pending attachment" if p.startswith("provision") else
                "converged: removed, nothing left" for p in PROVIDER_POINTS}, cells
            record(provider.kind, cells, PROVIDER_POINTS)
    finally:
        run.clean_up()
        shutil.rmtree(base, ignore_errors=True)
